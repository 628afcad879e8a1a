//! Every kernel of the SCNet-50 and ResNet-50 training steps (batch 64, 224x224, f32),
//! fused and unfused, and of every test plan, assembled by NVIDIA's ptxas for sm_80 and
//! sm_90. Pointwise and reduction kernels must not spill.
//!
//! ptxas comes from the `nvidia-cuda-nvcc-cu12` wheel (`scripts/setup.sh`); without it
//! these tests fail, unless `CALIB_SKIP_PTXAS=1` says to skip them.

mod support;

use calib_codegen::{compile, CompiledProgram, Family};
use calib_ir::{Anchor, DType, Mode, Program};
use calib_passes::fusion::{fuse, unfused, FusionOptions};
use calib_passes::{train_step, TrainConfig};
use calib_runtime::sim::ptxas;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// The ptxas to use, or `None` when the tests are told to skip.
fn ptxas_binary() -> Option<PathBuf> {
    if std::env::var("CALIB_SKIP_PTXAS").is_ok_and(|v| v == "1") {
        eprintln!("CALIB_SKIP_PTXAS=1: not assembling");
        return None;
    }
    match ptxas::find_ptxas() {
        Ok(p) => Some(p),
        Err(e) => panic!("{e}\n(set CALIB_SKIP_PTXAS=1 to skip the ptxas tests)"),
    }
}

/// Assembles every distinct kernel of `compiled` for sm_80 and sm_90; returns the
/// resources per kernel name for sm_80.
fn assemble(label: &str, compiled: &CompiledProgram) -> Option<HashMap<String, ptxas::KernelResources>> {
    let binary = ptxas_binary()?;
    let (module, representative) = compiled.distinct_module();
    let distinct: std::collections::HashSet<&String> = representative.iter().collect();
    let mut sm80 = HashMap::new();
    for arch in ["sm_80", "sm_90"] {
        let start = Instant::now();
        let report = ptxas::assemble_with(&binary, &module, arch).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(report.kernels.len(), distinct.len(), "{label}: ptxas reported every kernel");
        eprintln!("{label}: {} kernels ({} distinct) assembled for {arch} in {:.1?}", compiled.kernels.len(), distinct.len(), start.elapsed());
        if arch == "sm_80" {
            sm80 = report.kernels.into_iter().map(|k| (k.name.clone(), k)).collect();
        }
    }
    Some(
        compiled
            .kernels
            .iter()
            .zip(&representative)
            .map(|(k, r)| (k.name.clone(), sm80[r].clone()))
            .collect(),
    )
}

/// Assembles `program` and checks that no pointwise or reduction kernel spills.
fn assemble_plan(label: &str, program: &Program) {
    let start = Instant::now();
    let compiled = compile(program).unwrap_or_else(|e| panic!("{label}: {e}"));
    eprintln!("{label}: code generation {:.1?}", start.elapsed());
    let Some(resources) = assemble(label, &compiled) else { return };
    for k in &compiled.kernels {
        let r = &resources[&k.name];
        if matches!(k.family, Family::Pointwise | Family::Reduction) {
            assert_eq!((r.spill_store_bytes, r.spill_load_bytes), (0, 0), "{label}: {} ({}) spills", k.name, k.family.name());
        }
    }
}

fn training_step(preset: &str) -> calib_ir::Graph {
    let spec = calib_models::presets::preset(preset).expect("preset");
    let model = calib_models::build(&spec, &[64, 3, 224, 224], Mode::Train, DType::F32).unwrap();
    train_step(&model.graph, &TrainConfig::default()).unwrap().graph
}

#[test]
fn scnet50_training_step_assembles() {
    let graph = training_step("scnet50");
    assemble_plan("scnet50 unfused", &unfused(&graph).unwrap());
    assemble_plan("scnet50 fused", &fuse(&graph, &FusionOptions::default()).unwrap().program);
}

#[test]
fn resnet50_training_step_assembles() {
    let graph = training_step("resnet50");
    assemble_plan("resnet50 unfused", &unfused(&graph).unwrap());
    assemble_plan("resnet50 fused", &fuse(&graph, &FusionOptions::default()).unwrap().program);
}
