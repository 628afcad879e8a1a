//! Sessions keep a training step's state on the backend between steps. On the
//! reference interpreter (host sessions) and on the simulator (device-resident
//! sessions, the code the GPU runs) they must give exactly the bits of the per-step
//! `run` loop that binds and absorbs the whole state every step, while moving only the
//! batch in and the fetched outputs out.

mod support;

use calib::passes::{momentum_name, LR};
use calib::runtime::session::{BufferCopy, ResidentProgram, ResidentSession};
use calib::runtime::{
    Backend, Bindings, Carry, HostTensor, Reference, RuntimeError, Session, TensorMap,
};
use calib::train::{carry, STEP_FETCH};
use calib::Sim;
use support::data_parallel::{self, SHARD};
use support::session::{
    assert_same_run, batches, plain_step, read_back, replica_sessions, session_loop,
    session_matches_run_loop, staged_loop, staged_names_bound_again_are_refused,
    staging_matches_stepping,
};

#[test]
fn a_reference_session_gives_the_run_loops_bits_moving_only_the_batch() {
    session_matches_run_loop(&Reference::new());
}

#[test]
fn a_simulator_session_keeps_state_in_device_buffers_with_the_run_loops_bits() {
    session_matches_run_loop(&Sim::new());
}

#[test]
fn staging_the_next_batch_gives_the_bits_of_binding_it_on_the_reference() {
    staging_matches_stepping(&Reference::new(), 3);
    staged_names_bound_again_are_refused(&Reference::new());
}

#[test]
fn data_parallel_replicas_each_keep_their_state_in_a_session() {
    let dp = data_parallel::step(2, false);
    replica_sessions(&Reference::new(), &dp, 2);
    replica_sessions(&Sim::new(), &dp, 2);
}

fn session_error(e: RuntimeError) -> String {
    e.to_string()
}

#[test]
fn misuse_is_a_clear_error() {
    let (step, sgd) = plain_step();
    let b = &batches(SHARD, 1, 1)[0];
    for backend in [&Reference::new() as &dyn Backend, &Sim::new()] {
        let bad = Carry::new().with("loss", "no.such.input");
        let e = session_error(backend.session(&step.graph, &bad, 0).err().unwrap());
        assert!(
            e.contains("no.such.input") && e.contains("no input or param"),
            "{e}"
        );
        let bad = Carry::new().with("logits", "input");
        let e = session_error(backend.session(&step.graph, &bad, 0).err().unwrap());
        assert!(e.contains("logits") && e.contains("f32[4,1,16,16]"), "{e}");

        let mut session = backend.session(&step.graph, &carry(&step), 0).unwrap();
        let e = session_error(session.step(&b.bindings(), STEP_FETCH).unwrap_err());
        assert!(
            e.contains("no tensor bound to param"),
            "{}: {e}",
            backend.name()
        );
        let e = session_error(session.read(&["fc.weight"]).unwrap_err());
        assert!(
            e.contains("`fc.weight`") && e.contains("never loaded"),
            "{e}"
        );

        let mut wrong: TensorMap = sgd.resident(&step);
        wrong.insert(
            "fc.bias".into(),
            HostTensor::from_f32(vec![3], vec![0.0; 3]).unwrap(),
        );
        let e = session_error(session.load(&wrong).unwrap_err());
        assert!(e.contains("fc.bias") && e.contains("f32[3]"), "{e}");

        session.load(&sgd.resident(&step)).unwrap();
        let e = session_error(
            session
                .step(&b.bindings(), &["no_such_output"])
                .unwrap_err(),
        );
        assert!(e.contains("cannot fetch `no_such_output`"), "{e}");
        // A step binds the batch for itself only: the next one must bind it again.
        session.step(&b.bindings(), &[]).unwrap();
        let e = session_error(
            session
                .step(&Bindings::new().input(LR, &b.lr), &[])
                .unwrap_err(),
        );
        assert!(e.contains("no tensor bound to input `input`"), "{e}");
        let momentum = momentum_name(&step.params[0]);
        let read = session.read(&[momentum.as_str()]).unwrap();
        assert_eq!(read[&momentum].ty(), sgd.momentum[&step.params[0]].ty());
    }
}

/// A simulated device whose staged writes land only at the next step's start, as the
/// GPU's staged copies are moved into place (`runtime/src/cuda/staging.rs`); it records
/// the first pixel of the batch each step reads.
struct LateStaging {
    inner: calib::runtime::SimResident,
    input: calib::ir::BufferId,
    pending: Vec<(calib::ir::BufferId, Vec<u8>)>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<f32>>>,
}

impl ResidentProgram for LateStaging {
    fn plan(&self) -> &calib::runtime::DeviceProgram {
        self.inner.plan()
    }
    fn write(&mut self, b: calib::ir::BufferId, bytes: &[u8]) -> Result<(), RuntimeError> {
        self.inner.write(b, bytes)
    }
    fn read(&mut self, b: calib::ir::BufferId) -> Result<Vec<u8>, RuntimeError> {
        self.inner.read(b)
    }
    fn step(
        &mut self,
        group: Option<&dyn calib::runtime::Collective>,
        copies: &[BufferCopy],
    ) -> Result<(), RuntimeError> {
        self.step_then_stage(group, copies, &[])
    }
    fn step_then_stage(
        &mut self,
        group: Option<&dyn calib::runtime::Collective>,
        copies: &[BufferCopy],
        next: &[(calib::ir::BufferId, Vec<u8>)],
    ) -> Result<(), RuntimeError> {
        for (b, bytes) in std::mem::take(&mut self.pending) {
            self.inner.write(b, &bytes)?;
        }
        let x = self.inner.read(self.input)?;
        let first = f32::from_le_bytes(x[..4].try_into().unwrap());
        self.seen.lock().unwrap().push(first);
        self.inner.step(group, copies)?;
        self.pending = next.to_vec();
        Ok(())
    }
}

/// On the simulator (slow: two steps each): staging through the default path (each
/// staged batch written after its step), and through a device whose staged writes land
/// only at the next step's start as the GPU's do, both give the bits of binding every
/// batch, and each step reads its own batch.
#[test]
fn simulator_sessions_stage_the_next_batch_with_the_bits_of_binding_it() {
    let (step, sgd) = plain_step();
    let batches = batches(SHARD, 2, 11);
    let sim = Sim::new();
    let (want, want_state, _) = session_loop(&sim, &step, sgd.clone(), &batches);
    let want = (want, want_state);
    let (got, got_state, _) = staged_loop(&sim, &step, sgd.clone(), &batches);
    assert_same_run(&(got, got_state), &want);

    let program = sim.prepare(&step.graph).unwrap();
    let inner = calib::runtime::SimResident::new(program).unwrap();
    let input = calib::ir::BufferId(
        inner
            .plan()
            .program
            .buffers
            .iter()
            .position(|b| b.name == "input")
            .unwrap(),
    );
    let seen = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let late = LateStaging {
        inner,
        input,
        pending: vec![],
        seen: seen.clone(),
    };
    let mut session = ResidentSession::new(late, &step.graph, &carry(&step)).unwrap();
    session.load(&sgd.resident(&step)).unwrap();
    let got = vec![
        session
            .step_and_stage(&batches[0].bindings(), STEP_FETCH, &batches[1].bindings())
            .unwrap(),
        session.step(&Bindings::new(), STEP_FETCH).unwrap(),
    ];
    // Step N read batch N: never batch N+1, which was handed over while it ran.
    let firsts: Vec<f32> = batches.iter().map(|b| b.x.to_f32_vec()[0]).collect();
    assert_eq!(*seen.lock().unwrap(), firsts);
    let mut state = sgd;
    read_back(&mut session, &step, &mut state);
    assert_same_run(&(got, state), &want);
}
