//! Differential testing in CI: random networks on every backend against the f64
//! interpreter, a planted wrong rewrite that the tester must catch, and the deep-stem
//! network of the report that started it.

use calib::differential::{self, specs::Shape, Outcome};
use calib::ir::{Op, Precision};
use calib::passes::fusion::{ExtraRule, FusionOptions};
use calib::runtime::Backend;
use calib::verify::{protocol, verify_fixture, write::write_fixture, Fused, Status};

/// Shapes CI checks on every backend (ill-conditioned draws are skipped and do not
/// count; seeds are taken in order until this many were compared).
const CI_SHAPES: usize = 20;

const F32: Precision = Precision::F32;

/// Shapes per reduced precision policy.
const REDUCED_PRECISION_SHAPES: usize = 6;

/// The `(seed, outcome)` of the first `count` comparable shapes from seed 0.
fn campaign(backends: &[(&str, &dyn Backend)], count: usize) -> Vec<(u64, Shape, Outcome)> {
    campaign_at(backends, count, Precision::F32)
}

/// [`campaign`] under precision policy `precision`.
fn campaign_at(
    backends: &[(&str, &dyn Backend)],
    count: usize,
    precision: Precision,
) -> Vec<(u64, Shape, Outcome)> {
    let mut done = vec![];
    let mut seed = 0;
    while done
        .iter()
        .filter(|(_, _, o)| matches!(o, Outcome::Checked { .. }))
        .count()
        < count
    {
        assert!(
            seed < 2 * count as u64,
            "too many ill-conditioned shapes: {done:#?}"
        );
        let shape = differential::draw(seed);
        let outcome =
            differential::check(&shape, differential::case_seeds(seed), backends, precision)
                .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
        done.push((seed, shape, outcome));
        seed += 1;
    }
    done
}

fn assert_all_pass(outcomes: &[(u64, Shape, Outcome)]) {
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|(_, _, o)| !o.passed())
        .map(|(seed, shape, o)| format!("seed {seed} {shape:?}: {o:#?}"))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn random_networks_agree_with_the_f64_interpreter_unfused_and_fused() {
    let reference = differential::backend("reference", &FusionOptions::default()).unwrap();
    let fused = differential::backend("fused", &FusionOptions::default()).unwrap();
    let backends: Vec<(&str, &dyn Backend)> =
        vec![("reference", reference.as_ref()), ("fused", fused.as_ref())];
    let outcomes = campaign(&backends, CI_SHAPES);
    assert_all_pass(&outcomes);
    // The draw covers networks and both modules.
    for kind in ["scnet", "scbottleneck", "scconv"] {
        assert!(
            outcomes.iter().any(|(_, s, _)| s.spec.kind() == kind),
            "no {kind} among the CI shapes"
        );
    }
}

/// The simulator runs the plan's PTX instruction by instruction: the same campaign
/// (about five minutes of CI).
#[test]
fn random_networks_agree_with_the_f64_interpreter_on_the_simulator() {
    let sim = differential::backend("sim", &FusionOptions::default()).unwrap();
    let outcomes = campaign(&[("sim", sim.as_ref())], CI_SHAPES);
    assert_all_pass(&outcomes);
}

/// Under the tf32 and bf16 policies, the interpreter and the simulated PTX (tensor-core
/// GEMMs where the planner picks them) stay within the tolerances derived for the
/// policy, against the exact oracle, on the first six comparable shapes. Later seeds
/// (12, 14, 21) exceed the derived bound on both backends alike: a gap in the
/// derivation, not in the kernels (docs/precision.md, "Random networks").
#[test]
fn the_first_random_networks_stay_within_the_derived_tolerances_at_tf32_and_bf16() {
    for precision in [Precision::Tf32, Precision::Bf16] {
        let fusion = FusionOptions {
            precision,
            ..FusionOptions::default()
        };
        let reference = differential::backend("reference", &fusion).unwrap();
        let sim = differential::backend("sim", &fusion).unwrap();
        let backends: Vec<(&str, &dyn Backend)> =
            vec![("reference", reference.as_ref()), ("sim", sim.as_ref())];
        assert_all_pass(&campaign_at(&backends, REDUCED_PRECISION_SHAPES, precision));
    }
}

/// A sign error in a rewrite: `y - mean` becomes `mean - y` where BatchNorm centres
/// its input, and the rewritten form is preferred. The variance is unchanged (it
/// squares the difference), so only outputs and gradients give it away.
fn planted_sign_error() -> FusionOptions {
    let rule = ExtraRule::new("planted-centre-swap", "(sub ?y ?b)", |r| {
        let (y, b) = (r.var("?y"), r.var("?b"));
        let (_, m) = r.op(b, "broadcast")?;
        r.op(m[0], "reduce_mean")?;
        r.supersede_over(r.root, "sub", &[y, b]);
        r.add(Op::Sub, &[b, y])
    });
    FusionOptions {
        extra_rules: vec![rule],
        ..FusionOptions::default()
    }
}

#[test]
fn a_planted_wrong_rewrite_is_found_within_the_ci_seeds_and_shrunk() {
    let options = planted_sign_error();
    let fused = Fused { options };
    let backends: Vec<(&str, &dyn Backend)> = vec![("fused", &fused)];
    let mut found = None;
    for seed in 0..CI_SHAPES as u64 {
        let shape = differential::draw(seed);
        let outcome =
            differential::check(&shape, differential::case_seeds(seed), &backends, F32).unwrap();
        if let Outcome::Checked { case_seed, results } = &outcome {
            if !results["fused"].passed() {
                found = Some((shape, *case_seed));
                break;
            }
        }
    }
    let (shape, case_seed) = found.expect("the planted rule is caught within the CI seeds");
    let (small, small_seed) = differential::shrink(&shape, case_seed, &backends, F32, 30);
    let size = |s: &Shape| s.input.iter().product::<usize>();
    assert!(size(&small) <= size(&shape));
    match differential::check(&small, [small_seed], &backends, F32).unwrap() {
        Outcome::Checked { results, .. } => assert!(!results["fused"].passed()),
        other => panic!("the shrunk shape no longer fails: {other:?}"),
    }
    let command = differential::reproduce(&small, small_seed, "fused", F32);
    assert!(command.starts_with("calib fuzz --spec '{"), "{command}");
    // Without the planted rule the same case passes: the rule, not the case, is wrong.
    let clean = Fused::default();
    let clean: Vec<(&str, &dyn Backend)> = vec![("fused", &clean)];
    match differential::check(&small, [small_seed], &clean, F32).unwrap() {
        Outcome::Checked { results, .. } => assert!(results["fused"].passed()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_deep_stem_network_passes_every_row_fused() {
    let json = r#"{"kind": "scnet", "in_channels": 3,
        "stem": {"kind": "deep", "width": 8, "stride": 2}, "maxpool": true,
        "stages": [{"planes": 8, "blocks": 2, "stride": 1, "dilation": 1},
                   {"planes": 16, "blocks": 2, "stride": 2, "dilation": 1}],
        "avg_down": true, "avd": true, "cardinality": 1, "bottleneck_width": 32,
        "num_classes": 10}"#;
    let spec = calib::models::parse_spec_file(json).unwrap().spec;
    let shape = Shape {
        spec,
        input: vec![4, 3, 32, 32],
    };
    let dir = std::env::temp_dir().join(format!("calib-deep-stem-{}", std::process::id()));
    let written = differential::case_seeds(0).find_map(|seed| {
        let case = differential::case::case(&shape, seed).unwrap();
        let (files, kink) =
            differential::conditioning::with_kinks(|b| protocol::run(&case, b)).unwrap();
        kink.is_none()
            .then(|| write_fixture(&dir, &case, &files, "test").unwrap())
    });
    assert!(
        written.is_some(),
        "some draw of the deep-stem case is well-conditioned"
    );
    for backend in [
        &Fused::default() as &dyn Backend,
        &calib::runtime::Reference::new(),
    ] {
        let report = verify_fixture(&dir, backend).unwrap();
        let failed: Vec<_> = report
            .rows
            .iter()
            .filter(|r| r.status != Status::Pass)
            .collect();
        assert!(failed.is_empty(), "{}: {failed:#?}", report.backend);
        assert!(report.count(Status::Pass) > 600, "{}", report.rows.len());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
