//! A whole training step whose plan splits GEMMs along `k` and reductions across teams
//! (costed for a GPU with few SMs and free launches, so that even `tiny_scnet` splits), run twice on the
//! simulator: the same bits both times, because every split is combined in a fixed
//! order, and the same loss as the reference interpreter.

mod support;

use calib::ir::{DType, Mode, Op};
use calib::passes::fusion::FusionOptions;
use calib::passes::{train_step, TrainConfig};
use calib::runtime::{Backend, Bindings, HostTensor, Reference};
use calib::Sim;
use calib_cost::Device;
use std::collections::BTreeMap;
use support::fixture;

#[test]
fn a_split_training_step_repeats_bit_for_bit() {
    let dir = fixture("tiny_scnet");
    let file = calib::models::load_spec_file(dir.join("meta.json")).unwrap();
    let shape = file.input_shape.unwrap();
    let model = calib::models::build(&file.spec, &shape, Mode::Train, DType::F32).unwrap();
    let step = train_step(&model.graph, &TrainConfig::default()).unwrap();

    // Launches cost nothing beyond their work, so that splits stay worth their
    // combining launch even once schedules are priced in the emitted code
    // (`calib::schedules`).
    let base = Device::default();
    let device = Device {
        sms: 4,
        timing: calib_cost::Timing {
            kernel_floor_us: 0.0,
            launch_gap_us: 0.0,
            ..base.timing.clone()
        },
        ..base
    };
    let sim = Sim::with_fusion(FusionOptions {
        device,
        ..FusionOptions::default()
    });
    let plan = sim.prepare(&step.graph).unwrap();
    let kernels = &plan.plan().program.kernels;
    let split_gemms = kernels
        .iter()
        .filter_map(|k| k.schedule.and_then(|s| s.gemm))
        .filter(|g| g.split_k > 1)
        .count();
    let split_reductions = kernels
        .iter()
        .filter_map(|k| k.schedule.and_then(|s| s.reduction))
        .filter(|r| r.split > 1)
        .count();
    assert!(split_gemms > 0, "no GEMM splits k");
    assert!(split_reductions > 0, "no reduction splits");

    let tensors = inputs(&step.graph);
    let mut bindings = Bindings::new();
    for node in &step.graph.nodes {
        match &node.op {
            Op::Input { name } => bindings = bindings.input(name.clone(), &tensors[name]),
            Op::Param { name } => bindings = bindings.param(name.clone(), &tensors[name]),
            _ => {}
        }
    }
    let first = sim.run(&step.graph, &bindings).unwrap();
    let second = sim.run(&step.graph, &bindings).unwrap();
    assert_eq!(first.len(), second.len());
    for (name, a) in &first {
        assert_eq!(
            a.to_le_bytes(),
            second[name].to_le_bytes(),
            "output {name} differs between two runs"
        );
    }
    let reference = Reference::new().run(&step.graph, &bindings).unwrap();
    let (got, want) = (
        first["loss"].to_f32_vec()[0],
        reference["loss"].to_f32_vec()[0],
    );
    assert!(
        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
        "loss {got} on the simulator, {want} on the reference"
    );
}

/// Deterministic values for every input and parameter of `graph`: floats in [-1, 1)
/// (variances in [0.5, 1.5), the learning rate 0.1), labels in range.
fn inputs(graph: &calib::ir::Graph) -> BTreeMap<String, HostTensor> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut out = BTreeMap::new();
    for node in &graph.nodes {
        let name = match &node.op {
            Op::Input { name } | Op::Param { name } => name.clone(),
            _ => continue,
        };
        let (shape, n) = (node.ty.shape.clone(), node.ty.numel());
        let t = match node.ty.dtype {
            DType::I64 if name == "labels" => {
                let classes = graph
                    .outputs
                    .iter()
                    .find(|o| o.name == "logits")
                    .map_or(2, |o| graph.ty(o.value).shape[1]);
                HostTensor::from_i64(shape, (0..n).map(|i| (i % classes) as i64).collect())
            }
            DType::I64 => HostTensor::from_i64(shape, vec![0; n]),
            _ if name == "lr" => HostTensor::from_f32(shape, vec![0.1; n]),
            _ if name.ends_with("running_var") => {
                HostTensor::from_f32(shape, (0..n).map(|_| next() + 0.5).collect())
            }
            _ => HostTensor::from_f32(shape, (0..n).map(|_| 2.0 * next() - 1.0).collect()),
        };
        out.insert(name, t.unwrap());
    }
    out
}
