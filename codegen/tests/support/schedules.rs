//! Schedules for the GEMM tests: a one-kernel plan under a given schedule, and runs of
//! a GEMM under every tile shape and split (FMA and tensor cores) on the simulator.

use super::{check, check_tensors, graph, single_kernel, tensors};
use calib_codegen::{compile, Family};
use calib_ir::{
    gemm_anchor, Anchor, DType, GemmDims, GemmInstruction, GemmSchedule, Graph, Op, Program,
    Schedule,
};
use calib_runtime::HostTensor;
use std::collections::BTreeMap;

/// `program`'s one kernel under `schedule`, with a workspace when it splits k.
pub fn scheduled(mut program: Program, schedule: GemmSchedule) -> Program {
    let kernel = &mut program.kernels[0];
    let anchor = gemm_anchor(&kernel.body).expect("a GEMM kernel");
    let dims = GemmDims::of(&kernel.body, anchor).expect("GEMM dims");
    kernel.schedule = Some(Schedule::gemm(schedule));
    program.add_workspace(0, schedule.workspace_bytes(&dims));
    program.validate().expect("a scheduled plan is valid");
    program
}

pub fn schedule(block_m: usize, block_n: usize, split_k: usize) -> GemmSchedule {
    GemmSchedule {
        block_m,
        block_n,
        block_k: GemmSchedule::depth(block_m, block_n),
        split_k,
        instruction: Default::default(),
        stages: 2,
    }
}

/// Every tile shape, unsplit and split in two and three (three does not divide the
/// k steps of the problems below, so the last slice is short).
pub fn every_schedule(src: &str, anchor: Anchor) {
    let g = graph(src);
    let unsplit = compile(&single_kernel(&g, anchor)).unwrap().kernels.len();
    for (bm, bn) in GemmSchedule::TILES {
        for (split, deeper) in [(1, false), (2, false), (3, false), (1, true), (2, true)] {
            let mut s = schedule(bm, bn, split);
            if deeper {
                s.block_k = (2 * s.block_k).min(32);
            }
            if s.check(&GemmDims::of(&g, gemm_anchor(&g).unwrap()).unwrap())
                .is_err()
            {
                continue;
            }
            let program = scheduled(single_kernel(&g, anchor), s);
            let compiled = compile(&program).unwrap();
            assert_eq!(compiled.kernels[0].family, Family::Gemm);
            // A split leaves the epilogue to a launch that sums the slices (which may
            // also be the one that reduces over the result).
            let launches = compiled.kernels.len();
            assert!(
                (unsplit..=unsplit + 1).contains(&launches),
                "{bm}x{bn} split {split}: {launches} launches"
            );
            assert_eq!(
                compiled.kernels[0]
                    .ptx
                    .contains("partial sums of its anchor"),
                split > 1
            );
            check(&g, &program, 5, 1e-5);
        }
    }
}

/// f32 `x` rounded to what `instruction` multiplies: TF32 to nearest with ties away
/// (`cvt.rna`), bf16 to nearest even.
pub fn representable(x: f32, instruction: GemmInstruction) -> f32 {
    let b = x.to_bits();
    f32::from_bits(match instruction {
        GemmInstruction::MmaTf32 => (b + 0x1000) & !0x1fff,
        GemmInstruction::MmaBf16 => (b + 0x7fff + ((b >> 16) & 1)) & 0xffff_0000,
        GemmInstruction::Fma => b,
    })
}

/// Inputs and parameters of `g` whose values tensor cores multiply exactly (bf16 ones
/// as bf16 tensors).
pub fn tensor_core_inputs(g: &Graph, instruction: GemmInstruction) -> BTreeMap<String, HostTensor> {
    let bf16: Vec<String> = g
        .nodes
        .iter()
        .filter(|n| n.ty.dtype == DType::BF16)
        .filter_map(|n| match &n.op {
            Op::Input { name } | Op::Param { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    tensors(g, 7, 3)
        .into_iter()
        .map(|(name, t)| match t.dtype() {
            DType::F32 => {
                let v = t
                    .to_f32_vec()
                    .iter()
                    .map(|&x| representable(x, instruction))
                    .collect();
                let t = HostTensor::from_f32(t.shape().to_vec(), v).unwrap();
                match bf16.contains(&name) {
                    true => (name, t.cast(DType::BF16)),
                    false => (name, t),
                }
            }
            _ => (name, t),
        })
        .collect()
}

/// Every tile shape on tensor cores, TF32 and bf16, unsplit and split, double-buffered
/// and pipelined through three and four stages: on operands the instruction represents
/// exactly the products are exact, so only the order of the f32 additions differs from
/// the reference. Pipelined kernels copy an operand read straight from a buffer with
/// `cp.async` when `instructions` say they do (f32 buffers under TF32, bf16 buffers in
/// runs along the tile's width or along `k`); bf16 kernels read fragments with
/// `ldmatrix`.
pub fn every_schedule_on_tensor_cores(
    src: &str,
    anchor: Anchor,
    instructions: &[(GemmInstruction, bool)],
) {
    let g = graph(src);
    let dims = GemmDims::of(&g, gemm_anchor(&g).unwrap()).unwrap();
    for &(instruction, copies) in instructions {
        let inputs = tensor_core_inputs(&g, instruction);
        for stages in GemmSchedule::STAGES {
            let mut ran = 0;
            for (bm, bn) in GemmSchedule::TILES {
                for (split, block_k) in [(1, 16), (3, 16), (2, 32), (1, 8)] {
                    let s = GemmSchedule {
                        block_k,
                        instruction,
                        stages,
                        ..schedule(bm, bn, split)
                    };
                    if s.check(&dims).is_err() {
                        continue;
                    }
                    let program = scheduled(single_kernel(&g, anchor), s);
                    let compiled = compile(&program).unwrap();
                    let ptx = &compiled.kernels[0].ptx;
                    let label = format!(
                        "{bm}x{bn}x{block_k} split {split} {instruction:?} stages {stages}"
                    );
                    assert!(ptx.contains("mma.sync.aligned"), "{label}: no mma");
                    let bf16 = instruction == GemmInstruction::MmaBf16;
                    // A source copies where its runs give every thread a whole share
                    // of the tile (or its pairs are worth copying); runs along `k` go
                    // to a tile that keeps its `k` adjacent.
                    let body = &program.kernels[0].body;
                    let anchor_value = gemm_anchor(body).unwrap();
                    let sources = [(0, bm), (1, bn)].map(|(i, width)| {
                        calib_ir::copy_source(body, anchor_value, i, instruction, &[])
                            .filter(|_| stages > 2 && copies)
                            .filter(|c| c.grain(block_k, width, 256).is_some())
                    });
                    let copied = sources.iter().any(Option::is_some);
                    let k_inner = sources.map(|c| c.is_some_and(|c| c.along_k));
                    assert_eq!(
                        ptx.contains("cp.async.shared") || ptx.contains("cp.async.c"),
                        copied,
                        "{label}"
                    );
                    // bf16 fragments come by `ldmatrix`, transposed from `[k][width]`
                    // tiles, as they lie from tiles that keep their `k` adjacent.
                    let matrices = |x: usize, k_inner: bool| {
                        let trans = if k_inner { "" } else { ".trans" };
                        ptx.contains(&format!(
                            "ldmatrix.sync.aligned.m8n8.x{x}{trans}.shared.b16"
                        ))
                    };
                    assert_eq!(
                        matrices(4, k_inner[0]) && matrices(2, k_inner[1]),
                        bf16,
                        "{label}"
                    );
                    if copied {
                        let wait = format!("cp.async.wait_group {}", stages - 2);
                        assert!(ptx.contains(&wait), "{label}: no {wait}");
                    }
                    if split > 1 {
                        // The planner prices (and fits to a device) the operand tiles
                        // by the schedule's own figure.
                        assert_eq!(
                            compiled.kernels[0].shared_bytes,
                            s.operand_bytes_with(k_inner),
                            "{label}"
                        );
                    }
                    check_tensors(&g, &program, &inputs, 1e-5);
                    ran += 1;
                }
            }
            assert!(
                ran >= GemmSchedule::TILES.len(),
                "{instruction:?} stages {stages}: {ran} schedules ran"
            );
        }
    }
}
