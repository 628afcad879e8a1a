//! A bf16 training step whose GEMMs read carried weight copies
//! (`passes::precision::apply_step`) against the same step rounding every master weight
//! afresh (`passes::precision::apply`): several SGD steps through sessions and through
//! the per-step run loop give the same bits, and the copies a session carries are the
//! master weights rounded, from a fresh state and from a checkpoint's (no copies).

mod support;

use calib::ir::Precision;
use calib::passes::fusion::FusionOptions;
use calib::passes::precision::{apply, apply_step, weight_copy_name};
use calib::passes::TrainStep;
use calib::runtime::{Backend, HostTensor, Outputs, Reference, TensorMap};
use calib::train::{carry, rounded_copy, SgdState, STEP_FETCH};
use calib::Sim;
use support::data_parallel::SHARD;
use support::session::{
    assert_same_run, batches, bits, plain_step, read_back, run_loop, run_loop_with, session_loop,
    Batch,
};

/// The Fashion-MNIST SCNet's step both ways, each with its state.
fn steps() -> ((TrainStep, SgdState), (TrainStep, SgdState)) {
    let (step, sgd) = plain_step();
    let old = TrainStep {
        graph: apply(&step.graph, Precision::Bf16).unwrap(),
        ..step.clone()
    };
    let new = apply_step(&step, Precision::Bf16).unwrap();
    assert!(!new.copies.is_empty());
    let new_sgd = SgdState::new(&new, sgd.state.clone());
    ((old, sgd), (new, new_sgd))
}

/// `steps` steps through a session of the carried-copy step, from `sgd`; also the
/// copies the session holds at the end.
fn carried(
    backend: &dyn Backend,
    step: &TrainStep,
    sgd: SgdState,
    batches: &[Batch],
) -> ((Vec<Outputs>, SgdState), TensorMap) {
    let mut session = backend.session(&step.graph, &carry(step), 0).unwrap();
    session.load(&sgd.resident(step)).unwrap();
    let fetched = batches
        .iter()
        .map(|b| session.step(&b.bindings(), STEP_FETCH).unwrap())
        .collect();
    let names: Vec<String> = step.copies.iter().map(|p| weight_copy_name(p)).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut held = session.read(&names).unwrap();
    let copies = step
        .copies
        .iter()
        .map(|p| (p.clone(), held.remove(&weight_copy_name(p)).unwrap()))
        .collect();
    let mut state = sgd;
    read_back(session.as_mut(), step, &mut state);
    ((fetched, state), copies)
}

/// The carried copies (by parameter name) are the final master weights rounded, to the
/// bit, and so are those `sgd` holds.
fn assert_copies_are_the_weights_rounded(step: &TrainStep, sgd: &SgdState, copies: &TensorMap) {
    for name in &step.copies {
        let want = rounded_copy(&sgd.state[name]);
        assert_eq!(bits(&copies[name]), bits(&want), "{name}");
        assert_eq!(bits(&sgd.copies[name]), bits(&want), "{name} read back");
    }
}

/// The run loop with every step's copies rounded on the host from the master weights
/// (as a fresh `SgdState` makes them), not taken from the step's outputs.
fn rounding_on_the_host(
    backend: &dyn Backend,
    step: &TrainStep,
    sgd: SgdState,
    batches: &[Batch],
) -> (Vec<Outputs>, SgdState) {
    run_loop_with(backend, step, sgd, batches, |sgd| {
        sgd.copies = SgdState::new(step, sgd.state.clone()).copies;
    })
}

/// On `backend`, `n` steps of the carried-copy step: through a session (from a fresh
/// state, and from a checkpoint's state without copies) and through the run loop
/// (bindings and absorb) they give the bits of rounding every master weight afresh on
/// the host before each step, and the copies carried are the weights rounded.
fn carried_copies_are_the_weights_rounded(backend: &dyn Backend, n: usize) {
    let (_, (new, new_sgd)) = steps();
    let batches = batches(SHARD, n, 21);
    let want = rounding_on_the_host(backend, &new, new_sgd.clone(), &batches);

    let (got, copies) = carried(backend, &new, new_sgd.clone(), &batches);
    assert_same_run(&got, &want);
    assert_copies_are_the_weights_rounded(&new, &got.1, &copies);

    let checkpoint = SgdState {
        copies: TensorMap::new(),
        ..new_sgd.clone()
    };
    let (got, _) = carried(backend, &new, checkpoint, &batches);
    assert_same_run(&got, &want);

    let (out, sgd) = run_loop(backend, &new, new_sgd, &batches);
    assert_same_run(&(out, sgd.clone()), &want);
    assert_copies_are_the_weights_rounded(&new, &sgd, &sgd.copies);
}

/// The reference interpreter computes each graph as written: the carried-copy step
/// gives the per-step rounding's bits, losses, logits, weights and momentum.
#[test]
fn on_the_reference_carried_copies_give_the_per_step_roundings_bits() {
    let ((old, old_sgd), (new, new_sgd)) = steps();
    let batches = batches(SHARD, 4, 21);
    let reference = Reference::new();
    let (want_out, want_state, _) = session_loop(&reference, &old, old_sgd, &batches);
    let (got, _) = carried(&reference, &new, new_sgd, &batches);
    assert_same_run(&got, &(want_out, want_state));
    carried_copies_are_the_weights_rounded(&reference, 4);
}

/// The simulator runs the plans' kernels: the update's kernel writes the copy and the
/// GEMMs read it from a param buffer (slow: two steps a run). The copies are the host's
/// rounding to the bit. Against the per-step rounding's plan the values agree closely
/// but not to the bit: the two graphs are planned apart, and the planner may schedule
/// a GEMM differently (in the Fashion SCNet, one weight gradient's split and tile), which
/// adds the same products in another order.
#[test]
fn on_the_simulator_carried_copies_are_the_update_kernels_rounding() {
    let sim = Sim::with_fusion(FusionOptions {
        precision: Precision::Bf16,
        ..Default::default()
    });
    carried_copies_are_the_weights_rounded(&sim, 2);

    let ((old, old_sgd), (new, new_sgd)) = steps();
    let batches = batches(SHARD, 2, 21);
    let (want_out, want, _) = session_loop(&sim, &old, old_sgd, &batches);
    let ((got_out, got), _) = carried(&sim, &new, new_sgd, &batches);
    for (g, w) in got_out.iter().zip(&want_out) {
        for name in STEP_FETCH {
            assert!(close(&g[*name], &w[*name]), "{name}");
        }
    }
    for (name, w) in &want.state {
        assert!(close(&got.state[name], w), "{name}");
    }
    for (name, w) in &want.momentum {
        assert!(close(&got.momentum[name], w), "momentum of {name}");
    }
}

/// Within `1e-3` of the largest magnitude, elementwise (f32 sums reordered).
fn close(got: &HostTensor, want: &HostTensor) -> bool {
    got.max_abs_diff(want).unwrap() <= 1e-3 * want.max_abs().max(1e-6)
}
