//! Fuses one self-calibrated convolution's train-mode forward and prints what fusion
//! did: each kernel's anchor, the ops of its body, and the original nodes it covers —
//! then checks on random inputs that the plan computes what the graph computes.
//!
//! `cargo run --release -p calib-examples --example fuse_scconv`

use calib_ir::{DType, Mode};
use calib_models::{build, spec::ModelSpec};
use calib_passes::fusion::{fuse, FusionOptions};
use calib_runtime::reference::{run, run_program};
use calib_runtime::{Bindings, HostTensor, TensorMap};

fn main() -> anyhow::Result<()> {
    let spec: ModelSpec = serde_json::from_str(
        r#"{"kind": "scconv", "channels": 8, "stride": 1, "padding": 1, "dilation": 1,
            "groups": 1, "pooling_r": 4}"#,
    )?;
    let model = build(&spec, &[2, 8, 16, 16], Mode::Train, DType::F32)?;
    let fusion = fuse(&model.graph, &FusionOptions::default())?;
    println!(
        "{} IR nodes -> {} kernels",
        model.graph.nodes.len(),
        fusion.program.kernels.len()
    );
    for k in &fusion.program.kernels {
        let ops: Vec<&str> = k
            .body
            .nodes
            .iter()
            .map(|n| n.op.name())
            .filter(|n| *n != "input")
            .collect();
        println!(
            "{:>4} {:<12} covers {:>2} nodes: {}",
            k.name,
            k.anchor.name(),
            k.covers.len(),
            ops.join(" ")
        );
    }

    // Same numbers from the graph and from the plan.
    let mut state = TensorMap::new();
    for (i, e) in model.state.iter().enumerate() {
        let n = e.ty.numel();
        let t = if e.ty.dtype == DType::I64 {
            HostTensor::from_i64(e.ty.shape.clone(), vec![0; n])?
        } else {
            let v = (0..n)
                .map(|k| 0.5 + ((k * 31 + i * 7) % 13) as f32 / 26.0)
                .collect();
            HostTensor::from_f32(e.ty.shape.clone(), v)?
        };
        state.insert(e.name.clone(), t);
    }
    let x = HostTensor::from_f32(
        vec![2, 8, 16, 16],
        (0..4096)
            .map(|k| ((k * 17) % 23) as f32 / 23.0 - 0.5)
            .collect(),
    )?;
    let bindings = Bindings::new().params(&state).input("input", &x);
    let want = run(&model.graph, &bindings)?;
    let got = run_program(&fusion.program, &bindings)?;
    let err = want["output"].max_abs_diff(&got["output"])?;
    println!("max |graph - plan| on the output: {err:.2e}");
    Ok(())
}
