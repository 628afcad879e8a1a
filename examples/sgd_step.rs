//! Derives the whole SGD training step of a small SCNet as one IR graph and runs three
//! steps of it on the reference interpreter, printing the loss each time.
//!
//! `cargo run --release -p calib-examples --example sgd_step`

use calib_ir::{DType, Mode};
use calib_models::{build, spec::ModelSpec, StateKind};
use calib_passes::{momentum_name, train_step, TrainConfig, LR};
use calib_runtime::{Backend, Bindings, HostTensor, Reference, TensorMap};

fn main() -> anyhow::Result<()> {
    let spec: ModelSpec = serde_json::from_str(
        r#"{"kind": "scnet", "in_channels": 1, "stem": {"kind": "conv3x3", "width": 8, "stride": 1},
            "maxpool": false, "stages": [{"planes": 4, "blocks": 1, "stride": 2, "dilation": 1}],
            "avg_down": false, "avd": false, "cardinality": 1, "bottleneck_width": 64, "num_classes": 3}"#,
    )?;
    let model = build(&spec, &[6, 1, 12, 12], Mode::Train, DType::F32)?;
    let step = train_step(&model.graph, &TrainConfig::default())?;
    println!(
        "training step: {} IR nodes for {} trained tensors",
        step.graph.nodes.len(),
        step.params.len()
    );

    // A deterministic toy initialisation: small weights, BN at identity.
    let mut state = TensorMap::new();
    for (i, e) in model.state.iter().enumerate() {
        let n = e.ty.numel();
        let t = match (e.kind, e.name.rsplit('.').next()) {
            (_, Some("num_batches_tracked")) => {
                HostTensor::from_i64(e.ty.shape.clone(), vec![0; n])?
            }
            (StateKind::Buffer, Some("running_var")) | (StateKind::Param, Some("weight"))
                if e.ty.rank() == 1 =>
            {
                HostTensor::from_f32(e.ty.shape.clone(), vec![1.0; n])?
            }
            (StateKind::Param, _) if e.ty.rank() > 1 => {
                let v = (0..n)
                    .map(|k| ((k * 7 + i * 13) % 17) as f32 / 17.0 - 0.5)
                    .collect();
                HostTensor::from_f32(e.ty.shape.clone(), v)?
            }
            _ => HostTensor::from_f32(e.ty.shape.clone(), vec![0.0; n])?,
        };
        state.insert(e.name.clone(), t);
    }
    let mut momentum: TensorMap = step
        .params
        .iter()
        .map(|p| {
            (
                momentum_name(p),
                HostTensor::full(&state[p].ty(), 0.0, Default::default()),
            )
        })
        .collect();
    let x = HostTensor::from_f32(
        vec![6, 1, 12, 12],
        (0..864).map(|k| (k % 29) as f32 / 29.0).collect(),
    )?;
    let y = HostTensor::from_i64(vec![6], vec![0, 1, 2, 0, 1, 2])?;
    let lr = HostTensor::from_f32(Vec::<usize>::new(), vec![0.05])?;

    for k in 1..=3 {
        let mut b = Bindings::new()
            .params(&state)
            .input("input", &x)
            .input("labels", &y)
            .input(LR, &lr);
        for (n, t) in &momentum {
            b = b.input(n.clone(), t);
        }
        let mut out = Reference::new().run(&step.graph, &b)?;
        println!("step {k}: loss {:.4}", out["loss"].to_f64_vec()[0]);
        for name in step.params.iter().chain(&step.buffers) {
            if let Some(t) = out.remove(name) {
                state.insert(name.clone(), t);
            }
        }
        for (n, t) in momentum.iter_mut() {
            *t = out
                .remove(n)
                .expect("the step returns every momentum buffer");
        }
    }
    Ok(())
}
