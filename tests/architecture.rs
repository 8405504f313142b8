//! The layers stay visible: leaves ← store ← engine ← facade ← bridges (DESIGN.md §7).
//!
//! Reads `src/`, finds which module each file names (`use crate::…`, `super::…`, inline
//! `crate::…` paths; comments are skipped) and fails when:
//! - a leaf (error, options, record, clock, codec, observe, trace_context, stats) names the
//!   store, the engine or the facade;
//! - the store names the engine or the facade;
//! - the engine names the facade;
//! - two files import each other, unless one is the other's parent or child;
//! - the files form an import cycle (edges between a module and its own descendants aside);
//! - a file is over 800 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Leaf,
    Store,
    Engine,
    Facade,
    /// Bridges to other servers: built on the facade, named by nothing below.
    Integration,
}

fn layer(module: &[String]) -> Option<Layer> {
    match module.first().map(String::as_str)? {
        "error" | "options" | "record" | "clock" | "codec" | "observe" | "trace_context"
        | "stats" => Some(Layer::Leaf),
        "store" => Some(Layer::Store),
        "engine" => Some(Layer::Engine),
        "broker" | "topic" | "queue" | "producer" | "consumer" | "message" | "asynchronous"
        | "select" | "inspect" => Some(Layer::Facade),
        "bridge" => Some(Layer::Integration),
        _ => None,
    }
}

/// One source file: its module path (empty for `lib.rs`) and text.
struct File {
    path: PathBuf,
    module: Vec<String>,
    text: String,
}

fn files(dir: &Path, src: &Path, out: &mut Vec<File>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, src, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Vec<String> = relative
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            out.push(File { path, module, text });
        }
    }
}

/// The text without comments (line comments and doc comments; block comments are not used).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path the code names from the crate root (`crate::a::b`) or relative to the file
/// (`super::`, `self::`), as absolute segment lists; `use` trees are expanded.
fn paths(file: &File) -> Vec<Vec<String>> {
    let code = code(&file.text);
    let mut out = Vec::new();
    // `use` statements (at the start of a line), with their brace trees.
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let line = line.trim_start();
        let Some(start) = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|p| line.strip_prefix(p))
        else {
            continue;
        };
        let mut statement = start.to_owned();
        while !statement.contains(';') {
            match lines.next() {
                Some(more) => statement.push_str(more),
                None => break,
            }
        }
        let tree: String = statement
            .split(';')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        expand(&tree, Vec::new(), &mut out);
    }
    // Inline paths anywhere else.
    for root in ["crate::", "super::"] {
        let mut at = 0;
        while let Some(i) = code[at..].find(root) {
            let start = at + i;
            let path: String = code[start..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(path.split("::").map(str::to_owned).collect());
            at = start + root.len();
        }
    }
    out.into_iter()
        .filter_map(|p| absolute(&file.module, p))
        .collect()
}

/// Expands a `use` tree (`a::{b, c::{d}}`) into its paths.
fn expand(tree: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim().trim_start_matches("::");
    let Some(open) = tree.find('{') else {
        let mut path = prefix;
        let tree = tree.split(" as ").next().unwrap_or(tree).replace(' ', "");
        path.extend(
            tree.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        out.push(path);
        return;
    };
    let mut path = prefix;
    path.extend(
        tree[..open]
            .replace(' ', "")
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    );
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut from) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&inner[from..i], path.clone(), out);
                from = i + 1;
            }
            _ => {}
        }
    }
    if from < inner.len() {
        expand(&inner[from..], path, out);
    }
}

/// `path` from the crate root, or `None` for paths outside the crate (std, dependencies).
fn absolute(module: &[String], path: Vec<String>) -> Option<Vec<String>> {
    // `self::` starts from the file's own module, `super::` from its parent (a file's module
    // is the same whether it is `a/b.rs` or `a/b/mod.rs`).
    let (mut base, skip) = match path.first()?.as_str() {
        "crate" => (Vec::new(), 1),
        "self" => (module.to_vec(), 1),
        "super" => {
            let supers = path.iter().take_while(|s| *s == "super").count();
            (
                module[..module.len().saturating_sub(supers)].to_vec(),
                supers,
            )
        }
        _ => return None,
    };
    base.extend(path.into_iter().skip(skip));
    Some(base)
}

/// The file a path lands in: the longest prefix that is a module with a file.
fn target(modules: &BTreeSet<Vec<String>>, path: &[String]) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
}

/// One module is the other or its ancestor.
fn related(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

struct Graph {
    files: Vec<File>,
    /// Importing module -> imported modules (files), self-references removed.
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &src, &mut all);
    let modules: BTreeSet<Vec<String>> = all.iter().map(|f| f.module.clone()).collect();
    let mut edges = BTreeMap::new();
    for file in &all {
        let targets: BTreeSet<Vec<String>> = paths(file)
            .iter()
            .filter_map(|p| target(&modules, p))
            .filter(|t| *t != file.module && !t.is_empty())
            .collect();
        edges.insert(file.module.clone(), targets);
    }
    Graph { files: all, edges }
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "lib".to_owned()
    } else {
        module.join("::")
    }
}

#[test]
fn the_checker_sees_imports() {
    // Guards the checks below against a parser that finds nothing.
    let g = graph();
    let edges = |m: &str| {
        let key: Vec<String> = m.split("::").map(str::to_owned).collect();
        g.edges[&key].iter().map(|t| name(t)).collect::<Vec<_>>()
    };
    assert!(
        edges("consumer").contains(&"engine".to_owned()),
        "{:?}",
        edges("consumer")
    );
    assert!(edges("consumer").contains(&"engine::notify".to_owned()));
    assert!(edges("engine::topic").contains(&"store".to_owned()));
    assert!(edges("engine::topic::group").contains(&"engine::topic".to_owned()));
    assert!(edges("broker").contains(&"broker::builder".to_owned()));
    let expanded = {
        let mut out = Vec::new();
        expand("crate::{a::{B, c::D}, e}", Vec::new(), &mut out);
        out
    };
    assert_eq!(expanded.len(), 3);
    assert_eq!(
        absolute(
            &["engine".to_owned(), "topic".to_owned(), "group".to_owned()],
            vec!["super".into(), "super".into(), "notify".into()]
        ),
        Some(vec!["engine".to_owned(), "notify".to_owned()])
    );
}

#[test]
fn every_layer_names_only_the_layers_below_it() {
    let g = graph();
    let mut wrong = Vec::new();
    for (from, targets) in &g.edges {
        let Some(from_layer) = layer(from) else {
            continue; // lib.rs wires everything together
        };
        for to in targets {
            let Some(to_layer) = layer(to) else { continue };
            if to_layer > from_layer {
                wrong.push(format!(
                    "{} ({from_layer:?}) names {} ({to_layer:?})",
                    name(from),
                    name(to)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "layer violations:\n{}", wrong.join("\n"));
}

#[test]
fn no_two_files_import_each_other() {
    let g = graph();
    let mut mutual = Vec::new();
    for (a, targets) in &g.edges {
        for b in targets {
            if a < b && g.edges.get(b).is_some_and(|t| t.contains(a)) && !related(a, b) {
                mutual.push(format!("{} <-> {}", name(a), name(b)));
            }
        }
    }
    assert!(
        mutual.is_empty(),
        "files that import each other:\n{}",
        mutual.join("\n")
    );
}

#[test]
fn files_form_no_import_cycle() {
    let g = graph();
    // Depth-first search for a back edge, ignoring edges within one module's own subtree.
    fn visit(
        g: &Graph,
        at: &Vec<String>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<String>> {
        state.insert(at.clone(), 1);
        stack.push(at.clone());
        for next in g.edges.get(at).into_iter().flatten() {
            if related(at, next) {
                continue;
            }
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|m| m == next).unwrap_or(0);
                    let mut cycle: Vec<String> = stack[from..].iter().map(|m| name(m)).collect();
                    cycle.push(name(next));
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(g, next, state, stack) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(at.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for module in g.edges.keys() {
        if state.get(module).copied().unwrap_or(0) == 0 {
            let cycle = visit(&g, module, &mut state, &mut Vec::new());
            assert!(
                cycle.is_none(),
                "import cycle: {}",
                cycle.unwrap().join(" -> ")
            );
        }
    }
}

#[test]
fn no_file_is_over_800_lines() {
    let g = graph();
    let long: Vec<String> = g
        .files
        .iter()
        .filter(|f| f.text.lines().count() > MAX_LINES)
        .map(|f| format!("{} ({} lines)", f.path.display(), f.text.lines().count()))
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}

/// The files other than module `owner` whose code (comments stripped) says any of `words`.
fn outside(g: &Graph, owner: &[&str], words: &[&str]) -> Vec<String> {
    g.files
        .iter()
        .filter(|f| f.module != owner)
        .filter(|f| {
            let code = code(&f.text);
            words.iter().any(|w| code.contains(w))
        })
        .map(|f| f.path.display().to_string())
        .collect()
}

#[test]
fn nothing_outside_codec_names_bincode() {
    let naming = outside(&graph(), &["codec"], &["bincode::"]);
    assert!(
        naming.is_empty(),
        "files naming the bincode crate: {naming:?}"
    );
}

/// `unsafe` code lives in `engine::slot` alone (issue #16 allows one such module): the crate
/// says `#![deny(unsafe_code)]`, and only that module may allow it.
#[test]
fn only_the_slot_module_has_unsafe_code() {
    let g = graph();
    let unsafe_files = outside(&g, &["engine", "slot"], &["unsafe ", "allow(unsafe_code)"]);
    assert!(
        unsafe_files.is_empty(),
        "unsafe code outside engine::slot: {unsafe_files:?}"
    );
    let lib = g.files.iter().find(|f| f.module.is_empty()).unwrap();
    assert!(code(&lib.text).contains("#![deny(unsafe_code)]"));
}
