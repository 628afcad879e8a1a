//! Every VJP rule against central finite differences in f64 (see `check.rs`), plus the
//! contract of `grad`/`vjp` themselves.

#[path = "../common/mod.rs"]
mod common;

mod check;
mod composite;
mod contract;
mod elementwise;
mod layout;
mod spatial;
