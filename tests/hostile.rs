//! Hostile input: a table of malformed or hostile settings, names, files and
//! environments. Each row runs in its own child process (this test binary
//! re-executed with `MB_CHILD_ROLE=row`), so a row may set environment variables or
//! resource limits, and an abort (a panic unwinding into C, a crash) shows as a
//! failed exit status. For every row the test asserts:
//!
//! - the error message contains the expected text (or the open succeeds, for the
//!   few rows where the designed answer is to recover);
//! - nothing was deleted or changed: every file that existed under the row's
//!   directory (remote, cache, anything outside) is still there with the same bytes
//!   (a row that recovers may replace the cache, but only after keeping its old
//!   bytes in a conflict copy);
//! - the child exited normally and printed no panic.
//!
//! Unwritable directories: the tests run as root in CI, where permission bits do not
//! stop anyone. As root the row makes the directory immutable with `chattr +i`, or,
//! where the file system does not support that, bind-mounts it read-only; as another
//! user it uses `chmod 0555`. The full-disk rows mount a small tmpfs (root only;
//! skipped otherwise) or set RLIMIT_FSIZE in the child with SIGXFSZ ignored.
//! The mechanism used is printed with the table (`--nocapture`).

use common::*;

#[path = "hostile/setups.rs"]
mod setups;
#[path = "hostile/table.rs"]
mod table;
use setups::*;
use table::rows;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

const ROLE: &str = "MB_CHILD_ROLE";
const MARK: &str = "MB:RESULT ";
const SECRET: &str = "SECRETSIG";

/// The directories of one row.
struct Ctx {
    dir: PathBuf,
}

impl Ctx {
    fn remote(&self) -> PathBuf {
        self.dir.join("remote")
    }
    fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }
    fn cache(&self) -> PathBuf {
        self.cache_dir().join("a.db")
    }
    fn blob(&self) -> PathBuf {
        self.remote().join("a.db")
    }
    fn sidecar(&self) -> PathBuf {
        managedblob::internal::sidecar::path_for(&self.cache())
    }
    fn expand(&self, template: &str) -> String {
        template
            .replace("{cache}", &self.cache().display().to_string())
            .replace("{cache_dir}", &self.cache_dir().display().to_string())
            .replace("{remote}", &self.remote().display().to_string())
            .replace("{dir}", &self.dir.display().to_string())
    }
    /// The usual URI: the cache `a.db` and the remote directory, plus `extra`.
    fn uri(&self, extra: &str) -> String {
        format!(
            "file:{}?vfs=managedblob&remote={}{extra}",
            self.cache().display(),
            self.remote().display()
        )
    }
}

/// A row's own step (an action in the child, or a check in the parent).
type RowFn = fn(&Ctx) -> Result<(), String>;

/// What a row expects.
#[derive(Clone, Copy)]
enum Expect {
    /// The action fails with a message containing all of these.
    Err(&'static [&'static str]),
    /// The action fails with a message containing one of these.
    AnyErr(&'static [&'static str]),
    /// The action succeeds (the designed answer is to recover).
    Opens,
    /// Not testable in this build; the reason.
    #[cfg_attr(feature = "azure", allow(dead_code))]
    Pending(&'static str),
}

/// What the child does once the row is set up.
#[derive(Clone, Copy)]
enum Action {
    /// Open the URI and read the schema and table `t`.
    Read,
    /// Read, then insert into `t`.
    Write,
    /// Read, then insert a 1 MiB row into `t`.
    WriteBig,
    /// Anything else, in the child.
    Custom(RowFn),
}

/// What the parent-side setup made, and how to undo it.
#[derive(Default)]
struct Setup {
    skip: Option<String>,
    mechanism: Option<String>,
    cleanup: Vec<Box<dyn FnOnce()>>,
    /// The URI for the child, instead of the row's template (a remote that is not a
    /// directory, such as an Azurite container URL).
    uri: Option<String>,
    /// More environment for the child.
    env: Vec<(String, String)>,
    /// Secrets the row hands over: none may appear in the error, the output, the log
    /// or any file.
    secrets: Vec<String>,
    /// A check of a remote that is not under the row's directory: nothing in it was
    /// deleted or changed.
    remote_unchanged: Option<Box<dyn Fn() -> Result<(), String>>>,
    /// (text, stand-in) pairs for the printed table (ports, random names).
    redact: Vec<(String, String)>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for undo in self.cleanup.drain(..).rev() {
            undo();
        }
    }
}

struct Row {
    name: &'static str,
    uri: &'static str,
    expect: Expect,
    setup: fn(&Ctx) -> Setup,
    action: Action,
    env: &'static [(&'static str, &'static str)],
    /// RLIMIT_FSIZE for the child, in bytes.
    fsize_limit: Option<u64>,
    /// The row recovers by replacing the cache (its old bytes must be kept aside).
    cache_may_change: bool,
    /// A row-specific check after the child ran.
    check: Option<RowFn>,
}

const DEFAULT_URI: &str = "file:{cache}?vfs=managedblob&remote={remote}";

fn row(name: &'static str, uri: &'static str, expect: Expect) -> Row {
    Row {
        name,
        uri,
        expect,
        setup: seeded,
        action: Action::Read,
        env: &[],
        fsize_limit: None,
        cache_may_change: false,
        check: None,
    }
}

impl Row {
    fn setup(mut self, f: fn(&Ctx) -> Setup) -> Row {
        self.setup = f;
        self
    }
    fn action(mut self, a: Action) -> Row {
        self.action = a;
        self
    }
    fn env(mut self, env: &'static [(&'static str, &'static str)]) -> Row {
        self.env = env;
        self
    }
    fn fsize_limit(mut self, bytes: u64) -> Row {
        self.fsize_limit = Some(bytes);
        self
    }
    fn cache_may_change(mut self) -> Row {
        self.cache_may_change = true;
        self
    }
    fn check(mut self, f: RowFn) -> Row {
        self.check = Some(f);
        self
    }
}

fn err(texts: &'static [&'static str]) -> Expect {
    Expect::Err(texts)
}

// ---------------------------------------------------------------------------
// The child side

/// Open `uri` and do `action`; the first error, with the step that failed.
fn probe(uri: &str, action: Action) -> Result<(), String> {
    let c = Connection::open_with_flags(uri, flags()).map_err(|e| format!("open: {e}"))?;
    c.busy_timeout(Duration::ZERO).unwrap();
    let tables: i64 = c
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| format!("read schema: {e}"))?;
    if tables > 0 {
        c.query_row("SELECT count(*), sum(length(x)) FROM t", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| format!("read t: {e}"))?;
    }
    let insert = match action {
        Action::Write => "INSERT INTO t(x) VALUES ('hostile probe')",
        Action::WriteBig => "INSERT INTO t(x) VALUES (randomblob(1048576))",
        _ => return Ok(()),
    };
    c.execute(insert, [])
        .map_err(|e| format!("write: {e}; last_error {}", last_error(&c)))?;
    Ok(())
}

fn last_error(c: &Connection) -> String {
    c.query_row("PRAGMA managedblob_status", [], |r| r.get::<_, String>(0))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .map(|v| v["last_error"].to_string())
        .unwrap_or_default()
}

#[test]
fn child_main() {
    if std::env::var(ROLE).as_deref() != Ok("row") {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("managedblob=debug")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    managedblob::register().unwrap();
    let name = std::env::var("MB_ROW").unwrap();
    let ctx = Ctx {
        dir: PathBuf::from(std::env::var("MB_DIR").unwrap()),
    };
    let table = rows();
    let row = table.iter().find(|r| r.name == name).expect("row");
    if let Some(limit) = row.fsize_limit {
        // SAFETY: plain libc calls with valid arguments; SIG_IGN makes a write past
        // the limit fail with EFBIG instead of killing the process.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
    }
    let result = match row.action {
        Action::Custom(f) => f(&ctx),
        action => probe(
            &std::env::var("MB_URI").unwrap_or_else(|_| ctx.expand(row.uri)),
            action,
        ),
    };
    let line = match result {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("err {}", serde_json::to_string(&e).unwrap()),
    };
    println!("\n{MARK}{line}");
}

// ---------------------------------------------------------------------------
// The parent side

/// Every regular file under `dir` (recursively) and its bytes; lock files we
/// create empty on first use are left out.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() && !path.to_string_lossy().ends_with(".mb-mutex") {
                if let Ok(bytes) = std::fs::read(&path) {
                    out.insert(path, bytes);
                }
            }
        }
    }
    out
}

/// Run one row in a child; returns (result line, stderr, exit status).
fn run_child(
    row: &Row,
    ctx: &Ctx,
    setup: &Setup,
) -> (Option<String>, String, String, std::process::ExitStatus) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
        .env(ROLE, "row")
        .env("MB_ROW", row.name)
        .env("MB_DIR", &ctx.dir)
        .env_remove("MANAGEDBLOB_REMOTE")
        .env_remove("MANAGEDBLOB_LEASE_SECS")
        .env_remove("MB_URI")
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("AZURE_STORAGE_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in row.env {
        cmd.env(k, v);
    }
    for (k, v) in &setup.env {
        cmd.env(k, v);
    }
    if let Some(uri) = &setup.uri {
        cmd.env("MB_URI", uri);
    }
    let mut child = cmd.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        thread::sleep(Duration::from_millis(5));
    };
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    let line = stdout
        .lines()
        .find_map(|l| l.find(MARK).map(|at| l[at + MARK.len()..].to_string()));
    (line, stdout, stderr, status)
}

/// The outcome of one row, or why it failed.
fn check_row(row: &Row, ctx: &Ctx, setup: &Setup) -> Result<String, String> {
    let before = snapshot(&ctx.dir);
    let (line, stdout, stderr, status) = run_child(row, ctx, setup);
    let after = snapshot(&ctx.dir);
    let tail = || {
        let start = stderr.len().saturating_sub(3000);
        let start = (start..stderr.len())
            .find(|i| stderr.is_char_boundary(*i))
            .unwrap_or(stderr.len());
        stderr[start..].to_string()
    };
    if !status.success() {
        return Err(format!(
            "the child did not exit normally: {status:?}\n{}",
            tail()
        ));
    }
    if stderr.contains("panicked") || stderr.contains("panic was caught") {
        return Err(format!("a panic happened:\n{}", tail()));
    }
    let secrets: Vec<&str> = std::iter::once(SECRET)
        .chain(setup.secrets.iter().map(String::as_str))
        .collect();
    for secret in &secrets {
        if stderr.contains(secret) {
            return Err(format!("a secret appears in the log: {secret}"));
        }
        if stdout.contains(secret) {
            return Err(format!("a secret appears in the output: {secret}"));
        }
        for (path, bytes) in &after {
            if String::from_utf8_lossy(bytes).contains(secret) {
                return Err(format!("{} holds a secret: {secret}", path.display()));
            }
        }
    }
    let line = line.ok_or_else(|| format!("no result line\n{}", tail()))?;
    let outcome = match line.strip_prefix("err ") {
        Some(json) => Err(serde_json::from_str::<String>(json).unwrap()),
        None => Ok(()),
    };
    if let Err(e) = &outcome {
        if let Some(secret) = secrets.iter().find(|s| e.contains(*s)) {
            return Err(format!("the error echoes a secret ({secret}): {e}"));
        }
    }
    let shown = match (&outcome, row.expect) {
        (Err(e), Expect::Err(texts)) => {
            if !texts.iter().all(|t| e.contains(t)) {
                return Err(format!("expected all of {texts:?}, got: {e}"));
            }
            e.clone()
        }
        (Err(e), Expect::AnyErr(texts)) => {
            if !texts.iter().any(|t| e.contains(t)) {
                return Err(format!("expected one of {texts:?}, got: {e}"));
            }
            e.clone()
        }
        (Ok(()), Expect::Opens) => "opens (recovers)".to_string(),
        (Ok(()), _) => return Err("the action succeeded".into()),
        (Err(e), _) => return Err(format!("expected success, got: {e}")),
    };
    // Nothing deleted or changed.
    let opens = matches!(row.expect, Expect::Opens);
    for (path, bytes) in &before {
        let in_cache = path.starts_with(ctx.cache_dir());
        // managedblob's own bookkeeping: the sidecar, and the remote's lease and etag
        // files, are replaced as a matter of course when an open or a write succeeds.
        let own = path == &ctx.sidecar()
            || path.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with('.') && (n.ends_with(".mb-lease") || n.ends_with(".mb-etag"))
            });
        match after.get(path) {
            _ if opens && own => {}
            None => return Err(format!("{} was deleted", path.display())),
            Some(now) if now == bytes => {}
            Some(_) if opens && path == &ctx.blob() && row.check.is_some() => {}
            Some(_) if row.cache_may_change && in_cache => {
                let kept = after.iter().any(|(p, b)| p != path && b == bytes);
                if !kept {
                    return Err(format!(
                        "{} was replaced without keeping its old bytes",
                        path.display()
                    ));
                }
            }
            Some(_) => return Err(format!("{} was changed", path.display())),
        }
    }
    // A failed open leaves no (empty) cache file behind where there was none.
    if let Err(e) = &outcome {
        let cache = ctx.cache();
        let created = !before.contains_key(&cache)
            && std::fs::symlink_metadata(&cache).is_ok_and(|m| m.is_file());
        if e.starts_with("open:") && created {
            return Err(format!("the failed open left {} behind", cache.display()));
        }
    }
    if let Some(check) = row.check {
        check(ctx)?;
    }
    if let Some(check) = &setup.remote_unchanged {
        check()?;
    }
    Ok(shown)
}

#[test]
fn hostile_inputs_fail_clearly_and_delete_nothing() {
    managedblob::register().unwrap();
    let table = rows();
    assert!(table.len() >= 25, "at least 25 rows");
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let (mut passed, mut skipped, mut pending) = (0, 0, 0);
    for (i, row) in table.iter().enumerate() {
        if let Expect::Pending(why) = row.expect {
            pending += 1;
            report.push(format!("| {} | {} | pending ({why}) | |", i + 1, row.name));
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let ctx = Ctx {
            dir: dir.path().to_path_buf(),
        };
        let mut setup = (row.setup)(&ctx);
        if let Some(why) = &setup.skip {
            if std::env::var_os("CI").is_some() {
                // A missing capability (root, mount, chattr, Azurite) is a failure
                // in CI, never a silent pass.
                report.push(format!(
                    "| {} | {} | FAILED | cannot run: {why} |",
                    i + 1,
                    row.name
                ));
                failures.push(format!(
                    "row {} '{}': cannot run ({why}); CI is set, so this is a failure, \
                     not a skip",
                    i + 1,
                    row.name
                ));
                continue;
            }
            skipped += 1;
            println!("SKIPPED {}: {why}", row.name);
            report.push(format!("| {} | {} | skipped: {why} | |", i + 1, row.name));
            continue;
        }
        let mechanism = setup.mechanism.clone();
        let result = check_row(row, &ctx, &setup);
        let redact = std::mem::take(&mut setup.redact);
        drop(setup);
        let via = mechanism.map(|m| format!(" (via {m})")).unwrap_or_default();
        match result {
            Ok(shown) => {
                passed += 1;
                let mut shown = shown.replace(&ctx.dir.display().to_string(), "<dir>");
                for (text, stand_in) in &redact {
                    shown = shown.replace(text, stand_in);
                }
                let shown = shown.replace('|', "\\|");
                let shown = match shown.char_indices().nth(240) {
                    Some((at, _)) => format!("{}…", &shown[..at]),
                    None => shown,
                };
                report.push(format!(
                    "| {} | {}{via} | ok | {} |",
                    i + 1,
                    row.name,
                    shown
                ));
            }
            Err(why) => {
                report.push(format!(
                    "| {} | {}{via} | FAILED | {} |",
                    i + 1,
                    row.name,
                    why.lines().next().unwrap_or("")
                ));
                failures.push(format!("row {} '{}'{via}: {why}", i + 1, row.name));
            }
        }
    }
    println!("| # | hostile input | result | error message |");
    println!("|---|---|---|---|");
    for line in &report {
        println!("{line}");
    }
    println!(
        "HOSTILE FIGURES: {} rows: {passed} passed, {} failed, {skipped} skipped, {pending} pending",
        table.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
