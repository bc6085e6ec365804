//! The layer order of `src/`, written once, here (and drawn in docs/ARCHITECTURE.md,
//! "Layers", which [`the_architecture_doc_draws_this_order`] keeps in step).
//!
//! A module may name (in a `use` line or inline, as `crate::`, `$crate::` or enough
//! `super::`s to leave its top-level module) its own layer and the layers below it,
//! never one above: the ground floor must not lean on the roof. A sealed layer is
//! named only by the layer right above it. Within a layer, no two top-level modules
//! may import each other, directly or round a circle.
//!
//! The check reads the source as text (comments, strings and char literals removed)
//! rather than asking the compiler: a moved import fails here with the file and line
//! that broke the order, before anyone reads a diff.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Bottom first. Each layer lists its top-level modules of `src/` (`lib` is the crate
/// root, src/lib.rs, with the public API it declares). Every module is in exactly one.
const LAYERS: &[(&str, &[&str])] = &[
    // Facts and vocabulary with no policy: errors, the remote's address, SQLite's file
    // format, delta's chunk ids, time, file and OS helpers, counters, test hooks, the
    // redaction every message goes through.
    (
        "foundation",
        &[
            "error",
            "remote_spec",
            "image",
            "delta",
            "utc",
            "fsutil",
            "sys",
            "counters",
            "crash",
            "logging",
            "redact",
        ],
    ),
    // How the file is cut into blocks: ids, the first layout, splits and merges
    // (pure computation, docs/ARCHITECTURE.md "Units of change").
    ("layout", &["layout"]),
    // Settings: URI, then MANAGEDBLOB_*, then Options, then defaults.
    ("config", &["config"]),
    // The blob stores behind one trait.
    ("backend", &["backend"]),
    // One blob of one backend: retries, counters.
    ("remote", &["remote"]),
    // The cache's side of the house: the cache file as SQLite opened it, the
    // sidecar, what killed processes leave beside them.
    ("cache", &["localfile", "sidecar", "residency", "leftovers"]),
    // The state machine (its clock, src/store/clock.rs, keeps the lease and timers).
    ("store", &["store"]),
    // One SQLite connection: its lock level, pragmas, and every open the shim asks for.
    (
        "connection",
        &["connection", "open", "pinned", "cache_file", "pragma"],
    ),
    // The unsafe shim and the crate root that registers it.
    ("shim", &["ffi", "lib"]),
    // The operator tools' view of a remote: only the `managedblob` CLI uses it; and
    // `internal`, what managedblob's own programs reach beyond the public API.
    ("operator", &["ops", "internal"]),
];

/// Layers that only the layer right above may name: the shim hands every open to
/// the connection layer and never reaches past it into the state machine.
const SEALED: &[&str] = &["store"];

/// Imports allowed against the order: (importing top-level module, imported one),
/// each with its reason. At most three lines.
const EXCEPTIONS: &[(&str, &str)] = &[];

#[test]
fn every_module_imports_only_its_layer_and_those_below() {
    let src = src_dir();
    let layer_of = layer_table();
    let modules = top_level_modules(&src);
    let unplaced: Vec<_> = modules
        .iter()
        .filter(|m| !layer_of.contains_key(m.as_str()))
        .collect();
    assert!(
        unplaced.is_empty(),
        "top-level modules missing from LAYERS in tests/layering.rs: {unplaced:?}"
    );
    let gone: Vec<_> = layer_of.keys().filter(|m| !modules.contains(**m)).collect();
    assert!(
        gone.is_empty(),
        "LAYERS in tests/layering.rs lists modules src/lib.rs no longer declares: {gone:?}"
    );
    let mut broken = Vec::new();
    let mut used_exceptions = BTreeSet::new();
    for import in imports(&src) {
        let (from, to) = (layer_of[import.from.as_str()], layer_of[import.to.as_str()]);
        let above = to > from;
        let past_sealed = from > to + 1 && SEALED.contains(&LAYERS[to].0);
        if !above && !past_sealed {
            continue;
        }
        let pair = (import.from.as_str(), import.to.as_str());
        if let Some(e) = EXCEPTIONS.iter().find(|e| **e == pair) {
            used_exceptions.insert(*e);
            continue;
        }
        broken.push(format!(
            "{}:{}: `{}` ({} layer) imports `{}` ({} layer, {})",
            import.file.display(),
            import.line,
            import.from,
            LAYERS[from].0,
            import.path,
            LAYERS[to].0,
            if above {
                "above it"
            } else {
                "sealed: only the layer right above may name it"
            }
        ));
    }
    assert!(
        broken.is_empty(),
        "imports against the layer order (see LAYERS in tests/layering.rs):\n{}",
        broken.join("\n")
    );
    let stale: Vec<_> = EXCEPTIONS
        .iter()
        .filter(|e| !used_exceptions.contains(*e))
        .collect();
    assert!(stale.is_empty(), "exceptions no longer needed: {stale:?}");
}

#[test]
fn no_two_modules_of_a_layer_import_each_other() {
    let src = src_dir();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for import in imports(&src) {
        if import.from != import.to && import.from != "lib" {
            edges.entry(import.from).or_default().insert(import.to);
        }
    }
    // Depth-first search; a back edge closes a circle.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(circle) = visit(node, &edges, &mut Vec::new(), &mut done) {
            panic!(
                "modules import each other in a circle: {}",
                circle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_architecture_doc_draws_this_order() {
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md"))
            .unwrap();
    let section = doc
        .split("\n## Layers\n")
        .nth(1)
        .expect("docs/ARCHITECTURE.md has a Layers section");
    let diagram = section
        .split("```")
        .nth(1)
        .expect("the Layers section opens with a diagram in a code block");
    // The diagram is drawn top first: one line per layer, `<layer>  <modules>  ...`.
    let drawn: Vec<(String, Vec<String>)> = diagram
        .lines()
        .filter_map(|line| {
            // Tree-drawing characters before the name are not words.
            let mut words = line
                .split_whitespace()
                .skip_while(|w| !w.starts_with(|c: char| c.is_alphanumeric()));
            let name = words.next()?;
            LAYERS.iter().any(|(l, _)| *l == name).then(|| {
                let modules = words
                    .take_while(|w| w.ends_with(',') || w.ends_with(".rs") || w.ends_with('/'))
                    .map(|w| {
                        let w = w.trim_end_matches(',');
                        let w = w.trim_end_matches('/').trim_end_matches(".rs");
                        w.rsplit('/').next().unwrap().to_string()
                    })
                    .collect();
                (name.to_string(), modules)
            })
        })
        .collect();
    let expected: Vec<(String, Vec<String>)> = LAYERS
        .iter()
        .rev()
        .map(|(name, modules)| {
            (
                name.to_string(),
                modules.iter().map(|m| m.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(
        drawn, expected,
        "docs/ARCHITECTURE.md's Layers diagram must list LAYERS of tests/layering.rs, top first"
    );
}

/// One `crate::` path (or `super::` path that leaves its top-level module).
struct Import {
    file: PathBuf,
    line: usize,
    /// Top-level module of the importing file (`lib` for the crate root).
    from: String,
    /// Top-level module the path names (`lib` for an item of the crate root).
    to: String,
    path: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Layer index of each top-level module.
fn layer_table() -> BTreeMap<&'static str, usize> {
    let mut table = BTreeMap::new();
    for (i, (_, modules)) in LAYERS.iter().enumerate() {
        for m in *modules {
            assert!(table.insert(*m, i).is_none(), "{m} is in two layers");
        }
    }
    table
}

/// The modules src/lib.rs declares, and `lib` itself.
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let text = strip(&fs::read_to_string(src.join("lib.rs")).unwrap());
    let tokens = tokenize(&text);
    let mut modules: BTreeSet<String> = tokens
        .windows(3)
        .filter(|w| w[0].text == "mod" && w[2].text == ";")
        .map(|w| w[1].text.clone())
        .collect();
    modules.insert("lib".into());
    modules
}

/// Every path into another part of the crate, from every file under `src`.
fn imports(src: &Path) -> Vec<Import> {
    let modules = top_level_modules(src);
    let mut found = Vec::new();
    for file in rust_files(src) {
        let module = module_path(src, &file);
        let from = module.first().cloned().unwrap_or_else(|| "lib".into());
        let text = strip(&fs::read_to_string(&file).unwrap());
        let tokens = tokenize(&text);
        for (line, path) in paths(&tokens, &module) {
            // The first segment is a top-level module, or an item of the crate root.
            let to = match path.first() {
                Some(first) if modules.contains(first) => first.clone(),
                _ => "lib".into(),
            };
            found.push(Import {
                file: file
                    .strip_prefix(src.parent().unwrap())
                    .unwrap()
                    .to_path_buf(),
                line,
                from: from.clone(),
                to,
                path: format!("crate::{}", path.join("::")),
            });
        }
    }
    found
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `src/backend/local/mod.rs` is `backend::local`; `src/lib.rs` is the root.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut segments: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(segments.last().map(String::as_str), Some("mod" | "lib")) {
        segments.pop();
    }
    segments
}

/// The source with comments, string literals and char literals blanked out (newlines
/// kept, so line numbers stay true).
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let ident_before = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
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
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if !ident_before && (c == 'r' || (c == 'b' && next == Some('r'))) && {
            // A raw string: r"..", r#".."#, br"..".
            let start = if c == 'b' { i + 2 } else { i + 1 };
            let hashes = chars[start..].iter().take_while(|&&h| h == '#').count();
            chars.get(start + hashes) == Some(&'"')
        } {
            let start = if c == 'b' { i + 2 } else { i + 1 };
            let hashes = chars[start..].iter().take_while(|&&h| h == '#').count();
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            i = start + hashes + 1;
            while i < chars.len() && !chars[i..].starts_with(&close) {
                blank(&mut out, chars[i]);
                i += 1;
            }
            i += close.len();
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                if i < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\''), not a lifetime ('a).
            let end = if next == Some('\\') {
                chars[i + 2..]
                    .iter()
                    .position(|&q| q == '\'')
                    .map(|p| i + 2 + p + 1)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            match end {
                Some(end) => i = end,
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

struct Token {
    text: String,
    line: usize,
}

/// Identifiers (with a leading `$`, so `$crate` is one), `::`, and single punctuation.
fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let text = chars[start..i].iter().collect();
            tokens.push(Token { text, line });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push(Token {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            tokens.push(Token {
                text: c.to_string(),
                line,
            });
            i += 1;
        }
    }
    tokens
}

/// Every `crate::` / `$crate::` / `super::` path in `tokens` of the file whose module
/// is `module`, as an absolute path (groups `{a, b::c}` expanded), with its line.
/// Inline `mod name { .. }` blocks are followed, so a test module's `super::*` is the
/// file's own module.
fn paths(tokens: &[Token], module: &[String]) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    // Inline modules we are in: (name, brace depth at which it closes).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].text.as_str();
        let path_start = (t == "crate" || t == "$crate" || t == "super")
            && tokens.get(i + 1).is_some_and(|n| n.text == "::")
            && !(i > 0 && tokens[i - 1].text == "::");
        if t == "mod" && tokens.get(i + 2).is_some_and(|n| n.text == "{") {
            inline.push((tokens[i + 1].text.clone(), depth + 1));
        } else if t == "{" {
            depth += 1;
        } else if t == "}" {
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
            depth -= 1;
        } else if path_start {
            let mut here: Vec<String> = module.to_vec();
            here.extend(inline.iter().map(|(name, _)| name.clone()));
            let (base, rest) = if t == "super" {
                let mut j = i;
                let mut base = here;
                while tokens.get(j).is_some_and(|n| n.text == "super")
                    && tokens.get(j + 1).is_some_and(|n| n.text == "::")
                {
                    base.pop();
                    j += 2;
                }
                (base, j)
            } else {
                (Vec::new(), i + 2)
            };
            let line = tokens[i].line;
            let (trees, end) = use_tree(tokens, rest);
            for tree in trees {
                let mut full = base.clone();
                full.extend(tree);
                found.push((line, full));
            }
            i = end;
            continue;
        }
        i += 1;
    }
    found
}

/// The paths of a use tree starting at `tokens[at]` (`a::b`, `a::{b, c::d}`, `*`),
/// and the index after it.
fn use_tree(tokens: &[Token], mut at: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        match tokens.get(at).map(|t| t.text.as_str()) {
            Some("{") => {
                let mut trees = Vec::new();
                at += 1;
                while tokens.get(at).is_some_and(|t| t.text != "}") {
                    if tokens[at].text == "," {
                        at += 1;
                        continue;
                    }
                    let (inner, next) = use_tree(tokens, at);
                    for tail in inner {
                        let mut full = prefix.clone();
                        full.extend(tail);
                        trees.push(full);
                    }
                    // Something that is no path (a macro's tokens): step over it.
                    at = next.max(at + 1);
                }
                return (trees, at + 1);
            }
            Some(t) if t == "*" || t.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                if t != "self" && t != "*" {
                    prefix.push(t.to_string());
                }
                at += 1;
                if tokens.get(at).is_some_and(|n| n.text == "::") {
                    at += 1;
                    continue;
                }
                if tokens.get(at).is_some_and(|n| n.text == "as") {
                    at += 2;
                }
                return (vec![prefix], at);
            }
            _ => return (vec![prefix], at),
        }
    }
}
