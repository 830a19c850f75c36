//! The architecture, checked: which of twincert's top-level modules may
//! import which, and which modules alone may use the SQL and ACME
//! libraries. The tables below are the written architecture (and
//! `docs/ARCHITECTURE.md` says the same in prose); the test reads every `.rs` file under
//! `src/`, with comments, string literals and `#[cfg(test)]` items taken
//! out, and fails listing every import that breaks a rule (file, line,
//! the import, the rule) and every cycle between modules.
//!
//! What counts as an import of module `x`: a path `crate::x…` (also inside
//! `use crate::{…}` groups), a `super::…` path that climbs out of the
//! file's own module to the crate root, and `twincert::x…` in the binary
//! (`src/main.rs`). `super::` inside a module stays inside it. Paths are
//! found textually, so an inline `mod` block is not followed for `super`,
//! and macro-generated paths are not seen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a module may import: only these of our modules, or any but these.
#[derive(Clone, Copy)]
enum May {
    Only(&'static [&'static str]),
    Not(&'static [&'static str]),
}

/// Which of our top-level modules each module may import, and why.
/// Modules not listed may import any module (cycles aside).
const MODULES: &[(&str, May, &str)] = &[
    (
        "domain",
        May::Only(&[]),
        "the vocabulary every module speaks; it knows none of theirs",
    ),
    (
        "policy",
        May::Only(&["domain"]),
        "pure decisions: no I/O, no store, no configuration",
    ),
    (
        "store",
        May::Only(&["domain", "keys", "clock"]),
        "storage keeps what others decide; it neither decides, serves nor works",
    ),
    (
        "ca",
        May::Not(&["store"]),
        "the ACME client returns what the CA said; its callers store it",
    ),
    (
        "api",
        May::Not(&["worker", "ca"]),
        "the front end meets the worker only through the store; ACME statistics are handed to it",
    ),
    (
        "config",
        May::Only(&["domain", "providers"]),
        "configuration sits below the roles: every role reads it, it reads none of them",
    ),
    (
        "providers",
        May::Not(&["config"]),
        "a provider takes its settings as values; it does not know the file's shape",
    ),
];

/// External crates only some modules may use, and why.
const CRATES: &[(&str, &[&str], &str)] = &[
    ("sea_orm", &["store"], "only the store knows SQL"),
    ("sqlx", &["store"], "only the store knows SQL"),
    ("instant_acme", &["ca"], "only ca talks ACME"),
    (
        "hickory_net",
        &["validation", "providers"],
        "only DNS-01 speaks DNS, and validates no DNSSEC (.cargo/audit.toml)",
    ),
];

/// Modules that do no I/O, and what they therefore must not use (the
/// SQL and ACME crates are in [`CRATES`] already).
const PURE: &[&str] = &["domain", "policy"];
const IMPURE: &[&str] = &[
    "tokio",
    "reqwest",
    "hyper",
    "axum",
    // Mail transport; lettre's mailbox parser (`lettre::message`) is pure.
    "lettre::transport",
    "lettre::AsyncSmtpTransport",
    "lettre::SmtpTransport",
    "lettre::AsyncTransport",
    "lettre::Tokio1Executor",
    "kube",
    "std::fs",
    "std::process",
    // Sockets; `std::net`'s address types are plain data.
    "std::net::TcpStream",
    "std::net::TcpListener",
    "std::net::UdpSocket",
    "async",
];

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    file: String,
    line: usize,
    /// The source line with the import.
    import: String,
    rule: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: `{}`\n    {}",
            self.file, self.line, self.import, self.rule
        )
    }
}

/// One use of one of our modules.
#[derive(Debug, Clone)]
struct Use {
    from: String,
    to: String,
    file: String,
    line: usize,
    source_line: String,
}

#[test]
fn modules_import_only_what_the_architecture_allows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    collect(&root.join("src"), &mut files);
    let tree: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root)
                .expect("under the crate")
                .to_string_lossy();
            let text = std::fs::read_to_string(p).expect("read source");
            (rel.replace('\\', "/"), text)
        })
        .collect();
    assert!(
        tree.iter().any(|(p, _)| p == "src/policy/mod.rs"),
        "the source tree was not found"
    );
    let violations = check(&tree);
    assert!(
        violations.is_empty(),
        "{} layering violation(s) (rules at the top of tests/e2e/layers.rs):\n\n{}\n",
        violations.len(),
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The checker cannot pass silently: a fake tree with one forbidden
/// import of each kind, and forbidden paths hidden where they do not
/// count (comments, strings, test modules, a module's own `super`).
#[test]
fn the_layering_check_finds_forbidden_imports_in_a_fake_tree() {
    let tree: Vec<(String, String)> = [
        (
            "src/lib.rs",
            "pub mod domain;\npub mod policy;\npub mod store;\npub mod ca;\npub mod worker;\n",
        ),
        (
            "src/domain/mod.rs",
            "//! Talks of [`crate::store`] in a comment.\n\
             pub struct Slot;\n\
             const S: &str = \"crate::worker and sea_orm:: in a string\";\n\
             const R: &str = r#\"crate::worker \" still a string\"#;\n\
             fn lifetime<'a>(c: char) -> bool { c == '\"' }\n",
        ),
        (
            "src/policy/mod.rs",
            "use crate::domain::Slot;\n\
             mod inner;\n\
             /* block comment: use crate::store; /* nested */ crate::store */\n\
             use crate::{\n    domain,\n    store::Store,\n};\n\
             #[cfg(test)]\n\
             mod tests {\n    use crate::worker;\n    fn f() { if true { crate::store::x(); } }\n}\n\
             pub fn f() {}\n",
        ),
        (
            "src/policy/inner.rs",
            "use super::f;\nuse super::super::worker::Job;\n",
        ),
        (
            "src/store/mod.rs",
            "use sea_orm::Value;\nuse crate::domain::Slot;\nuse crate::ca::Client;\n",
        ),
        (
            "src/ca/mod.rs",
            "use instant_acme::Account;\n\
             #[cfg(test)]\nuse crate::store::Store;\n\
             pub fn g() -> crate::store::Store { todo!() }\n",
        ),
        (
            "src/worker/mod.rs",
            "use crate::store;\nuse crate::ca;\nasync fn run() { sea_orm::x(); }\n",
        ),
    ]
    .iter()
    .map(|(p, s)| (p.to_string(), s.to_string()))
    .collect();
    let got: Vec<(String, usize, String)> = check(&tree)
        .into_iter()
        .map(|v| {
            (
                v.file,
                v.line,
                v.rule.split(':').next().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, usize, String)> = [
        ("src/ca/mod.rs", 4, "ca must not import store"),
        ("src/policy/inner.rs", 2, "policy may import only domain"),
        ("src/policy/mod.rs", 6, "policy may import only domain"),
        (
            "src/store/mod.rs",
            3,
            "store may import only domain, keys, clock",
        ),
        ("src/worker/mod.rs", 3, "only store may use sea_orm"),
        ("src/", 0, "cycle ca → store → ca"),
    ]
    .iter()
    .map(|(f, l, r)| (f.to_string(), *l, r.to_string()))
    .collect();
    assert_eq!(got, want);
    // Pure modules: `async` and I/O crates in policy are caught too.
    let impure = vec![(
        "src/policy/mod.rs".to_string(),
        "pub async fn f() { tokio::time::sleep(d).await }\n".to_string(),
    )];
    let rules: Vec<String> = check(&impure).into_iter().map(|v| v.rule).collect();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(
        rules.iter().all(|r| r.starts_with("policy does no I/O")),
        "{rules:?}"
    );
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every violation in `tree` ((path under the crate, source) pairs),
/// sorted; cycles last.
fn check(tree: &[(String, String)]) -> Vec<Violation> {
    let test_only = test_only_files(tree);
    let mut uses: Vec<Use> = Vec::new();
    let mut violations = Vec::new();
    let modules: BTreeSet<String> = tree
        .iter()
        .filter_map(|(p, _)| module_path(p))
        .filter_map(|m| m.first().cloned())
        .collect();
    for (path, source) in tree {
        if test_only
            .iter()
            .any(|t| path == t || path.starts_with(&format!("{t}/")))
        {
            continue;
        }
        let Some(mpath) = module_path(path) else {
            continue;
        };
        let clean = strip_test_items(&strip_comments_and_strings(source));
        if clean.contains("#![cfg(test)]") {
            continue;
        }
        let lines: Vec<&str> = source.lines().collect();
        let line_of = |offset: usize| clean[..offset].matches('\n').count() + 1;
        let source_line = |line: usize| lines.get(line - 1).map_or("", |l| l.trim()).to_string();
        let from = match mpath.first() {
            Some(m) => m.clone(),
            None if path.ends_with("main.rs") => "main".into(),
            None => "lib".into(),
        };
        for (offset, to) in our_imports(&clean, &mpath, path.ends_with("src/main.rs")) {
            if to != from && modules.contains(&to) {
                let line = line_of(offset);
                uses.push(Use {
                    from: from.clone(),
                    to,
                    file: path.clone(),
                    line,
                    source_line: source_line(line),
                });
            }
        }
        for (name, allowed, why) in CRATES {
            if allowed.contains(&from.as_str()) {
                continue;
            }
            for offset in word_paths(&clean, name) {
                let line = line_of(offset);
                violations.push(Violation {
                    file: path.clone(),
                    line,
                    import: source_line(line),
                    rule: format!("only {} may use {name}: {why}", allowed.join(", ")),
                });
            }
        }
        if PURE.contains(&from.as_str()) {
            for name in IMPURE {
                for offset in word_paths(&clean, name) {
                    let line = line_of(offset);
                    violations.push(Violation {
                        file: path.clone(),
                        line,
                        import: source_line(line),
                        rule: format!("{from} does no I/O and nothing async: `{name}` is used"),
                    });
                }
            }
        }
    }
    for u in &uses {
        for (module, may, why) in MODULES {
            if u.from != *module {
                continue;
            }
            let rule = match may {
                May::Only(ok) if !ok.contains(&u.to.as_str()) => Some(if ok.is_empty() {
                    format!("{module} may import none of our modules: {why}")
                } else {
                    format!("{module} may import only {}: {why}", ok.join(", "))
                }),
                May::Not(no) if no.contains(&u.to.as_str()) => {
                    Some(format!("{module} must not import {}: {why}", u.to))
                }
                _ => None,
            };
            if let Some(rule) = rule {
                violations.push(Violation {
                    file: u.file.clone(),
                    line: u.line,
                    import: u.source_line.clone(),
                    rule,
                });
            }
        }
    }
    violations.sort();
    violations.dedup();
    violations.extend(cycles(&uses));
    violations
}

/// The module path of a source file: `src/a/b.rs` and `src/a/b/mod.rs`
/// are `[a, b]`; the crate roots `src/lib.rs` and `src/main.rs` are `[]`.
fn module_path(path: &str) -> Option<Vec<String>> {
    let rel = path.strip_prefix("src/")?.strip_suffix(".rs")?;
    if rel == "lib" || rel == "main" {
        return Some(Vec::new());
    }
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    Some(parts)
}

/// Files declared by `#[cfg(test)] mod x;` (and their subdirectories).
fn test_only_files(tree: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, source) in tree {
        let clean = strip_comments_and_strings(source);
        let mut rest = clean.as_str();
        while let Some(i) = rest.find("#[cfg(test)]") {
            rest = &rest[i + "#[cfg(test)]".len()..];
            let item = rest.trim_start();
            let decl = item
                .strip_prefix("pub(crate) ")
                .or_else(|| item.strip_prefix("pub "))
                .unwrap_or(item);
            let Some(decl) = decl.strip_prefix("mod ") else {
                continue;
            };
            let name: String = decl
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !decl[name.len()..].trim_start().starts_with(';') {
                continue;
            }
            let dir = match path.rsplit_once('/') {
                Some((dir, file)) if ["mod.rs", "lib.rs", "main.rs"].contains(&file) => {
                    dir.to_string()
                }
                Some(_) => path.trim_end_matches(".rs").to_string(),
                None => continue,
            };
            out.push(format!("{dir}/{name}.rs"));
            out.push(format!("{dir}/{name}"));
        }
    }
    out
}

/// `source` with comments, string and character literals blanked out
/// (newlines kept, so offsets keep their line numbers).
fn strip_comments_and_strings(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let prev_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if !prev_ident && raw_string_start(&chars, i).is_some() {
            let (prefix, hashes) = raw_string_start(&chars, i).expect("checked");
            let mut j = i + prefix + hashes + 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &chars[i..j.min(chars.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c == '"' || (!prev_ident && matches!(c, 'b' | 'c') && next == Some('"')) {
            let mut j = if c == '"' { i + 1 } else { i + 2 };
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            for &ch in &chars[i..(j + 1).min(chars.len())] {
                out.push(blank(ch));
            }
            i = j + 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{1F600}'), not a
            // lifetime or label ('a, 'static).
            let end = if next == Some('\\') {
                // '\\' and '\'' end right after the escaped character.
                if matches!(chars.get(i + 2), Some('\\' | '\'')) {
                    Some(i + 3).filter(|&e| e < chars.len())
                } else {
                    (i + 2..chars.len()).find(|&j| chars[j] == '\'')
                }
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    for &ch in &chars[i..=e] {
                        out.push(blank(ch));
                    }
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// At a raw string (`r"`, `r#"`, `br"`, `cr#"`): (prefix length, hashes).
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let prefix = match (chars.get(i), chars.get(i + 1)) {
        (Some('r'), _) => 1,
        (Some('b' | 'c'), Some('r')) => 2,
        _ => return None,
    };
    let hashes = chars[i + prefix..]
        .iter()
        .take_while(|c| **c == '#')
        .count();
    (chars.get(i + prefix + hashes) == Some(&'"')).then_some((prefix, hashes))
}

/// `source` (comments and strings already blanked) with every item under
/// `#[cfg(test)]` blanked: the attribute, any further attributes, and the
/// item up to its `;` or its matching `}`.
fn strip_test_items(source: &str) -> String {
    let mut chars: Vec<char> = source.chars().collect();
    let attr: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + attr.len() <= chars.len() {
        if chars[i..i + attr.len()] != attr[..] {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + attr.len();
        let (mut round, mut square) = (0i32, 0i32);
        let end = loop {
            let Some(&c) = chars.get(j) else {
                break chars.len();
            };
            match c {
                '(' => round += 1,
                ')' => round -= 1,
                '[' => square += 1,
                ']' => square -= 1,
                ';' if round == 0 && square == 0 => break j + 1,
                '{' if round == 0 && square == 0 => {
                    let mut depth = 0;
                    let mut k = j;
                    while k < chars.len() {
                        match chars[k] {
                            '{' => depth += 1,
                            '}' => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        k += 1;
                    }
                    break (k + 1).min(chars.len());
                }
                _ => {}
            }
            j += 1;
        };
        for c in &mut chars[start..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = end;
    }
    chars.into_iter().collect()
}

/// Offsets of the path `name` (`tokio`, `std::fs`) or keyword (`async`)
/// as a whole word; a path must not continue another path (`x::tokio`),
/// except `sqlx`, which also counts behind another crate
/// (`sea_orm::sqlx`).
fn word_paths(source: &str, name: &str) -> Vec<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for (i, _) in source.match_indices(name) {
        let before = source[..i].chars().next_back();
        let after = source[i + name.len()..].chars().next();
        if before.is_some_and(is_ident) || after.is_some_and(is_ident) {
            continue;
        }
        if name != "sqlx" && source[..i].ends_with("::") {
            continue;
        }
        out.push(i);
    }
    out
}

/// (offset, top-level module) of every path into our crate: `crate::x`,
/// `crate::{x, y::z}`, `super::…` reaching the crate root from module
/// `mpath`, and `twincert::x` in the binary.
fn our_imports(source: &str, mpath: &[String], binary: bool) -> Vec<(usize, String)> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut roots: Vec<(usize, usize)> = Vec::new(); // (path start, offset after the root)
    for (i, _) in source.match_indices("crate::") {
        let before = source[..i].chars().next_back();
        if !before.is_some_and(|c| is_ident(c) || c == '$' || c == ':') {
            roots.push((i, i + "crate::".len()));
        }
    }
    if binary {
        for (i, _) in source.match_indices("twincert::") {
            let before = source[..i].chars().next_back();
            if !before.is_some_and(|c| is_ident(c) || c == ':') {
                roots.push((i, i + "twincert::".len()));
            }
        }
    }
    for (i, _) in source.match_indices("super::") {
        let before = source[..i].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        let mut end = i;
        let mut climbs = 0;
        while source[end..].starts_with("super::") {
            climbs += 1;
            end += "super::".len();
            end += source[end..].len() - source[end..].trim_start().len();
        }
        if climbs >= mpath.len() {
            roots.push((i, end));
        }
    }
    for (start, after) in roots {
        let rest = source[after..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // Each element's first segment, at the group's own depth.
            let group_at = source.len() - group.len();
            let mut depth = 1;
            let mut expect_name = true;
            let mut chars = group.char_indices().peekable();
            while let Some((k, c)) = chars.next() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => expect_name = true,
                    c if expect_name && depth == 1 && is_ident(c) => {
                        let mut name = c.to_string();
                        while let Some((_, n)) = chars.next_if(|(_, n)| is_ident(*n)) {
                            name.push(n);
                        }
                        out.push((group_at + k, name));
                        expect_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            if !name.is_empty() {
                out.push((start, name));
            }
        }
    }
    out
}

/// One violation per cycle of modules importing each other (per strongly
/// connected component: a cycle through it, and the import sites of each
/// step).
fn cycles(uses: &[Use]) -> Vec<Violation> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut site: BTreeMap<(&str, &str), &Use> = BTreeMap::new();
    for u in uses {
        graph.entry(&u.from).or_default().insert(&u.to);
        graph.entry(&u.to).or_default();
        site.entry((&u.from, &u.to)).or_insert(u);
    }
    let reach = |from: &str| -> BTreeSet<&str> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(m) = todo.pop() {
            for &n in &graph[m] {
                if seen.insert(n) {
                    todo.push(n);
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&str, BTreeSet<&str>> = graph.keys().map(|&m| (m, reach(m))).collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    for &m in graph.keys() {
        if done.contains(m) || !reachable[m].contains(m) {
            continue;
        }
        let component: BTreeSet<&str> = reachable[m]
            .iter()
            .copied()
            .filter(|n| reachable[n].contains(m))
            .collect();
        done.extend(component.iter().copied());
        // A shortest cycle from m back to m, by breadth-first search.
        let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([m]);
        'search: while let Some(x) = queue.pop_front() {
            for &n in &graph[x] {
                if n == m {
                    prev.insert(m, x);
                    break 'search;
                }
                if component.contains(n) && !prev.contains_key(n) {
                    prev.insert(n, x);
                    queue.push_back(n);
                }
            }
        }
        let mut path = vec![m];
        let mut at = prev[m];
        while at != m {
            path.push(at);
            at = prev[at];
        }
        path.push(m);
        path.reverse();
        let steps: Vec<String> = path
            .windows(2)
            .map(|w| {
                let u = site[&(w[0], w[1])];
                format!(
                    "{} → {} at {}:{} `{}`",
                    w[0], w[1], u.file, u.line, u.source_line
                )
            })
            .collect();
        let others: Vec<String> = component
            .iter()
            .flat_map(|a| graph[a].iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| component.contains(b) && !path.windows(2).any(|w| w == [*a, *b]))
            .map(|(a, b)| format!("{a} → {b}"))
            .collect();
        out.push(Violation {
            file: "src/".into(),
            line: 0,
            import: format!(
                "modules {} import each other",
                component.iter().copied().collect::<Vec<_>>().join(", ")
            ),
            rule: format!(
                "cycle {}: the module graph must have no cycle\n      {}{}",
                path.join(" → "),
                steps.join("\n      "),
                if others.is_empty() {
                    String::new()
                } else {
                    format!("\n      other imports inside it: {}", others.join(", "))
                }
            ),
        });
    }
    out
}
