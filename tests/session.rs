//! Sessions keep a training step's state on the backend between steps. On the
//! reference interpreter (host sessions) and on the simulator (device-resident
//! sessions, the code the GPU runs) they must give exactly the bits of the per-step
//! `run` loop that binds and absorbs the whole state every step, while moving only the
//! batch in and the fetched outputs out.

mod support;

use calib::passes::{momentum_name, LR};
use calib::runtime::{Backend, Bindings, Carry, HostTensor, Reference, RuntimeError, TensorMap};
use calib::train::{carry, STEP_FETCH};
use calib::Sim;
use support::data_parallel::{self, SHARD};
use support::session::{batches, plain_step, replica_sessions, session_matches_run_loop};

#[test]
fn a_reference_session_gives_the_run_loops_bits_moving_only_the_batch() {
    session_matches_run_loop(&Reference::new());
}

#[test]
fn a_simulator_session_keeps_state_in_device_buffers_with_the_run_loops_bits() {
    session_matches_run_loop(&Sim::new());
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
