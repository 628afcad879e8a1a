//! `calib train` keeps checkpoints it can continue from: a diverging run stops, naming
//! the step and the learning rate, before a non-finite state is saved; the checkpoints
//! before the newest are kept to roll back to; a poisoned newest one is passed over.

mod support;

use calib::runtime::{weights, HostTensor};
use std::fs;
use std::path::Path;
use support::train::{files, first_non_finite, ok, resume, run, stderr, step_of, tensors};

/// A first step whose update overflows the weights while its loss, computed before the
/// update, is an ordinary 2.3: weight decay 1e35 at a learning rate of 1e10 moves every
/// weight by about 1e45 times itself, past f32's 3.4e38.
const OVERFLOW: &[&str] = &[
    "--lr",
    "1e10",
    "--weight-decay",
    "1e35",
    "--warmup-epochs",
    "0",
];

fn assert_stopped(o: &std::process::Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(2), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "expected `{needle}` in: {err}");
    }
}

fn checkpoints(dir: &Path) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|f| f.starts_with("checkpoint"))
        .collect()
}

#[test]
fn an_update_that_leaves_the_state_non_finite_is_never_saved() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = run(
        &out,
        &[OVERFLOW, &["--checkpoint-every", "1", "--max-steps", "4"]].concat(),
    );
    assert_stopped(
        &o,
        &[
            "training diverged at step 1 (learning rate 1e10)",
            "non-finite, and its checkpoint was not saved",
            "--overwrite",
        ],
    );
    assert_eq!(checkpoints(&out), Vec::<String>::new());
    assert!(!out.join("model.safetensors").exists());
}

#[test]
fn with_check_finite_the_first_op_that_made_a_nan_or_an_infinity_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &dir.path().join("run"),
        &[OVERFLOW, &["--check-finite", "--max-steps", "2"]].concat(),
    );
    assert_stopped(
        &o,
        &[
            "training diverged at step 1 (learning rate 1e10): node %",
            "the output went non-finite",
        ],
    );
}

/// The run: `--lr 1000 --checkpoint-every 1`. Its loss explodes at once; the run
/// stops there, every checkpoint it kept is finite, and the run continues from them at
/// a rate that suits it.
#[test]
fn a_run_whose_loss_explodes_stops_with_finite_checkpoints_to_continue_from() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = run(
        &out,
        &[
            "--lr",
            "1000",
            "--checkpoint-every",
            "1",
            "--max-steps",
            "8",
        ],
    );
    assert_stopped(
        &o,
        &["training diverged at step ", "(learning rate ", "--resume"],
    );
    // Step 1 starts from the initial weights, so its loss is ordinary and it is saved.
    let kept = checkpoints(&out);
    assert!(!kept.is_empty(), "no checkpoint kept: {}", stderr(&o));
    for name in &kept {
        assert_eq!(first_non_finite(&out.join(name)), None, "{name}");
    }
    let config = out.join("config.json");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, text.replace("\"lr\": 1000.0", "\"lr\": 0.05")).unwrap();
    let o = resume(&out, &["--max-steps", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(first_non_finite(&out.join("model.safetensors")), None);
}

#[test]
fn older_checkpoints_are_kept_and_renaming_one_over_the_newest_rolls_the_run_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let steps = ["--checkpoint-every", "1", "--max-steps", "4"];
    ok(&out, &[&steps[..], &["--keep-checkpoints", "3"]].concat());
    let generations = [
        "checkpoint.safetensors",
        "checkpoint.1.safetensors",
        "checkpoint.2.safetensors",
    ];
    assert_eq!(checkpoints(&out), {
        let mut g = generations.map(String::from).to_vec();
        g.sort();
        g
    });
    let saved: Vec<Vec<u8>> = generations
        .iter()
        .map(|g| fs::read(out.join(g)).unwrap())
        .collect();
    let steps_kept: Vec<i64> = generations.iter().map(|g| step_of(&out.join(g))).collect();
    assert_eq!(steps_kept, [4, 3, 2]);

    // The README's roll back: the step before the newest becomes the newest.
    fs::rename(out.join(generations[1]), out.join(generations[0])).unwrap();
    let o = resume(&out, &["--max-steps", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("from step 3"), "{}", stderr(&o));
    // Training is a function of the seed and the step: the same step 4 again, and the
    // same three generations.
    for (g, bytes) in generations.iter().zip(&saved) {
        assert!(fs::read(out.join(g)).unwrap() == *bytes, "{g} differs");
    }
}

#[test]
fn a_newest_checkpoint_holding_a_nan_is_passed_over_and_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    ok(&out, &["--checkpoint-every", "1", "--max-steps", "3"]);
    let newest = out.join("checkpoint.safetensors");
    let good = fs::read(&newest).unwrap();
    // What an older calib could save: a NaN in the state.
    let mut all = tensors(&newest);
    let bias = &all["fc.bias"];
    let mut values = bias.to_f32_vec();
    values[0] = f32::NAN;
    all.insert(
        "fc.bias".into(),
        HostTensor::from_f32(bias.shape().to_vec(), values).unwrap(),
    );
    weights::save(&newest, &all).unwrap();

    let o = resume(&out, &["--max-steps", "3"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("`fc.bias` is not finite") && err.contains("from step 2"),
        "{err}"
    );
    let aside = out.join("checkpoint.safetensors.rejected");
    assert_eq!(first_non_finite(&aside).as_deref(), Some("fc.bias"));
    // Step 3 again, from step 2: the checkpoint the poisoned one replaced.
    assert!(fs::read(&newest).unwrap() == good, "step 3 differs");
}
