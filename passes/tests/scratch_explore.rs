use calib_ir::{DType, Mode};
use calib_passes::{train_step, TrainConfig};
use std::collections::BTreeMap;

#[test]
fn explore() {
    let spec = calib_models::presets::preset("scnet50").unwrap();
    let t = std::time::Instant::now();
    let m = calib_models::build(&spec, &[64, 3, 224, 224], Mode::Train, DType::F32).unwrap();
    let step = train_step(&m.graph, &TrainConfig::default()).unwrap();
    eprintln!("build {:?} fwd nodes {} step nodes {}", t.elapsed(), m.graph.nodes.len(), step.graph.nodes.len());
    let mut scopes: BTreeMap<String, usize> = BTreeMap::new();
    for n in &step.graph.nodes {
        let key: Vec<&str> = n.scope.split('.').take(2).collect();
        *scopes.entry(key.join(".")).or_default() += 1;
    }
    for (k, v) in &scopes { eprintln!("{k:20} {v}"); }
    let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &step.graph.nodes { *ops.entry(n.op.name()).or_default() += 1; }
    eprintln!("{ops:?}");
    let loss = step.graph.output("loss").unwrap();
    eprintln!("loss at {}", loss.0);
    let g = &step.graph;
    for (i, n) in g.nodes.iter().enumerate().filter(|(_, n)| n.scope.starts_with("layer1.0") ).take(120) {
        eprintln!("%{i} {} {:?} {} @{}", n.op.name(), n.inputs, n.ty, n.scope);
    }
}
