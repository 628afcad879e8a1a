//! Safetensors round trips, damaged files, state checks, and the shared fixtures.

mod common;
use calib_ir::{DType, TensorType};
use calib_runtime::weights::{self, expected_state};
use calib_runtime::{check_state, HostTensor, Storage, TensorMap, WeightsError};
use common::*;
use std::fs;
use std::path::Path;

fn sample() -> TensorMap {
    let mut m = TensorMap::new();
    m.insert(
        "conv.weight".into(),
        t(&[2, 1, 1, 3], &[0.5, -1.25, 3.0, 1e-3, -0.0, 7.0]),
    );
    let half =
        HostTensor::new(DType::F16, vec![3], Storage::F32(vec![1.0, -0.5, 65504.0])).unwrap();
    m.insert("half".into(), half);
    let brain = HostTensor::new(DType::BF16, vec![2], Storage::F32(vec![3.140625, -1e30])).unwrap();
    m.insert("brain".into(), brain);
    m.insert("bn.num_batches_tracked".into(), ti(&[], &[7]));
    m.insert("labels".into(), ti(&[3], &[-1, 0, i64::MAX]));
    m
}

#[test]
fn round_trip_keeps_dtypes_shapes_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.safetensors");
    let saved = sample();
    weights::save(&path, &saved).unwrap();
    let loaded = weights::load(&path).unwrap();
    assert_eq!(loaded, saved);
    assert_eq!(loaded["half"].dtype(), DType::F16);
    assert_eq!(loaded["brain"].dtype(), DType::BF16);
    assert_eq!(loaded["bn.num_batches_tracked"].shape(), &[] as &[usize]);
    // Only the target remains: the temporary file was renamed over it.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("state.safetensors")]);
}

#[test]
fn save_overwrites_and_narrows_f64_storage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    weights::save(&path, &sample()).unwrap();
    let mut m = TensorMap::new();
    m.insert(
        "x".into(),
        HostTensor::from_f64(vec![2], vec![0.1, 2.5]).unwrap(),
    );
    weights::save(&path, &m).unwrap();
    let loaded = weights::load(&path).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded["x"].as_f32(), Some(&[0.1f32, 2.5][..]));
}

fn load_err(bytes: &[u8]) -> (String, WeightsError) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.safetensors");
    fs::write(&path, bytes).unwrap();
    let err = weights::load(&path).unwrap_err();
    (err.to_string(), err)
}

fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    bytes
}

#[test]
fn corrupt_header_is_an_error_naming_the_file() {
    let (msg, err) = load_err(&with_header("{not json", &[]));
    assert!(matches!(err, WeightsError::Corrupt { .. }), "{err:?}");
    assert!(
        msg.contains("broken.safetensors") && msg.contains("JSON"),
        "{msg}"
    );
}

#[test]
fn truncated_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.safetensors");
    weights::save(&path, &sample()).unwrap();
    let bytes = fs::read(&path).unwrap();
    // Data cut short.
    let (msg, err) = load_err(&bytes[..bytes.len() - 3]);
    assert!(matches!(err, WeightsError::Corrupt { .. }), "{err:?}");
    assert!(
        msg.contains("broken.safetensors") && msg.contains("truncated"),
        "{msg}"
    );
    // Header cut short.
    let (msg, _) = load_err(&bytes[..20]);
    assert!(
        msg.contains("header claims") && msg.contains("truncated"),
        "{msg}"
    );
    // Not even the header length.
    let (msg, _) = load_err(&bytes[..5]);
    assert!(msg.contains("5 bytes is too short"), "{msg}");
}

#[test]
fn byte_ranges_that_disagree_with_shapes_are_errors() {
    let header = r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    let (msg, err) = load_err(&with_header(header, &[0; 8]));
    assert!(matches!(err, WeightsError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("tensor `w` has 8 bytes") && msg.contains("needs 12"),
        "{msg}"
    );
}

/// The message for a file of `header` and `data` bytes, which must be refused as
/// corrupt.
fn corrupt(header: &str, data: usize) -> String {
    let (msg, err) = load_err(&with_header(header, &vec![0; data]));
    assert!(matches!(err, WeightsError::Corrupt { .. }), "{err:?}");
    assert!(msg.contains("broken.safetensors"), "{msg}");
    msg
}

#[track_caller]
fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "`{p}` missing from: {msg}");
    }
}

#[test]
fn two_tensors_of_one_name_are_an_error_not_last_wins() {
    let header = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    assert_has(&corrupt(header, 8), &["tensor `w` appears twice"]);
}

#[test]
fn header_errors_name_the_tensor_at_fault() {
    let f32 = |name: &str, shape: &str, begin: usize, end: usize| {
        format!(r#""{name}":{{"dtype":"F32","shape":{shape},"data_offsets":[{begin},{end}]}}"#)
    };
    let header = |entries: &[String]| format!("{{{}}}", entries.join(","));
    // A shape too large to count: safetensors says only "ValidationOverflow".
    let msg = corrupt(&header(&[f32("huge", "[4611686018427387904,8]", 0, 4)]), 4);
    assert_has(
        &msg,
        &["tensor `huge`", "[4611686018427387904,8]", "64 bits"],
    );
    // `a` claims 12 bytes for 8: it is at fault, not `b` after it.
    let msg = corrupt(
        &header(&[f32("a", "[2]", 0, 12), f32("b", "[2]", 12, 20)]),
        20,
    );
    assert_has(&msg, &["tensor `a` has 12 bytes", "needs 8"]);
    assert!(!msg.contains("`b`"), "{msg}");
    // A gap names both neighbours, listed in any order.
    let msg = corrupt(
        &header(&[f32("b", "[2]", 12, 20), f32("a", "[2]", 0, 8)]),
        20,
    );
    assert_has(
        &msg,
        &[
            "4 unused bytes",
            "`a` (ending at byte 8)",
            "`b` (beginning at byte 12)",
        ],
    );
    let msg = corrupt(&header(&[f32("a", "[2]", 4, 12)]), 12);
    assert_has(&msg, &["starts with 4 unused bytes", "`a`"]);
    let msg = corrupt(
        &header(&[f32("a", "[2]", 0, 8), f32("b", "[2]", 4, 12)]),
        12,
    );
    assert_has(&msg, &["`a` (bytes 0..8) and `b` (bytes 4..12) overlap"]);
    let msg = corrupt(&header(&[f32("a", "[2]", 8, 0)]), 8);
    assert_has(&msg, &["tensor `a`", "end before they begin"]);
    let msg = corrupt(&header(&[f32("a", "[2]", 0, 8)]), 11);
    assert_has(&msg, &["3 bytes follow that no tensor owns", "`a`"]);
    let msg = corrupt(
        r#"{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#,
        8,
    );
    assert_has(&msg, &["tensor `a` has unknown dtype `F33`"]);
    let msg = corrupt(
        r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
        8,
    );
    assert_has(&msg, &["tensor `a`", "invalid value"]);
    let msg = corrupt(r#"{"a":{"dtype":"F32","shape":[2]}}"#, 8);
    assert_has(&msg, &["tensor `a`", "missing field `data_offsets`"]);
    assert_has(&corrupt("[1, 2]", 0), &["not valid safetensors JSON"]);
    // Metadata is not a tensor.
    let ok = with_header(
        &format!(
            r#"{{"__metadata__":{{"format":"pt"}},{}}}"#,
            f32("a", "[2]", 0, 8)
        ),
        &[0; 8],
    );
    assert_eq!(weights::parse(&ok, "ok").unwrap()["a"].shape(), [2]);
}

#[test]
fn unsupported_dtypes_name_the_tensor() {
    let header = r#"{"running_var":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#;
    let (msg, err) = load_err(&with_header(header, &[0; 8]));
    assert!(
        matches!(err, WeightsError::UnsupportedDType { .. }),
        "{err:?}"
    );
    assert!(msg.contains("running_var") && msg.contains("F64"), "{msg}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let err = weights::load("/nonexistent/dir/none.safetensors").unwrap_err();
    assert!(matches!(err, WeightsError::Io { .. }));
    assert!(err.to_string().contains("none.safetensors"));
}

#[test]
fn check_state_reports_every_difference_at_once() {
    let f32t = |shape: &[usize]| TensorType::new(DType::F32, shape.to_vec());
    let expected = vec![
        ("conv.weight".to_string(), f32t(&[2, 1, 1, 3])),
        ("bn.weight".to_string(), f32t(&[2])),
        ("bn.bias".to_string(), f32t(&[2])),
        ("half".to_string(), f32t(&[4])),
        (
            "bn.num_batches_tracked".to_string(),
            TensorType::new(DType::F32, vec![]),
        ),
        ("brain".to_string(), TensorType::new(DType::BF16, vec![2])),
    ];
    let err = check_state(&expected, &sample()).unwrap_err();
    let names = |v: &[(String, TensorType)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&err.missing), vec!["bn.weight", "bn.bias"]);
    assert_eq!(names(&err.unexpected), vec!["labels"]);
    let mismatched: Vec<_> = err.mismatched.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(mismatched, vec!["half", "bn.num_batches_tracked"]);
    let text = err.to_string();
    assert_eq!(text.lines().count(), 6, "{text}");
    assert!(text.contains("missing    bn.bias: f32[2]"), "{text}");
    assert!(text.contains("unexpected labels: i64[3]"), "{text}");
    assert!(
        text.contains("mismatched half: expected f32[4], found f16[3]"),
        "{text}"
    );
    assert!(
        text.contains("mismatched bn.num_batches_tracked: expected f32[], found i64[]"),
        "{text}"
    );

    let exact: Vec<_> = sample().iter().map(|(n, t)| (n.clone(), t.ty())).collect();
    assert_eq!(check_state(&exact, &sample()), Ok(()));
}

#[test]
fn expected_state_lists_graph_params() {
    let mut b = calib_ir::GraphBuilder::new(calib_ir::Mode::Eval, DType::F32);
    let x = b.input("input", DType::F32, vec![1, 3, 4, 4]).unwrap();
    let y = b
        .conv_layer("conv1", x, &calib_ir::ConvSpec::new(2, 3))
        .unwrap();
    b.output("y", y).unwrap();
    let state = expected_state(&b.finish());
    assert_eq!(
        state,
        vec![(
            "conv1.weight".to_string(),
            TensorType::new(DType::F32, vec![2, 3, 3, 3])
        )]
    );
}

fn dtype_of(name: &str) -> DType {
    match name {
        "float32" => DType::F32,
        "float16" => DType::F16,
        "bfloat16" => DType::BF16,
        "int64" => DType::I64,
        other => panic!("meta.json names an unexpected dtype {other}"),
    }
}

#[test]
fn every_fixture_file_loads_with_the_tensors_its_meta_lists() {
    let mut files = 0;
    let mut dirs: Vec<_> = fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in dirs.iter().filter(|d| d.join("meta.json").is_file()) {
        let meta: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
        for entry in meta["files"].as_array().unwrap() {
            let file = dir.join(entry["file"].as_str().unwrap());
            let loaded = weights::load(&file).unwrap_or_else(|e| panic!("{e}"));
            let listed = entry["tensors"].as_object().unwrap();
            let expected: Vec<(String, TensorType)> = listed
                .iter()
                .map(|(name, info)| {
                    let shape: Vec<usize> = info["shape"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_u64().unwrap() as usize)
                        .collect();
                    (
                        name.clone(),
                        TensorType::new(dtype_of(info["dtype"].as_str().unwrap()), shape),
                    )
                })
                .collect();
            check_state(&expected, &loaded).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            files += 1;
        }
    }
    assert!(files >= 20, "only {files} fixture files found");
}

#[test]
fn batchnorm_counters_are_zero_dimensional_i64() {
    let p = weights::load(Path::new(&fixtures()).join("scconv/params.safetensors")).unwrap();
    let n = &p["k2.2.num_batches_tracked"];
    assert_eq!((n.dtype(), n.shape()), (DType::I64, &[] as &[usize]));
    assert_eq!(n.as_i64(), Some(&[0][..]));
    let after =
        weights::load(Path::new(&fixtures()).join("scconv/train_buffers_after.safetensors"))
            .unwrap();
    assert_eq!(after["k2.2.num_batches_tracked"].as_i64(), Some(&[1][..]));
    assert_eq!(p["k2.1.weight"].shape(), &[8, 8, 3, 3]);
}
