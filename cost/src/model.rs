//! The time of one launch on a [`Device`]: features in ([`Launch`]), seconds out.
//!
//! A launch runs in waves of resident blocks. Within a wave an SM is busy for the
//! larger of two times, combined by a smooth maximum ([`Timing::overlap`]):
//!
//! * *throughput*: the issue slots of all its resident warps, four per cycle, with
//!   shared-memory wavefronts and the extra sectors of uncoalesced global accesses
//!   (L1 returns four per cycle) on top, or the tensor cores' time for their products
//!   (at [`Timing::mma_sync_efficiency`] of the device's peak), whichever is longer;
//! * *latency*: one warp's own critical path, a load latency per round of global loads
//!   plus a dependent-issue time per instruction (less for instructions that depend on
//!   none of their neighbours, such as a GEMM's products); more resident warps hide it,
//!   a grid of a few blocks cannot.
//!
//! The launch then takes its waves, but at least the time to move its bytes (unique
//! bytes through device memory, every load and store through L2), plus a floor, plus
//! the wave of one block alone where its last block combines a split reduction after
//! the others ([`Launch::tail`]).
//! Occupancy follows the registers, shared memory, threads and blocks an SM can hold.
//!
//! [`Timing::overlap`]: crate::Timing::overlap
//! [`Timing::mma_sync_efficiency`]: crate::Timing::mma_sync_efficiency

use crate::{Device, Launch};
use serde::Serialize;

/// What limits a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Issue slots of the resident warps.
    Issue,
    /// Tensor-core throughput (`mma.sync` products).
    Tensor,
    /// A warp's critical path (few warps, long prologues, memory latency).
    Latency,
    /// Device-memory bandwidth.
    Dram,
    /// L2 bandwidth (operands re-read by many blocks).
    L2,
}

/// A predicted launch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Prediction {
    pub seconds: f64,
    pub bound: Bound,
    /// Blocks one SM holds at once.
    pub blocks_per_sm: u32,
    pub waves: u64,
}

/// Blocks of `launch` one SM of `device` holds at once (at least one).
pub fn blocks_per_sm(launch: &Launch, device: &Device) -> u32 {
    let threads = launch.threads.max(1);
    // Registers are allocated per warp in units of 256, i.e. 8 per thread.
    let registers = launch.registers.clamp(16, 255).div_ceil(8) * 8;
    let by_registers = device.registers_per_sm / (registers * threads.div_ceil(32) * 32);
    let by_shared = match launch.shared_bytes {
        0 => u32::MAX,
        s => device.shared_bytes_per_sm / (s + device.shared_bytes_reserved_per_block),
    };
    let by_threads = device.max_threads_per_sm / threads;
    by_registers
        .min(by_shared)
        .min(by_threads)
        .min(device.max_blocks_per_sm)
        .max(1)
}

/// The predicted time of `launch` on `device`.
pub fn predict(launch: &Launch, device: &Device) -> Prediction {
    let t = &device.timing;
    let c = &launch.census;
    let sms = device.sms as u64;
    let per_sm = blocks_per_sm(launch, device) as u64;
    let blocks = launch.blocks.max(1);
    let waves = blocks.div_ceil(sms * per_sm);
    let resident = per_sm.min(blocks.div_ceil(sms)) as f64;
    let warps = launch.threads.div_ceil(32) as f64;
    let wave = Wave::of(c, resident, warps, launch.threads, device);
    let compute = waves as f64 * wave.cycles(t.overlap) / device.clock_hz;
    // A last block's combining pass starts when every block is done, and runs alone.
    let tail = launch.tail.as_ref().map_or(0.0, |tail| {
        Wave::of(tail, 1.0, warps, launch.threads, device).cycles(t.overlap) / device.clock_hz
    });

    let threads = blocks as f64 * launch.threads as f64;
    // Extra sectors are L1's work: the lines they bring serve the neighbouring
    // elements (the next channels, the next runs) from L1, not again from L2.
    let l2 = (c.global_load_bytes + c.global_store_bytes) * threads / t.l2_bandwidth;
    let dram = launch.unique_bytes / device.effective_dram_bandwidth();

    let (slowest, bound) = [
        (
            compute,
            if wave.throughput() < wave.latency {
                Bound::Latency
            } else if wave.tensor > wave.issue {
                Bound::Tensor
            } else {
                Bound::Issue
            },
        ),
        (dram, Bound::Dram),
        (l2, Bound::L2),
    ]
    .into_iter()
    .fold((0.0, Bound::Issue), |a, b| if b.0 > a.0 { b } else { a });
    Prediction {
        seconds: slowest + tail + t.kernel_floor_us * 1e-6,
        bound,
        blocks_per_sm: per_sm as u32,
        waves,
    }
}

/// One wave's work on an SM, in cycles: the issue slots and tensor-core time of its
/// resident warps, and one warp's critical path.
struct Wave {
    issue: f64,
    tensor: f64,
    latency: f64,
}

impl Wave {
    /// `resident` blocks of `warps` warps (`threads` threads) each running `c`.
    fn of(c: &crate::Census, resident: f64, warps: f64, threads: u32, device: &Device) -> Wave {
        let t = &device.timing;
        // A thread's extra bytes, times 32 threads over 32 bytes a sector, are its
        // warp's extra sectors: the same number.
        let issue = resident
            * warps
            * (c.issue
                + t.shared_wavefront_cycles * c.shared_wavefronts
                + t.excess_sector_slots * c.global_excess_bytes)
            / 4.0;
        // Tensor cores run beside the issue of other instructions: an SM is busy for
        // the longer of the two.
        let per_sm_cycle =
            |peak: f64| peak * t.mma_sync_efficiency / (device.sms as f64 * device.clock_hz);
        let tensor = resident
            * threads as f64
            * (c.tensor_tf32_flops / per_sm_cycle(device.tf32_flops())
                + c.tensor_f16_flops / per_sm_cycle(device.peak_flops_f16));
        let dependent = (c.issue - c.independent).max(0.0);
        let latency = c.load_rounds * t.load_latency_cycles
            + dependent * t.dependent_issue_cycles
            + c.independent * t.independent_issue_cycles;
        Wave {
            issue,
            tensor,
            latency,
        }
    }

    fn throughput(&self) -> f64 {
        self.issue.max(self.tensor)
    }

    /// Throughput and latency overlapped by a smooth maximum of power `p`.
    fn cycles(&self, p: f64) -> f64 {
        (self.throughput().powf(p) + self.latency.powf(p)).powf(1.0 / p)
    }
}
