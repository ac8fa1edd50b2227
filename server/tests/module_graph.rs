//! The server's modules import each other one way: this reads every `crate::` and
//! `super::` path in `src/` and fails on a cycle between top-level modules (tests
//! included: a test that imports a higher layer puts the cycle in the build all the
//! same), and on a lower layer importing a higher one.
//!
//! A reading of the text, not of the compiler's resolution: `use` lines, paths in
//! code and `$crate::` in macros count; comments do not. A `super::` inside an inline
//! module is read as if the module were the file's, which can only add edges.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn source_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The module path of a file below `src`: `store/sqlite/grants.rs` is
/// `[store, sqlite, grants]`, `store/mod.rs` is `[store]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap();
    if file != "mod.rs" {
        parts.push(file.trim_end_matches(".rs").to_owned());
    }
    parts
}

fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string (a URL) ends nothing; only a line or a tail that
            // starts a comment after code is cut.
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first segments after each `crate::` (one per item of a `{...}` group) and after
/// each run of `super::` that climbs to the crate root.
fn referenced(text: &str, module: &[String]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        let starts_word = at == 0 || !is_ident(bytes[at - 1] as char);
        let root_rest = if starts_word && rest.starts_with("crate::") {
            Some(&rest["crate::".len()..])
        } else if starts_word
            && rest.starts_with("super::")
            && (at < 2 || &text[at - 2..at] != "::")
        {
            let mut climbed = 0;
            let mut tail = rest;
            while let Some(next) = tail.strip_prefix("super::") {
                climbed += 1;
                tail = next;
            }
            (climbed >= module.len()).then_some(tail)
        } else {
            None
        };
        if let Some(tail) = root_rest {
            if let Some(group) = tail.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    let name: String = item.trim().chars().take_while(|c| is_ident(*c)).collect();
                    found.insert(name);
                }
            } else {
                found.insert(tail.chars().take_while(|c| is_ident(*c)).collect());
            }
        }
        at += rest.chars().next().map_or(1, char::len_utf8);
    }
    found
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let tops: BTreeSet<String> = files
        .iter()
        .map(|file| module_path(file.strip_prefix(&src).unwrap()))
        .filter_map(|path| path.first().cloned())
        .collect();
    let mut graph = Graph::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let module = module_path(relative);
        let top = &module[0];
        // The crate roots may name any module.
        if top == "lib" || top == "main" {
            continue;
        }
        let text = without_comments(&fs::read_to_string(file).unwrap());
        for target in referenced(&text, &module) {
            if &target != top && tops.contains(&target) && target != "lib" && target != "main" {
                graph
                    .entry(top.clone())
                    .or_default()
                    .entry(target)
                    .or_default()
                    .insert(relative.display().to_string());
            }
        }
    }
    graph
}

/// A cycle through `start`, if there is one: the modules in order.
fn cycle_through(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &Graph,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flat_map(BTreeMap::keys) {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    walk(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

fn describe(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(from, targets)| {
            let targets: Vec<&str> = targets.keys().map(String::as_str).collect();
            format!("{from} -> {}", targets.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_cycle_between_top_level_modules() {
    let graph = graph();
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|module| cycle_through(&graph, module))
        .map(|cycle| {
            let files: Vec<String> = cycle
                .iter()
                .zip(cycle.iter().cycle().skip(1))
                .map(|(from, to)| {
                    let files: Vec<&str> = graph[from][to].iter().map(String::as_str).collect();
                    format!("  {from} -> {to}: {}", files.join(", "))
                })
                .collect();
            format!(
                "{} -> {}\n{}",
                cycle.join(" -> "),
                cycle[0],
                files.join("\n")
            )
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "cycles between server modules:\n{}\n\nthe whole graph:\n{}",
        cycles.join("\n"),
        describe(&graph)
    );
}

/// The layers of issue 14: approvals -> store -> audit -> leaves. A lower layer naming
/// a higher one would be the first half of a cycle.
#[test]
fn lower_layers_import_no_higher_one() {
    let graph = graph();
    let layers: &[(&str, &[&str])] = &[
        ("audit", &["canonical_action", "database_url", "epoch"]),
        (
            "store",
            &[
                "audit",
                "canonical_action",
                "database_url",
                "epoch",
                "testing",
            ],
        ),
        (
            "approvals",
            &["store", "audit", "canonical_action", "epoch", "testing"],
        ),
    ];
    for (layer, allowed) in layers {
        for (target, files) in graph.get(*layer).into_iter().flatten() {
            assert!(
                allowed.contains(&target.as_str()),
                "{layer} imports {target} ({files:?}); it may import only {allowed:?}"
            );
        }
    }
    for leaf in ["canonical_action", "database_url", "epoch", "testing"] {
        assert!(
            graph.get(leaf).is_none_or(BTreeMap::is_empty),
            "{leaf} is a leaf but imports {:?}",
            graph[leaf].keys().collect::<Vec<_>>()
        );
    }
}

/// The reader itself: a cycle written into text is found.
#[test]
fn the_reader_finds_paths_and_cycles() {
    let module = vec!["grpc".to_owned(), "status".to_owned()];
    let text = without_comments(
        "use crate::{approvals::Store, audit};\n// crate::metrics\nlet x = super::super::pki::Ca;\nuse super::status;",
    );
    assert_eq!(
        referenced(&text, &module),
        ["approvals", "audit", "pki"].map(String::from).into()
    );
    let mut graph = Graph::new();
    graph
        .entry("a".into())
        .or_default()
        .entry("b".into())
        .or_default();
    graph
        .entry("b".into())
        .or_default()
        .entry("c".into())
        .or_default();
    assert_eq!(cycle_through(&graph, "a"), None);
    graph
        .entry("c".into())
        .or_default()
        .entry("a".into())
        .or_default();
    assert_eq!(
        cycle_through(&graph, "a"),
        Some(vec!["a".into(), "b".into(), "c".into()])
    );
}
