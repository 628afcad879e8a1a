//! bf16 values stored as bf16: under the bf16 policy a kernel that writes a round trip
//! `cast(cast(y, bf16), f32)` writes the bf16 value, its readers widen it as they load
//! it, and no value changes.

mod fusion_common;

use calib_ir::{DType, Graph, Mode, Op, Precision, Program, Role};
use calib_models::build;
use calib_passes::fusion::{fuse, FusionOptions, RuleSet};
use calib_passes::precision::apply;
use calib_passes::{train_step, TrainConfig};
use calib_runtime::{reference, Bindings};
use fusion_common::{check_with, fired, random_bindings, sibling_convolutions};

fn options(precision: Precision) -> FusionOptions {
    FusionOptions {
        precision,
        ..FusionOptions::default()
    }
}

/// SCNet-50's whole SGD step on one 128x128 image under policy `p` (the fixtures'
/// `tiny_scnet` is so small that the planner recomputes every round trip where it is
/// read and stores none).
fn scnet50_step(p: Precision) -> Graph {
    let spec = calib_models::presets::preset("scnet50").unwrap();
    let forward = build(&spec, &[1, 3, 128, 128], Mode::Train, DType::F32)
        .unwrap()
        .graph;
    let step = train_step(&forward, &TrainConfig::default()).unwrap().graph;
    apply(&step, p).unwrap()
}

/// Bytes of the buffers kernels write and read among themselves.
fn temp_bytes(p: &Program) -> usize {
    p.buffers
        .iter()
        .filter(|b| b.role == Role::Temp)
        .map(|b| b.ty.size_bytes())
        .sum()
}

/// Whether a kernel stores some value as the f32 widening of a bf16 value it computed:
/// a round trip the plan should have stored narrow.
fn stored_round_trips(p: &Program) -> Vec<String> {
    let mut out = vec![];
    for k in &p.kernels {
        for (o, to) in k.body.outputs.iter().zip(&k.outputs) {
            let n = k.body.node(o.value);
            let widens = n.op == (Op::Cast { to: DType::F32 })
                && k.body.ty(n.inputs[0]).dtype == DType::BF16
                && !matches!(k.body.node(n.inputs[0]).op, Op::Input { .. });
            if widens && p.buffer(to.buffer).role == Role::Temp {
                out.push(format!("{} {}", k.name, o.name));
            }
        }
    }
    out
}

/// The f32 temporaries that every reader rounds to bf16 as it loads them (and reads
/// in no other way): values the plan should have stored rounded.
fn rounded_by_every_reader(p: &Program) -> Vec<String> {
    let mut verdict: Vec<Option<bool>> = vec![None; p.buffers.len()];
    for k in &p.kernels {
        for ((_, v), buffer) in k.body.inputs().zip(&k.inputs) {
            let rounds = k
                .body
                .nodes
                .iter()
                .filter(|n| n.inputs.contains(&v))
                .all(|n| n.op == (Op::Cast { to: DType::BF16 }));
            let stored = k.body.outputs.iter().any(|o| o.value == v);
            let seen = verdict[buffer.0].unwrap_or(true);
            verdict[buffer.0] = Some(seen && rounds && !stored);
        }
    }
    p.buffers
        .iter()
        .zip(verdict)
        .filter(|(b, v)| b.role == Role::Temp && b.ty.dtype == DType::F32 && *v == Some(true))
        .map(|(b, _)| b.name.clone())
        .collect()
}

#[test]
fn merged_siblings_round_their_outputs_and_sum_statistics_in_one_kernel() {
    // As `merged_siblings_accumulate_their_batch_statistics_in_one_kernel`, under bf16:
    // each branch is rounded after the slice of the merged output; moving the slice out
    // of the casts lets the merged convolution round, store and reduce its whole output.
    let widths = [2, 3, 5];
    let g = apply(&sibling_convolutions(&widths), Precision::Bf16).unwrap();
    let f = check_with(&g, 23, &options(Precision::Bf16));
    assert!(fired(&f, "merge-sibling-convs") >= 2);
    assert!(fired(&f, "slice-through-cast") > 0);
    let convs = f
        .program
        .kernels
        .iter()
        .filter(|k| k.body.nodes.iter().any(|n| n.op.is_gemm()))
        .count();
    assert_eq!(convs, 1, "one kernel convolves");
    // Every branch's statistics are slices of the merged output's: mean and mean square.
    let merged: usize = widths.iter().sum();
    let means: Vec<Vec<usize>> = f
        .program
        .kernels
        .iter()
        .flat_map(|k| k.body.nodes.iter())
        .filter(|n| matches!(n.op, Op::ReduceMean { .. }))
        .map(|n| n.ty.shape.clone())
        .collect();
    assert_eq!(means, vec![vec![1, merged, 1, 1]; 2]);
    assert!(stored_round_trips(&f.program).is_empty());
}

#[test]
fn storing_bf16_changes_no_value_and_leaves_no_f32_round_trip() {
    let step = scnet50_step(Precision::Bf16);
    let narrow = fuse(&step, &options(Precision::Bf16)).unwrap();
    let wide = fuse(
        &step,
        &FusionOptions {
            rules: RuleSet::without(["narrow-stores"]).unwrap(),
            ..options(Precision::Bf16)
        },
    )
    .unwrap();
    assert!(narrow.report.narrow_stores > 0);
    assert_eq!(wide.report.narrow_stores, 0);
    assert!(
        !stored_round_trips(&wide.program).is_empty(),
        "without the pass round trips are stored in f32"
    );
    assert_eq!(stored_round_trips(&narrow.program), Vec::<String>::new());
    // Convolution results, which the next layer rounds as it reads them, are stored
    // rounded too.
    assert!(
        !rounded_by_every_reader(&wide.program).is_empty(),
        "without the pass values rounded on every read are stored in f32"
    );
    assert_eq!(
        rounded_by_every_reader(&narrow.program),
        Vec::<String>::new()
    );
    let bf16: Vec<_> = narrow
        .program
        .buffers
        .iter()
        .filter(|b| b.ty.dtype == DType::BF16)
        .collect();
    assert_eq!(bf16.len(), narrow.report.narrow_stores);
    assert!(bf16.iter().all(|b| b.role == Role::Temp));
    assert!(temp_bytes(&narrow.program) < temp_bytes(&wide.program));
    // The same values, bit for bit: widening bf16 is exact.
    let (inputs, params) = random_bindings(&step, 5);
    let mut b = Bindings::new().params(&params);
    for (name, t) in &inputs {
        b = b.input(name.clone(), t);
    }
    let got = reference::run_program(&narrow.program, &b).unwrap();
    let want = reference::run_program(&wide.program, &b).unwrap();
    assert_eq!(got.len(), want.len());
    for (name, w) in &want {
        let bits = |t: &calib_runtime::HostTensor| -> Vec<u64> {
            match t.dtype() {
                DType::I64 => t.as_i64().unwrap().iter().map(|&x| x as u64).collect(),
                _ => t.to_f32_vec().iter().map(|x| x.to_bits() as u64).collect(),
            }
        };
        assert_eq!(bits(&got[name]), bits(w), "{name}");
    }
}

#[test]
fn a_bf16_step_stores_fewer_bytes_than_a_tf32_step() {
    let plan = |p| fuse(&scnet50_step(p), &options(p)).unwrap().program;
    let (tf32, bf16) = (plan(Precision::Tf32), plan(Precision::Bf16));
    assert!(tf32.buffers.iter().all(|b| b.ty.dtype != DType::BF16));
    assert!(
        temp_bytes(&bf16) < temp_bytes(&tf32),
        "bf16 {} bytes, tf32 {}",
        temp_bytes(&bf16),
        temp_bytes(&tf32)
    );
}
