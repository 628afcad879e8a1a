//! The targets on the SCNet-50 training step at batch 64, 224x224: fusion
//! time, kernels per SCBottleneck forward, the gate chain, bytes moved, and an optimizer
//! update fused whole.

use calib_ir::{DType, Graph, Mode};
use calib_passes::fusion::{explain, fuse, Fusion, FusionOptions};
use calib_passes::{train_step, TrainConfig};
use std::collections::BTreeMap;

fn scnet50_step() -> Graph {
    let spec = calib_models::presets::preset("scnet50").unwrap();
    let model = calib_models::build(&spec, &[64, 3, 224, 224], Mode::Train, DType::F32).unwrap();
    train_step(&model.graph, &TrainConfig::default())
        .unwrap()
        .graph
}

/// Forward kernels (covering only nodes up to the loss) per block, by their label.
fn forward_kernels_per_block(graph: &Graph, f: &Fusion) -> BTreeMap<String, usize> {
    let loss = graph.output("loss").unwrap().0;
    let mut per = BTreeMap::new();
    for k in &f.program.kernels {
        let scope = k.label.split('@').nth(1).unwrap_or("");
        if k.covers.iter().all(|&c| c <= loss) && scope.starts_with("layer") {
            let block: Vec<&str> = scope.split('.').take(2).collect();
            *per.entry(block.join(".")).or_insert(0) += 1;
        }
    }
    per
}

#[test]
fn scnet50_training_step_meets_the_targets() {
    let graph = scnet50_step();
    let f = fuse(&graph, &FusionOptions::default()).unwrap();
    let r = &f.report;
    // The criterion benchmark (passes/benches/fusion.rs) measures time properly; this
    // only guards against order-of-magnitude regressions.
    assert!(
        r.fusion_seconds < 10.0,
        "fusion took {:.1} s",
        r.fusion_seconds
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(
        r.bytes_after <= 0.6 * r.bytes_before,
        "bytes {:.3e} -> {:.3e}",
        r.bytes_before,
        r.bytes_after
    );

    let per = forward_kernels_per_block(&graph, &f);
    assert_eq!(per.len(), 16, "{per:?}");
    // Kernels per block follow the cost model of the code generation emits: a
    // BatchNorm-apply and ReLU (or the gate) recomputed in a convolution's prologue
    // for every tile and k step costs more there than a map that writes it once, so
    // those are kernels of their own and the convolutions are plain GEMMs. About 14 to
    // 23 per block; more would mean fusion stopped fusing maps and statistics.
    for (block, &n) in &per {
        assert!(n <= 24, "{block}: {n} forward kernels ({per:?})");
    }

    // The gate chain of every SCConv shares one kernel: resize, add, sigmoid, mul.
    let gates: Vec<usize> = graph
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.op == calib_ir::Op::Sigmoid && n.scope.ends_with("scconv"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(gates.len(), 16);
    for g in gates {
        let node = &graph.nodes[g];
        let add = node.inputs[0].0;
        let up = graph.nodes[add].inputs[1].0;
        let k = f
            .program
            .kernels
            .iter()
            .find(|k| {
                k.covers.contains(&g)
                    && k.covers
                        .iter()
                        .all(|&c| c <= graph.output("loss").unwrap().0)
            })
            .expect("a forward kernel computes the gate");
        assert!(
            k.covers.contains(&add) && k.covers.contains(&up),
            "{}: gate split across kernels",
            node.scope
        );
    }

    // The optimizer's terms that read only parameters and momentum (`wd * p`,
    // `momentum * m`) fuse into each update; none is a kernel of its own.
    let lone: Vec<&str> = f
        .program
        .kernels
        .iter()
        .filter(|k| k.label.ends_with("@sgd") && k.label.starts_with("mul"))
        .map(|k| k.name.as_str())
        .collect();
    assert!(
        lone.is_empty(),
        "SGD terms as kernels of their own: {lone:?}"
    );
}

#[test]
fn every_output_of_every_scnet50_kernel_is_explained() {
    let graph = scnet50_step();
    let f = fuse(&graph, &FusionOptions::default()).unwrap();
    let kernels = &f.program.kernels;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let texts: Vec<String> = std::thread::scope(|s| {
        let chunks: Vec<_> = kernels
            .chunks(kernels.len().div_ceil(threads))
            .map(|chunk| {
                s.spawn(|| {
                    chunk
                        .iter()
                        .map(|k| explain(&graph, &f.program, &k.name).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    for (k, text) in kernels.iter().zip(&texts) {
        // One explanation per output, none of them a give-up or egg's raw terms.
        for j in 0..k.outputs.len() {
            assert!(
                text.contains(&format!("\nout{j} = ")),
                "{}: out{j} has no explanation\n{text}",
                k.name
            );
        }
        assert!(!text.contains("did not re-derive"), "{}\n{text}", k.name);
        assert!(
            !text.contains("its body reads a buffer"),
            "{}\n{text}",
            k.name
        );
        // egg's raw terms: an op's name and a space (an operand named after its node,
        // `(reduce_sum@bn3#12 * s)`, is algebra).
        let raw_terms = [
            "(add ",
            "(mul ",
            "(sub ",
            "(conv2d ",
            "(reduce_sum ",
            "(reduce_mean ",
        ];
        for raw in raw_terms.into_iter().chain(["Rewrite"]) {
            assert!(!text.contains(raw), "{}: `{raw}` in\n{text}", k.name);
        }
    }
    // A merged convolution is explained by the original convolutions it holds.
    let all = texts.join("\n");
    for layer in ["conv1_a", "conv1_b"] {
        assert!(
            all.contains(&format!("] = conv2d@layer1.0.{layer}#")),
            "no merged convolution names layer1.0.{layer}"
        );
    }
}
