//! Device descriptions: the built-in ones load, and a bad file says which file and
//! which field is wrong.

use calib_cost::{Device, DeviceError};
use std::path::Path;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn h200_json() -> serde_json::Value {
    serde_json::to_value(Device::named("h200").unwrap()).unwrap()
}

#[test]
fn the_built_in_devices_load_by_name() {
    for name in ["h200", "h100-sxm", "a100-sxm"] {
        let d = Device::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(d.sms > 0 && !d.timing.fitted_to.is_empty(), "{name}");
    }
    assert_eq!(Device::default().name, "NVIDIA H200 SXM");
    // What the driver reports (nvidia-smi's MiB): plans are checked against it.
    let mib = |name: &str| Device::load(name).unwrap().memory_bytes / (1 << 20);
    assert_eq!(
        [mib("h200"), mib("h100-sxm"), mib("a100-sxm")],
        [143771, 81559, 81920]
    );
    let e = Device::load("h300").unwrap_err().to_string();
    assert!(
        e.contains("unknown device `h300`") && e.contains("h100-sxm"),
        "{e}"
    );
}

#[test]
fn a_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "mine.json", &h200_json().to_string());
    assert_eq!(
        Device::load(path.to_str().unwrap()).unwrap(),
        Device::named("h200").unwrap()
    );
}

#[test]
fn bad_files_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: String, wanted: &[&str]| {
        let path = write(dir.path(), name, &text);
        let e = Device::from_json_file(&path).unwrap_err();
        assert!(matches!(e, DeviceError::File { .. }));
        let e = e.to_string();
        assert!(e.contains(name), "{e}");
        for w in wanted {
            assert!(e.contains(w), "{name}: `{w}` missing from: {e}");
        }
    };
    check("truncated.json", "{\"name\": \"x\", ".into(), &["EOF"]);
    let mut missing = h200_json();
    missing.as_object_mut().unwrap().remove("sms");
    check(
        "missing.json",
        missing.to_string(),
        &["missing field `sms`"],
    );
    let mut negative = h200_json();
    negative["timing"]["load_latency_cycles"] = (-3.0).into();
    check(
        "negative.json",
        negative.to_string(),
        &["timing.load_latency_cycles"],
    );
    let mut zero = h200_json();
    zero["dram_bandwidth"] = 0.0.into();
    check("zero.json", zero.to_string(), &["`dram_bandwidth`"]);
    let mut fraction = h200_json();
    fraction["timing"]["dram_efficiency"] = 1.5.into();
    check(
        "fraction.json",
        fraction.to_string(),
        &["timing.dram_efficiency"],
    );
    let mut unknown = h200_json();
    unknown["timing"]["warp_speed"] = 9.0.into();
    check(
        "unknown.json",
        unknown.to_string(),
        &["unknown field `warp_speed`"],
    );
    let mut no_memory = h200_json();
    no_memory["memory_bytes"] = 0.into();
    check(
        "memory.json",
        no_memory.to_string(),
        &["`memory_bytes`", "positive"],
    );
    let mut old_file = h200_json();
    old_file.as_object_mut().unwrap().remove("memory_bytes");
    check(
        "old.json",
        old_file.to_string(),
        &["missing field `memory_bytes`"],
    );
    let mut wrong_type = h200_json();
    wrong_type["sms"] = "many".into();
    check(
        "type.json",
        wrong_type.to_string(),
        &["sms", "invalid type"],
    );

    let e = Device::from_json_file(&dir.path().join("absent.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.json"), "{e}");
}
