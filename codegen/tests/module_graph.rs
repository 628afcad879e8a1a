//! The modules of `codegen/src` depend on each other in one direction only: the PTX
//! builder and the index arithmetic at the bottom, the emitter core (`eval.rs`) above
//! them, the kernel families above the core, and the launch planner on top. A family
//! that the core called by name would make the whole crate one cycle again, where no
//! file can be read without all the others; this test names the cycle if one appears.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of the crate (a file `x.rs` or a folder `x/`) and the crate
/// modules its code names (`crate::x`, `crate::{x, y::z}`), comments left out.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("codegen/src is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "lib" {
            continue;
        }
        let deps = graph.entry(name.clone()).or_default();
        for file in rust_files(&path) {
            let text = std::fs::read_to_string(&file).expect("a source file is readable");
            deps.extend(crate_references(&text).into_iter().filter(|m| *m != name));
        }
    }
    graph
}

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let mut files = vec![];
        for entry in std::fs::read_dir(path).expect("a module folder is readable") {
            files.extend(rust_files(&entry.expect("a directory entry").path()));
        }
        files
    } else if path.extension().is_some_and(|e| e == "rs") {
        vec![path.to_path_buf()]
    } else {
        vec![]
    }
}

/// The first segment of every `crate::` path in `text`, outside comments.
fn crate_references(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // A brace group: the first segment of each item at its top level.
            let (mut depth, mut item_start) = (0usize, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[i..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && depth == 0 && (c.is_alphabetic() || c == '_') => {
                        found.insert(identifier(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(identifier(rest));
        }
    }
    found
}

fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// A cycle of `graph`, if it has one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| n == node).expect("on the path");
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut marks, &mut vec![]))
}

#[test]
fn codegen_modules_form_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    assert!(
        graph.len() >= 15 && graph.contains_key("eval") && graph.contains_key("gemm"),
        "the scan found the crate's modules: {:?}",
        graph.keys().collect::<Vec<_>>()
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "codegen modules import each other in a cycle: {}\nthe whole graph: {graph:#?}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_emitter_core_names_no_kernel_family() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    let families = [
        "conv",
        "gemm",
        "matmul",
        "pool",
        "pointwise",
        "reduction",
        "launch",
    ];
    let core = &graph["eval"];
    let named: Vec<&&str> = families.iter().filter(|f| core.contains(**f)).collect();
    assert!(named.is_empty(), "eval.rs imports {named:?}: {core:?}");
}

#[test]
fn the_scan_sees_braced_and_nested_imports() {
    let found = crate_references(
        "use crate::{conv, gemm::{self, Operands}, ptx::ins};\n// crate::hidden\nlet x = crate::flow::Check;",
    );
    let expected: BTreeSet<String> = ["conv", "gemm", "ptx", "flow"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, expected);
    let mut cyclic = BTreeMap::new();
    cyclic.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    cyclic.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        find_cycle(&cyclic),
        Some(vec!["a".to_string(), "b".to_string(), "a".to_string()])
    );
}
