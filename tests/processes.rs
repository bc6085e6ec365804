//! Multi-process integration tests: real OS processes sharing one cache, several
//! caches ("hosts") sharing one remote, processes killed with SIGKILL at awkward
//! moments, and a writer paused with SIGSTOP past its lease.
//!
//! Each test runs on the local backend (`local::*`) and, with the `azure` feature, on
//! an Azurite container (`azurite::*`; skipped when Azurite is not installed, unless
//! CI is set). The children get the remote in their URI (on Azure the container URL
//! with a SAS), so they need no environment. Where the backends differ (the local
//! backend reclaims a dead local owner's lease at once; an Azure lease of a dead
//! process is waited out), the test says so.
//!
//! The children are this very test binary, re-executed with
//! `--exact child_main --nocapture --test-threads=1` and `MB_CHILD_ROLE` (plus a few
//! more `MB_*` variables) in the environment. `child_main` does nothing in a normal
//! test run. A child talks to its parent through stdout lines that contain
//! `MB:<message>` (the test harness may print its own text on the same line).

mod common;
use common::*;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};
use serde_json::Value;

const ROLE: &str = "MB_CHILD_ROLE";
const MARK: &str = "MB:";
/// Explicit lease duration used by the crash tests on the local backend: well above
/// the "reclaimed, not expired" bound they assert.
const LEASE_SECS: u64 = 30;
/// On Azure a dead process's lease is waited out: the shortest lease Azure allows.
const AZURE_LEASE_SECS: u64 = 15;

/// The crash tests' lease duration on `w`'s backend.
fn crash_lease_secs(w: &World) -> u64 {
    if w.is_local() {
        LEASE_SECS
    } else {
        AZURE_LEASE_SECS
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
        "batch_then_sleep" => child_batch_then_sleep(&uri),
        "commit_loop" => child_commit_loop(&uri),
        "batch_hold" => child_batch_hold(&uri),
        "batch_pause" => child_batch_pause(&uri),
        other => panic!("unknown child role {other}"),
    }
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("child needs {key}"))
}

fn env_num<T: std::str::FromStr>(key: &str) -> T
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

/// Sleep up to `limit`, waking early (and failing) if the parent went away.
fn sleep_while_parent_alive(limit: Duration) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        assert!(parent_alive(), "the parent test process went away");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Tell the parent something: one stdout line, flushed now.
fn say(msg: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{MARK}{msg}").unwrap();
    out.flush().unwrap();
}

/// `increment`: open, say READY, wait for the go file, do `MB_N` increments.
fn child_increment(uri: &str) {
    let n: u32 = env_num("MB_N");
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    say("READY");
    if let Ok(go) = std::env::var("MB_GO_FILE") {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !Path::new(&go).exists() {
            assert!(Instant::now() < deadline, "no go file {go}");
            thread::sleep(Duration::from_millis(2));
        }
    }
    let busy = run_increments(&c, n, "child");
    let s = status(&c);
    say(&format!("DONE {n} busy={busy} status={s}"));
}

/// `batch_then_sleep`: begin a batch, make `MB_K` separate commits, say READY and
/// sleep until killed.
fn child_batch_then_sleep(uri: &str) {
    let k: i64 = env_num("MB_K");
    let c = open(uri);
    assert_eq!(
        pragma(&c, "PRAGMA managedblob_batch=begin")
            .unwrap()
            .as_deref(),
        Some("begin")
    );
    for i in 1..=k {
        c.execute(
            "INSERT INTO t(id, payload) VALUES (?1, ?2)",
            (i, format!("batch row {i}")),
        )
        .unwrap_or_else(|e| panic!("insert {i} inside the batch: {e}"));
    }
    let s = status(&c);
    assert_eq!(s["dirty"], true, "{s}");
    assert_eq!(s["lease_held"], true, "{s}");
    say(&format!("READY status={s}"));
    sleep_while_parent_alive(Duration::from_secs(60));
    panic!("batch_then_sleep was not killed");
}

/// `commit_loop`: autocommit inserts of ids `MB_START`, `MB_START + 1`, ... forever,
/// saying `ACK <id>` after each COMMIT returned OK. The busy timeout covers the
/// lease a killed predecessor may have left on Azure (it expires; it is not
/// reclaimed).
fn child_commit_loop(uri: &str) {
    let start: i64 = env_num("MB_START");
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(AZURE_LEASE_SECS + 30))
        .unwrap();
    let payload = "x".repeat(300);
    for id in start.. {
        assert!(parent_alive(), "the parent test process went away");
        match c.execute(
            "INSERT INTO t(id, payload) VALUES (?1, ?2)",
            (id, format!("{id}:{payload}")),
        ) {
            Ok(1) => say(&format!("ACK {id}")),
            Ok(n) => panic!("insert {id} changed {n} rows"),
            Err(e) => {
                say(&format!("ERR {id} {e}"));
                panic!("insert {id}: {e}; status {}", status(&c));
            }
        }
    }
}

/// `batch_hold`: begin a batch (taking the lease), insert one row, say READY, hold
/// the batch for `MB_HOLD_MS`, end it (uploading) and say ENDED.
fn child_batch_hold(uri: &str) {
    let hold: u64 = env_num("MB_HOLD_MS");
    let who = env("MB_WHO");
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        pragma(&c, "PRAGMA managedblob_batch=begin")
            .unwrap()
            .as_deref(),
        Some("begin")
    );
    c.execute("INSERT INTO t(who) VALUES (?1)", [&who]).unwrap();
    let s = status(&c);
    assert_eq!(s["lease_held"], true, "{s}");
    say("READY");
    sleep_while_parent_alive(Duration::from_millis(hold));
    assert_eq!(
        pragma(&c, "PRAGMA managedblob_batch=end")
            .unwrap()
            .as_deref(),
        Some("end")
    );
    let s = status(&c);
    assert_eq!(s["dirty"], false, "{s}");
    assert_eq!(s["lease_held"], false, "{s}");
    say(&format!("ENDED status={s}"));
}

/// `batch_pause`: begin a batch (taking the lease), insert one row ('paused'), say
/// READY, wait for the file `MB_GO_FILE` (the parent stops this process meanwhile),
/// end the batch and say `END ok` or `END failed: <error>`, with the status.
fn child_batch_pause(uri: &str) {
    let go = env("MB_GO_FILE");
    let c = open(uri);
    assert_eq!(
        pragma(&c, "PRAGMA managedblob_batch=begin")
            .unwrap()
            .as_deref(),
        Some("begin")
    );
    c.execute("INSERT INTO t(who) VALUES ('paused')", [])
        .unwrap();
    let s = status(&c);
    assert_eq!(s["lease_held"], true, "{s}");
    assert_eq!(s["dirty"], true, "{s}");
    say("READY");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !Path::new(&go).exists() {
        assert!(parent_alive(), "the parent test process went away");
        assert!(Instant::now() < deadline, "no go file {go}");
        thread::sleep(Duration::from_millis(10));
    }
    let outcome = match pragma(&c, "PRAGMA managedblob_batch=end") {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("failed: {e}"),
    };
    let s = status(&c);
    say(&format!("END {outcome} status={s}"));
}

// ---------------------------------------------------------------------------
// Increments shared by the children and the in-process variant

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
        // COMMIT can fail with BUSY and leave the transaction open.
        c.execute_batch("ROLLBACK")?;
    }
    result
}

/// `n` increments, retrying a whole transaction on SQLITE_BUSY; returns how many
/// BUSY results were retried. Any other error fails.
fn run_increments(c: &Connection, n: u32, who: &str) -> u32 {
    let mut busy = 0;
    for i in 0..n {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match increment_once(c) {
                Ok(()) => {
                    // Let the other writer in, so the writers really interleave: a
                    // pause longer than SQLite's busy-handler steps (up to 100 ms
                    // apart), or the writer that holds the turn keeps it.
                    thread::sleep(Duration::from_micros(fastrand::u64(5_000..120_000)));
                    break;
                }
                Err(e) if is_busy(&e) => {
                    busy += 1;
                    assert!(
                        Instant::now() < deadline,
                        "{who}: increment {i} stayed busy for 15 s: {e}; status {}",
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

    /// Send `sig` to the child.
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

    /// What the child printed so far, for failure messages.
    fn output(&self) -> String {
        // Give the reader threads a moment to catch up with a dead child.
        thread::sleep(Duration::from_millis(50));
        format!(
            "--- {} (pid {}) status {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.name,
            self.child.id(),
            self.status,
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// The next marker message, waiting at most `timeout`.
    fn next(&mut self, timeout: Duration) -> Option<String> {
        match self.marks.recv_timeout(timeout) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // Stdout closed: the child ended.
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
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
    }
}

/// The sidecar of a cache, as JSON.
fn sidecar(cache: &Path) -> Value {
    let path = managedblob::sidecar::path_for(cache);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading sidecar {}: {e}", path.display()));
    serde_json::from_str(&text).expect("sidecar is JSON")
}

fn integrity(c: &Connection) -> String {
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn ids(c: &Connection) -> BTreeSet<i64> {
    let mut stmt = c.prepare("SELECT id FROM t ORDER BY id").unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.map(|r| r.unwrap()).collect()
}

fn remote_counter(w: &World, blob: &str) -> i64 {
    w.read_remote(blob, |r| {
        assert_eq!(integrity(r), "ok", "remote integrity");
        r.query_row("SELECT v FROM c WHERE id = 1", [], |r| r.get(0))
            .unwrap()
    })
}

/// Create the counter table through the VFS (so the blob exists) and close.
fn create_counter(uri: &str) {
    let c = open(uri);
    c.execute_batch(
        "CREATE TABLE c(id INTEGER PRIMARY KEY, v INTEGER NOT NULL); INSERT INTO c VALUES (1, 0);",
    )
    .unwrap();
}

/// Spawn one `increment` child per uri, start them together, and require both to
/// finish their `n` increments. Returns each child's final status.
fn run_increment_children(w: &World, uris: &[String], n: u32) -> Vec<Value> {
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
        p.expect("READY", Duration::from_secs(15));
    }
    std::fs::write(&go, b"go").unwrap();
    let mut statuses = Vec::new();
    for p in &mut procs {
        let done = p.expect("DONE", Duration::from_secs(40));
        println!("{}: {done}", p.name);
        assert!(done.starts_with(&format!("DONE {n} ")), "{done}");
        let (_, json) = done.split_once("status=").expect("DONE carries the status");
        statuses.push(serde_json::from_str(json).expect("status JSON"));
        p.wait_success(Duration::from_secs(10));
    }
    statuses
}

// ---------------------------------------------------------------------------
// The tests

/// Two processes, one cache file, one remote: SQLite's POSIX locks on the cache and
/// the remote lease serialise them, and no increment is lost.
fn two_processes_one_cache(w: &World) {
    const N: u32 = 50;
    let uri = w.uri("h1", "a.db", "");
    create_counter(&uri);
    let statuses = run_increment_children(w, &[uri.clone(), uri.clone()], N);
    // One cache: nothing to download, ever; and every commit uploaded by itself.
    for s in &statuses {
        assert_eq!(fetches(s), 0, "{s}");
        assert!(uploads(s) >= u64::from(N), "{s}");
    }

    assert_eq!(remote_counter(w, "a.db"), i64::from(2 * N));
    let c = open(&uri);
    let v: i64 = c
        .query_row("SELECT v FROM c WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, i64::from(2 * N), "the shared cache");
    let s = status(&c);
    assert_eq!(s["dirty"], false, "{s}");
    assert_eq!(integrity(&c), "ok");
}

/// Two hosts (two caches) on one remote, one process each: the lease and the
/// If-Match fence serialise them, and a BUSY from a moved remote refreshes the cache
/// before the retry.
fn two_hosts_interleaved_writers_no_lost_update(w: &World) {
    const N: u32 = 50;
    create_counter(&w.uri("h1", "a.db", ""));
    let uris = [w.uri("h1", "a.db", ""), w.uri("h2", "a.db", "")];
    let statuses = run_increment_children(w, &uris, N);
    for s in &statuses {
        assert!(uploads(s) >= u64::from(N), "{s}");
    }
    // h2 downloads once when it opens; any further download is a refresh after the
    // other host committed. Each host refreshing at least once shows the writers did
    // interleave (else this test would prove little).
    let downloads: Vec<u64> = statuses.iter().map(fetches).collect();
    assert!(
        downloads[0] >= 1 && downloads[1] >= 2,
        "the two hosts did not interleave (downloads {downloads:?}): {statuses:?}"
    );

    assert_eq!(remote_counter(w, "a.db"), i64::from(2 * N));
    for uri in &uris {
        let c = open(uri);
        let v: i64 = c
            .query_row("SELECT v FROM c WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, i64::from(2 * N), "cache of {uri} after reopening");
        assert_eq!(status(&c)["dirty"], false);
    }
}

/// The same with two caches in one process, on two threads.
fn two_hosts_interleaved_writers_threads(w: &World) {
    const N: u32 = 50;
    create_counter(&w.uri("h1", "a.db", ""));
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let workers: Vec<_> = ["h1", "h2"]
        .into_iter()
        .map(|host| {
            let uri = w.uri(host, "a.db", "");
            let barrier = barrier.clone();
            thread::spawn(move || {
                let c = open(&uri);
                c.busy_timeout(Duration::from_secs(10)).unwrap();
                barrier.wait();
                let busy = run_increments(&c, N, &uri);
                (busy, status(&c))
            })
        })
        .collect();
    let mut downloads = Vec::new();
    for t in workers {
        let (busy, s) = t.join().expect("worker panicked");
        println!("busy retries: {busy}; status {s}");
        downloads.push(fetches(&s));
    }
    assert!(
        downloads[0] >= 1 && downloads[1] >= 2,
        "the two caches did not interleave (downloads {downloads:?})"
    );
    assert_eq!(remote_counter(w, "a.db"), i64::from(2 * N));
}

/// Flush `c` until its local commits are uploaded: on Azure a killed process's lease
/// is not reclaimed but waited out (the flush fails while it is held). Returns how
/// long that took.
fn flush_once_the_lease_is_free(c: &Connection, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match pragma(c, "PRAGMA managedblob_flush") {
            Ok(_) if status(c)["dirty"] == false => return started.elapsed(),
            Ok(_) => {}
            Err(e) => println!("flush while the lease is held: {e}"),
        }
        assert!(
            started.elapsed() < limit,
            "the local commits were not uploaded within {limit:?}; status {}",
            status(c)
        );
        thread::sleep(Duration::from_millis(250));
    }
}

/// Commits inside a batch are local until the batch ends. A process killed inside
/// the batch leaves a dirty cache; the next open uploads those commits: at once on
/// the local backend (the dead process's lease is reclaimed, not waited out), once
/// the dead process's lease expired on Azure.
fn sigkill_inside_batch_commits_reach_remote_on_next_open(w: &World) {
    const K: i64 = 20;
    let lease_secs = crash_lease_secs(w);
    let extra = format!("&lease_secs={lease_secs}");
    let uri = w.uri("h1", "a.db", &extra);
    let cache = w.cache("h1", "a.db");
    {
        let c = open(&uri);
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, payload TEXT)")
            .unwrap();
    }

    let mut child = Proc::spawn(
        "batcher",
        "batch_then_sleep",
        &uri,
        &[("MB_K", K.to_string())],
    );
    let ready = child.expect("READY", Duration::from_secs(15));
    println!("{ready}");
    child.sigkill();
    let killed = Instant::now();

    // The batch's commits are in the cache only.
    let remote_rows: i64 = w.read_remote("a.db", |r| {
        r.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    });
    assert_eq!(
        remote_rows, 0,
        "batch commits must not reach the remote before the batch ends"
    );
    let side = sidecar(&cache);
    assert_eq!(side["dirty"], true, "sidecar after the kill: {side}");
    let local_rows: i64 = {
        let plain = Connection::open_with_flags(&cache, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
        plain
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(local_rows, K, "the cache holds the batch's commits");
    if w.is_local() {
        let leases: Vec<String> = std::fs::read_dir(w.remote())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".mb-lease"))
            .collect();
        assert_eq!(
            leases.len(),
            1,
            "the dead process left its lease behind: {leases:?}"
        );
    }

    let started = Instant::now();
    let c = open(&uri);
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let s = status(&c);
    let took = started.elapsed();
    println!("reopen took {took:?}; status {s}");
    assert_eq!(n, K);
    assert!(
        took < Duration::from_secs(10),
        "reopening waited {took:?} (lease {lease_secs} s): reads must not wait for the lease"
    );
    if w.is_local() {
        assert_eq!(
            s["dirty"], false,
            "the dead owner's lease should have been reclaimed at once: {s}"
        );
    } else {
        // Azure cannot tell a dead holder from a live one: its lease is waited out.
        assert_eq!(
            s["dirty"], true,
            "uploaded under a dead process's lease? {s}"
        );
        let waited = flush_once_the_lease_is_free(&c, Duration::from_secs(lease_secs + 20));
        let since_kill = killed.elapsed();
        println!("uploaded {since_kill:?} after the kill (flushes for {waited:?})");
        assert!(
            since_kill < Duration::from_secs(lease_secs + 20),
            "{since_kill:?}"
        );
    }
    let s = status(&c);
    assert_eq!(s["dirty"], false, "status after reopen: {s}");
    assert_eq!(s["lease_held"], false, "{s}");
    assert!(uploads(&s) >= 1, "{s}");
    assert_eq!(sidecar(&cache)["dirty"], false);

    let (remote_ids, ok) = w.read_remote("a.db", |r| (ids(r), integrity(r)));
    assert_eq!(ok, "ok");
    assert_eq!(remote_ids, (1..=K).collect::<BTreeSet<_>>());
}

/// Like the test above, but another process has the same cache open all along (and
/// idle) while the batch runs and dies. Its next write takes the dead process's lease
/// (at once on the local backend, in its busy handler once it expired on Azure) and
/// uploads the batch's commits together with its own.
fn sigkill_inside_batch_with_another_process_on_the_same_cache(w: &World) {
    const K: i64 = 20;
    let lease_secs = crash_lease_secs(w);
    let extra = format!("&lease_secs={lease_secs}");
    let uri = w.uri("h1", "a.db", &extra);
    let cache = w.cache("h1", "a.db");
    let c = open(&uri);
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, payload TEXT)")
        .unwrap();
    c.busy_timeout(Duration::from_secs(lease_secs + 20))
        .unwrap();

    let mut child = Proc::spawn(
        "batcher",
        "batch_then_sleep",
        &uri,
        &[("MB_K", K.to_string())],
    );
    child.expect("READY", Duration::from_secs(15));
    child.sigkill();
    assert_eq!(sidecar(&cache)["dirty"], true);

    let started = Instant::now();
    c.execute("INSERT INTO t(id, payload) VALUES (?1, 'parent')", [K + 1])
        .unwrap_or_else(|e| {
            panic!(
                "write after the batch holder died: {e}; status {}",
                status(&c)
            )
        });
    let took = started.elapsed();
    let s = status(&c);
    println!("write took {took:?}; status {s}");
    let bound = if w.is_local() {
        // The dead owner's lease is reclaimed.
        Duration::from_secs(10)
    } else {
        // The dead owner's lease expires.
        Duration::from_secs(lease_secs + 10)
    };
    assert!(
        took < bound,
        "the write waited {took:?} (lease {lease_secs} s)"
    );
    assert_eq!(s["dirty"], false, "{s}");
    assert_eq!(sidecar(&cache)["dirty"], false);
    let (remote_ids, ok) = w.read_remote("a.db", |r| (ids(r), integrity(r)));
    assert_eq!(ok, "ok");
    assert_eq!(remote_ids, (1..=K + 1).collect::<BTreeSet<_>>());
}

/// A process killed at a random point of an autocommit loop: every acknowledged
/// commit is in the remote, the remote is intact, and the cache recovers by itself.
/// Three rounds (two on Azure), each continuing the same cache, to hit different
/// points. On Azure the next round waits out the lease the killed process most likely
/// held mid-commit (up to 15 s), hence one round fewer there.
fn sigkill_mid_commit_loop(w: &World) {
    const ACKS: usize = 30;
    let rounds = if w.is_local() { 3 } else { 2 };
    let lease_secs = crash_lease_secs(w);
    let extra = format!("&lease_secs={lease_secs}");
    let uri = w.uri("h1", "a.db", &extra);
    {
        let c = open(&uri);
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, payload TEXT)")
            .unwrap();
    }

    let mut acked: BTreeSet<i64> = BTreeSet::new();
    let mut next = 1i64;
    for round in 0..rounds {
        let mut child = Proc::spawn(
            &format!("committer-{round}"),
            "commit_loop",
            &uri,
            &[("MB_START", next.to_string())],
        );
        let mut this_round = 0;
        while this_round < ACKS + round {
            let m = child.expect("ACK", Duration::from_secs(lease_secs + 30));
            acked.insert(m["ACK ".len()..].trim().parse().unwrap());
            this_round += 1;
        }
        thread::sleep(Duration::from_micros(fastrand::u64(0..3000)));
        child.sigkill();
        for m in child.drain() {
            if let Some(id) = m.strip_prefix("ACK ") {
                acked.insert(id.trim().parse().unwrap());
            } else {
                panic!("unexpected message {m}\n{}", child.output());
            }
        }
        let last_ack = *acked.last().unwrap();

        // Outside a batch a COMMIT returns only after its upload: every acknowledged
        // id is in the remote already, before anything reopens the cache.
        let before = w.read_remote("a.db", ids);
        let missing: Vec<_> = acked.difference(&before).collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged ids not in the remote right after the kill: {missing:?}"
        );

        let c = open(&uri);
        let cached = ids(&c);
        let mut s = status(&c);
        if s["dirty"] == true {
            flush_once_the_lease_is_free(&c, Duration::from_secs(lease_secs + 20));
            s = status(&c);
        }
        assert_eq!(s["dirty"], false, "round {round}: status after reopen: {s}");
        assert_eq!(integrity(&c), "ok", "round {round}: cache integrity");

        let (remote_ids, ok) = w.read_remote("a.db", |r| (ids(r), integrity(r)));
        assert_eq!(ok, "ok", "round {round}: remote integrity");
        let lost: Vec<_> = acked.difference(&remote_ids).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged ids missing from the remote: {lost:?}"
        );
        let max = *remote_ids.last().unwrap();
        assert!(
            max == last_ack || max == last_ack + 1,
            "round {round}: remote ends at {max}, last acknowledged {last_ack}"
        );
        assert_eq!(
            remote_ids,
            (1..=max).collect::<BTreeSet<_>>(),
            "round {round}: remote ids are not contiguous"
        );
        assert_eq!(
            cached, remote_ids,
            "round {round}: the reopened cache differs from the remote"
        );
        println!(
            "round {round}: {} acked, remote up to {max}, status {s}",
            acked.len()
        );
        next = max + 1;
    }
}

/// One host holds the lease in a batch; another host's write fails with BUSY at
/// busy_timeout 0 and succeeds with a busy timeout once the batch ended.
fn lease_contention_between_processes(w: &World) {
    const HOLD_MS: u64 = 2000;
    let c = w.open("p", "a.db");
    c.execute_batch("CREATE TABLE t(who TEXT)").unwrap();

    let mut a = Proc::spawn(
        "holder",
        "batch_hold",
        &w.uri("a", "a.db", ""),
        &[("MB_HOLD_MS", HOLD_MS.to_string()), ("MB_WHO", "a".into())],
    );
    a.expect("READY", Duration::from_secs(15));
    let ready = Instant::now();

    c.busy_timeout(Duration::ZERO).unwrap();
    let err = c
        .execute("INSERT INTO t(who) VALUES ('p')", [])
        .expect_err("the lease is held by the other process: the insert must fail");
    let early = ready.elapsed();
    assert!(is_busy(&err), "expected SQLITE_BUSY, got {err:?}");
    assert!(err.to_string().contains("database is locked"), "{err}");
    assert!(
        early < Duration::from_millis(HOLD_MS),
        "the busy answer took {early:?}, longer than the holder's batch"
    );
    assert!(c.is_autocommit());

    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.execute("INSERT INTO t(who) VALUES ('p')", [])
        .unwrap_or_else(|e| {
            panic!(
                "insert with busy_timeout 10 s: {e}; status {}\n{}",
                status(&c),
                a.output()
            )
        });
    let waited = ready.elapsed();
    println!(
        "second insert done {waited:?} after READY; status {}",
        status(&c)
    );
    assert!(
        waited >= Duration::from_millis(HOLD_MS / 2),
        "the insert succeeded after {waited:?}, while the holder's batch should still be open"
    );
    let ended = a.expect("ENDED", Duration::from_secs(10));
    println!("holder: {ended}");
    a.wait_success(Duration::from_secs(10));

    let s = status(&c);
    assert_eq!(s["dirty"], false, "{s}");
    let (mut who, ok) = w.read_remote("a.db", |r| (who(r), integrity(r)));
    who.sort();
    assert_eq!(ok, "ok");
    assert_eq!(who, ["a", "p"]);
}

fn who(c: &Connection) -> Vec<String> {
    let mut stmt = c.prepare("SELECT who FROM t ORDER BY rowid").unwrap();
    let who = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    who
}

backend_tests!(
    two_processes_one_cache,
    two_hosts_interleaved_writers_no_lost_update,
    two_hosts_interleaved_writers_threads,
    sigkill_inside_batch_commits_reach_remote_on_next_open,
    sigkill_inside_batch_with_another_process_on_the_same_cache,
    sigkill_mid_commit_loop,
    lease_contention_between_processes,
);

// ---------------------------------------------------------------------------
// A writer paused past its lease

/// The lease of the paused writer: Azure's shortest, on both backends.
const PAUSE_LEASE_SECS: u64 = 15;

/// A writer (process A, another host) begins a batch, holding the lease for
/// `PAUSE_LEASE_SECS`, commits locally and is stopped with SIGSTOP: its lease
/// renewal thread stops with it. While the lease is valid the other host cannot
/// write; once it has expired, it writes. A then resumes and ends its batch: the
/// upload must fail with a clear error (the lease is lost, the remote moved), the
/// remote must keep exactly the other host's version, and A's cache recovers at its
/// next open, its batch commit kept aside as a conflict copy.
fn a_writer_paused_past_its_lease(w: &World) {
    let tag = w.backend_name();
    let go = w.dir.path().join("go");
    {
        let b = w.open("b", "a.db");
        b.execute_batch("CREATE TABLE t(who TEXT)").unwrap();
    }
    let uri_a = w.uri("a", "a.db", &format!("&lease_secs={PAUSE_LEASE_SECS}"));
    let mut a = Proc::spawn(
        &format!("paused-{tag}"),
        "batch_pause",
        &uri_a,
        &[("MB_GO_FILE", go.display().to_string())],
    );
    a.expect("READY", Duration::from_secs(30));
    a.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let before = w.remote_bytes("a.db").unwrap();

    // The paused writer is alive: its lease holds while it is valid.
    let b = w.open("b", "a.db");
    b.busy_timeout(Duration::ZERO).unwrap();
    let err = b
        .execute("INSERT INTO t(who) VALUES ('too early')", [])
        .expect_err("the paused writer's lease is still valid");
    assert!(is_busy(&err), "{tag}: {err}");
    assert!(w.remote_bytes("a.db").unwrap() == before, "{tag}");

    // Past its expiry (at most PAUSE_LEASE_SECS after the stop: the last renewal
    // came before it), with a margin, the other host writes.
    let past = stopped + Duration::from_secs(PAUSE_LEASE_SECS + 2);
    thread::sleep(past.saturating_duration_since(Instant::now()));
    b.busy_timeout(Duration::from_secs(10)).unwrap();
    b.execute("INSERT INTO t(who) VALUES ('other host')", [])
        .unwrap_or_else(|e| {
            panic!(
                "{tag}: the other host's write after the lease expired: {e}; status {}\n{}",
                status(&b),
                a.output()
            )
        });
    println!(
        "{tag}: the other host wrote {:?} after the pause",
        stopped.elapsed()
    );
    drop(b);
    let after_b = w.remote_bytes("a.db").unwrap();
    assert!(
        after_b != before,
        "{tag}: the other host's write is not in the remote"
    );

    // Resume the paused writer and let it end its batch.
    std::fs::write(&go, b"go").unwrap();
    a.signal(libc::SIGCONT);
    let end = a.expect("END", Duration::from_secs(60));
    println!("{tag}: {end}");
    let (outcome, json) = end.split_once(" status=").expect("END carries the status");
    let s: Value = serde_json::from_str(json).expect("status JSON");
    assert!(
        outcome.starts_with("END failed:"),
        "{tag}: the resumed writer's batch end must fail: {end}"
    );
    let last_error = s["last_error"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        ["lease", "changed", "condition"]
            .iter()
            .any(|word| last_error.contains(word)),
        "{tag}: the error does not say the lease was lost or the remote moved: {end}"
    );
    assert_eq!(s["lease_held"], false, "{tag}: {s}");
    a.wait_success(Duration::from_secs(30));

    // Nothing of the paused writer reached the remote, before or after it exited.
    assert!(
        w.remote_bytes("a.db").unwrap() == after_b,
        "{tag}: the remote changed after the paused writer resumed"
    );
    let (who_remote, ok) = w.read_remote("a.db", |r| (who(r), integrity(r)));
    assert_eq!(ok, "ok", "{tag}");
    assert_eq!(who_remote, ["other host"], "{tag}");

    // The paused writer's cache recovers: it follows the remote, and its batch's
    // local commit is kept aside rather than lost.
    let c = open(&uri_a);
    assert_eq!(who(&c), ["other host"], "{tag}: the paused writer's cache");
    let s = status(&c);
    assert_eq!(s["dirty"], false, "{tag}: {s}");
    let conflicts = s["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{tag}: {s}");
    let kept = Connection::open(conflicts[0].as_str().unwrap()).unwrap();
    assert_eq!(who(&kept), ["paused"], "{tag}: the conflict copy");
    drop(c);
    assert!(
        w.remote_bytes("a.db").unwrap() == after_b,
        "{tag}: the recovery changed the remote"
    );
}

/// [`a_writer_paused_past_its_lease`] on both backends at once (each waits out a
/// 15 s lease): the local backend, and Azurite with the `azure` feature.
#[test]
fn a_writer_paused_past_its_lease_on_every_backend() {
    thread::scope(|scope| {
        let local = scope.spawn(|| a_writer_paused_past_its_lease(&World::local()));
        #[cfg(feature = "azure")]
        let azurite = scope.spawn(|| {
            if let Some(w) = World::azurite() {
                a_writer_paused_past_its_lease(&w);
            }
        });
        let mut failed = Vec::new();
        if local.join().is_err() {
            failed.push("local");
        }
        #[cfg(feature = "azure")]
        if azurite.join().is_err() {
            failed.push("azurite");
        }
        assert!(
            failed.is_empty(),
            "failed on {failed:?} (see the panics above)"
        );
    });
}
