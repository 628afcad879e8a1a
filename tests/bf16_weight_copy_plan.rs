//! The SCNet-50 bf16 training step (batch 64) as planned: with the rounded weights
//! carried (`passes::precision::apply_step`), no kernel is left that only rounds a
//! master weight, and each weight's rounded copy is written by the kernel that writes
//! its SGD update, from the value it has just computed.

use calib::ir::{DType, Mode, Op, Precision, Program, Role};
use calib::passes::fusion::{fuse, FusionOptions};
use calib::passes::precision::{apply, apply_step, weight_copy_name};
use calib::passes::{train_step, TrainConfig};

/// Kernels whose body only loads and casts (a rounding and nothing else) and that read
/// a param buffer.
fn casts_of_params(p: &Program) -> Vec<String> {
    p.kernels
        .iter()
        .filter(|k| {
            k.body
                .nodes
                .iter()
                .all(|n| matches!(n.op, Op::Input { .. } | Op::Cast { .. }))
        })
        .filter(|k| k.inputs.iter().any(|b| p.buffer(*b).role == Role::Param))
        .map(|k| k.label.clone())
        .collect()
}

/// The kernel writing program output `name`.
fn writer<'p>(p: &'p Program, name: &str) -> &'p str {
    let buffer = p.outputs.iter().find(|o| o.name == name).unwrap().buffer;
    let k = p
        .kernels
        .iter()
        .find(|k| k.outputs.iter().any(|o| o.buffer == buffer));
    &k.unwrap_or_else(|| panic!("no kernel writes {name}")).name
}

#[test]
fn the_update_kernels_write_the_rounded_copies_and_no_kernel_rounds_a_master_weight() {
    let spec = calib::models::presets::preset("scnet50").unwrap();
    let model = calib::models::build(&spec, &[64, 3, 224, 224], Mode::Train, DType::F32).unwrap();
    let plain = train_step(&model.graph, &TrainConfig::default()).unwrap();
    let step = apply_step(&plain, Precision::Bf16).unwrap();
    let options = FusionOptions {
        precision: Precision::Bf16,
        ..FusionOptions::default()
    };
    let program = fuse(&step.graph, &options).unwrap().program;
    // The per-step rounding's plan, for contrast: a rounding kernel per weight.
    let per_step = apply(&plain.graph, Precision::Bf16).unwrap();
    let before = casts_of_params(&fuse(&per_step, &options).unwrap().program);
    eprintln!(
        "kernels that only round a param: {} rounding every step, {} carried; {} kernels",
        before.len(),
        casts_of_params(&program).len(),
        program.kernels.len()
    );
    assert!(before.len() > 80, "{before:?}");

    // Every convolution weight and the classifier's.
    assert!(step.copies.len() > 80, "{} copies", step.copies.len());
    let rounding = casts_of_params(&program);
    assert!(rounding.is_empty(), "kernels rounding params: {rounding:?}");
    for name in &step.copies {
        let copy = writer(&program, &weight_copy_name(name));
        assert_eq!(
            copy,
            writer(&program, name),
            "{name}: copy and update apart"
        );
    }
}
