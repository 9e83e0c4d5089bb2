//! The module graph reads bottom-up: a module of src/ uses only modules of its own layer
//! or below, and no modules use each other in a cycle. GPU-free: it reads the source
//! files. A module is a top-level file or folder of src/; its uses are the `crate::`
//! paths in its code (comments left out), with the crate root's re-exports (`crate::Gpu`,
//! `crate::Tensor`, ...) resolved to the modules that define them.
//!
//! `cargo test --test layers_deps -- --nocapture` prints the module graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first (docs/ARCHITECTURE.md, "Module layers").
const LAYERS: &[&[&str]] = &[
    &["dtype", "layout", "rng"],
    &["error"],
    &["gpu"],
    &["tensor", "kernels", "flag", "precision"],
    &["ops", "selfcheck"],
    &["checkpoint"],
    &["data"],
    &["nn"],
    &["amp"],
    &["optim"],
    &["train"],
    &["cli", "web", "main", "lib"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("reading src/")
        .map(|e| e.expect("reading src/").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of src/ belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("a file under src/");
    let first = rel.components().next().expect("a path").as_os_str();
    let first = first.to_string_lossy();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

/// Source text without comments (line comments, doc comments and block comments), so doc
/// links to upper layers do not count as uses. String literals are kept as they are:
/// none of them holds `crate::`.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let (mut i, mut in_str, mut depth) = (0, false, 0usize);
    while i < b.len() {
        if depth > 0 {
            if b[i..].starts_with(b"*/") {
                depth -= 1;
                i += 2;
            } else if b[i..].starts_with(b"/*") {
                depth += 1;
                i += 2;
            } else {
                i += 1;
            }
            continue;
        }
        if in_str {
            if b[i] == b'\\' {
                out.push(b[i] as char);
                i += 1;
            } else if b[i] == b'"' {
                in_str = false;
            }
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        } else if b[i..].starts_with(b"/*") {
            depth = 1;
            i += 2;
            continue;
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            in_str = true;
        }
        if i < b.len() {
            out.push(b[i] as char);
        }
        i += 1;
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of every `crate::` path in `code`, a `crate::{a, b::c}` group
/// giving each of its items.
fn crate_heads(code: &str, crate_name: &str) -> Vec<String> {
    let prefix = format!("{crate_name}::");
    let mut heads = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(&prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let tail = rest.trim_start();
        if let Some(group) = tail.strip_prefix('{') {
            let mut level = 1;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => level += 1,
                    '}' => {
                        level -= 1;
                        if level == 0 {
                            break;
                        }
                    }
                    ',' if level == 1 => item_start = true,
                    c if item_start && level == 1 && (c.is_alphanumeric() || c == '_') => {
                        heads.push(ident_at(&group[i..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            heads.push(ident_at(tail).to_string());
        }
    }
    heads
}

struct ModuleGraph {
    uses: BTreeMap<String, BTreeSet<String>>,
}

fn module_graph() -> ModuleGraph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();

    // The crate root's re-exports: `pub use gpu::{Gpu, ...};` makes `crate::Gpu` a use
    // of gpu.
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("reading src/lib.rs");
    let mut root_names: BTreeMap<String, String> = BTreeMap::new();
    for line in code_only(&lib).lines() {
        let Some(path) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = ident_at(path).to_string();
        let names = path[module.len()..].trim_start_matches("::");
        let names = names
            .trim_end_matches(';')
            .trim_matches(|c| c == '{' || c == '}');
        for name in names.split(',') {
            let name = name.split(" as ").last().unwrap_or(name).trim();
            root_names.insert(name.to_string(), module.clone());
        }
    }

    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).expect("reading a source file");
        let entry = uses.entry(module.clone()).or_default();
        // The binary (main.rs, cli/) reaches the library as `halfgrad::`.
        let code = code_only(&text);
        let mut heads = crate_heads(&code, "crate");
        if module == "main" || module == "cli" {
            heads.extend(crate_heads(&code, "halfgrad"));
        }
        for head in heads {
            let target = if modules.contains(&head) {
                head
            } else if let Some(m) = root_names.get(&head) {
                m.clone()
            } else {
                continue;
            };
            if target != module {
                entry.insert(target);
            }
        }
    }
    ModuleGraph { uses }
}

#[test]
fn every_module_has_a_layer() {
    let graph = module_graph();
    let missing: Vec<_> = graph
        .uses
        .keys()
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a layer in LAYERS: {missing:?}"
    );
}

#[test]
fn no_module_uses_one_above_it() {
    let graph = module_graph();
    let mut upward = Vec::new();
    for (module, deps) in &graph.uses {
        println!(
            "{module} -> {}",
            Vec::from_iter(deps.iter().cloned()).join(", ")
        );
        let Some(own) = layer_of(module) else {
            continue;
        };
        for dep in deps {
            if layer_of(dep).is_some_and(|l| l > own) {
                upward.push(format!("{module} uses {dep}"));
            }
        }
    }
    assert!(upward.is_empty(), "uses of an upper layer: {upward:?}");
}

#[test]
fn no_module_cycles() {
    let graph = module_graph();
    // Depth-first search; a back edge closes a cycle.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        cycles: &mut Vec<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = stack.iter().position(|s| *s == m) {
            cycles.push(format!("{} -> {m}", stack[at..].join(" -> ")));
            return;
        }
        stack.push(m);
        for dep in graph.get(m).into_iter().flatten() {
            visit(dep, graph, stack, done, cycles);
        }
        stack.pop();
        done.insert(m);
    }
    let (mut stack, mut done, mut cycles) = (Vec::new(), BTreeSet::new(), Vec::new());
    for m in graph.uses.keys() {
        visit(m, &graph.uses, &mut stack, &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "module cycles: {cycles:?}");
}

#[test]
fn the_parser_sees_groups_and_root_names() {
    let code = code_only(
        "use crate::{DType, ops::cast, nn::{Param, graph::Graph}};\n\
         // use crate::train::Trainer;\n\
         /// [`x`](crate::cli::y)\n\
         let f = crate::flag::OverflowFlag::new(gpu);",
    );
    assert_eq!(crate_heads(&code, "crate"), ["DType", "ops", "nn", "flag"]);
}
