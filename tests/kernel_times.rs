//! `calib bench --per-kernel`: the table of measured launch times, written in the
//! columns of the Nsight Compute tables under `shared/gpu/` (checked here from given
//! timings, since measuring needs a GPU), and refused on backends without CUDA events.

mod support;

use calib::device::compile_graph;
use calib::ir::{DType, Mode};
use calib::kernel_times::{self, HEADER};
use calib::models::build;
use calib::passes::fusion::FusionOptions;
use calib::passes::{train_step, TrainConfig};
use calib::resolve_model;
use support::{calib, fixture};

/// The H200 table the columns follow.
fn reference_table() -> String {
    let path = fixture("../gpu/h200-2026-12-04-scnet50-b64-kernels.csv");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fields of one CSV line (quoted fields may hold commas and doubled quotes).
fn fields(line: &str) -> Vec<String> {
    let (mut out, mut field, mut quoted) = (vec![], String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    out.push(field);
    out
}

#[test]
fn the_table_has_the_reference_columns_and_a_row_per_launch() {
    let reference = reference_table();
    let mut lines = reference.lines();
    assert_eq!(lines.next(), Some(HEADER));
    let columns = fields(HEADER).len();
    let sample = fields(lines.next().unwrap());
    assert_eq!(sample.len(), columns);

    let source = resolve_model(fixture("tiny_scnet").to_str().unwrap()).unwrap();
    let model = build(&source.spec, &source.input_shape, Mode::Train, DType::F32).unwrap();
    let step = train_step(&model.graph, &TrainConfig::default()).unwrap();
    let plan = compile_graph(&step.graph, Some(&FusionOptions::default())).unwrap();
    let measured: Vec<f64> = (0..plan.kernels.len())
        .map(|i| 1.0 + 0.25 * i as f64)
        .collect();
    let table = kernel_times::csv(&plan, &measured).unwrap();
    let rows: Vec<Vec<String>> = table.lines().skip(1).map(fields).collect();
    assert_eq!(table.lines().next(), Some(HEADER));
    assert_eq!(rows.len(), plan.kernels.len());
    for (i, (row, launch)) in rows.iter().zip(&plan.kernels).enumerate() {
        assert_eq!(row.len(), columns, "{row:?}");
        let geometry = |d: [u32; 3]| format!("({},{},{})", d[0], d[1], d[2]);
        assert_eq!(row[0], i.to_string());
        assert_eq!(row[1], launch.name);
        assert_eq!(row[2], geometry(launch.block));
        assert_eq!(row[3], geometry(launch.grid));
        assert_eq!(row[4].parse::<f64>().unwrap(), measured[i]);
        assert_eq!(row[5], launch.kernel);
        let anchor = plan.program.kernel(&launch.kernel).unwrap().anchor.name();
        assert_eq!(row[6], anchor);
        assert_eq!(row[7], launch.info.label);
        assert_eq!(row[8].parse::<f64>().unwrap(), launch.info.flops.round());
        assert_eq!(row[9].parse::<f64>().unwrap(), launch.info.bytes.round());
        match launch.info.estimated_us {
            0.0 => assert_eq!(row[10], "", "launch {i}"),
            e => assert!(
                (row[10].parse::<f64>().unwrap() - e).abs() <= 0.005,
                "launch {i}"
            ),
        }
    }
    assert!(
        plan.kernels.iter().any(|k| k.info.estimated_us > 0.0),
        "the plan's first launches carry estimates"
    );
    let short = kernel_times::csv(&plan, &measured[1..]).unwrap_err();
    assert!(short.contains("measured times"), "{short}");
}

#[test]
fn per_kernel_timing_is_refused_without_cuda() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kernels.csv");
    for backend in ["reference", "sim"] {
        let o = calib(&[
            "bench",
            "--model",
            fixture("scconv").to_str().unwrap(),
            "--backend",
            backend,
            "--per-kernel",
            file.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("--per-kernel") && err.contains("--backend cuda") && err.contains(backend),
            "{err}"
        );
        assert!(!file.exists());
    }
}
