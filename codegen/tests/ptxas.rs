//! Every kernel of the SCNet-50 and ResNet-50 training steps (batch 64, 224x224, f32),
//! fused and unfused, and fused with tensor cores under the TF32 and bf16 policies,
//! assembled by NVIDIA's ptxas for sm_80 and sm_90; pointwise and reduction kernels
//! must not spill; and the tf32 and bf16 steps with channels-last temporaries. (Every test plan is
//! assembled too: see `support::simulate`.)
//!
//! ptxas comes from the `nvidia-cuda-nvcc-cu12` wheel (`scripts/setup.sh`); without it
//! these tests fail, unless `CALIB_SKIP_PTXAS=1` says to skip them.

mod support;

use calib_codegen::{compile, Family};
use calib_ir::{DType, GemmInstruction, Graph, Mode, Precision, Program};
use calib_passes::fusion::{fuse, unfused, FusionOptions, LayoutPolicy};
use calib_passes::{train_step, TrainConfig};
use std::time::Instant;

/// Assembles `program` and checks that no pointwise or reduction kernel spills.
fn assemble_plan(label: &str, program: &Program) {
    let start = Instant::now();
    let compiled = compile(program).unwrap_or_else(|e| panic!("{label}: {e}"));
    let Some(resources) = support::assemble(label, &compiled) else {
        eprintln!("{label}: CALIB_SKIP_PTXAS=1, not assembled");
        return;
    };
    eprintln!(
        "{label}: {} launches compiled and assembled in {:.1?}",
        compiled.kernels.len(),
        start.elapsed()
    );
    for k in &compiled.kernels {
        let r = &resources[&k.name];
        if matches!(k.family, Family::Pointwise | Family::Reduction) {
            let spills = (r.spill_store_bytes, r.spill_load_bytes);
            assert_eq!(
                spills,
                (0, 0),
                "{label}: {} ({}) spills: {r:?}\n{}",
                k.name,
                k.family.name(),
                k.ptx.lines().next().unwrap_or_default()
            );
        }
    }
}

fn training_step(preset: &str) -> Graph {
    let spec = calib_models::presets::preset(preset).expect("preset");
    let model = calib_models::build(&spec, &[64, 3, 224, 224], Mode::Train, DType::F32).unwrap();
    train_step(&model.graph, &TrainConfig::default())
        .unwrap()
        .graph
}

#[test]
fn scnet50_training_step_fused() {
    let program = fuse(&training_step("scnet50"), &FusionOptions::default())
        .unwrap()
        .program;
    assemble_plan("scnet50 fused", &program);
}

#[test]
fn scnet50_training_step_unfused() {
    assemble_plan(
        "scnet50 unfused",
        &unfused(&training_step("scnet50")).unwrap(),
    );
}

#[test]
fn resnet50_training_step_fused() {
    let program = fuse(&training_step("resnet50"), &FusionOptions::default())
        .unwrap()
        .program;
    assemble_plan("resnet50 fused", &program);
}

#[test]
fn resnet50_training_step_unfused() {
    assemble_plan(
        "resnet50 unfused",
        &unfused(&training_step("resnet50")).unwrap(),
    );
}

/// The fused step of `preset` under each reduced precision, laid out as `layout` says
/// and prepared as the device backends prepare it.
fn reduced_precision_plans(preset: &str, layout: LayoutPolicy) -> Vec<(Precision, Program)> {
    let step = training_step(preset);
    [Precision::Tf32, Precision::Bf16]
        .into_iter()
        .map(|precision| {
            let graph = calib_passes::precision::apply(&step, precision).unwrap();
            let options = FusionOptions {
                precision,
                layout,
                ..FusionOptions::default()
            };
            let graph = calib_passes::fusion::prepare(&graph, &options).unwrap();
            (precision, fuse(&graph, &options).unwrap().program)
        })
        .collect()
}

/// The fused step under a reduced precision: the policy's casts in the plan
/// (`cvt.rna.tf32.f32`, `cvt.rn.bf16x2.f32`, bf16 loads and stores) and most GEMMs on
/// tensor cores (`mma.sync`).
fn assemble_on_tensor_cores(preset: &str) {
    for (precision, program) in reduced_precision_plans(preset, LayoutPolicy::RowMajor) {
        let casts = program
            .kernels
            .iter()
            .flat_map(|k| &k.body.nodes)
            .filter(|n| matches!(n.op, calib_ir::Op::Cast { .. }))
            .count();
        assert!(
            casts > 0,
            "{preset} {precision}: the plan lost the policy's casts"
        );
        let on_tensor_cores = program
            .kernels
            .iter()
            .filter_map(|k| k.schedule.and_then(|s| s.gemm))
            .filter(|g| g.instruction != GemmInstruction::Fma)
            .count();
        assert!(
            on_tensor_cores > 50,
            "{preset} {precision}: {on_tensor_cores} mma GEMMs"
        );
        assemble_plan(&format!("{preset} fused {precision}"), &program);
    }
}

#[test]
fn scnet50_training_step_on_tensor_cores() {
    assemble_on_tensor_cores("scnet50");
}

#[test]
fn resnet50_training_step_on_tensor_cores() {
    assemble_on_tensor_cores("resnet50");
}

/// The tf32 and bf16 SCNet-50 and ResNet-50 steps with their image-shaped temporaries
/// stored channels-last (the layout `auto` picks for them), prepared as the device
/// backends prepare them (the stem's image padded to four channels): every kernel
/// addresses them NHWC (the conversions sit in the kernels that read the NCHW input or
/// write NCHW outputs), and TF32 tiles copied in runs are read by `ldmatrix`.
fn assemble_channels_last(preset: &str) {
    for (precision, program) in reduced_precision_plans(preset, LayoutPolicy::ChannelsLast) {
        let stored = program
            .buffers
            .iter()
            .filter(|b| b.layout == calib_ir::Layout::ChannelsLast)
            .count();
        assert!(
            stored > 50,
            "{preset} {precision}: {stored} channels-last buffers"
        );
        assemble_plan(
            &format!("{preset} fused {precision} channels_last"),
            &program,
        );
    }
}

#[test]
fn scnet50_training_step_channels_last() {
    assemble_channels_last("scnet50");
}

#[test]
fn resnet50_training_step_channels_last() {
    assemble_channels_last("resnet50");
}
