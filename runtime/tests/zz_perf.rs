mod common;
use calib_ir::{ConvSpec, DType, Graph, GraphBuilder, Mode, Op};
use calib_runtime::{reference, Bindings, HostTensor, TensorMap};
use common::*;
use std::time::Instant;

fn scconv(mode: Mode, shape: &[usize]) -> Graph {
    let mut g = GraphBuilder::new(mode, DType::F32);
    let x = g.input("input", DType::F32, shape.to_vec()).unwrap();
    let spec = ConvSpec::new(shape[1], 3).padding(1);
    let pooled = g.avg_pool2d(x, 4, 4, 0, false, true).unwrap();
    let k2 = g.scoped("k2", |g| { let y = g.conv_layer("1", pooled, &spec)?; g.batch_norm("2", y) });
    let up = g.resize_nearest(k2.unwrap(), [shape[2], shape[3]]).unwrap();
    let sum = g.add(x, up).unwrap();
    let gate = g.sigmoid(sum).unwrap();
    let k3 = g.scoped("k3", |g| { let y = g.conv_layer("0", x, &spec)?; g.batch_norm("1", y) });
    let gated = g.mul(k3.unwrap(), gate).unwrap();
    let y = g.scoped("k4", |g| { let y = g.conv_layer("0", gated, &spec)?; g.batch_norm("1", y) });
    g.output("output", y.unwrap()).unwrap();
    g.finish()
}

#[test]
fn perf() {
    let shape = [128usize, 16, 28, 28];
    let x = HostTensor::from_f32(shape.to_vec(), (0..shape.iter().product::<usize>()).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect()).unwrap();
    let g = scconv(Mode::Train, &shape);
    let mut state = TensorMap::new();
    for (name, v) in g.params() {
        let ty = g.ty(v).clone();
        state.insert(name.to_string(), HostTensor::full(&ty, if name.ends_with("var") || name.ends_with("weight") && ty.rank() == 1 { 1.0 } else { 0.01 }, Default::default()));
    }
    for _ in 0..2 {
        let t0 = Instant::now();
        let out = reference::run(&g, &Bindings::new().input("input", &x).params(&state)).unwrap();
        eprintln!("scconv train fwd: {:?} ({})", t0.elapsed(), out.len());
    }
    let w = HostTensor::full(&calib_ir::TensorType::new(DType::F32, vec![16, 16, 3, 3]), 0.01, Default::default());
    let p = |op: Op, xs: &[&HostTensor]| { let t0 = Instant::now(); let y = op_fn(op.clone(), xs); eprintln!("{}: {:?}", op.name(), t0.elapsed()); y };
    fn op_fn(o: Op, xs: &[&HostTensor]) -> HostTensor { op(o, xs) }
    let y = p(Op::Conv2d { stride: [1; 2], padding: [1; 2], dilation: [1; 2], groups: 1 }, &[&x, &w]);
    p(Op::Conv2dBackwardData { stride: [1; 2], padding: [1; 2], dilation: [1; 2], groups: 1, input_size: [28, 28] }, &[&y, &w]);
    p(Op::Conv2dBackwardWeight { stride: [1; 2], padding: [1; 2], dilation: [1; 2], groups: 1, kernel: [3, 3] }, &[&x, &y]);
    p(Op::ReduceMean { axes: vec![0, 2, 3], keepdims: true }, &[&x]);
    p(Op::Broadcast { shape: shape.to_vec() }, &[&t(&[1, 16, 1, 1], &[1.0; 16])]);
    p(Op::Relu, &[&x]);
    p(Op::Add, &[&x, &x]);
    p(Op::AvgPool2d { kernel: [4; 2], stride: [4; 2], padding: [0; 2], ceil_mode: false, count_include_pad: true }, &[&x]);
}
