//! Every fenced code block of README.md, python/README.md and docs/*.md runs as
//! written (issue 25, item 8), or says why not.
//!
//! A block's info string says what it is, and an HTML comment on the line before it
//! (`<!-- docs-test: ... -->`) may say how to run it:
//!
//! - `sh` / `bash`: run with `bash -e -o pipefail` in a fresh directory (below); it must
//!   exit 0 within a minute.
//! - `console`: a transcript. Each `$ ` line (with its `\` continuations) runs in that
//!   directory in turn, and what it prints (stdout and stderr) must match the lines
//!   under it: a `...` line stands for any lines, and etags (`mb-<32 hex>`), times
//!   (RFC 3339) and the directory's path are compared as placeholders.
//! - `python`: run by python/tests/test_docs.py with the package's venv (here only
//!   counted).
//! - `rust`: compiled as doctests of the crate (src/lib.rs includes each file that has
//!   one; checked here).
//! - `text`: output or a diagram, not run.
//!
//! Directives: `skip (why)` (counted and printed); `azure` (on Azurite:
//! `MANAGEDBLOB_REMOTE` is a fresh container's URL and `AZURE_STORAGE_CONNECTION_STRING`
//! Azurite's); `dir=/tmp/doc` (the directory the doc ran in, read as the fresh
//! directory); `continues` (in the directory of the file's previous block, not a fresh
//! one).
//!
//! The fresh directory holds the loadable extension as `libmanagedblob.so` and the
//! directories `remote/`, `h1/`, `h2/` and `srv/remote/`, as the docs assume; `/srv/`
//! and `/path/to/` in a block are read as that directory's `srv/` and `./`. `PATH`
//! starts with the built `managedblob` and `/usr/bin` (Debian's `sqlite3` and
//! `python3`); no `MANAGEDBLOB_*` variable is inherited.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The documents whose blocks must run.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut docs = vec![root.join("README.md"), root.join("python/README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

/// How a block is run, from its `<!-- docs-test: ... -->` line.
#[derive(Debug, Default)]
struct Directive {
    skip: Option<String>,
    azure: bool,
    doc_dir: Option<String>,
    continues: bool,
}

impl Directive {
    fn parse(line: &str, at: &str) -> Directive {
        let mut d = Directive::default();
        let Some(body) = line
            .trim()
            .strip_prefix("<!-- docs-test:")
            .and_then(|b| b.strip_suffix("-->"))
        else {
            return d;
        };
        let body = body.trim();
        if let Some(why) = body.strip_prefix("skip") {
            let why = why.trim().trim_start_matches('(').trim_end_matches(')');
            assert!(!why.is_empty(), "{at}: `skip` needs a reason: skip (why)");
            d.skip = Some(why.to_string());
            return d;
        }
        for word in body.split_whitespace() {
            match word {
                "azure" => d.azure = true,
                "continues" => d.continues = true,
                w if w.starts_with("dir=") => d.doc_dir = Some(w[4..].to_string()),
                w => panic!("{at}: unknown docs-test directive {w:?}"),
            }
        }
        d
    }
}

/// One fenced block.
#[derive(Debug)]
struct Block {
    at: String,
    lang: String,
    directive: Directive,
    text: String,
}

/// The fenced blocks of `markdown` (``` or ~~~, indented or not, as in lists).
fn blocks(name: &str, markdown: &str) -> Vec<Block> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let fence: String = trimmed
            .chars()
            .take_while(|c| *c == '`' || *c == '~')
            .collect();
        if fence.len() < 3 || fence.chars().any(|c| c != fence.chars().next().unwrap()) {
            i += 1;
            continue;
        }
        let at = format!("{name}:{}", i + 1);
        let lang = trimmed[fence.len()..]
            .split([' ', ','])
            .next()
            .unwrap_or_default()
            .to_string();
        let before = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
        let directive = Directive::parse(before.copied().unwrap_or_default(), &at);
        let mut text = String::new();
        i += 1;
        while i < lines.len() && !lines[i].trim_start().starts_with(fence.as_str()) {
            let l = lines[i];
            let cut = l.len() - l.trim_start().len();
            text.push_str(&l[cut.min(indent)..]);
            text.push('\n');
            i += 1;
        }
        assert!(i < lines.len(), "{at}: the block is not closed");
        found.push(Block {
            at,
            lang,
            directive,
            text,
        });
        i += 1;
    }
    found
}

/// Where blocks run, and what they are told.
struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    fn new(extension: &Path) -> Place {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["remote", "h1", "h2", "srv/remote"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::os::unix::fs::symlink(extension, dir.path().join("libmanagedblob.so")).unwrap();
        Place { dir }
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// A block's text as it runs here.
    fn localize(&self, text: &str, directive: &Directive) -> String {
        let here = self.path();
        let mut text = text
            .replace("/srv/", &format!("{here}/srv/"))
            .replace("/path/to/", &format!("{here}/"));
        if let Some(doc) = &directive.doc_dir {
            text = text.replace(&format!("{doc}/"), &format!("{here}/"));
        }
        text
    }

    /// Run `script` with bash here; (exit code, stdout and stderr together).
    fn bash(&self, script: &str, env: &[(String, String)], at: &str) -> (Option<i32>, String) {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_managedblob"));
        let path = format!(
            "{}:/usr/bin:{}",
            bin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = self.dir.path().join(".docs-test-output");
        let mut cmd = Command::new("/bin/bash");
        cmd.args(["-e", "-o", "pipefail", "-c"])
            .arg(format!("exec 2>&1\n{script}"))
            .current_dir(self.dir.path())
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap());
        for (name, _) in std::env::vars() {
            if name.starts_with("MANAGEDBLOB_") || name.starts_with("AZURE_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("{at}: still running after 60 s:\n{script}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let printed = std::fs::read_to_string(&out).unwrap_or_default();
        std::fs::remove_file(&out).unwrap();
        (status.code(), printed)
    }
}

/// `text` with what differs between runs as placeholders: `dirs` (the run's
/// directory, the doc's), etags and times.
fn normalize(text: &str, dirs: &[&str]) -> String {
    let mut text = text.to_string();
    for dir in dirs {
        text = text.replace(dir, "<dir>");
    }
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let rest: String = chars[i..chars.len().min(i + 40)].iter().collect();
        if rest.starts_with("mb-")
            && rest.len() >= 35
            && rest[3..35].chars().all(|c| c.is_ascii_hexdigit())
        {
            out.push_str("mb-<etag>");
            i += 35;
            continue;
        }
        if rest.starts_with("LeaseId(") {
            if let Some(end) = rest.find(')') {
                out.push_str("LeaseId(<id>)");
                i += end + 1;
                continue;
            }
        }
        if let Some(len) = time_at(&chars[i..]) {
            out.push_str("<time>");
            i += len;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The length of an RFC 3339 UTC time (`2026-12-01T05:39:05.329449Z`) at the start.
fn time_at(chars: &[char]) -> Option<usize> {
    let shape = "dddd-dd-ddTdd:dd:dd";
    if chars.len() < shape.len() + 1 {
        return None;
    }
    for (c, s) in chars.iter().zip(shape.chars()) {
        let ok = match s {
            'd' => c.is_ascii_digit(),
            s => *c == s,
        };
        if !ok {
            return None;
        }
    }
    let mut n = shape.len();
    if chars[n] == '.' {
        n += 1;
        while n < chars.len() && chars[n].is_ascii_digit() {
            n += 1;
        }
    }
    (chars.get(n) == Some(&'Z')).then_some(n + 1)
}

/// Whether `actual` lines match `expected` lines, `...` standing for any lines.
fn matches(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => (0..=actual.len()).any(|skip| matches(rest, &actual[skip..])),
        Some((line, rest)) => {
            actual
                .first()
                .is_some_and(|a| a.trim_end() == line.trim_end())
                && matches(rest, &actual[1..])
        }
    }
}

/// A transcript's commands (with their `\` continuations and here-documents) and the
/// lines each prints.
fn transcript(text: &str) -> Vec<(String, Vec<String>)> {
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    // What the current command still takes: continuation lines, or a here-document's
    // lines up to its delimiter.
    let mut continuing = false;
    let mut here_doc: Option<String> = None;
    for line in text.lines() {
        if continuing || here_doc.is_some() {
            let step = steps.last_mut().unwrap();
            step.0.push('\n');
            step.0.push_str(line);
            if here_doc.as_deref() == Some(line) {
                here_doc = None;
            } else if continuing {
                continuing = line.ends_with('\\');
            }
        } else if let Some(command) = line.strip_prefix("$ ") {
            steps.push((command.to_string(), Vec::new()));
            continuing = command.ends_with('\\');
            here_doc = command.split_once("<<").map(|(_, rest)| {
                rest.trim_start_matches('-')
                    .trim()
                    .trim_matches(['\'', '"'])
                    .to_string()
            });
        } else if let Some(step) = steps.last_mut() {
            step.1.push(line.to_string());
        }
    }
    steps
}

/// The environment of an `azure` block: a fresh container on Azurite. None when
/// Azurite is missing (then the block is skipped, or under CI fails).
fn azure_env(
    keep: &mut Option<std::sync::Arc<common::azurite::Azurite>>,
) -> Option<Vec<(String, String)>> {
    let az = common::azurite::shared()?;
    let container = common::azurite::random_container();
    let env = vec![
        (
            "MANAGEDBLOB_REMOTE".to_string(),
            az.container_url(&container),
        ),
        (
            "AZURE_STORAGE_CONNECTION_STRING".to_string(),
            az.connection_string(),
        ),
    ];
    *keep = Some(az);
    Some(env)
}

#[derive(Default)]
struct Counts {
    ran: usize,
    checked_output: usize,
    skipped: Vec<String>,
    python: usize,
    rust: usize,
    text: usize,
}

#[test]
fn every_code_block_runs_as_written() {
    let Some(extension) = harness::extension() else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let lib_rs = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let mut counts = Counts::default();
    let mut failures = Vec::new();
    let mut azurite = None;
    for doc in documents(root) {
        let name = doc.strip_prefix(root).unwrap().display().to_string();
        let markdown = std::fs::read_to_string(&doc).unwrap();
        let mut previous: Option<Place> = None;
        for block in blocks(&name, &markdown) {
            let at = &block.at;
            if let Some(why) = &block.directive.skip {
                counts.skipped.push(format!("{at} ({}): {why}", block.lang));
                continue;
            }
            match block.lang.as_str() {
                "sh" | "bash" | "console" => {}
                "python" => {
                    counts.python += 1;
                    continue;
                }
                "rust" => {
                    let included = format!("include_str!(\"../{name}\")");
                    if !lib_rs.contains(&included) {
                        failures.push(format!(
                            "{at}: a rust block in a file src/lib.rs does not compile as \
                             doctests (add {included} there)"
                        ));
                    }
                    counts.rust += 1;
                    continue;
                }
                "text" => {
                    counts.text += 1;
                    continue;
                }
                other => {
                    failures.push(format!(
                        "{at}: say what the block is (sh, console, python, rust, text), \
                         not {other:?}"
                    ));
                    continue;
                }
            }
            let place = match previous.take() {
                Some(p) if block.directive.continues => p,
                _ => Place::new(&extension),
            };
            let env = if block.directive.azure {
                match azure_env(&mut azurite) {
                    Some(env) => env,
                    None => {
                        counts.skipped.push(format!("{at}: Azurite is missing"));
                        continue;
                    }
                }
            } else {
                Vec::new()
            };
            let text = place.localize(&block.text, &block.directive);
            if block.lang == "console" {
                let here = place.path();
                let mut dirs = vec![here.as_str()];
                if let Some(doc_dir) = &block.directive.doc_dir {
                    dirs.push(doc_dir);
                }
                for (command, expected) in transcript(&text) {
                    let (_, printed) = place.bash(&command, &env, at);
                    let printed = normalize(&printed, &dirs);
                    let expected = normalize(&expected.join("\n"), &dirs);
                    let want: Vec<&str> = expected.lines().collect();
                    let got: Vec<&str> = printed.lines().collect();
                    if !matches(&want, &got) {
                        failures.push(format!(
                            "{at}: `{command}` printed\n{printed}\n-- the doc says --\n{expected}"
                        ));
                    }
                }
                counts.checked_output += 1;
            } else {
                let (code, printed) = place.bash(&text, &env, at);
                if code != Some(0) {
                    failures.push(format!(
                        "{at}: exit {code:?}\n{text}\n-- printed --\n{printed}"
                    ));
                }
            }
            counts.ran += 1;
            previous = Some(place);
        }
    }
    eprintln!(
        "docs: {} blocks ran ({} transcripts compared), {} python (python/tests/test_docs.py), \
         {} rust (doctests), {} text, {} skipped:",
        counts.ran,
        counts.checked_output,
        counts.python,
        counts.rust,
        counts.text,
        counts.skipped.len()
    );
    for s in &counts.skipped {
        eprintln!("  skipped {s}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The extraction finds them: a parser that found nothing would pass vacuously.
    assert!(counts.ran >= 8, "only {} blocks ran", counts.ran);
    assert!(
        counts.python >= 4 && counts.rust >= 2,
        "{} python, {} rust",
        counts.python,
        counts.rust
    );
}

#[test]
fn the_block_reader_sees_fences_directives_and_transcripts() {
    let md = "text\n\n<!-- docs-test: skip (a server) -->\n```sh\nserve\n```\n\n- item\n\n  ```console\n  $ echo a \\\n      b\n  a b\n  ...\n  $ cat <<'EOF'\n  x\n  EOF\n  x\n  ```\n";
    let found = blocks("x.md", md);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].directive.skip.as_deref(), Some("a server"));
    assert_eq!(found[1].lang, "console");
    let steps = transcript(&found[1].text);
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].0, "echo a \\\n    b");
    assert_eq!(steps[0].1, ["a b", "..."]);
    assert_eq!(
        steps[1],
        ("cat <<'EOF'\nx\nEOF".to_string(), vec!["x".to_string()])
    );
    assert!(matches(&["a b", "..."], &["a b", "c", "d"]));
    assert!(!matches(&["a b"], &["a b", "c"]));
    assert_eq!(
        normalize(
            "at 2026-12-01T05:39:05.329449Z etag mb-2fa5e305ef1cad02c9feb2c21d750c29 in /t/x",
            &["/t"]
        ),
        "at <time> etag mb-<etag> in <dir>/x"
    );
}
