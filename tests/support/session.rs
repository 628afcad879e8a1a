//! A plain training step and the means to run it step after step, the old way (bind
//! the whole state and absorb the outputs every step) and through a session, shared by
//! the session tests of the CPU backends and the GPU's.

use super::data_parallel::{SHARD, SIDE};
use calib::data::rng::Rng;
use calib::ir::{DType, GraphBuilder, Mode};
use calib::models::{build_with, parse_spec_file};
use calib::passes::{train_step, DataParallelStep, TrainConfig, TrainStep, LR};
use calib::runtime::{
    Backend, Bindings, Collective, HostTensor, InProcess, Outputs, Session, Transfers,
};
use calib::train::{carry, init_state, SgdState, STEP_FETCH};

/// The Fashion-MNIST SCNet's plain training step on 16x16 images, batch `SHARD`.
pub fn plain_step() -> (TrainStep, SgdState) {
    let spec = parse_spec_file(include_str!("../../models/specs/fashion_scnet.json"))
        .unwrap()
        .spec;
    let model = build_with(
        &spec,
        &[SHARD, 1, SIDE, SIDE],
        GraphBuilder::new(Mode::Train, DType::F32),
    )
    .unwrap();
    let step = train_step(&model.graph, &TrainConfig::default()).unwrap();
    let sgd = SgdState::new(&step, init_state(&model.state, &mut Rng::new(3)));
    (step, sgd)
}

/// A different batch and learning rate for every step.
pub struct Batch {
    pub x: HostTensor,
    pub y: HostTensor,
    pub lr: HostTensor,
}

impl Batch {
    pub fn bindings(&self) -> Bindings<'_> {
        Bindings::new()
            .input("input", &self.x)
            .input("labels", &self.y)
            .input(LR, &self.lr)
    }

    pub fn bytes(&self) -> u64 {
        [&self.x, &self.y, &self.lr]
            .iter()
            .map(|t| t.ty().size_bytes() as u64)
            .sum()
    }
}

pub fn batches(rows: usize, steps: usize, seed: u64) -> Vec<Batch> {
    let mut rng = Rng::new(seed);
    (0..steps)
        .map(|s| Batch {
            x: HostTensor::from_f32(
                vec![rows, 1, SIDE, SIDE],
                (0..rows * SIDE * SIDE)
                    .map(|_| rng.unit_f64() as f32)
                    .collect(),
            )
            .unwrap(),
            y: HostTensor::from_i64(
                vec![rows],
                (0..rows).map(|_| rng.below(10) as i64).collect(),
            )
            .unwrap(),
            lr: HostTensor::from_f32(Vec::<usize>::new(), vec![0.05 + 0.02 * s as f32]).unwrap(),
        })
        .collect()
}

/// The per-step loop the trainer ran before sessions: bind everything, absorb outputs.
pub fn run_loop(
    backend: &dyn Backend,
    step: &TrainStep,
    sgd: SgdState,
    batches: &[Batch],
) -> (Vec<Outputs>, SgdState) {
    run_loop_with(backend, step, sgd, batches, |_| {})
}

/// [`run_loop`] with `before` applied to the state ahead of every step.
pub fn run_loop_with(
    backend: &dyn Backend,
    step: &TrainStep,
    mut sgd: SgdState,
    batches: &[Batch],
    mut before: impl FnMut(&mut SgdState),
) -> (Vec<Outputs>, SgdState) {
    let mut fetched = vec![];
    for b in batches {
        before(&mut sgd);
        let mut out = backend
            .run(&step.graph, &sgd.bindings(step, &b.x, &b.y, &b.lr))
            .unwrap();
        sgd.absorb(step, &mut out);
        fetched.push(out);
    }
    (fetched, sgd)
}

/// The same steps through a session; also each step's transfers.
pub fn session_loop(
    backend: &dyn Backend,
    step: &TrainStep,
    mut sgd: SgdState,
    batches: &[Batch],
) -> (Vec<Outputs>, SgdState, Vec<Transfers>) {
    let mut session = backend.session(&step.graph, &carry(step), 0).unwrap();
    session.load(&sgd.resident(step)).unwrap();
    let (mut fetched, mut moved) = (vec![], vec![]);
    for b in batches {
        let before = session.transfers();
        fetched.push(session.step(&b.bindings(), STEP_FETCH).unwrap());
        moved.push(session.transfers() - before);
    }
    read_back(session.as_mut(), step, &mut sgd);
    (fetched, sgd, moved)
}

pub fn read_back(session: &mut dyn Session, step: &TrainStep, sgd: &mut SgdState) {
    let names = SgdState::resident_names(step);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    sgd.take_resident(step, session.read(&names).unwrap());
}

pub fn bits(t: &HostTensor) -> Vec<u64> {
    t.to_f64_vec().iter().map(|v| v.to_bits()).collect()
}

pub fn assert_same_state(got: &SgdState, want: &SgdState) {
    assert_eq!(got.state.len(), want.state.len());
    for (name, w) in &want.state {
        assert_eq!(bits(&got.state[name]), bits(w), "state {name}");
    }
    for (name, w) in &want.momentum {
        assert_eq!(bits(&got.momentum[name]), bits(w), "momentum of {name}");
    }
}

/// Steps a session takes in the comparisons below.
pub const STEPS: usize = 3;

/// Bit-identical to the run loop, and per step only the batch in and the fetched
/// outputs out.
pub fn session_matches_run_loop(backend: &dyn Backend) {
    let (step, sgd) = plain_step();
    let batches = batches(SHARD, STEPS, 5);
    let (want, want_state) = run_loop(backend, &step, sgd.clone(), &batches);
    let (got, got_state, moved) = session_loop(backend, &step, sgd, &batches);
    for (s, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), STEP_FETCH.len(), "step {s} fetched {:?}", g.keys());
        for name in STEP_FETCH {
            assert_eq!(bits(&g[*name]), bits(&w[*name]), "step {s}: {name}");
        }
    }
    assert_same_state(&got_state, &want_state);
    let fetched_bytes: u64 = STEP_FETCH
        .iter()
        .map(|n| want[0][*n].ty().size_bytes() as u64)
        .sum();
    for (m, b) in moved.iter().zip(&batches) {
        assert_eq!(
            m.uploaded_bytes,
            b.bytes(),
            "{}: uploads per step",
            backend.name()
        );
        assert_eq!(
            m.downloaded_bytes,
            fetched_bytes,
            "{}: downloads per step",
            backend.name()
        );
    }
}

/// Data-parallel replicas, each with a session of its own, a fresh group per step.
pub fn replica_sessions(backend: &dyn Backend, dp: &DataParallelStep, replicas: usize) {
    let start = super::data_parallel::start(dp, replicas);
    // Two steps: the second starts from carried state (the simulator is slow).
    let batches = batches(SHARD * replicas, 2, 9);
    let shard = |b: &Batch, r: usize| {
        let n = SHARD * SIDE * SIDE;
        (
            HostTensor::from_f32(
                vec![SHARD, 1, SIDE, SIDE],
                b.x.to_f32_vec()[r * n..(r + 1) * n].to_vec(),
            )
            .unwrap(),
            HostTensor::from_i64(
                vec![SHARD],
                b.y.to_f64_vec()[r * SHARD..(r + 1) * SHARD]
                    .iter()
                    .map(|&v| v as i64)
                    .collect(),
            )
            .unwrap(),
        )
    };
    let mut sessions: Vec<Box<dyn Session + '_>> = (0..replicas)
        .map(|r| {
            backend
                .session(&dp.step.graph, &carry(&dp.step), r)
                .unwrap()
        })
        .collect();
    for s in &mut sessions {
        s.load(&start.sgd.resident(&dp.step)).unwrap();
    }
    let mut states: Vec<SgdState> = vec![start.sgd.clone(); replicas];
    for b in &batches {
        std::thread::scope(|scope| {
            let handles: Vec<_> = sessions
                .iter_mut()
                .zip(states.iter_mut())
                .zip(InProcess::group(replicas))
                .map(|((session, state), group)| {
                    let dp = &dp;
                    scope.spawn(move || {
                        let (x, y) = shard(b, group.rank());
                        let batch = Bindings::new()
                            .input("input", &x)
                            .input("labels", &y)
                            .input(LR, &b.lr)
                            .collective(&group as &dyn Collective);
                        let got = session.step(&batch, STEP_FETCH).unwrap();
                        // The run loop on the same replica and group is the oracle...
                        let mut want = backend
                            .run(
                                &dp.step.graph,
                                &state.bindings(&dp.step, &x, &y, &b.lr).collective(&group),
                            )
                            .unwrap();
                        state.absorb(&dp.step, &mut want);
                        for name in STEP_FETCH {
                            assert_eq!(bits(&got[*name]), bits(&want[*name]), "{name}");
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        });
    }
    for (r, session) in sessions.iter_mut().enumerate() {
        let mut got = start.sgd.clone();
        read_back(session.as_mut(), &dp.step, &mut got);
        assert_same_state(&got, &states[r]);
    }
}

/// The same steps through a session that stages each next batch
/// (`Session::step_and_stage`): the first step binds its batch, every later one only
/// what the step before staged. Also the transfers of the whole run.
pub fn staged_loop(
    backend: &dyn Backend,
    step: &TrainStep,
    mut sgd: SgdState,
    batches: &[Batch],
) -> (Vec<Outputs>, SgdState, Transfers) {
    let mut session = backend.session(&step.graph, &carry(step), 0).unwrap();
    session.load(&sgd.resident(step)).unwrap();
    let before = session.transfers();
    let mut fetched = vec![];
    for (i, b) in batches.iter().enumerate() {
        let this = match i {
            0 => b.bindings(),
            _ => Bindings::new(),
        };
        fetched.push(match batches.get(i + 1) {
            Some(next) => session
                .step_and_stage(&this, STEP_FETCH, &next.bindings())
                .unwrap(),
            None => session.step(&this, STEP_FETCH).unwrap(),
        });
    }
    let moved = session.transfers() - before;
    read_back(session.as_mut(), step, &mut sgd);
    (fetched, sgd, moved)
}

/// Fetched outputs and final states agree to the bit.
pub fn assert_same_run(got: &(Vec<Outputs>, SgdState), want: &(Vec<Outputs>, SgdState)) {
    for (s, (g, w)) in got.0.iter().zip(&want.0).enumerate() {
        for name in STEP_FETCH {
            assert_eq!(bits(&g[*name]), bits(&w[*name]), "step {s}: {name}");
        }
    }
    assert_same_state(&got.1, &want.1);
}

/// Staging each next batch gives the bits of stepping with each batch bound over
/// `steps` steps, and moves the same bytes.
pub fn staging_matches_stepping(backend: &dyn Backend, steps: usize) {
    let (step, sgd) = plain_step();
    let batches = batches(SHARD, steps, 7);
    let (want, want_state, moved) = session_loop(backend, &step, sgd.clone(), &batches);
    let (got, got_state, staged_moved) = staged_loop(backend, &step, sgd, &batches);
    assert_same_run(&(got, got_state), &(want, want_state));
    let total = moved.iter().fold(Transfers::default(), |a, m| Transfers {
        uploaded_bytes: a.uploaded_bytes + m.uploaded_bytes,
        downloaded_bytes: a.downloaded_bytes + m.downloaded_bytes,
    });
    assert_eq!(staged_moved, total, "{}", backend.name());
}

/// A staged tensor bound again is refused, and the refused step uses up what was staged.
pub fn staged_names_bound_again_are_refused(backend: &dyn Backend) {
    let (step, sgd) = plain_step();
    let batches = batches(SHARD, 2, 7);
    let mut session = backend.session(&step.graph, &carry(&step), 0).unwrap();
    session.load(&sgd.resident(&step)).unwrap();
    session
        .step_and_stage(&batches[0].bindings(), &[], &batches[1].bindings())
        .unwrap();
    let e = session
        .step(&batches[1].bindings(), STEP_FETCH)
        .unwrap_err()
        .to_string();
    assert!(e.contains("was staged for this step"), "{e}");
    let e = session
        .step(&Bindings::new(), STEP_FETCH)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no tensor bound to input"),
        "{}: {e}",
        backend.name()
    );
}
