//! Reliability: the README's guarantees, checked with real OS processes, SIGKILL,
//! SIGSTOP and injected backend faults. The figures are in docs/RELIABILITY.md.
//!
//! 1. Lost updates: processes on separate caches ("hosts"), and processes sharing one
//!    cache, each add increments to one counter row; the final value is exact.
//! 2. Crash injection: a driver SIGKILLs a writer and a reader at random moments
//!    (inside transactions, during uploads, inside batches, during downloads). After
//!    each kill every commit acknowledged to its client is in the remote, nothing
//!    half-written is trusted, and reopening recovers. `MANAGEDBLOB_SOAK_KILLS` sets
//!    the number of kills (default 20, 10 on Azurite); the soak runs
//!    `MANAGEDBLOB_SOAK_KILLS=200 cargo test --release --test reliability -- --nocapture`.
//!
//! The four-host lost-update test and the crash test run on both backends
//! (`local::<name>` and, with the `azure` feature, `azurite::<name>` on a fresh
//! Azurite container; see `backend_tests!` in tests/common/mod.rs).
//! 3. Fault injection (memory backend): transient errors at a rate and slow
//!    responses; a COMMIT is in the remote if and only if it returned OK, and
//!    retries stay within their bounds in count and time.
//! 4. Fencing: a writer paused with SIGSTOP past its lease cannot overwrite what
//!    another host wrote meanwhile; the lease of a dead owner is reclaimed at once.
//!
//! Children are this test binary re-executed with `--exact child_main` and
//! `MB_CHILD_ROLE` in the environment (as in tests/processes.rs); `child_main` does
//! nothing in a normal run. Children talk to the parent with stdout lines holding
//! `MB:<message>`.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use managedblob::backend::memory::{MemoryBackend, Op};
use managedblob::backend::BackendErrorKind;
use rusqlite::{Connection, ErrorCode};
use serde_json::Value;

const ROLE: &str = "MB_CHILD_ROLE";
const MARK: &str = "MB:";

/// A setting from the environment, or its default.
fn setting<T: FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------
// The child side

/// Entry point of every child process; returns at once in a normal test run.
#[test]
fn child_main() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    parent_alive();
    managedblob::register().expect("register");
    let uri = env("MB_URI");
    match role.as_str() {
        "increment" => child_increment(&uri),
        "crash_writer" => child_crash_writer(&uri),
        "crash_reader" => child_crash_reader(&uri),
        "hold" => child_hold(&uri),
        other => panic!("unknown child role {other}"),
    }
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("child needs {key}"))
}

fn env_num<T: FromStr>(key: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    env(key).parse().unwrap_or_else(|e| panic!("{key}: {e:?}"))
}

/// Whether the parent that spawned this child is still there (an orphan is
/// re-parented), so a child never outlives an interrupted test run for long.
fn parent_alive() -> bool {
    static PARENT: std::sync::OnceLock<libc::pid_t> = std::sync::OnceLock::new();
    // SAFETY: getppid has no preconditions and touches no memory.
    let now = unsafe { libc::getppid() };
    *PARENT.get_or_init(|| now) == now
}

/// Tell the parent something: one stdout line, flushed now.
fn say(msg: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{MARK}{msg}").unwrap();
    out.flush().unwrap();
}

/// Wait until `path` exists (the parent's go signal), failing if the parent left.
fn wait_for_file(path: &str, limit: Duration) {
    let until = Instant::now() + limit;
    while !Path::new(path).exists() {
        assert!(parent_alive(), "the parent test process went away");
        assert!(Instant::now() < until, "no go file {path} after {limit:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn pause_ms(range: std::ops::Range<u64>) {
    thread::sleep(Duration::from_millis(fastrand::u64(range)));
}

/// `increment`: open, say READY, wait for the go file, do `MB_N` increments.
fn child_increment(uri: &str) {
    let n: u32 = env_num("MB_N");
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    say("READY");
    wait_for_file(&env("MB_GO_FILE"), Duration::from_secs(30));
    let busy = run_increments(&c, n, "child");
    let s = status(&c);
    say(&format!("DONE {n} busy={busy} status={s}"));
}

/// Report a failure to the parent and stop.
fn child_fail(c: &Connection, what: &str, e: rusqlite::Error) -> ! {
    say(&format!("ERR {what}: {e}"));
    panic!("{what}: {e}; status {}", status(c));
}

/// Insert row `i` of the `n` rows of transaction `txn`.
fn insert_row(c: &Connection, txn: i64, i: i64, n: i64) {
    let size = fastrand::i64(256..2048);
    if let Err(e) = c.execute(
        "INSERT INTO t(txn, i, n, payload) VALUES (?1, ?2, ?3, randomblob(?4))",
        (txn, i, n, size),
    ) {
        child_fail(c, &format!("insert {txn}/{i}"), e);
    }
}

fn exec(c: &Connection, sql: &str, what: &str) {
    if let Err(e) = c.execute_batch(sql) {
        child_fail(c, what, e);
    }
}

/// `crash_writer`: a random mix of autocommit inserts, multi-row transactions,
/// transactions rolled back on purpose, and batches, until killed. Says
/// `TRY <txn> <rows> <kind>` before a transaction, `ACK <txn>...` once its COMMIT
/// (or the batch end that uploads it) returned OK, `LACK <txn>` when a COMMIT
/// inside a batch returned OK (local only), and `RB <txn>` after a rollback.
fn child_crash_writer(uri: &str) {
    fastrand::seed(env_num("MB_SEED"));
    let mut txn: i64 = env_num("MB_START");
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let rows: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap_or_else(|e| child_fail(&c, "first read", e));
    say(&format!("READY rows={rows}"));
    loop {
        assert!(parent_alive(), "the parent test process went away");
        let pick = fastrand::u32(0..100);
        if pick < 6 {
            // A bulk rewrite of an eighth of the filler: a big version to upload and,
            // with delta sync, many chunks for the reader to fetch.
            exec(
                &c,
                &format!(
                    "UPDATE filler SET b = randomblob(16384) WHERE k % 8 = {}",
                    fastrand::u32(0..8)
                ),
                "bulk update",
            );
        } else if pick < 40 {
            say(&format!("TRY {txn} 1 auto"));
            insert_row(&c, txn, 0, 1);
            say(&format!("ACK {txn}"));
            txn += 1;
        } else if pick < 70 || (80..85).contains(&pick) {
            let rollback = pick >= 80;
            let n = fastrand::i64(2..=6);
            say(&format!(
                "TRY {txn} {n} {}",
                if rollback { "rollback" } else { "txn" }
            ));
            exec(&c, "BEGIN IMMEDIATE", "begin");
            for i in 0..n {
                insert_row(&c, txn, i, n);
                if i == n / 2 {
                    pause_ms(0..15);
                }
            }
            if rollback {
                exec(&c, "ROLLBACK", "rollback");
                say(&format!("RB {txn}"));
            } else {
                exec(&c, "COMMIT", "commit");
                say(&format!("ACK {txn}"));
            }
            txn += 1;
        } else {
            // A batch: its commits stay local (LACK) until the end uploads them.
            if let Err(e) = pragma(&c, "PRAGMA managedblob_batch=begin") {
                child_fail(&c, "batch begin", e);
            }
            let mut done = Vec::new();
            for _ in 0..fastrand::usize(1..=4) {
                let n = fastrand::i64(1..=4);
                say(&format!("TRY {txn} {n} batch"));
                exec(&c, "BEGIN IMMEDIATE", "begin in batch");
                for i in 0..n {
                    insert_row(&c, txn, i, n);
                }
                exec(&c, "COMMIT", "commit in batch");
                say(&format!("LACK {txn}"));
                done.push(txn.to_string());
                txn += 1;
                pause_ms(0..20);
            }
            if let Err(e) = pragma(&c, "PRAGMA managedblob_batch=end") {
                child_fail(&c, "batch end", e);
            }
            say(&format!("ACK {}", done.join(" ")));
        }
        pause_ms(0..10);
    }
}

/// `crash_reader`: read the whole table over and over (with `staleness_ms=0` each
/// read checks the remote and downloads every new version), until killed.
fn child_crash_reader(uri: &str) {
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    say("READY");
    loop {
        assert!(parent_alive(), "the parent test process went away");
        if let Err(e) = c.query_row("SELECT count(*), sum(length(payload)) FROM t", [], |r| {
            r.get::<_, i64>(0)
        }) {
            child_fail(&c, "read", e);
        }
        pause_ms(0..3);
    }
}

/// `hold`: start a write (`MB_MODE=batch`: a batch with one commit; `txn`: an open
/// `BEGIN IMMEDIATE` transaction with one insert), say READY, wait for the go file,
/// then finish it (batch end / COMMIT) and say `END ok` or `END failed: <error>`.
fn child_hold(uri: &str) {
    let mode = env("MB_MODE");
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    match mode.as_str() {
        "batch" => {
            pragma(&c, "PRAGMA managedblob_batch=begin").unwrap();
            c.execute("INSERT INTO t(who) VALUES ('paused')", [])
                .unwrap();
        }
        "txn" => {
            c.execute_batch("BEGIN IMMEDIATE; INSERT INTO t(who) VALUES ('paused');")
                .unwrap();
        }
        other => panic!("unknown mode {other}"),
    }
    let s = status(&c);
    assert_eq!(s["lease_held"], true, "{s}");
    say("READY");
    wait_for_file(&env("MB_GO_FILE"), Duration::from_secs(120));
    let result = match mode.as_str() {
        "batch" => pragma(&c, "PRAGMA managedblob_batch=end").map(|_| ()),
        _ => c.execute_batch("COMMIT"),
    };
    if result.is_err() && !c.is_autocommit() {
        c.execute_batch("ROLLBACK").unwrap();
    }
    let outcome = match result {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("failed: {e}"),
    };
    let s = status(&c);
    say(&format!("END {outcome} status={s}"));
}

// ---------------------------------------------------------------------------
// Increments shared by the children and the checks

fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
}

/// One `UPDATE c SET v=v+1` in `BEGIN IMMEDIATE ... COMMIT`; rolled back on failure.
fn increment_once(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("BEGIN IMMEDIATE")?;
    let result = c
        .execute("UPDATE c SET v = v + 1 WHERE id = 1", [])
        .and_then(|n| {
            assert_eq!(n, 1, "the counter row is missing");
            c.execute_batch("COMMIT")
        });
    if result.is_err() && !c.is_autocommit() {
        c.execute_batch("ROLLBACK")?;
    }
    result
}

/// `n` increments, retrying a whole transaction on SQLITE_BUSY; returns how many
/// BUSY results were retried. Any other error fails.
fn run_increments(c: &Connection, n: u32, who: &str) -> u32 {
    let mut busy = 0;
    for i in 0..n {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match increment_once(c) {
                Ok(()) => {
                    thread::sleep(Duration::from_micros(fastrand::u64(0..10_000)));
                    break;
                }
                Err(e) if is_busy(&e) => {
                    busy += 1;
                    assert!(
                        Instant::now() < deadline,
                        "{who}: increment {i} stayed busy for 30 s: {e}; status {}",
                        status(c)
                    );
                    thread::sleep(Duration::from_millis(fastrand::u64(1..10)));
                }
                Err(e) => panic!("{who}: increment {i} failed: {e}; status {}", status(c)),
            }
        }
    }
    busy
}

// ---------------------------------------------------------------------------
// The parent side

/// A child process running one role, with its marker lines on a channel.
struct Proc {
    name: String,
    child: Child,
    marks: Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
}

impl Proc {
    fn spawn(name: &str, role: &str, uri: &str, vars: &[(&str, String)]) -> Proc {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env("MB_URI", uri)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let (tx, marks) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let all = stdout.clone();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(MARK) {
                    let _ = tx.send(line[at + MARK.len()..].to_string());
                }
                let mut all = all.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut err = child.stderr.take().unwrap();
        let all = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                all.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proc {
            name: name.to_string(),
            child,
            marks,
            stdout,
            stderr,
            status: None,
        }
    }

    fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).unwrap()
    }

    /// What the child printed so far, for failure messages (the tail of long logs).
    fn output(&self) -> String {
        thread::sleep(Duration::from_millis(50));
        let tail = |s: &str| {
            let start = s.len().saturating_sub(6000);
            let start = (start..s.len())
                .find(|i| s.is_char_boundary(*i))
                .unwrap_or(s.len());
            s[start..].to_string()
        };
        format!(
            "--- {} (pid {}) status {:?}\n--- stdout (tail):\n{}\n--- stderr (tail):\n{}",
            self.name,
            self.child.id(),
            self.status,
            tail(&self.stdout.lock().unwrap()),
            tail(&self.stderr.lock().unwrap())
        )
    }

    fn next(&mut self, timeout: Duration) -> Option<String> {
        match self.marks.recv_timeout(timeout) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.status = self.child.wait().ok();
                None
            }
        }
    }

    /// Wait for the marker message that starts with `prefix` (others are skipped).
    fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(m) if m.starts_with(prefix) => return m,
                Some(m) if m.starts_with("ERR") => {
                    panic!("{} reported {m}\n{}", self.name, self.output())
                }
                Some(_) => {}
                None => panic!(
                    "{} did not say {prefix} within {timeout:?}\n{}",
                    self.name,
                    self.output()
                ),
            }
        }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) touches no memory; the pid is our child, not yet reaped,
        // so it cannot have been reused by another process.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(
            rc,
            0,
            "signal {sig} to {}: {}",
            self.name,
            std::io::Error::last_os_error()
        );
    }

    /// SIGKILL the child and reap it.
    fn sigkill(&mut self) {
        self.signal(libc::SIGKILL);
        let status = self.child.wait().expect("wait");
        self.status = Some(status);
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{} was not killed by SIGKILL: {status:?}\n{}",
            self.name,
            self.output()
        );
    }

    /// Wait for the child to exit, and require success.
    fn wait_success(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} still running after {timeout:?}; killed\n{}",
                    self.name,
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        self.status = Some(status);
        assert!(status.success(), "{} failed\n{}", self.name, self.output());
    }

    /// Every marker message still queued (the child must have ended).
    fn drain(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(m) = self.marks.recv_timeout(Duration::from_secs(5)) {
            out.push(m);
        }
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            if let Ok(None) = self.child.try_wait() {
                // A stopped child must be continued to die of SIGKILL promptly.
                let _ = self.child.kill();
                // SAFETY: as in signal(); the child is not reaped yet.
                unsafe { libc::kill(self.pid(), libc::SIGCONT) };
            }
            let _ = self.child.wait();
        }
    }
}

fn integrity(c: &Connection) -> String {
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn sidecar_of(cache: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(managedblob::sidecar::path_for(cache)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Create the counter table through the VFS (so the blob exists) and close.
fn create_counter(uri: &str) {
    let c = open(uri);
    c.execute_batch(
        "CREATE TABLE c(id INTEGER PRIMARY KEY, v INTEGER NOT NULL); INSERT INTO c VALUES (1, 0);",
    )
    .unwrap();
}

fn remote_counter(blob: &Path) -> i64 {
    read_remote(blob, |r| {
        assert_eq!(integrity(r), "ok", "remote integrity");
        r.query_row("SELECT v FROM c WHERE id = 1", [], |r| r.get(0))
            .unwrap()
    })
}

/// Spawn one `increment` child per uri, start them together, require each to finish
/// its `n` increments; returns (busy retries, final status) per child.
fn run_increment_children(w: &World, uris: &[String], n: u32) -> Vec<(u64, Value)> {
    let go = w.dir.path().join("go");
    let mut procs: Vec<Proc> = uris
        .iter()
        .enumerate()
        .map(|(i, uri)| {
            Proc::spawn(
                &format!("incrementer-{i}"),
                "increment",
                uri,
                &[
                    ("MB_N", n.to_string()),
                    ("MB_GO_FILE", go.display().to_string()),
                ],
            )
        })
        .collect();
    for p in &mut procs {
        p.expect("READY", Duration::from_secs(30));
    }
    std::fs::write(&go, b"go").unwrap();
    let mut results = Vec::new();
    for p in &mut procs {
        let done = p.expect("DONE", Duration::from_secs(120));
        assert!(done.starts_with(&format!("DONE {n} ")), "{done}");
        let busy: u64 = done
            .split_whitespace()
            .find_map(|w| w.strip_prefix("busy="))
            .and_then(|b| b.parse().ok())
            .expect("DONE carries busy=");
        let (_, json) = done.split_once("status=").expect("DONE carries the status");
        results.push((busy, serde_json::from_str(json).expect("status JSON")));
        p.wait_success(Duration::from_secs(10));
    }
    results
}

/// Check the final counter in the remote and in every cache after reopening.
fn check_counter(w: &World, uris: &[String], expected: i64) {
    assert_eq!(remote_counter(&w.remote_copy("a.db")), expected, "remote");
    for uri in uris {
        let c = open(uri);
        let v: i64 = c
            .query_row("SELECT v FROM c WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, expected, "cache of {uri} after reopening");
        assert_eq!(integrity(&c), "ok", "cache of {uri}");
        let s = status(&c);
        assert_eq!(s["dirty"], false, "{s}");
    }
}

fn summarize(label: &str, results: &[(u64, Value)], started: Instant) {
    let sum = |k: &str| -> u64 {
        results
            .iter()
            .map(|(_, s)| s["requests"][k].as_u64().unwrap())
            .sum()
    };
    let busy: u64 = results.iter().map(|(b, _)| b).sum();
    println!(
        "FIGURES {label}: {} processes, {:.1} s, busy retries {busy}, versions uploaded {}, \
         versions downloaded {}, lease acquisitions {}",
        results.len(),
        started.elapsed().as_secs_f64(),
        sum("versions_up"),
        sum("versions_down"),
        sum("lease_acquire")
    );
}

// ---------------------------------------------------------------------------
// 1. Lost updates

/// Four processes, each on its own cache ("host"), on one remote: the lease and the
/// If-Match fence serialise them, and no increment is lost. On both backends
/// (`local::` and `azurite::`); `MANAGEDBLOB_SOAK_INCREMENTS` increments per process
/// (default 20 on the local backend, 15 on Azurite).
fn lost_updates_four_hosts(w: &World) {
    let m: u32 = setting(
        "MANAGEDBLOB_SOAK_INCREMENTS",
        if w.is_local() { 20 } else { 15 },
    );
    let started = Instant::now();
    create_counter(&w.uri("h0", "a.db", ""));
    let uris: Vec<String> = (1..=4)
        .map(|h| w.uri(&format!("h{h}"), "a.db", ""))
        .collect();
    let results = run_increment_children(w, &uris, m);
    for (_, s) in &results {
        assert!(
            s["requests"]["versions_up"].as_u64().unwrap() >= u64::from(m),
            "{s}"
        );
    }
    // Every host but the one that wrote last must have refreshed at least once after
    // another host's commit, or the processes did not interleave.
    let refreshed = results
        .iter()
        .filter(|(_, s)| s["requests"]["versions_down"].as_u64().unwrap() >= 2)
        .count();
    assert!(refreshed >= 3, "the hosts did not interleave: {results:?}");
    check_counter(w, &uris, i64::from(4 * m));
    summarize(
        &format!("lost_updates_four_hosts ({})", w.backend_name()),
        &results,
        started,
    );
}

backend_tests!(
    lost_updates_four_hosts,
    crash_injection_sigkill_writers_and_readers
);

/// Two processes sharing one cache file: SQLite's POSIX locks on the cache and the
/// remote lease serialise them.
#[test]
fn lost_updates_two_processes_one_cache() {
    let m: u32 = setting("MANAGEDBLOB_SOAK_INCREMENTS", 20) * 2;
    let w = World::new();
    let started = Instant::now();
    let uri = w.uri("h1", "a.db", "");
    create_counter(&uri);
    let uris = vec![uri.clone(), uri.clone()];
    let results = run_increment_children(&w, &uris, m);
    for (_, s) in &results {
        assert_eq!(
            s["requests"]["versions_down"], 0,
            "one cache downloads nothing: {s}"
        );
    }
    check_counter(&w, &uris, i64::from(2 * m));
    summarize("lost_updates_two_processes_one_cache", &results, started);
}

/// Both at once: two processes share cache h1, two more have a cache each.
#[test]
fn lost_updates_shared_cache_and_separate_hosts() {
    let m: u32 = setting("MANAGEDBLOB_SOAK_INCREMENTS", 20);
    let w = World::new();
    let started = Instant::now();
    create_counter(&w.uri("h1", "a.db", ""));
    let uris = vec![
        w.uri("h1", "a.db", ""),
        w.uri("h1", "a.db", ""),
        w.uri("h2", "a.db", ""),
        w.uri("h3", "a.db", ""),
    ];
    let results = run_increment_children(&w, &uris, m);
    check_counter(&w, &uris, i64::from(4 * m));
    summarize(
        "lost_updates_shared_cache_and_separate_hosts",
        &results,
        started,
    );
}

// ---------------------------------------------------------------------------
// 2. Crash injection

/// What a transaction id stands for in the remote: its row count and its kind.
#[derive(Clone, Debug)]
struct Tried {
    rows: i64,
    kind: String,
}

#[derive(Default)]
struct Soak {
    tried: BTreeMap<i64, Tried>,
    /// COMMIT (or batch end) returned OK: uploaded.
    acked: BTreeSet<i64>,
    /// COMMIT inside a batch returned OK: in the cache only, uploaded at the next open.
    lacked: BTreeSet<i64>,
    rolled_back: BTreeSet<i64>,
    kills: usize,
    rounds: usize,
    /// Counts by (sync mode, what happened).
    writer_kills: BTreeMap<(&'static str, &'static str), usize>,
    reader_kills: BTreeMap<(&'static str, &'static str), usize>,
    recoveries: BTreeMap<(&'static str, &'static str), usize>,
    max_reopen: Duration,
}

impl Soak {
    fn next_txn(&self) -> i64 {
        self.tried.keys().next_back().map_or(1, |t| t + 1)
    }

    fn absorb(&mut self, p: &Proc, messages: &[String]) {
        for m in messages {
            let mut words = m.split_whitespace();
            match words.next() {
                Some("TRY") => {
                    let txn: i64 = words.next().unwrap().parse().unwrap();
                    let rows: i64 = words.next().unwrap().parse().unwrap();
                    let kind = words.next().unwrap().to_string();
                    self.tried.insert(txn, Tried { rows, kind });
                }
                Some("ACK") => {
                    for t in words {
                        self.acked.insert(t.parse().unwrap());
                    }
                }
                Some("LACK") => {
                    self.lacked.insert(words.next().unwrap().parse().unwrap());
                }
                Some("RB") => {
                    self.rolled_back
                        .insert(words.next().unwrap().parse().unwrap());
                }
                Some("READY") => {}
                _ => panic!("{} said {m:?}\n{}", p.name, p.output()),
            }
        }
    }
}

/// txn -> (rows present, smallest n, largest n) in table t.
type Groups = BTreeMap<i64, (i64, i64, i64)>;

fn txn_groups(c: &Connection) -> Groups {
    let mut stmt = c
        .prepare("SELECT txn, count(*), min(n), max(n) FROM t GROUP BY txn")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

/// Check the remote as plain SQLite: intact, only whole transactions that were
/// tried and not rolled back, and every acknowledged commit. Returns its groups.
fn check_remote(soak: &Soak, blob: &Path, must_have: &BTreeSet<i64>, when: &str) -> Groups {
    let (ok, groups) = read_remote(blob, |r| (integrity(r), txn_groups(r)));
    assert_eq!(ok, "ok", "{when}: remote integrity");
    for (txn, (count, min_n, max_n)) in &groups {
        let tried = soak
            .tried
            .get(txn)
            .unwrap_or_else(|| panic!("{when}: remote holds txn {txn}, never tried"));
        assert!(
            *count == tried.rows && *min_n == tried.rows && *max_n == tried.rows,
            "{when}: txn {txn} is half there: {count} of {} rows",
            tried.rows
        );
        assert_ne!(
            tried.kind, "rollback",
            "{when}: txn {txn} was rolled back but is in the remote"
        );
    }
    let missing: Vec<_> = must_have
        .iter()
        .filter(|t| !groups.contains_key(t))
        .collect();
    assert!(
        missing.is_empty(),
        "{when}: acknowledged commits missing from the remote: {missing:?}"
    );
    groups
}

fn files_with(dir: &Path, needle: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(needle))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn journal_is_hot(cache: &Path) -> bool {
    let mut journal = cache.as_os_str().to_owned();
    journal.push("-journal");
    match std::fs::read(PathBuf::from(journal)) {
        Ok(bytes) => bytes.len() >= 8 && bytes[..8].iter().any(|b| *b != 0),
        Err(_) => false,
    }
}

/// An upload's files in the remote: temp files (a whole upload, a block being staged,
/// a block commit being built) and staged blocks.
fn transfer_files(remote: &Path) -> BTreeSet<PathBuf> {
    let mut files: BTreeSet<PathBuf> = files_with(remote, ".mb-tmp-").into_iter().collect();
    for dir in files_with(remote, ".mb-staged") {
        files.extend(
            std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path()),
        );
    }
    files
}

/// Where a writer was when it died, from what it left on disk.
fn classify_writer_kill(
    cache: &Path,
    tmp_now: &BTreeSet<PathBuf>,
    tmp_before: &BTreeSet<PathBuf>,
) -> &'static str {
    let side = sidecar_of(cache);
    let in_flight = side
        .as_ref()
        .and_then(|s| s["in_flight"].as_str().map(str::to_string))
        .unwrap_or_default();
    let dirty = side.as_ref().is_some_and(|s| s["dirty"] == true);
    let hot = journal_is_hot(cache);
    if tmp_now.difference(tmp_before).next().is_some() {
        if hot {
            "during the upload of a COMMIT"
        } else {
            "during the upload at a batch end"
        }
    } else if in_flight == "commit" {
        "after the upload, before the local commit completed"
    } else if hot && dirty {
        "inside a transaction inside a batch"
    } else if hot {
        "inside a transaction (hot journal)"
    } else if dirty {
        "inside a batch, between local commit and upload"
    } else {
        "between transactions"
    }
}

/// Where a reader was when it died.
fn classify_reader_kill(cache: &Path, pid: libc::pid_t) -> &'static str {
    let side = sidecar_of(cache);
    let in_flight = side
        .as_ref()
        .and_then(|s| s["in_flight"].as_str().map(str::to_string))
        .unwrap_or_default();
    let download = files_with(
        cache.parent().unwrap(),
        &format!("-managedblob.download-{pid}-"),
    );
    if in_flight == "download" {
        "while writing a downloaded version into the cache"
    } else if !download.is_empty() {
        "during a download"
    } else {
        "reading or idle"
    }
}

/// A database of `mib` MiB (so uploads and downloads take measurable time) with the
/// transaction table the writer fills.
fn create_soak_db(uri: &str, mib: u32) {
    let c = open(uri);
    c.execute_batch(&format!(
        "CREATE TABLE filler(k INTEGER PRIMARY KEY, b BLOB);
         CREATE TABLE t(txn INTEGER NOT NULL, i INTEGER NOT NULL, n INTEGER NOT NULL,
                        payload BLOB, PRIMARY KEY (txn, i));
         BEGIN;
         WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < {})
         INSERT INTO filler SELECT k, randomblob(16384) FROM s;
         COMMIT;",
        mib * 64
    ))
    .unwrap();
}

/// Reopen the writer's cache: it must recover by itself (a hot journal is rolled back
/// at the first read, local batch commits are uploaded at the next check), end clean
/// and equal to the remote. Returns the kind of recovery and how long it took.
fn reopen_writer(uri: &str, cache: &Path, when: &str) -> (&'static str, Duration, Groups) {
    let started = Instant::now();
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    for _ in 0..2 {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .unwrap_or_else(|e| panic!("{when}: reading the reopened writer cache: {e}"));
    }
    let s = status(&c);
    let took = started.elapsed();
    assert_eq!(s["dirty"], false, "{when}: writer cache still dirty: {s}");
    assert_eq!(s["in_flight"], "none", "{when}: {s}");
    assert_eq!(s["lease_held"], false, "{when}: {s}");
    assert!(
        s["conflicts"].as_array().unwrap().is_empty(),
        "{when}: a single writer must never produce a conflict copy: {s}"
    );
    assert_eq!(integrity(&c), "ok", "{when}: writer cache integrity");
    let groups = txn_groups(&c);
    let kind = match (
        s["requests"]["versions_up"].as_u64().unwrap(),
        s["requests"]["versions_down"].as_u64().unwrap(),
    ) {
        (0, 0) => "clean: nothing to do",
        (_, 0) => "uploaded local commits left by the dead writer",
        (0, _) => "resynced the cache from the remote",
        _ => "uploaded and resynced",
    };
    drop(c);
    assert!(
        files_with(cache.parent().unwrap(), ".conflict-").is_empty(),
        "{when}: conflict copy in the writer's cache directory"
    );
    (kind, took, groups)
}

fn reopen_reader(uri: &str, cache: &Path, when: &str) -> Groups {
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
        .unwrap_or_else(|e| panic!("{when}: reading the reopened reader cache: {e}"));
    let s = status(&c);
    assert_eq!(s["dirty"], false, "{when}: reader cache: {s}");
    assert_eq!(s["in_flight"], "none", "{when}: reader cache: {s}");
    assert_eq!(integrity(&c), "ok", "{when}: reader cache integrity");
    let groups = txn_groups(&c);
    drop(c);
    let leftovers = files_with(cache.parent().unwrap(), "-managedblob.download-");
    assert!(
        leftovers.is_empty(),
        "{when}: download side files of dead readers were not removed: {leftovers:?}"
    );
    groups
}

/// SIGKILL a writer and a reader at random moments, over and over, and check after
/// each kill that nothing acknowledged was lost and every cache recovers. On both
/// backends (`local::` and `azurite::`). `MANAGEDBLOB_SOAK_KILLS` kills (default 20
/// on the local backend, 10 on Azurite).
///
/// On Azurite a killed writer's lease cannot be reclaimed by its pid as the local
/// backend does: it stays held until it expires (`lease_secs=30` here; Azure leases
/// last 15 to 60 s). So that a round does not wait that out, the test breaks the
/// blob's lease through the backend (`Backend::break_lease`, an operator's tool)
/// after each writer kill: this stands in for the lease's expiry. Uncommitted staged
/// blocks are not visible in the remote there either, so a writer killed during an
/// upload is counted under the hot-journal or batch class it was in.
fn crash_injection_sigkill_writers_and_readers(w: &World) {
    let target: usize = setting("MANAGEDBLOB_SOAK_KILLS", if w.is_local() { 20 } else { 10 });
    let mib: u32 = setting("MANAGEDBLOB_SOAK_DB_MIB", 4);
    let seed: u64 = setting("MANAGEDBLOB_SOAK_SEED", fastrand::u64(..));
    println!(
        "crash soak ({}): {target} kills, {mib} MiB database, sync=delta and sync=full \
         rounds alternating, MANAGEDBLOB_SOAK_SEED={seed}",
        w.backend_name()
    );
    fastrand::seed(seed);
    let started = Instant::now();
    // The remote directory, on the local backend (where upload temp files show).
    let remote_dir = w.is_local().then(|| w.remote());
    let transfers = || {
        remote_dir
            .as_deref()
            .map(transfer_files)
            .unwrap_or_default()
    };
    let mut lease_breaks = 0usize;
    // check_remote on a fresh copy of the remote blob (removed after, on Azurite).
    let check_remote_now = |soak: &Soak, must_have: &BTreeSet<i64>, when: &str| {
        let copy = w.remote_copy("a.db");
        let groups = check_remote(soak, &copy, must_have, when);
        if !w.is_local() {
            let _ = std::fs::remove_file(&copy);
        }
        groups
    };
    // Rounds alternate between delta sync (the default: blocks staged and committed,
    // ranges read) and whole-file transfers, on the same caches and remote.
    let uris = |mode: &str| {
        (
            w.uri("w", "a.db", &format!("&lease_secs=30&sync={mode}")),
            w.uri("r", "a.db", &format!("&staleness_ms=0&sync={mode}")),
        )
    };
    let writer_cache = w.cache("w", "a.db");
    let reader_cache = w.cache("r", "a.db");
    create_soak_db(&uris("delta").0, mib);
    drop(open(&uris("delta").1));

    let mut soak = Soak::default();
    while soak.kills < target {
        let round = soak.rounds;
        soak.rounds += 1;
        let mode = if round % 2 == 0 { "delta" } else { "full" };
        let (writer_uri, reader_uri) = uris(mode);
        let tmp_before = transfers();
        let mut writer = Proc::spawn(
            &format!("writer-{round}"),
            "crash_writer",
            &writer_uri,
            &[
                ("MB_START", soak.next_txn().to_string()),
                ("MB_SEED", fastrand::u64(..).to_string()),
            ],
        );
        let mut reader = Proc::spawn(&format!("reader-{round}"), "crash_reader", &reader_uri, &[]);
        writer.expect("READY", Duration::from_secs(60));
        reader.expect("READY", Duration::from_secs(60));

        // Two kills at random moments, in random order.
        let reader_first = fastrand::u32(0..20) < 17;
        thread::sleep(Duration::from_millis(fastrand::u64(20..700)));
        let mut kill_writer = |soak: &mut Soak| {
            writer.sigkill();
            let class = classify_writer_kill(&writer_cache, &transfers(), &tmp_before);
            if !w.is_local() {
                // Stands in for the expiry of the dead writer's lease (see above).
                w.with_backend(|b| b.break_lease("a.db"))
                    .unwrap_or_else(|e| panic!("breaking the dead writer's lease: {e}"));
                lease_breaks += 1;
            }
            *soak.writer_kills.entry((mode, class)).or_default() += 1;
            soak.kills += 1;
            class
        };
        let mut classes = Vec::new();
        if reader_first {
            let pid = reader.pid();
            reader.sigkill();
            let class = classify_reader_kill(&reader_cache, pid);
            *soak.reader_kills.entry((mode, class)).or_default() += 1;
            soak.kills += 1;
            classes.push(format!("reader: {class}"));
            thread::sleep(Duration::from_millis(fastrand::u64(0..300)));
            classes.push(format!("writer: {}", kill_writer(&mut soak)));
        } else {
            classes.push(format!("writer: {}", kill_writer(&mut soak)));
            thread::sleep(Duration::from_millis(fastrand::u64(0..300)));
            let pid = reader.pid();
            reader.sigkill();
            let class = classify_reader_kill(&reader_cache, pid);
            *soak.reader_kills.entry((mode, class)).or_default() += 1;
            soak.kills += 1;
            classes.push(format!("reader: {class}"));
        }
        let messages = writer.drain();
        soak.absorb(&writer, &messages);
        for m in reader.drain() {
            assert!(
                m == "READY",
                "{} said {m:?}\n{}",
                reader.name,
                reader.output()
            );
        }
        let when = format!("round {round}, sync={mode} ({})", classes.join("; "));

        // Outside a batch, COMMIT returns only after the upload: every acknowledged
        // commit is in the remote before anything reopens the cache.
        check_remote_now(
            &soak,
            &soak.acked,
            &format!("{when}, right after the kills"),
        );

        // Reopening recovers: batch commits acknowledged locally reach the remote.
        let (kind, took, writer_groups) = reopen_writer(&writer_uri, &writer_cache, &when);
        *soak.recoveries.entry((mode, kind)).or_default() += 1;
        soak.max_reopen = soak.max_reopen.max(took);
        assert!(
            took < Duration::from_secs(10),
            "{when}: reopening took {took:?}: a dead writer's lease must be reclaimed, not \
             waited out (lease 30 s)"
        );
        let everything: BTreeSet<i64> = soak.acked.union(&soak.lacked).copied().collect();
        let remote_groups =
            check_remote_now(&soak, &everything, &format!("{when}, after reopening"));
        assert_eq!(
            writer_groups, remote_groups,
            "{when}: writer cache != remote"
        );
        let reader_groups = reopen_reader(&reader_uri, &reader_cache, &when);
        assert_eq!(
            reader_groups, remote_groups,
            "{when}: reader cache != remote"
        );
        if round % 10 == 0 || soak.kills >= target {
            println!(
                "round {round}: kills {} ({}), acknowledged {} + {} in batches, remote holds {} \
                 transactions, {:.1} s",
                soak.kills,
                classes.join("; "),
                soak.acked.len(),
                soak.lacked.len(),
                remote_groups.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }

    let elapsed = started.elapsed();
    let final_groups = w.read_remote("a.db", txn_groups);
    let verified = soak
        .acked
        .union(&soak.lacked)
        .filter(|t| final_groups.contains_key(t))
        .count();
    let leftover_tmp = transfers();
    let leftover_bytes: u64 = leftover_tmp
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    let sidecar_tmp = files_with(writer_cache.parent().unwrap(), "-managedblob.json.tmp-").len()
        + files_with(reader_cache.parent().unwrap(), "-managedblob.json.tmp-").len();
    println!("CRASH SOAK FIGURES ({}, seed {seed})", w.backend_name());
    println!(
        "  kills: {} in {} rounds, {:.1} s",
        soak.kills,
        soak.rounds,
        elapsed.as_secs_f64()
    );
    for (who, table) in [
        ("writer killed", &soak.writer_kills),
        ("reader killed", &soak.reader_kills),
        ("writer reopen", &soak.recoveries),
    ] {
        let classes: BTreeSet<&str> = table.keys().map(|(_, c)| *c).collect();
        for class in classes {
            let n = |mode| table.get(&(mode, class)).copied().unwrap_or(0);
            println!(
                "  {who} {class}: {} (delta {}, full {})",
                n("delta") + n("full"),
                n("delta"),
                n("full")
            );
        }
    }
    println!(
        "  transactions tried {}, acknowledged {} (+{} locally in batches, uploaded at reopen), \
         rolled back {}; {} acknowledged commits verified in the final remote (and each one \
         in the remote right after the kill of its writer, before any reopen)",
        soak.tried.len(),
        soak.acked.len(),
        soak.lacked.difference(&soak.acked).count(),
        soak.rolled_back.len(),
        verified
    );
    println!("  slowest reopen with recovery: {:?}", soak.max_reopen);
    if !w.is_local() {
        println!("  leases broken after a writer kill (standing in for expiry): {lease_breaks}");
    }
    if w.is_local() {
        println!(
            "  left behind: {} upload temp files and staged blocks in the remote ({} bytes), \
             {} sidecar temp files",
            leftover_tmp.len(),
            leftover_bytes,
            sidecar_tmp
        );
    } else {
        println!(
            "  left behind: {sidecar_tmp} sidecar temp files (uncommitted blocks in the \
             remote are not visible here)"
        );
    }
    assert_eq!(verified, soak.acked.union(&soak.lacked).count());
    assert!(
        !soak.acked.is_empty(),
        "the writers never committed anything"
    );
}

// ---------------------------------------------------------------------------
// 3. Fault injection (memory backend)

struct MemWorld {
    dir: tempfile::TempDir,
    name: String,
    backend: Arc<MemoryBackend>,
}

impl MemWorld {
    fn new(tag: &str) -> MemWorld {
        init_logging();
        managedblob::register().unwrap();
        let name = format!(
            "reliability-{tag}-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        );
        MemWorld {
            dir: tempfile::tempdir().unwrap(),
            backend: MemoryBackend::named(&name),
            name,
        }
    }

    fn uri(&self, host: &str, extra: &str) -> String {
        let dir = self.dir.path().join(host);
        std::fs::create_dir_all(&dir).unwrap();
        format!(
            "file:{}?vfs=managedblob&remote=memory:{}{extra}",
            dir.join("m.db").display(),
            self.name
        )
    }

    fn open(&self, host: &str, extra: &str) -> Connection {
        open(&self.uri(host, extra))
    }

    /// The remote content opened as a database (a private copy).
    fn remote<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        let path = self
            .dir
            .path()
            .join(format!("remote-copy-{:x}.db", fastrand::u64(..)));
        std::fs::write(&path, self.backend.get("m.db").unwrap_or_default()).unwrap();
        let c = Connection::open(&path).unwrap();
        let out = f(&c);
        drop(c);
        let _ = std::fs::remove_file(&path);
        out
    }
}

/// Every request kind a faulty remote can fail (breaking a lease is an operator's
/// tool the VFS never calls).
const ALL_OPS: [Op; 10] = [
    Op::Stat,
    Op::Download,
    Op::Upload,
    Op::AcquireLease,
    Op::RenewLease,
    Op::ReleaseLease,
    Op::BlockList,
    Op::StageBlock,
    Op::CommitBlocks,
    Op::ReadRange,
];

/// Both transfer modes: whole-file uploads and downloads, and delta sync by blocks
/// (the memory backend has blocks, as Azure does; the local backend has not).
const SYNC_MODES: [&str; 2] = ["full", "delta"];

/// 256 KiB of filler, so a small commit changes a few chunks out of several and
/// delta sync stages and reads ranges rather than whole files.
const MEM_SCHEMA: &str = "CREATE TABLE filler(b BLOB);
     WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < 32)
     INSERT INTO filler SELECT randomblob(8192) FROM s;";

/// Transient errors on every kind of request and slow responses, three hosts
/// writing at once: each COMMIT that returned OK is in the remote, each that failed
/// is not (not even in part), and every cache converges on the remote. In both sync
/// modes.
#[test]
fn fault_injection_a_commit_is_in_the_remote_iff_it_returned_ok() {
    for mode in SYNC_MODES {
        fault_injection_run(mode);
    }
}

fn fault_injection_run(mode: &str) {
    const HOSTS: usize = 3;
    let ops_per_host: usize = setting("MANAGEDBLOB_SOAK_FAULT_OPS", 50);
    let rate: f64 = setting("MANAGEDBLOB_SOAK_FAULT_RATE", 0.3);
    let m = Arc::new(MemWorld::new(&format!("rate-{mode}")));
    // A release that fails (after its retries) parks the lease until it lapses, and
    // other hosts wait for that: the shortest lease keeps such stalls short.
    let extra =
        format!("&retry_attempts=3&retry_base_ms=1&staleness_ms=0&lease_secs=15&sync={mode}");
    {
        let c = m.open("h0", &extra);
        c.execute_batch(MEM_SCHEMA).unwrap();
        c.execute_batch(
            "CREATE TABLE t(txn INTEGER NOT NULL, i INTEGER NOT NULL, n INTEGER NOT NULL, \
             PRIMARY KEY (txn, i))",
        )
        .unwrap();
    }
    let calls_before: Vec<usize> = ALL_OPS.iter().map(|o| m.backend.calls(*o)).collect();
    for op in ALL_OPS {
        m.backend.set_fail_rate(op, rate);
    }
    // Slow responses: the latency jumps between 0 and 20 ms while the hosts work.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let jitter = {
        let (backend, stop) = (m.backend.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let ms = [0, 0, 1, 5, 20][fastrand::usize(0..5)];
                backend.set_latency(Duration::from_millis(ms));
                thread::sleep(Duration::from_millis(30));
            }
            backend.set_latency(Duration::ZERO);
        })
    };
    let started = Instant::now();
    // The hosts close together: a host that closes while others still write would
    // leave them waiting for its lease to lapse whenever its release fails.
    let done = Arc::new(std::sync::Barrier::new(HOSTS));
    let workers: Vec<_> = (1..=HOSTS)
        .map(|h| {
            let m = m.clone();
            let extra = extra.clone();
            let done = done.clone();
            thread::spawn(move || {
                // A cold cache cannot open while the remote fails: try again.
                let uri = m.uri(&format!("h{h}"), &extra);
                let c = (0..100)
                    .find_map(|_| Connection::open_with_flags(&uri, flags()).ok())
                    .expect("opening under faults kept failing");
                c.busy_timeout(Duration::from_secs(2)).unwrap();
                let mut acked = BTreeSet::new();
                let mut failed: BTreeMap<String, usize> = BTreeMap::new();
                let mut slowest = Duration::ZERO;
                for k in 0..ops_per_host {
                    let txn = (h * 100_000 + k) as i64;
                    let n = if fastrand::bool() {
                        1
                    } else {
                        fastrand::i64(2..=4)
                    };
                    let t0 = Instant::now();
                    let result = (|| -> rusqlite::Result<()> {
                        if n == 1 {
                            c.execute("INSERT INTO t VALUES (?1, 0, 1)", [txn])?;
                            return Ok(());
                        }
                        c.execute_batch("BEGIN IMMEDIATE")?;
                        for i in 0..n {
                            c.execute("INSERT INTO t VALUES (?1, ?2, ?3)", [txn, i, n])?;
                        }
                        c.execute_batch("COMMIT")
                    })();
                    slowest = slowest.max(t0.elapsed());
                    if !c.is_autocommit() {
                        c.execute_batch("ROLLBACK").unwrap();
                    }
                    match result {
                        Ok(()) => {
                            acked.insert(txn);
                        }
                        Err(e) => {
                            let key = match e.sqlite_error_code() {
                                Some(code) => format!("{code:?}"),
                                None => e.to_string(),
                            };
                            *failed.entry(key).or_default() += 1;
                        }
                    }
                }
                done.wait();
                let s = status(&c);
                (acked, failed, slowest, s)
            })
        })
        .collect();
    let mut acked = BTreeSet::new();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    let mut retries = 0;
    for t in workers {
        let (a, f, s, st) = t.join().expect("worker panicked");
        acked.extend(a);
        for (k, v) in f {
            *failed.entry(k).or_default() += v;
        }
        slowest = slowest.max(s);
        retries += st["requests"]["retries"].as_u64().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    jitter.join().unwrap();
    for op in ALL_OPS {
        m.backend.set_fail_rate(op, 0.0);
    }
    let elapsed = started.elapsed();
    let calls: Vec<String> = ALL_OPS
        .iter()
        .zip(&calls_before)
        .map(|(o, before)| (o, m.backend.calls(*o) - before))
        .filter(|(_, n)| *n > 0)
        .map(|(o, n)| format!("{o:?} {n}"))
        .collect();

    let (ok, groups) = m.remote(|r| (integrity(r), txn_groups(r)));
    assert_eq!(ok, "ok", "{mode}: remote integrity");
    for (txn, (count, min_n, max_n)) in &groups {
        assert!(
            count == min_n && min_n == max_n,
            "{mode}: txn {txn} is half in the remote: {count} rows of {max_n}"
        );
    }
    let in_remote: BTreeSet<i64> = groups.keys().copied().collect();
    let lost: Vec<_> = acked.difference(&in_remote).collect();
    let phantom: Vec<_> = in_remote.difference(&acked).collect();
    assert!(
        lost.is_empty(),
        "{mode}: commits that returned OK are missing: {lost:?}"
    );
    assert!(
        phantom.is_empty(),
        "{mode}: commits that failed are in the remote: {phantom:?}"
    );
    let failures: usize = failed.values().sum();
    assert!(
        failures > 0 && !acked.is_empty(),
        "{mode}: faults were injected: {failed:?}"
    );
    // With retry_attempts=3 and retry_base_ms=1, a request gives up within about
    // 3 x 20 ms of latency plus a few ms of backoff; a statement makes a handful of
    // requests and may wait out busy_timeout (2 s) for another host's lease.
    assert!(
        slowest < Duration::from_secs(5),
        "{mode}: a statement took {slowest:?}: retries are not bounded"
    );
    for h in 0..=HOSTS {
        let c = m.open(&format!("h{h}"), &extra);
        assert_eq!(
            txn_groups(&c),
            groups,
            "{mode}: host h{h} after faults stopped"
        );
        assert_eq!(integrity(&c), "ok");
    }
    println!(
        "FIGURES fault injection, sync={mode}: rate {rate} on every request kind, latency 0-20 \
         ms, {HOSTS} hosts x {ops_per_host} transactions in {:.1} s: {} committed and present, \
         {failures} failed and absent {failed:?}; requests {}; {retries} retries; slowest \
         statement {slowest:?}",
        elapsed.as_secs_f64(),
        acked.len(),
        calls.join(", ")
    );
}

/// A remote request failing transiently is tried exactly `retry_attempts` times, with
/// exponential backoff, then the statement fails; even with a slow remote the wait is
/// bounded by the backoff schedule plus the latency of the requests made. For every
/// request a commit or a refresh makes, in both sync modes.
#[test]
fn retries_stay_within_their_bounds() {
    let mut figures = Vec::new();
    for mode in SYNC_MODES {
        for attempts in [1u32, 3, 5] {
            retries_run(mode, attempts, &mut figures);
        }
    }
    println!("FIGURES retry bounds (base 20 ms, latency 10 ms per request):");
    for f in figures {
        println!("  {f}");
    }
}

fn retries_run(mode: &str, attempts: u32, figures: &mut Vec<String>) {
    const BASE_MS: u64 = 20;
    const LATENCY: Duration = Duration::from_millis(10);
    let m = MemWorld::new(&format!("bounds-{mode}-{attempts}"));
    let extra =
        format!("&retry_attempts={attempts}&retry_base_ms={BASE_MS}&staleness_ms=0&sync={mode}");
    let c = m.open("h1", &extra);
    c.execute_batch(MEM_SCHEMA).unwrap();
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
        .unwrap();
    m.backend.set_latency(LATENCY);

    // Chunked requests run on parallel workers, each chunk with its own retries.
    let per_chunk = [Op::StageBlock, Op::ReadRange];
    let mut check = |op: Op, what: &str, action: &dyn Fn() -> rusqlite::Result<()>| {
        let what = format!("sync={mode}: {what}");
        let calls_before: Vec<usize> = ALL_OPS.iter().map(|o| m.backend.calls(*o)).collect();
        let retries_before = status(&c)["requests"]["retries"].as_u64().unwrap();
        m.backend.fail_next(op, BackendErrorKind::Transient, 1000);
        let t0 = Instant::now();
        let result = action();
        let took = t0.elapsed();
        m.backend.fail_next(op, BackendErrorKind::Transient, 0);
        let err = match result {
            Ok(()) => panic!("{what}: succeeded although every {op:?} failed"),
            Err(e) => e.to_string(),
        };
        let calls: Vec<usize> = ALL_OPS
            .iter()
            .zip(&calls_before)
            .map(|(o, before)| m.backend.calls(*o) - before)
            .collect();
        let op_calls = calls[ALL_OPS.iter().position(|o| *o == op).unwrap()];
        let s = status(&c);
        let retries = s["requests"]["retries"].as_u64().unwrap() - retries_before;
        let requests = op_calls / attempts as usize;
        if per_chunk.contains(&op) {
            assert!(
                op_calls > 0 && op_calls % attempts as usize == 0,
                "{what}: {op:?} tried {op_calls} times with retry_attempts={attempts}"
            );
        } else {
            assert_eq!(
                op_calls, attempts as usize,
                "{what}: {op:?} tried {op_calls} times with retry_attempts={attempts}"
            );
        }
        assert_eq!(
            retries,
            (requests as u64) * u64::from(attempts - 1),
            "{what}: retries"
        );
        let last = s["last_error"].as_str().unwrap_or_default().to_string();
        assert!(
            last.contains(&format!("gave up after {attempts} attempts")),
            "{what}: last_error {last:?}; statement error {err}"
        );
        // Backoff before retry r is BASE * 2^(r-1), less up to 25 % jitter.
        let backoff: u64 = (1..attempts).map(|r| BASE_MS << (r - 1)).sum();
        let all_calls: usize = calls.iter().sum();
        let low = Duration::from_millis(backoff * 3 / 4) + LATENCY * attempts;
        let high = Duration::from_millis(backoff * requests as u64)
            + LATENCY * all_calls as u32
            + Duration::from_millis(500);
        assert!(
            took >= low && took <= high,
            "{what}: failing took {took:?}, expected {low:?}..{high:?}"
        );
        figures.push(format!(
            "{what}, attempts={attempts}: {op_calls} tries ({requests} request(s)), failed after \
             {} ms",
            took.as_millis()
        ));
    };
    let commit_ops: &[Op] = if mode == "full" {
        &[Op::Upload]
    } else {
        &[Op::StageBlock, Op::CommitBlocks]
    };
    for (k, op) in commit_ops.iter().enumerate() {
        check(*op, &format!("COMMIT whose {op:?} fails"), &|| {
            c.execute("INSERT INTO t VALUES (?1)", [100 + k as i64])
                .map(|_| ())
        });
    }
    check(Op::AcquireLease, "write whose lease request fails", &|| {
        c.execute("INSERT INTO t VALUES (200)", []).map(|_| ())
    });
    check(Op::Stat, "refresh whose stat fails", &|| {
        pragma(&c, "PRAGMA managedblob_refresh").map(|_| ())
    });
    // Another host commits a small change; then the refresh's transfer fails.
    {
        m.backend.set_latency(Duration::ZERO);
        let other = m.open("h2", &extra);
        other.execute("INSERT INTO t VALUES (4)", []).unwrap();
        m.backend.set_latency(LATENCY);
    }
    let refresh_ops: &[Op] = if mode == "full" {
        &[Op::Download]
    } else {
        &[Op::BlockList, Op::ReadRange]
    };
    for op in refresh_ops {
        check(*op, &format!("refresh whose {op:?} fails"), &|| {
            pragma(&c, "PRAGMA managedblob_refresh").map(|_| ())
        });
    }
    // Once the remote answers again, everything works and nothing was lost.
    m.backend.set_latency(Duration::ZERO);
    c.execute("INSERT INTO t VALUES (5)", []).unwrap();
    let ids: Vec<i64> = m.remote(|r| {
        let mut stmt = r.prepare("SELECT id FROM t ORDER BY id").unwrap();
        let ids = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        ids
    });
    assert_eq!(
        ids,
        [1, 4, 5],
        "sync={mode} attempts={attempts}: failed commits are absent"
    );
}

/// Delta sync reads the chunks of a new version with ranged reads pinned to it; when
/// another host commits meanwhile, the pinned read fails. That is a race, not a
/// fault: the reader's statement waits (busy handler) and gets the newer version,
/// rather than failing with a disk I/O error. (Found by the crash soak: a reader with
/// `staleness_ms=0` failed "read range failed: expected etag ...".)
#[test]
fn a_commit_racing_a_ranged_refresh_is_retried_not_an_io_error() {
    let m = MemWorld::new("race");
    let extra = "&staleness_ms=0&sync=delta";
    let a = m.open("a", extra);
    a.execute_batch(MEM_SCHEMA).unwrap();
    a.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
        .unwrap();
    let b = m.open("b", extra);
    b.busy_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        b.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        1
    );
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    // The version b starts fetching is replaced before its chunks arrive.
    let reads = m.backend.calls(Op::ReadRange);
    m.backend
        .fail_next(Op::ReadRange, BackendErrorKind::ConditionFailed, 1);
    let n = b.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0));
    assert!(
        m.backend.calls(Op::ReadRange) > reads,
        "the refresh did not read ranges"
    );
    assert_eq!(
        n.as_ref().ok(),
        Some(&2),
        "a racing commit failed the read: {n:?}; status {}",
        status(&b)
    );
}

/// The one case where a failed COMMIT can still be in the remote: the upload landed
/// but its reply was lost, and the check that would tell (reading the remote back to
/// compare) fails too. The outcome is unknown to the client; what is guaranteed is
/// that the COMMIT reports failure, the remote holds one consistent version, and the
/// cache follows the remote at the next read instead of diverging from it.
#[test]
fn a_lost_reply_that_cannot_be_checked_leaves_cache_and_remote_consistent() {
    for mode in SYNC_MODES {
        let m = MemWorld::new(&format!("unknown-{mode}"));
        let extra = format!("&retry_attempts=3&retry_base_ms=1&staleness_ms=0&sync={mode}");
        let c = m.open("h1", &extra);
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
            .unwrap();
        // The check reads the remote back: whole in full mode, its block list in delta.
        let check_op = if mode == "full" {
            Op::Download
        } else {
            Op::BlockList
        };
        m.backend.land_then_fail_next_upload();
        m.backend
            .fail_next(check_op, BackendErrorKind::Transient, 1000);
        let result = c.execute("INSERT INTO t VALUES (2)", []);
        m.backend
            .fail_next(check_op, BackendErrorKind::Transient, 0);
        let remote_ids: Vec<i64> = m.remote(|r| {
            let mut stmt = r.prepare("SELECT id FROM t ORDER BY id").unwrap();
            let ids = stmt
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            ids
        });
        let s = status(&c);
        println!(
            "sync={mode}: lost reply, check impossible: result {result:?}; remote \
             {remote_ids:?}; last_error {}",
            s["last_error"]
        );
        let err =
            result.expect_err("the COMMIT cannot know its outcome and must not report success");
        assert_eq!(remote_ids, [1, 2], "{mode}: the upload did land");
        let last = s["last_error"].as_str().unwrap_or_default();
        assert!(
            !last.is_empty(),
            "{mode}: the failure is explained in last_error: {s} ({err})"
        );
        // The cache does not stay behind the remote: the next read takes the version.
        let ids: Vec<i64> = {
            let mut stmt = c.prepare("SELECT id FROM t ORDER BY id").unwrap();
            let ids = stmt
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            ids
        };
        assert_eq!(ids, [1, 2], "{mode}: the cache follows the remote");
        let s = status(&c);
        assert_eq!(s["dirty"], false, "{mode}: {s}");
        assert!(s["conflicts"].as_array().unwrap().is_empty(), "{mode}: {s}");
        c.execute("INSERT INTO t VALUES (3)", []).unwrap();
        assert_eq!(integrity(&c), "ok");
    }
}

/// A release that fails parks the lease (README: "this process's next writer may
/// renew and reuse it instead of waiting for itself"). If that renewal fails once,
/// transiently, the process must not lock itself out: once the remote answers again
/// its next write goes through, instead of waiting out its own forgotten lease.
#[test]
fn a_parked_lease_survives_a_transient_renewal_failure() {
    let m = MemWorld::new("parked");
    let extra = "&retry_attempts=2&retry_base_ms=1&lease_secs=15&sync=full";
    let c = m.open("h1", extra);
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
        .unwrap();
    m.backend
        .fail_next(Op::ReleaseLease, BackendErrorKind::Transient, 2);
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(status(&c)["lease_held"], true, "the lease is parked");
    m.backend
        .fail_next(Op::RenewLease, BackendErrorKind::Transient, 2);
    c.busy_timeout(Duration::ZERO).unwrap();
    let during = c.execute("INSERT INTO t VALUES (3)", []);
    println!("write while the renewal fails: {during:?}");
    // The remote answers again.
    c.busy_timeout(Duration::from_secs(3)).unwrap();
    let t0 = Instant::now();
    let after = c.execute("INSERT INTO t VALUES (4)", []);
    let took = t0.elapsed();
    let s = status(&c);
    assert!(
        after.is_ok(),
        "the process locked itself out with its own lease: {after:?} after {took:?}; \
         status {s}"
    );
}

/// A writer whose snapshot is stale takes the lease, sees the remote moved, and gives
/// the lease back before it refreshes (README: "a writer whose snapshot is stale gets
/// SQLITE_BUSY at its first write and its retry runs on the new version"). When that
/// release fails (after its retries), the lease must not be forgotten while still
/// held: otherwise every writer, this one included, waits for it to lapse
/// (`lease_secs`, 15 s here) although the remote answers again at once.
#[test]
fn a_stale_writer_whose_lease_release_fails_does_not_block_everyone() {
    let m = MemWorld::new("adopt");
    let extra = "&retry_attempts=2&retry_base_ms=1&lease_secs=15&sync=full";
    let a = m.open("a", extra);
    a.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
        .unwrap();
    let b = m.open("b", extra);
    let n: i64 = b
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    // The remote moves; b's snapshot (checked less than staleness_ms ago) is stale.
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    m.backend
        .fail_next(Op::ReleaseLease, BackendErrorKind::Transient, 2);
    b.busy_timeout(Duration::from_secs(3)).unwrap();
    let t0 = Instant::now();
    let result = b.execute("INSERT INTO t VALUES (3)", []);
    let took = t0.elapsed();
    a.busy_timeout(Duration::from_secs(3)).unwrap();
    let other = a.execute("INSERT INTO t VALUES (4)", []);
    println!("stale writer: {result:?} after {took:?}; other host: {other:?}");
    assert!(
        result.is_ok() && other.is_ok(),
        "a lease whose release failed was forgotten while held: the stale writer got \
         {result:?} after {took:?}, the other host {other:?}; status {}",
        status(&b)
    );
}

// ---------------------------------------------------------------------------
// 4. Fencing

/// A writer (one in a batch, one inside an open transaction, on two blobs) is
/// paused with SIGSTOP while it holds the lease. Another host cannot take the lease
/// while it is valid (the paused process is alive), takes it once it expired, and
/// writes. When the paused writer resumes and finishes, its upload is refused: the
/// remote keeps exactly the other host's version, and the paused batch's commit is
/// kept aside as a conflict copy, not lost.
#[test]
fn fencing_a_writer_paused_past_its_lease_cannot_overwrite() {
    const LEASE_SECS: u64 = 15;
    let w = World::new();
    let go = w.dir.path().join("go");
    let mut paused = Vec::new();
    for (hold, sync, blob) in [
        ("batch", "delta", "x.db"),
        ("txn", "delta", "y.db"),
        ("batch", "full", "xf.db"),
        ("txn", "full", "yf.db"),
    ] {
        let c = w.open("b", blob);
        c.execute_batch("CREATE TABLE t(who TEXT)").unwrap();
        drop(c);
        let uri = w.uri(
            &format!("a-{hold}-{sync}"),
            blob,
            &format!("&lease_secs={LEASE_SECS}&sync={sync}"),
        );
        let p = Proc::spawn(
            &format!("paused-{hold}-{sync}"),
            "hold",
            &uri,
            &[
                ("MB_MODE", hold.to_string()),
                ("MB_GO_FILE", go.display().to_string()),
            ],
        );
        paused.push((format!("{hold}, sync={sync}"), blob, uri, p));
    }
    let mut ready = Vec::new();
    for (_, _, _, p) in &mut paused {
        p.expect("READY", Duration::from_secs(30));
        p.signal(libc::SIGSTOP);
        ready.push(Instant::now());
    }

    // The lease of a paused (alive) holder is not reclaimed early.
    for (_, blob, _, _) in &paused {
        let b = w.open("b", blob);
        b.busy_timeout(Duration::from_millis(500)).unwrap();
        let err = b
            .execute("INSERT INTO t(who) VALUES ('too early')", [])
            .expect_err("the paused writer's lease is still valid");
        assert!(is_busy(&err), "{blob}: {err}");
    }
    // Once it expired, the other host writes (waiting in its busy handler).
    let mut after_b = Vec::new();
    for (i, (mode, blob, _, p)) in paused.iter().enumerate() {
        let b = w.open("b", blob);
        b.busy_timeout(Duration::from_secs(40)).unwrap();
        b.execute("INSERT INTO t(who) VALUES ('other host')", [])
            .unwrap_or_else(|e| panic!("{mode}: the other host's write: {e}\n{}", p.output()));
        let waited = ready[i].elapsed();
        println!("FIGURES fencing {mode}: the other host wrote {waited:?} after the pause");
        assert!(
            waited >= Duration::from_secs(LEASE_SECS - 2),
            "{mode}: the lease of a live holder was taken after {waited:?} (lease {LEASE_SECS} s)"
        );
        assert!(
            waited < Duration::from_secs(LEASE_SECS + 15),
            "{mode}: took {waited:?}"
        );
        after_b.push(std::fs::read(w.remote_blob(blob)).unwrap());
    }

    // Resume the paused writers and let them finish.
    std::fs::write(&go, b"go").unwrap();
    for (i, (mode, blob, uri, p)) in paused.iter_mut().enumerate() {
        p.signal(libc::SIGCONT);
        let end = p.expect("END", Duration::from_secs(30));
        println!("{mode}: {end}");
        assert!(
            end.starts_with("END failed:"),
            "{mode}: the resumed writer's commit must fail: {end}"
        );
        let (_, json) = end.split_once("status=").unwrap();
        let s: Value = serde_json::from_str(json).unwrap();
        assert_eq!(s["lease_held"], false, "{mode}: {s}");
        p.wait_success(Duration::from_secs(15));
        let now = std::fs::read(w.remote_blob(blob)).unwrap();
        assert!(
            now == after_b[i],
            "{mode}: the remote changed after the paused writer resumed"
        );
        let who: Vec<String> = read_remote(&w.remote_blob(blob), |r| {
            assert_eq!(integrity(r), "ok");
            let mut stmt = r.prepare("SELECT who FROM t").unwrap();
            let who = stmt
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            who
        });
        assert_eq!(who, ["other host"], "{mode}");

        // The paused writer's cache recovers: it follows the remote, and a batch's
        // local commit is kept aside rather than lost.
        let c = open(uri);
        let who: Vec<String> = {
            let mut stmt = c.prepare("SELECT who FROM t").unwrap();
            let who = stmt
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            who
        };
        assert_eq!(who, ["other host"], "{mode}: the paused writer's cache");
        let s = status(&c);
        assert_eq!(s["dirty"], false, "{s}");
        let conflicts = s["conflicts"].as_array().unwrap();
        if mode.starts_with("batch") {
            assert_eq!(conflicts.len(), 1, "{s}");
            let kept: String = Connection::open(conflicts[0].as_str().unwrap())
                .unwrap()
                .query_row("SELECT who FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(kept, "paused", "the batch's commit is in the conflict copy");
        } else {
            assert!(conflicts.is_empty(), "{s}");
        }
        drop(c);
        assert!(std::fs::read(w.remote_blob(blob)).unwrap() == after_b[i]);
    }
}

/// The local backend's lease of a dead owner (same host and boot, pid gone) is
/// reclaimed at once by another host, without waiting for its expiry (60 s here).
#[test]
fn fencing_a_dead_owners_lease_is_reclaimed_at_once() {
    let w = World::new();
    let go = w.dir.path().join("go-never");
    {
        let c = w.open("b", "a.db");
        c.execute_batch("CREATE TABLE t(who TEXT)").unwrap();
    }
    let uri = w.uri("a", "a.db", "&lease_secs=60");
    let mut p = Proc::spawn(
        "holder",
        "hold",
        &uri,
        &[
            ("MB_MODE", "batch".to_string()),
            ("MB_GO_FILE", go.display().to_string()),
        ],
    );
    p.expect("READY", Duration::from_secs(30));
    p.sigkill();
    let leases = files_with(&w.remote(), ".mb-lease");
    assert_eq!(leases.len(), 1, "the dead holder left its lease file");

    let b = w.open("b", "a.db");
    b.busy_timeout(Duration::ZERO).unwrap();
    let t0 = Instant::now();
    b.execute("INSERT INTO t(who) VALUES ('other host')", [])
        .unwrap_or_else(|e| panic!("the dead owner's lease was not reclaimed: {e}"));
    let took = t0.elapsed();
    println!("FIGURES dead owner's lease (60 s) reclaimed by another host in {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(b);
    let after = std::fs::read(w.remote_blob("a.db")).unwrap();

    // The dead holder's batch commit was never uploaded; its cache keeps it aside.
    let c = open(&uri);
    let who: String = c.query_row("SELECT who FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(who, "other host");
    let s = status(&c);
    assert_eq!(s["conflicts"].as_array().unwrap().len(), 1, "{s}");
    drop(c);
    assert!(std::fs::read(w.remote_blob("a.db")).unwrap() == after);
}
