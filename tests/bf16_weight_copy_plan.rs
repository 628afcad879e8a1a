//! The SCNet-50 bf16 training step (batch 64) as planned: with the rounded weights
//! carried (`passes::precision::apply_step`), no kernel is left that only rounds a
//! master weight, and each weight's rounded copy is a bf16 buffer written by the kernel
//! that writes its SGD update, from the value it has just computed, and read in place.

use calib::ir::{Anchor, BufferId, DType, Mode, Op, Precision, Program, Role};
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
    // The copies are bf16 buffers, read in place by the GEMMs (widened as loaded, not
    // by a kernel storing them in f32: that would be a kernel rounding a param above),
    // and written as bf16 by the update.
    for name in &step.copies {
        let copy_name = weight_copy_name(name);
        let param = (0..program.buffers.len())
            .map(BufferId)
            .find(|&b| program.buffer(b).role == Role::Param && program.buffer(b).name == copy_name)
            .unwrap_or_else(|| panic!("no param {copy_name}"));
        assert_eq!(program.buffer(param).ty.dtype, DType::BF16, "{copy_name}");
        let output = program
            .outputs
            .iter()
            .find(|o| o.name == copy_name)
            .unwrap();
        assert_eq!(
            program.buffer(output.buffer).ty.dtype,
            DType::BF16,
            "{copy_name}"
        );
        let readers = program.kernels.iter().filter(|k| k.inputs.contains(&param));
        assert!(readers.count() > 0, "no kernel reads {copy_name}");
    }
    // Merged sibling convolutions multiply a concatenation of weight copies: one
    // kernel stores it as one bf16 buffer, which the GEMM reads (and copies) in place
    // of concatenating the copies in its prologue.
    let concatenated: Vec<(&str, BufferId)> = program
        .kernels
        .iter()
        .filter(|k| k.anchor == Anchor::Pointwise)
        .flat_map(|k| {
            k.body
                .outputs
                .iter()
                .zip(&k.outputs)
                .filter_map(move |(o, out)| {
                    let n = k.body.node(o.value);
                    let copies = n.inputs.iter().all(|&x| {
                        matches!(k.body.node(x).op, Op::Input { .. })
                            && k.body.ty(x).dtype == DType::BF16
                    });
                    (n.op == (Op::Concat { axis: 0 }) && copies)
                        .then_some((k.label.as_str(), out.buffer))
                })
        })
        .collect();
    assert!(!concatenated.is_empty(), "no weight copies concatenated");
    for (label, buffer) in concatenated {
        assert_eq!(program.buffer(buffer).ty.dtype, DType::BF16, "{label}");
        let read = program
            .kernels
            .iter()
            .any(|g| g.anchor == Anchor::Convolution && g.inputs.contains(&buffer));
        assert!(read, "no convolution reads {label}'s concatenation");
    }
    for name in &step.copies {
        let copy = writer(&program, &weight_copy_name(name));
        assert_eq!(
            copy,
            writer(&program, name),
            "{name}: copy and update apart"
        );
    }
}
