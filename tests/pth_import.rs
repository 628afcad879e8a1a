//! PyTorch checkpoints imported (`calib import`, `runtime::weights::pth`) against what
//! PyTorch itself computed from them: the three files of `../shared/pth` (zip, legacy,
//! and an ImageNet-example checkpoint dict under DataParallel) hold the same weights,
//! and the eval-mode forward of `tiny_scnet` on them reproduces PyTorch's logits.

mod support;

use calib::ir::{DType, Mode};
use calib::models::{build, load_spec_file};
use calib::runtime::weights::{self, pth};
use calib::runtime::{Backend, Bindings, HostTensor, Reference, TensorMap};
use std::path::PathBuf;
use support::{calib, fixture};

const FILES: [&str; 3] = [
    "tiny_scnet.pth",
    "tiny_scnet_legacy.pth",
    "tiny_scnet_checkpoint_dp.pth",
];

fn pth_dir() -> PathBuf {
    fixture("../pth")
}

fn import(file: &str) -> pth::Imported {
    let path = pth_dir().join(file);
    pth::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// max |a - b| and the eval tolerance 1e-4 * max(1, max |reference|).
fn error_and_tolerance(got: &HostTensor, reference: &HostTensor) -> (f64, f64) {
    assert_eq!(got.shape(), reference.shape());
    let (g, r) = (got.to_f64_vec(), reference.to_f64_vec());
    let error = g
        .iter()
        .zip(&r)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let scale = r.iter().map(|x| x.abs()).fold(1.0, f64::max);
    (error, 1e-4 * scale)
}

#[test]
fn every_format_imports_the_same_104_tensors() {
    let plain = import(FILES[0]);
    assert_eq!(plain.format, pth::Format::Zip);
    assert_eq!((plain.entry.as_deref(), plain.stripped), (None, None));
    assert_eq!(plain.tensors.len(), 104);
    let counter = &plain.tensors["bn1.num_batches_tracked"];
    assert_eq!((counter.dtype(), counter.shape()), (DType::I64, &[][..]));
    // Three SGD steps in train mode moved the counters.
    assert_eq!(counter.to_f64_vec(), vec![3.0]);
    assert_eq!(plain.tensors["conv1.weight"].shape(), &[16, 3, 3, 3]);

    let legacy = import(FILES[1]);
    assert_eq!(legacy.format, pth::Format::Legacy);
    assert!(legacy.tensors == plain.tensors, "legacy differs from zip");

    let dp = import(FILES[2]);
    assert_eq!(dp.entry.as_deref(), Some("state_dict"));
    assert_eq!(dp.stripped, Some("module."));
    assert_eq!(
        dp.skipped,
        [
            "epoch = 3",
            "arch = \"tiny_scnet\"",
            "best_acc1 = a tensor [] of FloatStorage",
            "optimizer = a dict of 2"
        ]
    );
    assert!(
        dp.tensors == plain.tensors,
        "checkpoint dict differs from zip"
    );
}

#[test]
fn imported_weights_reproduce_pytorchs_eval_logits() {
    let spec = load_spec_file(pth_dir().join("tiny_scnet_spec.json")).unwrap();
    let io = weights::load(pth_dir().join("eval_io.safetensors")).unwrap();
    let (input, logits) = (&io["input"], &io["logits"]);
    let model = build(&spec.spec, input.shape(), Mode::Eval, DType::F32).unwrap();
    let expected: Vec<_> = model
        .state
        .iter()
        .map(|e| (e.name.clone(), e.ty.clone()))
        .collect();
    for file in FILES {
        let tensors: TensorMap = import(file).tensors;
        weights::check_state(&expected, &tensors).unwrap_or_else(|e| panic!("{file}: {e}"));
        let out = Reference::new()
            .run(
                &model.graph,
                &Bindings::new().params(&tensors).input("input", input),
            )
            .unwrap();
        let (error, tolerance) = error_and_tolerance(&out["logits"], logits);
        eprintln!("{file}: max logit error {error:.3e} (tolerance {tolerance:.3e})");
        assert!(error <= tolerance, "{file}: {error} > {tolerance}");
    }
}

#[test]
fn the_cli_writes_safetensors_checked_against_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.safetensors");
    let file = pth_dir().join(FILES[2]);
    let spec = pth_dir().join("tiny_scnet_spec.json");
    let o = calib(&[
        "import",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--model",
        spec.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("104 tensors") && stdout.contains("`module.` stripped"));
    assert!(weights::load(&out).unwrap() == import(FILES[0]).tensors);

    // Another model: every difference by name, and nothing written.
    let other = dir.path().join("other.safetensors");
    let o = calib(&[
        "import",
        file.to_str().unwrap(),
        "--out",
        other.to_str().unwrap(),
        "--model",
        fixture("scbottleneck_s1").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    for name in [
        "missing",
        "conv1_a.weight",
        "unexpected",
        "layer1.0.conv1_a.weight",
    ] {
        assert!(stderr.contains(name), "`{name}` not in {stderr}");
    }
    assert!(!other.exists());
}
