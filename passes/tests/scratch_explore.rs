use calib_ir::{DType, Mode};
use calib_passes::fusion::{fuse, FusionOptions};
use calib_passes::{train_step, TrainConfig};
use calib_runtime::{reference, weights, Bindings, HostTensor};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
    .join(name)
}

#[test]
fn scconv_eval_and_train() {
    for (name, mode) in [
        ("scconv", Mode::Eval),
        ("scconv", Mode::Train),
        ("scbottleneck_s1", Mode::Eval),
        ("scbottleneck_s2_down", Mode::Train),
    ] {
        let file = calib_models::load_spec_file(fixture(name)).unwrap();
        let m = calib_models::build(
            &file.spec,
            &file.input_shape.clone().unwrap(),
            mode,
            DType::F32,
        )
        .unwrap();
        let params = weights::load(&fixture(name).join("params.safetensors")).unwrap();
        let io = weights::load(&fixture(name).join("eval_io.safetensors")).unwrap();
        let t = std::time::Instant::now();
        let f = fuse(&m.graph, &FusionOptions::default()).unwrap();
        eprintln!("{name} {mode:?}: fused in {:?}", t.elapsed());
        eprintln!("{}", f.report.to_text());
        let b = Bindings::new().params(&params).input("input", &io["input"]);
        let want = reference::run(&m.graph, &b).unwrap();
        let got = reference::run_program(&f.program, &b).unwrap();
        for (k, w) in &want {
            let g: &HostTensor = &got[k];
            let err = g.max_abs_diff(w).unwrap();
            eprintln!("  {k}: err {err:e} (max {})", w.max_abs());
            assert!(err <= 1e-4 * w.max_abs().max(1.0), "{k}");
        }
    }
}

#[test]
fn scnet50_train_step() {
    let spec = calib_models::presets::preset("scnet50").unwrap();
    let m = calib_models::build(&spec, &[64, 3, 224, 224], Mode::Train, DType::F32).unwrap();
    let step = train_step(&m.graph, &TrainConfig::default()).unwrap();
    let t = std::time::Instant::now();
    let f = fuse(&step.graph, &FusionOptions::default()).unwrap();
    eprintln!("scnet50 step: fused in {:?}", t.elapsed());
    let text = f.report.to_text();
    eprintln!("{}", &text[..text.find("kernels:").unwrap()]);
}

#[test]
fn debug_bn_train() {
    let mut b = calib_ir::GraphBuilder::new(Mode::Train, DType::F32);
    let x = b.input("input", DType::F32, vec![2, 4, 3, 3]).unwrap();
    let y = b.batch_norm("bn", x).unwrap();
    b.output("output", y).unwrap();
    let g = b.finish();
    eprintln!("{}", calib_ir::text::print(&g));
    let f = fuse(&g, &FusionOptions::default()).unwrap();
    eprintln!("{}", f.report.to_text());
}

#[test]
fn debug_node() {
    let spec = calib_models::presets::preset("scnet50").unwrap();
    let m = calib_models::build(&spec, &[64, 3, 224, 224], Mode::Train, DType::F32).unwrap();
    let step = train_step(&m.graph, &TrainConfig::default()).unwrap();
    let g = &step.graph;
    for i in [4157usize, 4158, 4159] {
        let n = &g.nodes[i];
        eprintln!(
            "%{i} = {} {:?} {} @{}",
            n.op.name(),
            n.inputs,
            n.ty,
            n.scope
        );
        for v in &n.inputs {
            let m = &g.nodes[v.0];
            eprintln!(
                "   %{} = {} {:?} {} @{}",
                v.0,
                m.op.name(),
                m.inputs,
                m.ty,
                m.scope
            );
        }
    }
}

#[test]
fn debug_block_kernels() {
    let spec = calib_models::presets::preset("scnet50").unwrap();
    let m = calib_models::build(&spec, &[64, 3, 224, 224], Mode::Train, DType::F32).unwrap();
    let step = train_step(&m.graph, &TrainConfig::default()).unwrap();
    let g = &step.graph;
    let loss = g.output("loss").unwrap().0;
    let f = fuse(g, &FusionOptions::default()).unwrap();
    let mut per: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for k in &f.program.kernels {
        if !k.covers.iter().all(|&c| c <= loss) { continue; }
        let scope = k.label.split('@').nth(1).unwrap_or("");
        let block: Vec<&str> = scope.split('.').take(2).collect();
        let outs: Vec<String> = k.outputs.iter().map(|o| format!("{}{}", f.program.buffers[o.buffer.0].name, f.program.buffers[o.buffer.0].ty)).collect();
        per.entry(block.join(".")).or_default().push(format!("{} {} {} ops={} outs={:?}", k.name, k.anchor.name(), k.label, k.body.nodes.len(), outs));
    }
    for (b, ks) in &per {
        eprintln!("== {b}: {}", ks.len());
        if b == "layer1.0" || b == "layer2.0" || b == "layer1.1" { for k in ks { eprintln!("   {}", &k[..k.len().min(230)]); } }
    }
    return;
    let names: Vec<String> = f.program.kernels.iter().filter(|k| k.covers.iter().all(|&c| c <= loss) && k.label.contains("layer1.1")).flat_map(|k| k.outputs.iter().map(|o| f.program.buffers[o.buffer.0].name.clone())).collect();
    for name in names {
        let b = f.program.buffers.iter().position(|b| b.name == name);
        if let Some(b) = b {
            if f.program.buffers[b].ty.numel() < 10000 { continue; }
            for k in &f.program.kernels {
                if k.inputs.iter().any(|x| x.0 == b) {
                    eprintln!("{name} read by {} {} {} ops={} inputs={}", k.name, k.anchor.name(), k.label, k.body.nodes.len(), k.inputs.len());
                }
            }
        }
    }
}

#[test]
fn debug_s1_train() {
    let file = calib_models::load_spec_file(fixture("scbottleneck_s1")).unwrap();
    let m = calib_models::build(&file.spec, &file.input_shape.clone().unwrap(), Mode::Train, DType::F32).unwrap();
    let f = fuse(&m.graph, &FusionOptions::default()).unwrap();
    eprintln!("{}", f.report.to_text());
}
