//! README guarantees that had no test of their own (issue 16): each test observes the
//! promised code or state directly. docs/GUARANTEES.md maps every README sentence to
//! its test.

use common::child::{self, Proc};
use common::memworld::MemWorld;
use common::*;

use std::time::{Duration, Instant};

use managedblob::internal::backend::memory::Op;
use managedblob::internal::backend::BackendErrorKind;
use rusqlite::ErrorCode;

/// SQLITE_BUSY_SNAPSHOT (SQLITE_BUSY | 2 << 8).
const BUSY_SNAPSHOT: i32 = 5 | (2 << 8);

/// The extended result code of a failed statement.
fn extended_code(e: &rusqlite::Error) -> Option<i32> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code),
        _ => None,
    }
}

/// The values of `t.x`, in order.
fn x_values(c: &rusqlite::Connection) -> Vec<i64> {
    column(c, "SELECT x FROM t ORDER BY x")
}

fn table_exists(c: &rusqlite::Connection, name: &str) -> bool {
    c.query_row(
        "SELECT count(*) FROM sqlite_master WHERE name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        == 1
}

/// Roles of the child processes this file spawns.
#[test]
fn child_main() {
    child::child_main(&[("torn_sidecar_write", torn_sidecar_write)]);
}

// ---------------------------------------------------------------------------
// No lost update: the codes

/// A creation race that only shows at COMMIT (the blob this writer was about to
/// create exists by then; here the lease look-ups say "not found" so the write starts
/// as a creation, and the blob exists at COMMIT) fails the COMMIT with
/// SQLITE_BUSY_SNAPSHOT, and the transaction is rolled back: the connection is back
/// in autocommit, the cache and the remote hold nothing of it, and a retry works.
#[test]
fn a_conflict_at_commit_is_busy_snapshot_and_rolls_back() {
    let m = MemWorld::with_defaults("g-snap", "&retry_base_ms=1");
    let c = m.open("h1", "");
    // Lease acquisition: "no blob" twice around the (real) creation of the empty blob,
    // so the write goes on as the blob's creator, without a lease.
    m.backend
        .fail_next(Op::AcquireLease, BackendErrorKind::NotFound, 2);
    c.execute_batch("BEGIN IMMEDIATE; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let err = c.execute_batch("COMMIT").unwrap_err();
    assert_eq!(extended_code(&err), Some(BUSY_SNAPSHOT), "{err}");
    assert!(
        c.is_autocommit(),
        "the transaction is rolled back, not left open"
    );
    assert!(!table_exists(&c, "t"), "the cache holds nothing of it");
    assert!(
        m.remote_bytes().is_empty(),
        "the remote holds nothing of it"
    );
    let s = status(&c);
    assert!(
        s["last_error"].as_str().unwrap().contains("first"),
        "last_error says why: {s}"
    );
    // Retry it: the same transaction goes through on the blob as it is now.
    c.execute_batch("BEGIN IMMEDIATE; CREATE TABLE t(x); INSERT INTO t VALUES (1); COMMIT;")
        .unwrap();
    assert_eq!(m.remote_query::<i64>("SELECT count(*) FROM t"), 1);
}

/// The README's wider reading: a conflict that only shows at COMMIT because the
/// remote moved under this writer (its lease expired while it was paused and another
/// host committed) is SQLITE_BUSY_SNAPSHOT too, and rolled back.
#[test]
fn a_remote_moved_under_an_expired_lease_is_busy_snapshot_at_commit() {
    let m = MemWorld::with_defaults("g-moved", "&retry_base_ms=1&retry_attempts=2");
    let a = m.one_row("h1", "");
    let b = m.open("h2", "");
    a.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (2);")
        .unwrap();
    m.backend.expire_lease("m.db");
    b.execute("INSERT INTO t VALUES (3)", []).unwrap();
    let err = a.execute_batch("COMMIT").unwrap_err();
    assert!(a.is_autocommit(), "rolled back");
    assert_eq!(
        x_values(&a),
        vec![1, 3],
        "the cache holds nothing of it, and the lost race made the next read take \
         the new version"
    );
    assert_eq!(
        m.remote_ids_of_x(),
        vec![1, 3],
        "the remote holds b's commit only"
    );
    assert_eq!(extended_code(&err), Some(BUSY_SNAPSHOT), "{err}");
}

/// A writer whose snapshot is stale gets SQLITE_BUSY at its first write (not at
/// COMMIT: nothing of the statement ran), and its retry runs on the new version.
#[test]
fn a_stale_writer_gets_busy_at_its_first_write_and_retries_on_the_new_version() {
    let m = MemWorld::with_defaults("g-stale", "&retry_base_ms=1");
    let a = m.one_row("h1", "");
    let b = m.open("h2", "&staleness_ms=600000");
    assert_eq!(count(&b, "t"), 1);
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    // b's write must meet the moved remote, not a's lease kept warm after its commit.
    wait::until_lease_released(&a);
    b.busy_timeout(Duration::ZERO).unwrap();
    let uploads_before = m.backend.calls(Op::CommitBlocks) + m.backend.calls(Op::Upload);
    let err = b.execute("INSERT INTO t VALUES (3)", []).unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy),
        "{err}"
    );
    assert_eq!(
        extended_code(&err),
        Some(5),
        "plain SQLITE_BUSY at the write: {err}"
    );
    assert!(b.is_autocommit());
    assert_eq!(
        m.backend.calls(Op::CommitBlocks) + m.backend.calls(Op::Upload),
        uploads_before,
        "nothing was uploaded"
    );
    assert!(
        !m.backend.lease_holder_exists("m.db"),
        "the lease was given back"
    );
    // The retry takes the new version (forced refresh) and writes on it.
    b.execute("INSERT INTO t VALUES (3)", []).unwrap();
    assert_eq!(x_values(&b), vec![1, 2, 3]);
    assert_eq!(m.remote_ids_of_x(), vec![1, 2, 3], "no lost update");
}

/// A read transaction that later writes gets SQLITE_BUSY without waiting when the
/// remote moved: SQLite's deadlock rule skips the busy handler inside an open read
/// transaction (the handler is installed and is never called). `BEGIN IMMEDIATE`
/// waits and writes.
#[test]
fn a_read_transaction_that_later_writes_is_busy_without_waiting() {
    let m = MemWorld::with_defaults("g-readwrite", "&retry_base_ms=1");
    let a = m.one_row("h1", "");
    let mut b = m.open("h2", "&staleness_ms=600000");
    b.execute_batch("BEGIN").unwrap();
    assert_eq!(count(&b, "t"), 1);
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    handoff::on_first_busy(&mut b, || {});
    let err = b.execute("INSERT INTO t VALUES (3)", []).unwrap_err();
    assert!(is_busy(&err), "{err}");
    assert_eq!(handoff::busy_calls(), 0, "the busy handler was skipped");
    b.execute_batch("ROLLBACK").unwrap();
    b.busy_timeout(Duration::from_secs(10)).unwrap();
    b.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (3); COMMIT;")
        .unwrap();
    assert_eq!(m.remote_ids_of_x(), vec![1, 2, 3]);
}

// ---------------------------------------------------------------------------
// Leases

/// A live lease is renewed in the background every third of `lease_secs`: a batch
/// holds it across three renewals (past the lease's own duration) while another
/// host's every write attempt stays SQLITE_BUSY; the batch end releases it and the
/// other host writes. (`lease_secs=15`, the smallest the setting allows.)
#[test]
fn a_live_lease_is_renewed_past_its_duration_while_another_host_stays_busy() {
    let m = MemWorld::with_defaults("g-renew", "&lease_secs=15&retry_base_ms=1");
    let a = m.one_row("h1", "");
    let b = m.open("h2", "");
    b.busy_timeout(Duration::ZERO).unwrap();
    pragma(&a, "PRAGMA managedblob_batch=begin").unwrap();
    let taken = Instant::now();
    let acquired = requests(&a, "lease_acquire");
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    let mut refused = 0;
    while m.backend.calls(Op::RenewLease) < 3 {
        let err = b.execute("INSERT INTO t VALUES (3)", []).unwrap_err();
        assert!(
            is_busy(&err),
            "another host writes under a live lease: {err}"
        );
        refused += 1;
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            taken.elapsed() < Duration::from_secs(120),
            "three renewals (due by 15 s) never came"
        );
    }
    // Three renewals at 5, 10 and 15 s: the lease outlived its 15 s duration.
    assert!(m.backend.lease_holder_exists("m.db"));
    let err = b.execute("INSERT INTO t VALUES (3)", []).unwrap_err();
    assert!(is_busy(&err), "still refused after three renewals: {err}");
    assert!(refused >= 3, "the other host tried throughout ({refused})");
    let s = status(&a);
    assert_eq!(s["lease_held"], true, "{s}");
    assert!(s["requests"]["lease_renew"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(
        s["requests"]["lease_acquire"], acquired,
        "the same lease, renewed, not taken again: {s}"
    );
    pragma(&a, "PRAGMA managedblob_batch=end").unwrap();
    assert!(
        !m.backend.lease_holder_exists("m.db"),
        "released at the end"
    );
    // b's snapshot is stale now (the batch uploaded): its busy handler retries on
    // the new version.
    b.busy_timeout(Duration::from_secs(10)).unwrap();
    b.execute("INSERT INTO t VALUES (3)", []).unwrap();
    assert_eq!(m.remote_ids_of_x(), vec![1, 2, 3]);
}

// ---------------------------------------------------------------------------
// Crash recovery: the sidecar

/// Child: a sidecar write that the file-size limit cuts off after 40 bytes (a torn
/// write), then exit. The sidecar it tries to write marks the cache dirty.
fn torn_sidecar_write(_uri: &str) {
    let path = std::path::PathBuf::from(child::env("MB_SIDECAR"));
    let mut s = managedblob::internal::sidecar::load(&path)
        .unwrap()
        .unwrap();
    s.dirty = true;
    s.generation += 1000;
    limit_file_size(40);
    let result = managedblob::internal::sidecar::store(&path, &s);
    child::say(&format!(
        "STORE {}",
        if result.is_ok() { "ok" } else { "failed" }
    ));
}

/// Limit this (child) process's file size and ignore SIGXFSZ, so a write past the
/// limit fails with EFBIG instead of killing the process.
fn limit_file_size(bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain libc calls on this (child) process, with a valid rlimit.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}

/// The sidecar is written atomically: a write torn after 40 bytes (the file-size limit
/// of a child process) leaves the previous sidecar whole, and the next open recovers
/// from it by itself (clean, the same data).
#[test]
fn a_torn_sidecar_write_leaves_the_previous_sidecar_and_the_cache_recovers() {
    let w = World::local();
    drop(w.one_row("h1", "a.db"));
    let cache = w.cache("h1", "a.db");
    let path = managedblob::internal::sidecar::path_for(&cache);
    let before = std::fs::read(&path).unwrap();
    assert!(before.len() > 40, "the write would be torn");
    let mut p = Proc::spawn(
        "torn",
        "torn_sidecar_write",
        "",
        &[("MB_SIDECAR", path.display().to_string())],
    );
    p.expect("STORE failed", Duration::from_secs(60));
    p.wait_success(Duration::from_secs(60));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the sidecar is the previous one, byte for byte"
    );
    let c = w.open("h1", "a.db");
    assert_eq!(count(&c, "t"), 1);
    let s = status(&c);
    assert_eq!(s["dirty"], false, "{s}");
    assert_eq!(s["in_flight"], "none", "{s}");
    assert_eq!(s["conflicts"].as_array().unwrap().len(), 0, "{s}");
    a_second_row_reaches_the_remote(&w, &c);
}

/// `c`, a connection of `w`'s blob `a.db` holding one row in `t`, still writes: a
/// second row reaches the remote.
fn a_second_row_reaches_the_remote(w: &World, c: &rusqlite::Connection) {
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(w.read_remote("a.db", |r| count(r, "t")), 2);
}

// ---------------------------------------------------------------------------
// Crash recovery: the conflict copy

/// Local commits that lost a race are kept as `<db>.conflict-<utc>`, reported in
/// `last_error` (naming the copy) and in `conflicts`.
#[test]
fn a_conflict_copy_is_named_in_last_error_and_conflicts() {
    let m = MemWorld::with_defaults("g-conflict", "&retry_base_ms=1");
    {
        let a = m.one_row("h1", "");
        pragma(&a, "PRAGMA managedblob_batch=begin").unwrap();
        a.execute("INSERT INTO t VALUES (2)", []).unwrap();
        // The batch's lease lapses and another host commits; the batch end fails.
        m.backend.expire_lease("m.db");
        let b = m.open("h2", "");
        b.execute("INSERT INTO t VALUES (3)", []).unwrap();
        assert!(pragma(&a, "PRAGMA managedblob_batch=end").is_err());
    }
    let c = m.open("h1", "");
    assert_eq!(x_values(&c), vec![1, 3], "the cache takes the remote");
    let s = status(&c);
    let conflicts = s["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{s}");
    let copy = conflicts[0].as_str().unwrap();
    assert!(copy.contains("m.db.conflict-"), "{copy}");
    let last = s["last_error"].as_str().unwrap();
    assert!(
        last.contains("conflict") && last.contains(copy),
        "last_error names the copy: {last}"
    );
    let kept = rusqlite::Connection::open(copy).unwrap();
    assert_eq!(
        x_values(&kept),
        vec![1, 2],
        "the lost batch commit is in the copy"
    );
}

// ---------------------------------------------------------------------------
// Limits

/// One cache file mirrors one blob: a process refuses to open the same cache for a
/// second remote, with a message that says so, and the first remote's connection is
/// untouched.
#[test]
fn a_process_refuses_to_open_one_cache_for_two_remotes() {
    let w = World::local();
    let first = w.one_row("h1", "a.db");
    let other = w.dir.path().join("other-remote");
    std::fs::create_dir_all(&other).unwrap();
    let uri = common::uri(&w.cache("h1", "a.db"), &other, "");
    let err = open_error(&uri, "the same cache opened for a second remote");
    let text = err.to_string();
    assert!(
        text.contains("already open in this process") && text.contains("another remote"),
        "{text}"
    );
    assert!(
        std::fs::read_dir(&other).unwrap().next().is_none(),
        "nothing was written to the second remote"
    );
    assert_eq!(count(&first, "t"), 1);
    a_second_row_reaches_the_remote(&w, &first);
}

/// A cache that holds no version cannot open while the remote is unreachable: the
/// open fails with the cause, and no cache file is left behind. (A warm cache opens:
/// `a_warm_cache_opens_while_the_remote_is_unreachable` in regressions.rs.)
#[test]
fn an_empty_cache_cannot_open_while_the_remote_is_unreachable() {
    let m = MemWorld::with_defaults("g-offline", "&retry_base_ms=1&retry_attempts=1");
    m.one_row_then_offline();
    let uri = m.uri("h2", "");
    let err = open_error(
        &uri,
        "an empty cache served while the remote is unreachable",
    );
    assert!(err.to_string().contains("injected"), "the cause: {err}");
    assert!(
        !m.cache("h2").exists(),
        "no empty cache file is left behind"
    );
    assert!(
        managedblob::internal::sidecar::load(&managedblob::internal::sidecar::path_for(
            &m.cache("h2")
        ))
        .unwrap()
        .is_none(),
        "no sidecar either"
    );
}

// ---------------------------------------------------------------------------
// Pragmas

/// `PRAGMA managedblob_status` is one JSON row with exactly the fields the README
/// lists, and `requests` with exactly its counters.
#[test]
fn status_has_exactly_the_fields_the_readme_lists() {
    let m = MemWorld::new("g-status");
    let c = m.one_row("h1", "");
    let mut rows = 0;
    let text: String = {
        let mut stmt = c.prepare("PRAGMA managedblob_status").unwrap();
        let mut q = stmt.query([]).unwrap();
        let mut text = String::new();
        while let Some(row) = q.next().unwrap() {
            rows += 1;
            text = row.get(0).unwrap();
        }
        text
    };
    assert_eq!(rows, 1, "one row");
    let s: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let mut want: Vec<&str> = vec![
        "remote",
        "blob",
        "etag",
        "dirty",
        "lease_held",
        "batch_depth",
        "generation",
        "in_flight",
        "waiting_on",
        "conflicts",
        "last_error",
        "last_error_at",
        "last_ok_at",
        "requests",
        "fetch",
    ];
    want.sort();
    assert_eq!(keys(&s), want, "{s}");
    // `requests` has the HTTP request counters (also under `http`) and more.
    let mut http: Vec<&str> = vec![
        "stat",
        "download",
        "upload",
        "lease_acquire",
        "lease_renew",
        "lease_release",
        "block_list",
        "stage_block",
        "commit_blocks",
        "read_range",
        "waiter",
        "total",
    ];
    let mut want = http.clone();
    want.extend([
        "retries",
        "bytes_up",
        "bytes_down",
        "chunks_up",
        "chunks_down",
        "versions_up",
        "versions_down",
        "http",
    ]);
    want.sort();
    assert_eq!(keys(&s["requests"]), want, "{s}");
    http.sort();
    assert_eq!(keys(&s["requests"]["http"]), http, "{s}");
    assert_eq!(s["requests"]["versions_up"], 2, "CREATE and INSERT: {s}");
}

trait RemoteRows {
    fn remote_ids_of_x(&self) -> Vec<i64>;
}

impl RemoteRows for MemWorld {
    /// The remote's `t.x` values, in order.
    fn remote_ids_of_x(&self) -> Vec<i64> {
        self.remote(x_values)
    }
}
