//! Tiny `calib train` runs (a slice of Fashion-MNIST, a few steps of 32 images) and
//! what the tests look at in their run directories.

use super::calib;
use calib::runtime::{weights, Finiteness, TensorMap};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

/// 256 training images: 8 steps an epoch.
const QUICK: &[(&str, &str)] = &[
    ("--batch", "32"),
    ("--train-limit", "256"),
    ("--test-limit", "200"),
    ("--eval-batch", "100"),
    ("--log-every", "2"),
];

/// `calib train` with the quick settings (those of them that `extra` does not set),
/// writing into `out`, and `extra`.
pub fn run(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--out", out.to_str().unwrap()];
    for &(flag, value) in QUICK {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend(extra);
    calib(&args)
}

/// [`run`], which must succeed.
pub fn ok(out: &Path, extra: &[&str]) -> Output {
    let o = run(out, extra);
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

/// `calib train --resume dir` and `extra`.
pub fn resume(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--resume", dir.to_str().unwrap()];
    args.extend(extra);
    calib(&args)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file in `dir` by name, with its contents.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// The names of the files in `dir`, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    snapshot(dir).into_keys().collect()
}

/// Every tensor of a checkpoint or model file.
pub fn tensors(path: &Path) -> TensorMap {
    weights::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The step a checkpoint was saved at.
pub fn step_of(checkpoint: &Path) -> i64 {
    tensors(checkpoint)["calib.step"].as_i64().unwrap()[0]
}

/// The first tensor of a file holding a NaN or an infinity.
pub fn first_non_finite(path: &Path) -> Option<String> {
    tensors(path)
        .into_iter()
        .find(|(_, t)| !Finiteness::of(t).is_finite())
        .map(|(name, _)| name)
}
