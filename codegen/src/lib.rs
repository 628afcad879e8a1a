//! PTX code generation for calib's fused kernels.
//!
//! Not written yet: it lowers the kernels of a fused plan (from `calib-passes`) to PTX,
//! one kernel per fused group, with launch geometry and parameter lists as data. Until
//! it lands, graphs run on the reference interpreter in `calib-runtime`.
