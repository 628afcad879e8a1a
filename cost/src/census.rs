//! What one thread of a kernel launch executes, as dynamic counts: the features the
//! cost model prices. Code generation counts them while it writes a kernel (every loop
//! has a static trip count); the fusion planner estimates them for kernels it has not
//! written yet.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A thread's dynamic instruction mix (averaged over the threads of a launch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Census {
    /// Issue slots of all instructions (machine instructions, not PTX lines).
    pub issue: f64,
    /// f32 additions, multiplications and fused multiply-adds.
    pub fp32: f64,
    /// Special-function unit operations (`ex2`, `lg2`, `rsqrt`, `rcp`, conversions).
    pub sfu: f64,
    /// Global loads and the bytes they read.
    pub global_loads: f64,
    pub global_load_bytes: f64,
    /// Global stores (and atomics) and the bytes they write.
    pub global_stores: f64,
    pub global_store_bytes: f64,
    /// Shared-memory accesses, and the wavefronts they take (more than one per access
    /// when lanes collide on a bank).
    pub shared: f64,
    pub shared_wavefronts: f64,
    pub barriers: f64,
    /// Loop iterations (and straight-line stretches) that wait for global loads.
    pub load_rounds: f64,
    /// Instructions (part of `issue`) that depend on none of their neighbours.
    pub independent: f64,
    /// FLOPs of tensor-core products (`mma.sync`), a thread's share of its warp's,
    /// with TF32 operands and with bf16 or f16 operands.
    #[serde(default)]
    pub tensor_tf32_flops: f64,
    #[serde(default)]
    pub tensor_f16_flops: f64,
    /// Bytes global accesses move beyond what they use: a warp's sectors past the
    /// fewest its bytes fill, 32 bytes each, shared by its 32 threads (uncoalesced
    /// accesses).
    #[serde(default)]
    pub global_excess_bytes: f64,
}

/// A thread's dynamic PTX instructions as code generation counted them: each opcode
/// with how often it runs, plus what the text alone does not tell (load rounds, bank
/// conflicts). Kept raw, so that measured data sets stay valid when the pricing of
/// opcodes ([`Census::of`]) is refined.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstructionMix {
    /// Dynamic count of each opcode (`fma.rn.f32`, `ld.global.nc.f32`, ...).
    pub opcodes: BTreeMap<String, f64>,
    /// Loop iterations (and straight-line stretches) that wait for global loads.
    pub load_rounds: f64,
    /// Shared-memory wavefronts (one per access, more where lanes collide on a bank).
    pub shared_wavefronts: f64,
    /// Instructions that depend on none of their neighbours (a GEMM's products into
    /// separate accumulators), which one warp issues back to back; of `n` interleaved
    /// independent chains (a tile's elements loaded together), all but one share.
    #[serde(default)]
    pub independent: f64,
    /// Bytes global accesses move beyond what they use (see
    /// [`Census::global_excess_bytes`]), as code generation estimated them from one
    /// warp's addresses.
    #[serde(default)]
    pub global_excess_bytes: f64,
}

impl Census {
    /// Adds `scale` times `other`: another piece of code the same threads run (a pass
    /// over more elements than the threads, `scale` elements each).
    pub fn add_scaled(&mut self, other: &Census, scale: f64) {
        let Census {
            issue,
            fp32,
            sfu,
            global_loads,
            global_load_bytes,
            global_stores,
            global_store_bytes,
            shared,
            shared_wavefronts,
            barriers,
            load_rounds,
            independent,
            tensor_tf32_flops,
            tensor_f16_flops,
            global_excess_bytes,
        } = *other;
        self.issue += scale * issue;
        self.fp32 += scale * fp32;
        self.sfu += scale * sfu;
        self.global_loads += scale * global_loads;
        self.global_load_bytes += scale * global_load_bytes;
        self.global_stores += scale * global_stores;
        self.global_store_bytes += scale * global_store_bytes;
        self.shared += scale * shared;
        self.shared_wavefronts += scale * shared_wavefronts;
        self.barriers += scale * barriers;
        self.load_rounds += scale * load_rounds;
        self.independent += scale * independent;
        self.tensor_tf32_flops += scale * tensor_tf32_flops;
        self.tensor_f16_flops += scale * tensor_f16_flops;
        self.global_excess_bytes += scale * global_excess_bytes;
    }

    /// Prices an instruction mix: PTX opcodes as issue slots of the machine code ptxas
    /// makes of them (an IEEE division is a dozen instructions, a division by a
    /// constant a multiply-high and a shift).
    pub fn of(mix: &InstructionMix) -> Census {
        let mut c = Census {
            load_rounds: mix.load_rounds,
            shared_wavefronts: mix.shared_wavefronts,
            independent: mix.independent,
            global_excess_bytes: mix.global_excess_bytes,
            ..Census::default()
        };
        for (opcode, &n) in &mix.opcodes {
            let cost = Cost::of(opcode);
            c.issue += n * cost.issue;
            c.fp32 += n * cost.fp32;
            c.sfu += n * cost.sfu;
            if opcode.starts_with("ld.global") {
                c.global_loads += n;
                c.global_load_bytes += n * access_bytes(opcode);
            } else if let Some(bytes) = copy_bytes(opcode) {
                // A global load and a shared store in one instruction.
                c.global_loads += n;
                c.global_load_bytes += n * bytes;
                c.shared += n;
            } else if ["st.global", "atom.", "red."]
                .iter()
                .any(|p| opcode.starts_with(p))
            {
                c.global_stores += n;
                c.global_store_bytes += n * access_bytes(opcode);
            } else if ["ld.shared", "st.shared", "ldmatrix"]
                .iter()
                .any(|p| opcode.starts_with(p))
            {
                c.shared += n;
            } else if opcode.starts_with("bar.") {
                c.barriers += n;
            } else if let Some((flops, tf32)) = mma_flops(opcode) {
                match tf32 {
                    true => c.tensor_tf32_flops += n * flops,
                    false => c.tensor_f16_flops += n * flops,
                }
            }
        }
        c
    }
}

/// Issue slots, f32 operations and special-function operations of one PTX opcode.
struct Cost {
    issue: f64,
    fp32: f64,
    sfu: f64,
}

impl Cost {
    fn of(opcode: &str) -> Cost {
        let c = |issue: f64, fp32: f64, sfu: f64| Cost { issue, fp32, sfu };
        let head = opcode.split('.').next().unwrap_or("");
        let f32_op = opcode.ends_with(".f32");
        let wide = opcode.ends_with(".s64") || opcode.ends_with(".u64");
        match head {
            // IEEE division, square root and reciprocal: a refined approximation, a
            // dozen instructions around one special-function op.
            "div" if f32_op => c(12.0, 8.0, 1.0),
            "sqrt" | "rcp" if opcode.contains(".rn.") => c(9.0, 6.0, 1.0),
            // Integer division by a constant: multiply-high and shifts (remainders add
            // a multiply-subtract).
            "div" => c(3.0, 0.0, 0.0),
            "rem" => c(4.0, 0.0, 0.0),
            "ex2" | "lg2" | "rsqrt" | "rcp" | "sqrt" | "sin" | "cos" | "tanh" => c(2.0, 0.0, 1.0),
            "cvt" if opcode.contains("f32") => c(1.0, 0.0, 1.0),
            "fma" | "add" | "sub" | "mul" | "max" | "min" | "neg" | "abs" if f32_op => {
                c(1.0, 1.0, 0.0)
            }
            // 64-bit integer arithmetic is two 32-bit halves (a wide multiply more).
            "mul" if wide => c(4.0, 0.0, 0.0),
            _ if wide => c(2.0, 0.0, 0.0),
            // Moves of registers and constants mostly vanish into their users.
            "mov" => c(0.5, 0.0, 0.0),
            _ => c(1.0, 0.0, 0.0),
        }
    }
}

/// A thread's share of the FLOPs of an `mma.sync.aligned.mMnNkK...` opcode (`2 M N K /
/// 32`), and whether its operands are TF32.
fn mma_flops(opcode: &str) -> Option<(f64, bool)> {
    let shape = opcode
        .strip_prefix("mma.sync.aligned.")?
        .split('.')
        .next()?;
    let (m, rest) = shape.strip_prefix('m')?.split_once('n')?;
    let (n, k) = rest.split_once('k')?;
    let [m, n, k] = [m, n, k].map(|d| d.parse::<f64>().unwrap_or(0.0));
    Some((2.0 * m * n * k / 32.0, opcode.contains(".tf32")))
}

/// Bytes one `cp.async` copy moves: `.cg` copies 16 (its only size); code generation
/// copies 4 bytes with `.ca` (the size is an operand, not part of the opcode). `None`
/// for anything else (`commit_group`, `wait_group` included).
fn copy_bytes(opcode: &str) -> Option<f64> {
    if opcode.starts_with("cp.async.cg.") {
        Some(16.0)
    } else if opcode.starts_with("cp.async.ca.") {
        Some(4.0)
    } else {
        None
    }
}

/// Bytes one thread moves with a load or store opcode (`ld.global.nc.v4.f32`: 16).
fn access_bytes(opcode: &str) -> f64 {
    let lanes = if opcode.contains(".v4") {
        4.0
    } else if opcode.contains(".v2") {
        2.0
    } else {
        1.0
    };
    let size = opcode
        .rsplit('.')
        .next()
        .and_then(|t| t.get(1..))
        .and_then(|bits| bits.parse::<f64>().ok())
        .map_or(4.0, |bits| bits / 8.0);
    lanes * size
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(ops: &[(&str, f64)]) -> InstructionMix {
        InstructionMix {
            opcodes: ops.iter().map(|(o, n)| (o.to_string(), *n)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn opcodes_are_priced_as_machine_instructions() {
        let c = Census::of(&mix(&[
            ("div.rn.f32", 1.0),
            ("rem.u32", 2.0),
            ("ex2.approx.f32", 1.0),
            ("add.s64", 1.0),
            ("fma.rn.f32", 10.0),
        ]));
        assert_eq!(c.issue, 12.0 + 8.0 + 2.0 + 2.0 + 10.0);
        assert_eq!(c.sfu, 2.0);
        assert_eq!(c.fp32, 18.0);
    }

    #[test]
    fn tensor_core_products_count_their_flops_by_operand_type() {
        let c = Census::of(&mix(&[
            ("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32", 3.0),
            ("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", 2.0),
        ]));
        assert_eq!(c.tensor_tf32_flops, 3.0 * 64.0);
        assert_eq!(c.tensor_f16_flops, 2.0 * 128.0);
        assert_eq!(c.issue, 5.0);
        assert_eq!(c.fp32, 0.0);
    }

    #[test]
    fn memory_opcodes_count_their_bytes() {
        let c = Census::of(&mix(&[
            ("ld.global.nc.v4.f32", 2.0),
            ("ld.global.s64", 1.0),
            ("st.global.f32", 3.0),
            ("ld.shared.v4.f32", 4.0),
            ("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16", 2.0),
            ("bar.sync", 1.0),
        ]));
        assert_eq!(c.global_loads, 3.0);
        assert_eq!(c.global_load_bytes, 2.0 * 16.0 + 8.0);
        assert_eq!(c.global_store_bytes, 12.0);
        assert_eq!(c.shared, 4.0 + 2.0);
        assert_eq!(c.barriers, 1.0);
    }

    #[test]
    fn async_copies_load_global_and_store_shared_bytes() {
        let c = Census::of(&mix(&[
            ("cp.async.ca.shared.global", 8.0),
            ("cp.async.cg.shared.global", 2.0),
            ("cp.async.commit_group", 1.0),
            ("cp.async.wait_group", 1.0),
        ]));
        assert_eq!(c.global_loads, 10.0);
        assert_eq!(c.global_load_bytes, 8.0 * 4.0 + 2.0 * 16.0);
        assert_eq!(c.shared, 10.0);
        // Every instruction issues once.
        assert_eq!(c.issue, 12.0);
    }
}
