//! Builds SCNet-50 in calib's IR and prints a summary of it: parameters, MACs, the op
//! mix of the graph and the first lines of its text form.
//!
//! `cargo run -p calib-examples --example scnet50_summary`

use calib_ir::{text, DType, Mode};
use calib_models::{build, presets, summarize};
use std::collections::BTreeMap;

fn main() -> anyhow::Result<()> {
    let spec = presets::scnet50();
    let model = build(&spec, &[1, 3, 224, 224], Mode::Eval, DType::F32)?;
    let summary = summarize(&model.graph);
    println!(
        "SCNet-50: {} parameters, {:.3} GMACs",
        summary.parameters,
        summary.macs as f64 / 1e9
    );
    println!(
        "{} IR nodes, {} state_dict entries",
        model.graph.nodes.len(),
        model.state.len()
    );

    let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
    for node in &model.graph.nodes {
        *ops.entry(node.op.name()).or_default() += 1;
    }
    println!("op mix: {ops:?}");

    println!("first layer of the first SCBottleneck:");
    let printed = text::print(&model.graph);
    for line in printed.lines().filter(|l| l.ends_with("@layer1.0.conv1_a")) {
        println!("{line}");
    }
    Ok(())
}
