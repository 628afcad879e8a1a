//! Device descriptions: what a GPU has (SMs, clocks, occupancy limits, bandwidth) and
//! the timing coefficients fitted to kernels measured on it. They are data files
//! (`cost/devices/*.json`); the built-in ones are compiled in and chosen by name, and
//! any other file can be given with `--device FILE`.

use serde::{Deserialize, Serialize};
use std::path::Path;
use thiserror::Error;

/// A GPU as the cost model sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub name: String,
    /// Streaming multiprocessors.
    pub sms: u32,
    /// The SM clock kernels run at, in Hz.
    pub clock_hz: f64,
    pub max_threads_per_sm: u32,
    pub max_blocks_per_sm: u32,
    pub registers_per_sm: u32,
    /// Shared memory one SM can give its blocks, in bytes.
    pub shared_bytes_per_sm: u32,
    /// Shared memory the runtime reserves per resident block, in bytes.
    pub shared_bytes_reserved_per_block: u32,
    /// FLOP/s of f32 arithmetic without tensor cores.
    pub peak_flops_f32: f64,
    /// FLOP/s of dense f16/bf16 tensor-core arithmetic.
    pub peak_flops_f16: f64,
    /// FLOP/s of dense TF32 tensor-core arithmetic (half the f16 rate where absent).
    #[serde(default)]
    pub peak_flops_tf32: Option<f64>,
    /// Bytes/s of device memory, as the datasheet gives it.
    pub dram_bandwidth: f64,
    /// Bytes of device memory, as the driver reports them (`nvidia-smi`'s total in
    /// MiB times 2^20): what a plan's arena is checked against.
    pub memory_bytes: u64,
    pub timing: Timing,
}

/// How kernels on the device spend time: the coefficients of [`crate::predict`],
/// fitted to measured kernels ([`crate::fit`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Cycles a warp waits for a round of global loads.
    pub load_latency_cycles: f64,
    /// Cycles per instruction of one warp running alone (dependent instructions wait
    /// for their operands).
    pub dependent_issue_cycles: f64,
    /// Cycles per instruction of one warp issuing instructions that wait for none of
    /// their neighbours (a GEMM's products into separate accumulators).
    pub independent_issue_cycles: f64,
    /// Issue cycles a shared-memory wavefront costs besides its instruction.
    pub shared_wavefront_cycles: f64,
    /// How throughput and latency combine: the exponent of a smooth maximum (1 adds
    /// them, large values take the larger).
    pub overlap: f64,
    /// Bytes/s the L2 cache delivers to global loads and stores.
    pub l2_bandwidth: f64,
    /// The fraction of `dram_bandwidth` that streaming kernels reach.
    pub dram_efficiency: f64,
    /// The shortest a kernel takes, in microseconds (a launch that does nothing).
    pub kernel_floor_us: f64,
    /// The gap between consecutive launches of a step, in microseconds.
    pub launch_gap_us: f64,
    /// The fraction of the tensor-core peaks that `mma.sync` kernels reach (Hopper's
    /// full rate needs `wgmma`): an assumption until tensor-core kernels are measured.
    #[serde(default = "default_mma_sync_efficiency")]
    pub mma_sync_efficiency: f64,
    /// Issue slots one sector costs that a warp's global access touches beyond the
    /// fewest its bytes fill (`Census::global_excess_bytes`). Not fitted: L1 returns
    /// four 32-byte sectors per cycle per SM as four schedulers issue four
    /// instructions, so a sector is worth a slot; the kernels measured so far access
    /// memory almost only along its innermost axis and cannot tell.
    #[serde(default = "default_excess_sector_slots")]
    pub excess_sector_slots: f64,
    /// The measurements the coefficients were fitted to (names in `cost/data/`), or
    /// where they were carried over from.
    pub fitted_to: Vec<String>,
}

fn default_mma_sync_efficiency() -> f64 {
    0.5
}

fn default_excess_sector_slots() -> f64 {
    1.0
}

/// A device description that cannot be used.
#[derive(Debug, Error)]
pub enum DeviceError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("unknown device `{0}` (built in: {names}; or give a JSON file)", names = BUILT_IN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))]
    Unknown(String),
}

/// The built-in descriptions, by the name `--device` takes.
const BUILT_IN: &[(&str, &str)] = &[
    ("h100-sxm", include_str!("../devices/h100-sxm.json")),
    ("h200", include_str!("../devices/h200.json")),
    ("a100-sxm", include_str!("../devices/a100-sxm.json")),
];

impl Default for Device {
    /// The NVIDIA H200, the GPU calib's kernels have been measured on.
    fn default() -> Self {
        Device::named("h200").expect("the built-in descriptions are valid")
    }
}

impl Device {
    /// The built-in description called `name` (`h200`, `h100-sxm`, `a100-sxm`).
    pub fn named(name: &str) -> Result<Device, DeviceError> {
        let (file, text) = BUILT_IN
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| DeviceError::Unknown(name.to_string()))?;
        Device::parse(text, &format!("built-in device {file}"))
    }

    /// A built-in name or the path of a JSON description.
    pub fn load(name_or_path: &str) -> Result<Device, DeviceError> {
        match BUILT_IN.iter().any(|(n, _)| *n == name_or_path) {
            true => Device::named(name_or_path),
            false if Path::new(name_or_path).exists() || name_or_path.ends_with(".json") => {
                Device::from_json_file(Path::new(name_or_path))
            }
            false => Err(DeviceError::Unknown(name_or_path.to_string())),
        }
    }

    /// Reads and checks a JSON description.
    pub fn from_json_file(path: &Path) -> Result<Device, DeviceError> {
        let text = std::fs::read_to_string(path).map_err(|e| DeviceError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Device::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a description; errors name `origin` and the field.
    pub fn parse(text: &str, origin: &str) -> Result<Device, DeviceError> {
        let fail = |message: String| DeviceError::File {
            path: origin.to_string(),
            message,
        };
        // The path of the field a type error is in (serde alone names only the line).
        let mut json = serde_json::Deserializer::from_str(text);
        let device: Device = serde_path_to_error::deserialize(&mut json).map_err(|e| {
            let path = e.path().to_string();
            match path.as_str() {
                "." | "" => fail(e.inner().to_string()),
                _ => fail(format!("field `{path}`: {}", e.inner())),
            }
        })?;
        device.check().map_err(fail)?;
        Ok(device)
    }

    /// Every figure in its range, or the first field that is not.
    fn check(&self) -> Result<(), String> {
        let t = &self.timing;
        let positive: [(&str, f64); 17] = [
            ("sms", self.sms as f64),
            ("memory_bytes", self.memory_bytes as f64),
            ("clock_hz", self.clock_hz),
            ("max_threads_per_sm", self.max_threads_per_sm as f64),
            ("max_blocks_per_sm", self.max_blocks_per_sm as f64),
            ("registers_per_sm", self.registers_per_sm as f64),
            ("shared_bytes_per_sm", self.shared_bytes_per_sm as f64),
            ("peak_flops_f32", self.peak_flops_f32),
            ("peak_flops_f16", self.peak_flops_f16),
            ("peak_flops_tf32", self.tf32_flops()),
            ("dram_bandwidth", self.dram_bandwidth),
            ("timing.mma_sync_efficiency", t.mma_sync_efficiency),
            ("timing.dependent_issue_cycles", t.dependent_issue_cycles),
            (
                "timing.independent_issue_cycles",
                t.independent_issue_cycles,
            ),
            ("timing.overlap", t.overlap),
            ("timing.l2_bandwidth", t.l2_bandwidth),
            ("timing.dram_efficiency", t.dram_efficiency),
        ];
        let non_negative: [(&str, f64); 4] = [
            ("timing.load_latency_cycles", t.load_latency_cycles),
            ("timing.shared_wavefront_cycles", t.shared_wavefront_cycles),
            ("timing.kernel_floor_us", t.kernel_floor_us),
            ("timing.launch_gap_us", t.launch_gap_us),
        ];
        if let Some((field, v)) = positive.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
            return Err(format!(
                "field `{field}` must be a positive number, not {v}"
            ));
        }
        if let Some((field, v)) = non_negative
            .iter()
            .find(|(_, v)| !(v.is_finite() && *v >= 0.0))
        {
            return Err(format!("field `{field}` must be zero or more, not {v}"));
        }
        if t.mma_sync_efficiency > 1.0 {
            return Err(format!(
                "field `timing.mma_sync_efficiency` is a fraction of the tensor-core peak, not {}",
                t.mma_sync_efficiency
            ));
        }
        if t.dram_efficiency > 1.0 {
            return Err(format!(
                "field `timing.dram_efficiency` is a fraction of the bandwidth, not {}",
                t.dram_efficiency
            ));
        }
        Ok(())
    }

    /// Bytes/s streaming kernels reach in device memory.
    /// FLOP/s of TF32 tensor-core arithmetic.
    pub fn tf32_flops(&self) -> f64 {
        self.peak_flops_tf32.unwrap_or(self.peak_flops_f16 / 2.0)
    }

    pub fn effective_dram_bandwidth(&self) -> f64 {
        self.dram_bandwidth * self.timing.dram_efficiency
    }
}
