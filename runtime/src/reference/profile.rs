//! Optional per-op timing of the reference interpreter (`calib train --profile`): where
//! the interpreter spends its time, by op name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<Option<HashMap<&'static str, OpTime>>> = Mutex::new(None);

/// Accumulated time of one op kind.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OpTime {
    pub op: &'static str,
    pub calls: u64,
    pub seconds: f64,
    /// Elements produced, for a bandwidth estimate.
    pub elements: u64,
}

/// Starts (or restarts) collecting.
pub fn enable() {
    *TOTALS.lock().unwrap_or_else(|e| e.into_inner()) = Some(HashMap::new());
    ENABLED.store(true, Ordering::Relaxed);
}

pub(crate) fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn record(op: &'static str, elapsed: Duration, elements: usize) {
    let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let entry = totals
        .get_or_insert_with(HashMap::new)
        .entry(op)
        .or_insert(OpTime {
            op,
            ..OpTime::default()
        });
    entry.calls += 1;
    entry.seconds += elapsed.as_secs_f64();
    entry.elements += elements as u64;
}

/// What was collected so far, most expensive first.
pub fn report() -> Vec<OpTime> {
    let totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<OpTime> = totals.iter().flat_map(|m| m.values().copied()).collect();
    rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    rows
}
