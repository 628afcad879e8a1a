//! A GEMM that takes the one pointwise kernel reading its result as its epilogue
//! (`passes/src/fusion/epilogue_consumers.rs`) computes what the two kernels computed
//! apart: the same bits on the PTX simulator, under the same GEMM schedules.

mod support;

use calib::ir::{DType, Graph, Mode, Op, Precision};
use calib::passes::fusion::tuning::TuningCache;
use calib::passes::fusion::{fuse, prepare, Device, FusionOptions, LayoutPolicy, RuleSet};
use calib::verify::load_case;
use calib::verify::protocol::run_at;
use calib::Sim;

/// The bf16 plan stored in `layout`, priced for an H200 (where the fold pays at this
/// size), with `rules` and the GEMM schedules of `pinned`.
fn options(rules: RuleSet, layout: LayoutPolicy, pinned: Option<TuningCache>) -> FusionOptions {
    FusionOptions {
        precision: Precision::Bf16,
        layout,
        rules,
        device: Device::load("h200").unwrap(),
        tuning: pinned,
        ..FusionOptions::default()
    }
}

/// The module's bf16 gradient graph (its input's and every trained parameter's, for a
/// `grad_output` seed) as the simulator plans it.
fn gradient_graph(case: &calib::verify::Case, options: &FusionOptions) -> Graph {
    let model =
        calib::models::build(&case.spec, &case.input_shape, Mode::Train, DType::F32).unwrap();
    let forward = &model.graph;
    // Not BatchNorm's running buffers, which are outputs too.
    let trained = |(name, v): &(&str, calib::ir::Value)| {
        forward.ty(*v).dtype.is_float() && forward.output(name).is_none()
    };
    let wrt: Vec<_> = (forward.inputs().chain(forward.params().filter(trained)))
        .map(|(_, v)| v)
        .collect();
    let mut graph = forward.clone();
    let ty = graph.ty(model.output()).clone();
    let input = Op::Input {
        name: "grad_output".into(),
    };
    let seed = graph.push_source(input, ty, "").unwrap();
    let (mut graph, grads) = calib::passes::vjp(&graph, model.output(), seed, &wrt).unwrap();
    for (i, g) in grads.into_iter().enumerate() {
        graph.add_output(format!("grad{i}"), g).unwrap();
    }
    let graph = calib::passes::precision::apply(&graph, Precision::Bf16).unwrap();
    prepare(&graph, options).unwrap().into_owned()
}

#[test]
fn a_folded_consumer_gives_the_same_bits_as_its_own_kernel() {
    let case = load_case(&support::fixture("scbottleneck_s2_down")).unwrap();
    let without = || RuleSet::without(["epilogue-consumers"]).unwrap();
    for layout in [LayoutPolicy::RowMajor, LayoutPolicy::ChannelsLast] {
        // The schedules the GEMMs get apart, for both plans: the folded GEMM then sums
        // its products in the same order.
        let plain = options(without(), layout, None);
        let graph = gradient_graph(&case, &plain);
        let program = fuse(&graph, &plain).unwrap().program;
        let pinned =
            support::planner::pinned_schedules(&program, Precision::Bf16, &plain.device.name);
        let with = options(RuleSet::default(), layout, Some(pinned.clone()));
        // The block input's gradient sum rides on the last data gradient.
        let folds = fuse(&graph, &with).unwrap().report.epilogue_consumers;
        assert!(folds >= 1, "{layout:?}: nothing folded");
        let folded = run_at(&case, &Sim::with_fusion(with), Precision::Bf16).unwrap();
        let apart = Sim::with_fusion(options(without(), layout, Some(pinned)));
        let apart = run_at(&case, &apart, Precision::Bf16).unwrap();
        assert_eq!(
            folded.keys().collect::<Vec<_>>(),
            apart.keys().collect::<Vec<_>>()
        );
        for (file, tensors) in &folded {
            for (name, t) in tensors {
                let want = &apart[file][name];
                assert_eq!(
                    support::session::bits(t),
                    support::session::bits(want),
                    "{layout:?}: {file}/{name}"
                );
            }
        }
    }
}
