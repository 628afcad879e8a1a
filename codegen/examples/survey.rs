use calib_ir::{DType, Mode, Op, OpClass};
use calib_passes::fusion::{fuse, unfused, FusionOptions};
use calib_passes::{train_step, TrainConfig};
use std::collections::BTreeMap;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (spec, shape) = match args[1].as_str() {
        "tiny" => {
            let f = calib_models::load_spec_file("/work/shared/fixtures/tiny_scnet").unwrap();
            (f.spec, f.input_shape.unwrap())
        }
        p => (calib_models::presets::preset(p).unwrap(), vec![64, 3, 224, 224]),
    };
    let m = calib_models::build(&spec, &shape, Mode::Train, DType::F32).unwrap();
    let step = train_step(&m.graph, &TrainConfig::default()).unwrap();
    let prog = if args[2] == "fused" { fuse(&step.graph, &FusionOptions::default()).unwrap().program } else { unfused(&step.graph).unwrap() };
    let mut hist: BTreeMap<String, usize> = BTreeMap::new();
    for k in &prog.kernels {
        let heavy: Vec<String> = k.body.nodes.iter().filter(|n| !matches!(n.op.class(), OpClass::Elementwise | OpClass::Source | OpClass::Layout) || matches!(n.op, Op::OneHot{..})).map(|n| n.op.name().to_string()).collect();
        let outs: Vec<String> = k.body.outputs.iter().map(|o| format!("{:?}", k.body.ty(o.value).shape)).collect();
        let key = format!("{} [{}] outs={}", k.anchor.name(), heavy.join(","), outs.len());
        *hist.entry(key).or_default() += 1;
        if args.len() > 3 && heavy.len() > 1 { println!("{} {} heavy={:?} outs={:?}", k.name, k.label, heavy, outs); }
    }
    println!("{} kernels", prog.kernels.len());
    for (k, v) in hist { println!("{v:5} {k}"); }
}
