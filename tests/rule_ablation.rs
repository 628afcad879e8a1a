//! Rule ablation: fusion with rules or whole families turned off still computes the
//! authors' numbers, a rule turned off never fires, and the command line names the rules,
//! refuses unknown ones and reports what each family is worth (`compile --ablate`).

mod support;

use calib::ir::{DType, Mode};
use calib::passes::fusion::{catalogue, families, fuse, FusionOptions, RuleSet};
use calib::passes::{train_step, TrainConfig};
use calib::verify::{verify_fixture, Fused, Status};
use support::calib;

fn without(names: &[&str]) -> FusionOptions {
    FusionOptions {
        rules: RuleSet::without(names).unwrap(),
        ..FusionOptions::default()
    }
}

#[test]
fn every_family_off_still_passes_the_fixture() {
    let dir = support::fixture("tiny_scnet");
    for family in families() {
        let backend = Fused {
            options: without(&[family]),
        };
        let report = verify_fixture(&dir, &backend).unwrap();
        let failed: Vec<_> = report
            .rows
            .iter()
            .filter(|r| r.status == Status::Fail)
            .map(|r| &r.name)
            .collect();
        assert!(failed.is_empty(), "without {family}: {failed:?}");
        assert!(report.count(Status::Pass) > 400);
    }
}

#[test]
fn a_rule_turned_off_never_fires_and_the_report_says_so() {
    let source =
        calib::resolve_model(&support::fixture("tiny_scnet").display().to_string()).unwrap();
    let shape = calib::with_batch(source.input_shape.clone(), Some(4)).unwrap();
    let model = calib::models::build(&source.spec, &shape, Mode::Train, DType::F32).unwrap();
    let step = train_step(&model.graph, &TrainConfig::default()).unwrap();
    let fired = |f: &calib::passes::fusion::Fusion, rule: &str| -> usize {
        f.report
            .phases
            .iter()
            .filter_map(|p| p.rules.get(rule))
            .sum()
    };
    let all = fuse(&step.graph, &FusionOptions::default()).unwrap();
    assert!(fired(&all, "bn-variance-shifted") > 0);
    assert!(all.report.disabled_rules.is_empty());

    let off = fuse(&step.graph, &without(&["bn-variance-shifted"])).unwrap();
    assert_eq!(fired(&off, "bn-variance-shifted"), 0);
    assert_eq!(off.report.disabled_rules, ["bn-variance-shifted"]);
    assert!(off
        .report
        .to_text()
        .contains("rules off: bn-variance-shifted"));

    // Without kernel formation, every op is a kernel of its own (but for the plan
    // passes that still fold tiny ones).
    let unfused = fuse(&step.graph, &without(&["lower", "plan"])).unwrap();
    assert!(
        unfused.program.kernels.len() > 3 * all.program.kernels.len(),
        "{} kernels unfused, {} fused",
        unfused.program.kernels.len(),
        all.program.kernels.len()
    );
}

#[test]
fn rules_are_listed_and_unknown_ones_refused() {
    let o = calib(&["rules", "--json"]);
    assert!(o.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), catalogue().len());

    let fixture = support::fixture("tiny_scnet").display().to_string();
    let o = calib(&["verify", &fixture, "--fused", "--disable-rule", "fuse-all"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown rule `fuse-all`"), "{err}");
    // The interpreter runs graphs unfused: rules would silently do nothing there.
    let o = calib(&["verify", &fixture, "--disable-rule", "lower"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("add --fused"));

    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("rules.txt");
    std::fs::write(
        &list,
        "# only folding and kernel formation\nbn-fold-eval\nlower\n",
    )
    .unwrap();
    let list = list.display().to_string();
    let o = calib(&["verify", &fixture, "--fused", "--rules", &list]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn ablation_reports_every_family() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let fixture = support::fixture("tiny_scnet").display().to_string();
    let o = calib(&[
        "compile", &fixture, "--train", "--batch", "4", "--ablate", "--out", &out,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(dir.path().join("ablation.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = v["families"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["family"].as_str().unwrap()).collect();
    assert_eq!(names, families());
    let full = v["full_kernels"].as_u64().unwrap();
    let lower = rows.iter().find(|r| r["family"] == "lower").unwrap();
    assert!(lower["error"].is_null());
    assert!(lower["kernels"].as_u64().unwrap() > 3 * full, "{lower}");
    assert!(lower["predicted_ms"].as_f64().unwrap() > v["full_predicted_ms"].as_f64().unwrap());
    let report = std::fs::read_to_string(dir.path().join("report.txt")).unwrap();
    assert!(report.contains("ablation: the plan with one rule family off"));
}
