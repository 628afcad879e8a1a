//! Every kind of bad input the `calib` binary reads, as a table: IR text and JSON, model
//! specs, safetensors files, PyTorch checkpoints, fixture meta.json files, IDX data files
//! and command-line arguments, through each subcommand that reads them. For every row the
//! process must exit with an error status (not a signal, so no abort), say nothing of a
//! panic, and name the culprit: the row's substrings must all appear in stderr.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One bad input: files written into a fresh directory, then the arguments (`{dir}`
/// stands for that directory, `{fixture}` for the `scconv` fixture copied into it).
struct Case {
    what: &'static str,
    args: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    fixture: bool,
    expect: &'static [&'static str],
}

fn case(what: &'static str, args: &'static str, expect: &'static [&'static str]) -> Case {
    Case {
        what,
        args,
        files: vec![],
        fixture: false,
        expect,
    }
}

impl Case {
    fn file(mut self, name: &'static str, content: impl Into<Vec<u8>>) -> Self {
        self.files.push((name, content.into()));
        self
    }

    /// The `scconv` fixture in the case's directory, with this case's files over it.
    fn on_fixture(mut self) -> Self {
        self.fixture = true;
        self
    }
}

/// A safetensors file: the header JSON, then `data` zero bytes.
fn safetensors(header: &str, data: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.resize(bytes.len() + data, 0);
    bytes
}

/// An IDX file of unsigned bytes with `dims`, then `data`.
fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, dims.len() as u8];
    dims.iter().for_each(|d| bytes.extend(d.to_be_bytes()));
    bytes.extend(data);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A graph in text form from its node lines.
fn graph(nodes: &str) -> String {
    format!("graph {{\n{nodes}\n  return y=%1\n}}\n")
}

/// A valid SCNet-50 spec edited by `edit`, as a file with `input_shape`.
fn scnet(edit: impl FnOnce(&mut serde_json::Value), input_shape: serde_json::Value) -> Vec<u8> {
    let mut spec = serde_json::to_value(calib::models::presets::scnet50()).unwrap();
    edit(&mut spec);
    serde_json::json!({"spec": spec, "input_shape": input_shape})
        .to_string()
        .into()
}

fn scconv(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut spec = serde_json::json!({"kind": "scconv", "channels": 8, "stride": 1,
        "padding": 1, "dilation": 1, "groups": 1, "pooling_r": 4});
    edit(&mut spec);
    spec.to_string().into()
}

/// The scconv fixture's meta.json edited by `edit`.
fn meta(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let path = support::fixture("scconv").join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut meta);
    meta.to_string().into()
}

const TRAIN: &str = "train --data-dir {dir} --out {dir}/run --batch 2 --epochs 1 --max-steps 1";
const IMAGES: &str = "train-images-idx3-ubyte.gz";
const LABELS: &str = "train-labels-idx1-ubyte.gz";

const IMPORT: &str = "import {dir}/m.pth --out {dir}/m.safetensors";
/// Where `tiny_scnet_legacy.pth`'s object pickle starts (after the magic number, the
/// protocol version and sys_info), and where its first storage's element count is.
const LEGACY_HEADER: usize = 137;
const LEGACY_STORAGES: usize = 16416;

fn cases() -> Vec<Case> {
    let f32_entry = |name: &str, shape: &str, begin: usize, end: usize| {
        format!(r#""{name}":{{"dtype":"F32","shape":{shape},"data_offsets":[{begin},{end}]}}"#)
    };
    let params =
        |entries: &[String], data: usize| safetensors(&format!("{{{}}}", entries.join(",")), data);
    let fixture_params =
        std::fs::read(support::fixture("scconv").join("params.safetensors")).unwrap();
    let images = idx(&[2, 2, 2], &[0; 8]);
    let pth = |name: &str| std::fs::read(support::fixture("../pth").join(name)).unwrap();
    let (legacy, zip) = (pth("tiny_scnet_legacy.pth"), pth("tiny_scnet.pth"));
    let labels = idx(&[2], &[1, 2]);
    vec![
        // ----- arguments -----
        case("unknown subcommand", "frobnicate", &["frobnicate"]),
        case("unknown preset", "info scnet77", &["scnet77", "scnet50"]),
        case("missing spec file", "info {dir}/absent.json", &["absent.json"]),
        case("zero batch", "info scnet50 --batch 0", &["--batch"]),
        case("batch not a number", "info scnet50 --batch many", &["--batch", "many"]),
        case("batch past usize", "info scnet50 --batch 99999999999999999999999", &["--batch"]),
        case("batch over the bound", "ir scnet50 --batch 33554432", &["batch 33554432", "limit"]),
        case("unknown IR format", "ir scnet50 --format yaml", &["yaml"]),
        case("--train with --step", "ir scnet50 --train --step", &["--step"]),
        case("step of a module without logits", "ir {dir} --step", &["logits"]).on_fixture(),
        case("unknown backend", "bench --model scnet50 --backend tpu", &["tpu"]),
        case("--cuda-graph off cuda", "bench --model scnet50 --cuda-graph", &["--cuda-graph"]),
        case("--per-kernel off cuda", "bench --model scnet50 --per-kernel {dir}/t.csv", &["--per-kernel"]),
        case("no per-kernel runs", "bench --model scnet50 --per-kernel-runs 0", &["--per-kernel-runs"]),
        case("a batch no host can hold", "bench --model scnet50 --batch 100000", &["not enough memory", "bytes", "available"]),
        case("replicas without --train", "compile scnet50 --replicas 2 --out {dir}/c", &["--train"]),
        case("zero replicas", "compile scnet50 --train --replicas 0 --out {dir}/c", &["--replicas"]),
        case("batch not split by replicas", "compile scnet50 --train --replicas 3 --batch 4 --out {dir}/c", &["split evenly"]),
        case("zero bucket", "compile scnet50 --train --replicas 2 --batch 2 --bucket-mb 0 --out {dir}/c", &["--bucket-mb"]),
        case("negative time limit", "compile scnet50 --time-limit=-1 --out {dir}/c", &["--time-limit"]),
        case("unknown device", "compile scnet50 --device h300 --out {dir}/c", &["h300", "h200"]),
        case("device file without memory", "compile scnet50 --device {dir}/gpu.json --out {dir}/c", &["gpu.json", "memory_bytes"])
            .file("gpu.json", {
                let mut d = serde_json::to_value(calib::passes::fusion::Device::default()).unwrap();
                d.as_object_mut().unwrap().remove("memory_bytes");
                d.to_string()
            }),
        case("verify without a directory", "verify", &["DIRS"]),
        case("verify on an empty directory", "verify {dir}", &["meta.json"]),
        case("verify on an unknown backend", "verify {dir} --backend tpu", &["tpu"]).on_fixture(),
        case("explain without a compile output", "explain {dir} k0", &["before.json"]),
        case("explain on a corrupt compile output", "explain {dir} k0", &["before.json"])
            .file("before.json", "{\"nodes\": ["),
        case("report options without --report", "compile scnet50 --timings t.csv --out {dir}/o", &["--report"]),
        // ----- model specs -----
        case("truncated spec", "info {dir}/s.json", &["s.json", "EOF"])
            .file("s.json", "{\"spec\": {\"kind\": \"scnet\", "),
        case("empty spec file", "info {dir}/s.json", &["s.json", "EOF"]).file("s.json", ""),
        case("spec not an object", "info {dir}/s.json", &["s.json", "JSON object"]).file("s.json", "[1, 2]"),
        case("document without spec or kind", "info {dir}/s.json", &["s.json", "no `spec` field"])
            .file("s.json", r#"{"fixture": "x", "input_shape": [1, 3, 8, 8]}"#),
        case("unknown kind", "info {dir}/s.json", &["transformer"])
            .file("s.json", scconv(|s| s["kind"] = "transformer".into())),
        case("missing field", "info {dir}/s.json", &["`spec`", "missing field `avd`"])
            .file("s.json", scnet(|s| _ = s.as_object_mut().unwrap().remove("avd"), serde_json::json!([3, 224, 224]))),
        case("zero channels", "info {dir}/s.json", &["s.json", "`channels`", "positive"])
            .file("s.json", scconv(|s| s["channels"] = 0.into())),
        case("absurd channels", "info {dir}/s.json", &["`channels`", "at most 32768"])
            .file("s.json", scconv(|s| s["channels"] = (1u64 << 40).into())),
        case("groups not dividing channels", "info {dir}/s.json", &["`groups`"])
            .file("s.json", scconv(|s| s["groups"] = 3.into())),
        case("stride of a million", "info {dir}/s.json", &["stages[1].stride", "at most 16384"])
            .file("s.json", scnet(|s| s["stages"][1]["stride"] = 1_000_000.into(), serde_json::json!([3, 224, 224]))),
        case("stride as a float", "info {dir}/s.json", &["`spec`", "floating point"])
            .file("s.json", scnet(|s| s["stages"][1]["stride"] = 1e6.into(), serde_json::json!([3, 224, 224]))),
        case("stride too large for the image", "info {dir}/s.json", &["`stages[1]`", "stride 1000", "56x56"])
            .file("s.json", scnet(|s| s["stages"][1]["stride"] = 1000.into(), serde_json::json!([3, 224, 224]))),
        case("too many blocks in all", "info {dir}/s.json", &["stages[2].blocks", "4096"])
            .file("s.json", scnet(|s| { s["stages"][0]["blocks"] = 3000.into(); s["stages"][2]["blocks"] = 3000.into(); }, serde_json::json!([3, 224, 224]))),
        case("planes over the bound", "info {dir}/s.json", &["stages[3].planes"])
            .file("s.json", scnet(|s| s["stages"][3]["planes"] = 9000.into(), serde_json::json!([3, 224, 224]))),
        case("zero classes", "info {dir}/s.json", &["num_classes"])
            .file("s.json", scnet(|s| s["num_classes"] = 0.into(), serde_json::json!([3, 224, 224]))),
        case("deep stem of usize::MAX", "info {dir}/s.json", &["stem.width"])
            .file("s.json", scnet(|s| { s["stem"]["kind"] = "deep".into(); s["stem"]["width"] = u64::MAX.into(); }, serde_json::json!([3, 224, 224]))),
        case("no stages", "info {dir}/s.json", &["stages", "at least one stage"])
            .file("s.json", scnet(|s| s["stages"] = serde_json::json!([]), serde_json::json!([3, 224, 224]))),
        case("input_shape of the wrong channels", "info {dir}/s.json", &["input_shape", "[2,8,16]"])
            .file("s.json", scnet(|_| {}, serde_json::json!([2, 8, 16]))),
        case("input_shape of two entries", "info {dir}/s.json", &["input_shape", "got 2"])
            .file("s.json", scnet(|_| {}, serde_json::json!([8, 16]))),
        case("input_shape with a zero", "info {dir}/s.json", &["input_shape", "positive"])
            .file("s.json", scnet(|_| {}, serde_json::json!([1, 3, 0, 8]))),
        case("input_shape negative", "info {dir}/s.json", &["input_shape", "-3"])
            .file("s.json", scnet(|_| {}, serde_json::json!([-3, 8, 8]))),
        case("bad spec for bench", "bench --model {dir}/s.json", &["s.json", "`stride`"])
            .file("s.json", scconv(|s| s["stride"] = 0.into())),
        case("bad spec for compile", "compile {dir}/s.json --out {dir}/c", &["s.json", "`channels`"])
            .file("s.json", scconv(|s| s["channels"] = 0.into())),
        case("bad spec for train", "train --model {dir}/s.json --data-dir {dir} --out {dir}/run", &["s.json", "`pooling_r`"])
            .file("s.json", scconv(|s| s["pooling_r"] = 0.into())),
        case("bad spec for ir", "ir {dir}/s.json", &["s.json", "`dilation`"])
            .file("s.json", scconv(|s| s["dilation"] = 0.into())),
        // ----- IR text -----
        case("empty .ir file", "ir {dir}/g.ir", &["g.ir", "is empty"]).file("g.ir", "\n"),
        case("not a graph", "ir {dir}/g.ir", &["g.ir", "line 1", "expected `graph`"]).file("g.ir", "hello"),
        case("non-UTF-8 graph", "ir {dir}/g.ir", &["g.ir", "UTF-8"]).file("g.ir", b"graph {\xff\xfe\n".to_vec()),
        case("unknown op", "ir {dir}/g.ir", &["frobnicate"])
            .file("g.ir", graph("  %0 = input name=\"x\" : f32[2,3]\n  %1 = frobnicate(%0) : f32[2,3]")),
        case("operands that do not fit", "ir {dir}/g.ir", &["line 4", "node %2 (add)"])
            .file("g.ir", "graph {\n  %0 = input name=\"x\" : f32[2,3]\n  %1 = input name=\"y\" : f32[3,2]\n  %2 = add(%0, %1) : f32[2,3]\n  return z=%2\n}\n"),
        case("count overflow hidden by a reshape", "ir {dir}/g.ir", &["node %0 (input)", "f32[4294967296,4294967296]"])
            .file("g.ir", graph("  %0 = input name=\"x\" : f32[4294967296,4294967296]\n  %1 = reshape(%0) shape=[0] : f32[0]")),
        case("usize::MAX extent reshaped flat", "ir {dir}/g.ir", &["node %0 (input)", "64-bit"])
            .file("g.ir", graph("  %0 = input name=\"x\" : f32[18446744073709551615,2]\n  %1 = reshape(%0) shape=[18446744073709551614] : f32[18446744073709551614]")),
        case("reshape to an uncountable shape", "ir {dir}/g.ir", &["node %1 (reshape)", "overflows"])
            .file("g.ir", graph("  %0 = input name=\"x\" : f32[2]\n  %1 = reshape(%0) shape=[4294967296,4294967296,2] : f32[4294967296,4294967296,2]")),
        case("padding past usize", "ir {dir}/g.ir", &["node %2 (conv2d)", "too large to count"])
            .file("g.ir", "graph {\n  %0 = input name=\"x\" : f32[1,1,4,4]\n  %1 = param name=\"w\" : f32[1,1,3,3]\n  %2 = conv2d(%0, %1) stride=[1,1] padding=[9223372036854775808,0] dilation=[1,1] groups=1 : f32[1,1,4,4]\n  return y=%2\n}\n"),
        case("broadcast past the tensor limit", "ir {dir}/g.ir", &["node %1 (broadcast)"])
            .file("g.ir", graph("  %0 = input name=\"x\" : f32[1]\n  %1 = broadcast(%0) shape=[1099511627776,1099511627776] : f32[1099511627776,1099511627776]")),
        case("undefined operand", "ir {dir}/g.ir", &["%7"])
            .file("g.ir", graph("  %0 = input name=\"x\" : f32[2]\n  %1 = relu(%7) : f32[2]")),
        case("duplicate input name", "ir {dir}/g.ir", &["duplicate input name `x`"])
            .file("g.ir", graph("  %0 = input name=\"x\" : f32[2]\n  %1 = input name=\"x\" : f32[2]")),
        case("unknown dtype", "ir {dir}/g.ir", &["line 2", "f33"])
            .file("g.ir", graph("  %0 = input name=\"x\" : f33[2]\n  %1 = relu(%0) : f33[2]")),
        case("extent not a number", "ir {dir}/g.ir", &["line 2"])
            .file("g.ir", graph("  %0 = input name=\"x\" : f32[two]\n  %1 = relu(%0) : f32[2]")),
        case("no return", "ir {dir}/g.ir", &["return"])
            .file("g.ir", "graph {\n  %0 = input name=\"x\" : f32[2]\n"),
        // ----- IR JSON -----
        case("truncated graph JSON", "ir {dir}/g.json", &["g.json", "not a valid calib graph", "EOF"])
            .file("g.json", "{\"nodes\": [{\"op\": \"input\", \"name\": \"x\", "),
        case("JSON nodes of the wrong type", "ir {dir}/g.json", &["g.json", "invalid type"])
            .file("g.json", "{\"nodes\": 3, \"outputs\": []}"),
        case("declared type that disagrees", "ir {dir}/g.json", &["declared type"])
            .file("g.json", r#"{"nodes": [{"op": "input", "name": "x", "type": {"dtype": "f32", "shape": [2]}}, {"op": "exp", "inputs": [0], "type": {"dtype": "i64", "shape": [2]}}], "outputs": []}"#),
        case("JSON count overflow", "ir {dir}/g.ir", &["node %0 (input)", "f32[4294967296,4294967296]"])
            .file("g.ir", r#"{"nodes": [{"op": "input", "name": "x", "type": {"dtype": "f32", "shape": [4294967296, 4294967296]}}, {"op": "reshape", "shape": [0], "inputs": [0], "type": {"dtype": "f32", "shape": [0]}}], "outputs": [{"name": "y", "value": 1}]}"#),
        case("JSON output of no node", "ir {dir}/g.json", &["%5"])
            .file("g.json", r#"{"nodes": [{"op": "input", "name": "x", "type": {"dtype": "f32", "shape": [2]}}], "outputs": [{"name": "y", "value": 5}]}"#),
        case("JSON unknown op", "ir {dir}/g.json", &["frob"])
            .file("g.json", r#"{"nodes": [{"op": "frob", "type": {"dtype": "f32", "shape": [2]}}], "outputs": []}"#),
        // ----- safetensors (the fixture's params, replaced) -----
        case("truncated weights", "verify {dir}", &["params.safetensors", "truncated"])
            .on_fixture()
            .file("params.safetensors", fixture_params[..fixture_params.len() / 2].to_vec()),
        case("weights shorter than a header", "verify {dir}", &["params.safetensors", "too short"])
            .on_fixture()
            .file("params.safetensors", vec![1, 2, 3]),
        case("header length past the file", "verify {dir}", &["params.safetensors", "header claims"])
            .on_fixture()
            .file("params.safetensors", b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage".to_vec()),
        case("header not JSON", "verify {dir}", &["params.safetensors", "not valid safetensors JSON"])
            .on_fixture()
            .file("params.safetensors", safetensors("{nope", 0)),
        case("a tensor twice", "verify {dir}", &["params.safetensors", "tensor `w` appears twice"])
            .on_fixture()
            .file("params.safetensors", params(&[f32_entry("w", "[1]", 0, 4), f32_entry("w", "[1]", 4, 8)], 8)),
        case("a shape too large to count", "verify {dir}", &["tensor `huge`", "64 bits"])
            .on_fixture()
            .file("params.safetensors", params(&[f32_entry("huge", "[4611686018427387904,8]", 0, 4)], 4)),
        case("a byte range too long", "verify {dir}", &["tensor `a` has 12 bytes", "needs 8"])
            .on_fixture()
            .file("params.safetensors", params(&[f32_entry("a", "[2]", 0, 12), f32_entry("b", "[2]", 12, 20)], 20)),
        case("a gap between tensors", "verify {dir}", &["4 unused bytes", "`a`", "`b`"])
            .on_fixture()
            .file("params.safetensors", params(&[f32_entry("a", "[2]", 0, 8), f32_entry("b", "[2]", 12, 20)], 20)),
        case("overlapping tensors", "verify {dir}", &["`a`", "`b`", "overlap"])
            .on_fixture()
            .file("params.safetensors", params(&[f32_entry("a", "[2]", 0, 8), f32_entry("b", "[2]", 4, 12)], 12)),
        case("unknown dtype", "verify {dir}", &["tensor `a` has unknown dtype `F33`"])
            .on_fixture()
            .file("params.safetensors", safetensors(r#"{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#, 8)),
        case("unsupported dtype", "verify {dir}", &["tensor `a`", "F64"])
            .on_fixture()
            .file("params.safetensors", safetensors(r#"{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#, 8)),
        case("weights of another model", "verify {dir}", &["params.safetensors", "missing", "k2.1.weight"])
            .on_fixture()
            .file("params.safetensors", std::fs::read(support::fixture("scbottleneck_s1").join("params.safetensors")).unwrap()),
        case("inputs file without its input", "verify {dir}", &["eval_io.safetensors", "`input`"])
            .on_fixture()
            .file("eval_io.safetensors", safetensors("{}", 0)),
        case("corrupt inputs file", "verify {dir}", &["eval_io.safetensors", "bytes follow that no tensor owns"])
            .on_fixture()
            .file("eval_io.safetensors", params(&[f32_entry("input", "[1]", 0, 4)], 9)),
        // ----- meta.json of a fixture -----
        case("meta.json without spec", "verify {dir}", &["meta.json", "no `spec` field"])
            .on_fixture()
            .file("meta.json", meta(|m| _ = m.as_object_mut().unwrap().remove("spec"))),
        case("truncated meta.json", "verify {dir}", &["meta.json", "EOF"])
            .on_fixture()
            .file("meta.json", "{\"spec\": "),
        case("meta.json input_shape that does not fit", "verify {dir}", &["meta.json", "input_shape", "[2,8,16]"])
            .on_fixture()
            .file("meta.json", meta(|m| m["input_shape"] = serde_json::json!([2, 8, 16]))),
        case("meta.json spec out of range", "info {dir}", &["meta.json", "`pooling_r`"])
            .on_fixture()
            .file("meta.json", meta(|m| m["spec"]["pooling_r"] = 0.into())),
        // ----- PyTorch checkpoints -----
        case("not a checkpoint", IMPORT, &["m.pth", "not a PyTorch checkpoint"]).file("m.pth", "hello"),
        case("truncated legacy checkpoint", IMPORT, &["m.pth", "object pickle", "byte 299", "truncated"])
            .file("m.pth", legacy[..300].to_vec()),
        case("truncated zip checkpoint", IMPORT, &["m.pth", "not a readable zip archive"])
            .file("m.pth", zip[..zip.len() - 100].to_vec()),
        case("pickle naming os.system", IMPORT, &["m.pth", "`os.system`", "refuses"])
            .file("m.pth", [&legacy[..LEGACY_HEADER], b"\x80\x02cos\nsystem\n(X\x02\x00\x00\x00lstR."].concat()),
        case("unknown pickle opcode", IMPORT, &["m.pth", "unknown or unsupported opcode 0xff", "byte 139"])
            .file("m.pth", [&legacy[..LEGACY_HEADER], b"\x80\x02\xff"].concat()),
        case("storage of another size", IMPORT, &["m.pth", "holds 17 elements", "says 16"])
            .file("m.pth", { let mut b = legacy.clone(); b[LEGACY_STORAGES] = 17; b }),
        case("bytes after the storages", IMPORT, &["m.pth", "3 bytes follow the last storage"])
            .file("m.pth", [&legacy[..], b"abc"].concat()),
        case("checkpoint of another model", "import {dir}/m.pth --out {dir}/m.safetensors --model {dir}", &["missing", "k2.1.weight", "unexpected", "conv1.weight"])
            .on_fixture()
            .file("m.pth", zip.clone()),
        // ----- IDX data files for training -----
        case("no data set", TRAIN, &["Fashion-MNIST not found", IMAGES]),
        case("images without the IDX magic", TRAIN, &[IMAGES, "magic"])
            .file(IMAGES, b"\x01\x02\x03\x04".to_vec())
            .file(LABELS, labels.clone()),
        case("corrupt gzip header", TRAIN, &[IMAGES, "gzipped", "invalid gzip header"])
            .file(IMAGES, b"\x1f\x8b\x09\x00garbage and more garbage".to_vec())
            .file(LABELS, labels.clone()),
        case("corrupt deflate stream", TRAIN, &[IMAGES, "gzipped", "corrupt deflate stream"])
            .file(IMAGES, {
                let mut g = gzip(&idx(&[20, 20, 20], &[7; 8000]));
                let n = g.len();
                g[12..n - 8].iter_mut().for_each(|b| *b ^= 0x5a);
                g
            })
            .file(LABELS, labels.clone()),
        case("element type not bytes", TRAIN, &[IMAGES, "0x0d"])
            .file(IMAGES, { let mut b = images.clone(); b[2] = 0x0d; b })
            .file(LABELS, labels.clone()),
        case("dims that overflow a count", TRAIN, &[IMAGES, "64-bit count"])
            .file(IMAGES, gzip(&idx(&[65536, 65536, 65536, 65536], &[])))
            .file(LABELS, labels.clone()),
        case("dims no memory can hold", TRAIN, &[IMAGES, "not enough memory"])
            .file(IMAGES, gzip(&idx(&[65536, 65536, 65536], &[0; 64])))
            .file(LABELS, labels.clone()),
        case("truncated images", TRAIN, &[IMAGES, "expected 8 data bytes", "found 5"])
            .file(IMAGES, gzip(&images[..images.len() - 3]))
            .file(LABELS, labels.clone()),
        case("trailing bytes", TRAIN, &[LABELS, "found more"])
            .file(IMAGES, gzip(&images))
            .file(LABELS, idx(&[2], &[1, 2, 3])),
        case("truncated header", TRAIN, &[LABELS, "ends inside the IDX header"])
            .file(IMAGES, gzip(&images))
            .file(LABELS, gzip(&[0, 0, 8, 1, 0])),
        case("images of rank 2", TRAIN, &[IMAGES, "three positive"])
            .file(IMAGES, idx(&[2, 4], &[0; 8]))
            .file(LABELS, labels.clone()),
        case("images of zero height", TRAIN, &[IMAGES, "three positive"])
            .file(IMAGES, idx(&[2, 0, 2], &[]))
            .file(LABELS, labels.clone()),
        case("labels for other images", TRAIN, &[LABELS, "2 images"])
            .file(IMAGES, images.clone())
            .file(LABELS, idx(&[3], &[1, 2, 3])),
        case("label out of range", TRAIN, &[LABELS, "label 12"])
            .file(IMAGES, images.clone())
            .file(LABELS, idx(&[2], &[1, 12])),
    ]
}

/// What is wrong with one case's run, if anything.
fn run(c: &Case) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    if c.fixture {
        copy_dir(&support::fixture("scconv"), dir.path());
    }
    for (name, content) in &c.files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let dir_arg = dir.path().display().to_string();
    let args: Vec<String> = c
        .args
        .split_whitespace()
        .map(|a| a.replace("{dir}", &dir_arg))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = support::calib(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    let problem = match o.status.code() {
        None => Some(format!("ended by a signal ({:?})", o.status)),
        Some(0) => Some("exited 0".to_string()),
        Some(_) if err.contains("panicked") => Some("panicked".to_string()),
        Some(_) => c
            .expect
            .iter()
            .find(|e| !err.contains(*e))
            .map(|e| format!("`{e}` missing")),
    };
    problem.map(|p| format!("{}: {p}\n    calib {}\n    {}", c.what, c.args, err.trim()))
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn every_bad_input_is_a_clear_error_naming_the_culprit() {
    let cases = cases();
    assert!(cases.len() >= 60, "the table has {} rows", cases.len());
    // Processes, not threads, do the work: a few at once keep two cores busy.
    let next = AtomicUsize::new(0);
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut failures = vec![];
                    while let Some(c) = cases.get(next.fetch_add(1, Ordering::Relaxed)) {
                        failures.extend(run(c));
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} bad inputs were not handled:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
