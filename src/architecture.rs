//! The import rules between the crate's top-level modules, checked against
//! the source so a change that breaks them fails `cargo test`.
//!
//! A module's imports are the `crate::<module>` paths in its files (test
//! code included; comments, and so doc links, are not). The rules are the
//! ones the crate doc states as absences: no module reaches itself through
//! others, and a few named modules import only named others or never a
//! named one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `(module, the only modules it may import)`.
const ONLY: &[(&str, &[&str])] = &[
    // The vocabulary depends on nothing.
    ("domain", &[]),
    // Configuration sits below the roles: it reads only the vocabulary and
    // the provider profiles, the roles read their settings from it.
    ("config", &["domain", "providers"]),
];

/// `(module, a module it must not import)`.
const NEVER: &[(&str, &str)] = &[
    // A provider does not know the configuration file's shape.
    ("providers", "config"),
    // The front end does not know the ACME client: the statistics it shows
    // are handed in through its state.
    ("api", "ca"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The identifiers of `crate::x` and of each top-level entry of
/// `crate::{x, y::z}` in `code`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Only the first identifier of each top-level entry counts.
            let mut depth = 0;
            let mut word = String::new();
            let mut in_first_word = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend((!word.is_empty()).then(|| std::mem::take(&mut word)));
                        in_first_word = true;
                    }
                    c if in_first_word && (c.is_ascii_alphanumeric() || c == '_') => word.push(c),
                    _ if !word.is_empty() => in_first_word = false,
                    _ => {}
                }
            }
            out.extend((!word.is_empty()).then_some(word));
        } else {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push(word);
        }
    }
    out
}

/// Each top-level module of `src/` and the other top-level modules it
/// imports.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("src/ is readable").flatten() {
        let path = entry.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if matches!(stem, "lib" | "main") {
            continue;
        }
        let list = files.entry(stem.to_string()).or_default();
        if path.is_dir() {
            rust_files(&path, list);
        } else {
            list.push(path);
        }
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(module, paths)| {
            let mut imports = BTreeSet::new();
            for path in paths {
                let text = std::fs::read_to_string(path).expect("source is readable");
                // Whole files, not lines: a `use crate::{…}` group may span
                // several.
                let code: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect();
                for m in crate_paths(&code.join("\n")) {
                    if m != *module && modules.contains(&m) {
                        imports.insert(m);
                    }
                }
            }
            (module.clone(), imports)
        })
        .collect()
}

/// A path `from` → … → `from` if there is one.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().cloned().unwrap_or_default();
        for next in graph.get(&last).into_iter().flatten() {
            if next == from {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    import_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn paths_in_use_lines_are_read_like_the_compiler_does() {
    let cases = [
        ("use crate::config::Config;", vec!["config"]),
        (
            "use crate::{api::Cidr, domain, store::{A, B}};",
            vec!["api", "domain", "store"],
        ),
        ("let x = crate::keys::hex(&d);", vec!["keys"]),
        ("use std::fmt;", vec![]),
        (
            "use crate::{\n    config::Config,\n    worker::{self, Worker},\n};",
            vec!["config", "worker"],
        ),
    ];
    for (line, want) in cases {
        assert_eq!(crate_paths(line), want, "{line}");
    }
}

#[test]
fn no_top_level_module_imports_itself_round_about() {
    let graph = graph();
    assert!(graph.contains_key("config") && graph.contains_key("api"));
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_through(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn named_modules_keep_out_of_named_others() {
    let graph = graph();
    for (module, allowed) in ONLY {
        let bad: Vec<&String> = graph[*module]
            .iter()
            .filter(|m| !allowed.contains(&m.as_str()))
            .collect();
        assert!(bad.is_empty(), "{module} imports {bad:?}");
    }
    for (module, other) in NEVER {
        assert!(!graph[*module].contains(*other), "{module} imports {other}");
    }
}
