//! Deferred uploads (`flush_ms`): a commit returns once it is durable in the cache,
//! the process keeps the lease, and the commits of the next `flush_ms` are uploaded
//! together by the store's flusher; `PRAGMA managedblob_flush` and the last close
//! upload at once; a failed upload keeps the cache dirty and is retried; a process
//! killed with deferred commits loses nothing the next open on its cache can upload.
//! Counting and ordering only: every wait polls with a generous bound.

use common::child::{self, Proc};
use common::memworld::MemWorld;
use common::*;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use managedblob::internal::backend::memory::Op;
use managedblob::internal::backend::BackendErrorKind;
use rusqlite::Connection;

/// A deferral that never comes due within a test: only a flush or a close uploads.
const FOREVER: &str = "&flush_ms=3600000";
/// How long any wait for the flusher may take before the test fails.
const BOUND: Duration = Duration::from_secs(60);
/// Commits per test.
const K: i64 = 20;

#[test]
fn child_main() {
    child::child_main(&[("defer_then_sleep", defer_then_sleep)]);
}

/// `defer_then_sleep`: `MB_K` autocommits with a deferral that never comes due, say
/// READY (every COMMIT returned OK) and sleep until killed.
fn defer_then_sleep(uri: &str) {
    let k: i64 = child::env_num("MB_K");
    let c = open(uri);
    insert(&c, 1..=k);
    let s = status(&c);
    assert_eq!(s["dirty"], true, "{s}");
    assert_eq!(s["lease_held"], true, "{s}");
    child::say(&format!("READY status={s}"));
    child::sleep_while_parent_alive(Duration::from_secs(60));
    panic!("defer_then_sleep was not killed");
}

/// One autocommit per id.
fn insert(c: &Connection, ids: impl IntoIterator<Item = i64>) {
    for id in ids {
        c.execute("INSERT INTO t(id) VALUES (?1)", [id])
            .unwrap_or_else(|e| panic!("insert {id}: {e}"));
    }
}

fn ids(c: &Connection) -> BTreeSet<i64> {
    column(c, "SELECT id FROM t")
}

/// Host `h1` of `w` with table `t(id)` created (and uploaded: COMMIT means uploaded
/// for the schema) before the connection with `extra` opens.
fn with_table(w: &World, extra: &str) -> (String, Connection) {
    drop({
        let c = w.open("h1", "a.db");
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY)")
            .unwrap();
        c
    });
    let uri = w.uri("h1", "a.db", extra);
    (uri.clone(), open(&uri))
}

/// What another host sees after a refresh.
fn seen_elsewhere(w: &World) -> BTreeSet<i64> {
    let c = w.open("h2", "a.db");
    pragma(&c, "PRAGMA managedblob_refresh").unwrap();
    ids(&c)
}

/// Poll `done` until it holds; fail after [`BOUND`].
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < BOUND, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Deferred commits stay in the cache, with the lease held and the upload pending,
/// until `PRAGMA managedblob_flush` uploads them all in one version.
fn commits_wait_in_the_cache_until_the_flush_pragma(w: &World) {
    let (_, c) = with_table(w, FOREVER);
    let before = uploads(&status(&c));
    insert(&c, 1..=K);
    let s = status(&c);
    assert_eq!(uploads(&s), before, "no commit was uploaded: {s}");
    assert_eq!(s["dirty"], true, "{s}");
    assert_eq!(s["lease_held"], true, "{s}");
    assert!(s["flush_due_ms"].as_u64().is_some(), "{s}");
    assert_eq!(ids(&c).len() as i64, K, "the commits are readable here");
    assert!(
        seen_elsewhere(w).is_empty(),
        "nothing reached the remote yet"
    );

    pragma(&c, "PRAGMA managedblob_flush").unwrap();
    let s = status(&c);
    assert_eq!(uploads(&s), before + 1, "one upload for {K} commits: {s}");
    assert_eq!(s["dirty"], false, "{s}");
    assert_eq!(s["lease_held"], false, "{s}");
    assert!(s.get("flush_due_ms").is_none(), "{s}");
    assert_eq!(seen_elsewhere(w), (1..=K).collect());
}

/// Without a flush, the flusher uploads the commits of a window together: far
/// fewer uploads than commits, and another host sees them all.
fn the_flusher_uploads_a_window_of_commits_together(w: &World) {
    let (_, c) = with_table(w, "&flush_ms=2000");
    let before = uploads(&status(&c));
    insert(&c, 1..=K);
    until("the flusher uploaded the commits", || {
        status(&c)["dirty"] == false
    });
    let s = status(&c);
    let uploaded = uploads(&s) - before;
    assert!(
        (1..=(K as u64) / 4).contains(&uploaded),
        "{uploaded} uploads for {K} commits: {s}"
    );
    until("the lease was released", || {
        status(&c)["lease_held"] == false
    });
    assert_eq!(seen_elsewhere(w), (1..=K).collect());
}

/// The last close uploads deferred commits at once.
fn close_uploads_at_once(w: &World) {
    let (_, c) = with_table(w, FOREVER);
    insert(&c, 1..=K);
    drop(c);
    assert_eq!(seen_elsewhere(w), (1..=K).collect());
    assert_eq!(sidecar(&w.cache("h1", "a.db"))["dirty"], false);
}

/// An explicit batch inside `flush_ms` mode works as without it: its end uploads
/// everything, the deferred commits before it included.
fn an_explicit_batch_takes_over_deferred_commits(w: &World) {
    let (_, c) = with_table(w, FOREVER);
    let before = uploads(&status(&c));
    insert(&c, 1..=3);
    pragma(&c, "PRAGMA managedblob_batch=begin").unwrap();
    insert(&c, 4..=K);
    assert_eq!(status(&c)["batch_depth"], 1);
    pragma(&c, "PRAGMA managedblob_batch=end").unwrap();
    let s = status(&c);
    assert_eq!(uploads(&s), before + 1, "{s}");
    assert_eq!(s["dirty"], false, "{s}");
    assert_eq!(s["lease_held"], false, "{s}");
    assert_eq!(seen_elsewhere(w), (1..=K).collect());
}

/// With `flush_ms=0` (the default) COMMIT means uploaded, one version per commit;
/// with no linger the lease goes back in each commit too, as before both settings.
fn flush_ms_zero_uploads_every_commit(w: &World) {
    let (_, c) = with_table(w, "&flush_ms=0&lease_linger_ms=0");
    let before = uploads(&status(&c));
    for id in 1..=5 {
        insert(&c, [id]);
        let s = status(&c);
        assert_eq!(uploads(&s), before + id as u64, "{s}");
        assert_eq!(s["dirty"], false, "{s}");
        assert_eq!(s["lease_held"], false, "{s}");
        assert!(s.get("flush_due_ms").is_none(), "{s}");
    }
    assert_eq!(seen_elsewhere(w), (1..=5).collect());
}

/// A process killed after its deferred commits returned, before any flush: the
/// cache holds them and is marked dirty; the next open on the same cache uploads
/// them (nothing acknowledged is lost on the same machine), taking the dead
/// process's lease back at once (the local lease names its owner; on Azure the
/// sidecar records it).
fn a_killed_process_loses_no_deferred_commit_on_this_machine(w: &World) {
    let lease_secs = if w.is_local() { 30 } else { 15 };
    let (_, c) = with_table(w, "");
    drop(c);
    let uri = w.uri("h1", "a.db", &format!("{FOREVER}&lease_secs={lease_secs}"));
    let mut child = Proc::spawn(
        "deferrer",
        "defer_then_sleep",
        &uri,
        &[("MB_K", K.to_string())],
    );
    println!("{}", child.expect("READY", Duration::from_secs(30)));
    child.sigkill();

    let cache = w.cache("h1", "a.db");
    assert!(
        seen_elsewhere(w).is_empty(),
        "nothing was uploaded before the kill"
    );
    assert_eq!(sidecar(&cache)["dirty"], true);

    let c = open(&w.uri("h1", "a.db", ""));
    assert_eq!(ids(&c), (1..=K).collect(), "the cache kept every commit");
    let s = status(&c);
    assert_eq!(s["dirty"], false, "the open uploaded them: {s}");
    assert_eq!(s["lease_held"], false, "{s}");
    assert_eq!(seen_elsewhere(w), (1..=K).collect());
}

backend_tests!(
    commits_wait_in_the_cache_until_the_flush_pragma,
    the_flusher_uploads_a_window_of_commits_together,
    close_uploads_at_once,
    an_explicit_batch_takes_over_deferred_commits,
    flush_ms_zero_uploads_every_commit,
    a_killed_process_loses_no_deferred_commit_on_this_machine,
    a_lone_connection_needs_no_busy_timeout,
);

/// One connection and no busy_timeout (the `sqlite3` shell, speedtest1): with
/// `flush_ms`, the flusher's moments on the cache (reading what to upload) and the
/// lease's comings and goings must never reach it as SQLITE_BUSY. Transactions of
/// 200 rows of 1000 bytes, each followed by a read, while the flusher uploads every
/// few of them.
fn a_lone_connection_needs_no_busy_timeout(w: &World) {
    let (_, c) = with_table(w, "&flush_ms=5");
    c.execute_batch("ALTER TABLE t ADD COLUMN b BLOB").unwrap();
    c.busy_timeout(Duration::ZERO).unwrap();
    let mut failures = Vec::new();
    for i in 0..100 {
        let write = c.execute_batch(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
             INSERT INTO t(b) SELECT randomblob(1000) FROM n;
             COMMIT;",
        );
        if let Err(e) = write {
            // The status says which part answered BUSY (a release in flight, an upload
            // that outlived the lease, ...): SQLite's message alone does not.
            let cause = status(&c)["last_error"].clone();
            failures.push(format!("write {i}: {e} (last_error: {cause})"));
            let _ = c.execute_batch("ROLLBACK");
        }
        if let Err(e) = c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)) {
            failures.push(format!("read {i}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert_eq!(ids(&c).len(), 100 * 200);
    pragma(&c, "PRAGMA managedblob_flush").unwrap();
    assert_eq!(seen_elsewhere(w).len(), 100 * 200);
}

/// A failed background upload keeps the cache dirty, the lease held and the error
/// in the status; a later retry uploads, without any call from the application.
#[test]
fn a_failed_deferred_upload_keeps_the_cache_dirty_and_is_retried() {
    let w = MemWorld::with_defaults("deferred", "&retry_base_ms=1&retry_attempts=1");
    drop({
        let c = w.open("h1", "");
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY)")
            .unwrap();
        c
    });
    let c = w.open("h1", "&flush_ms=20");
    w.backend
        .fail_next(Op::CommitBlocks, BackendErrorKind::Transient, 1_000_000);
    let failed_before = w.backend.calls(Op::CommitBlocks);
    insert(&c, 1..=K);
    until("two deferred uploads failed", || {
        w.backend.calls(Op::CommitBlocks) >= failed_before + 2
    });
    let s = status(&c);
    assert_eq!(s["dirty"], true, "{s}");
    assert_eq!(s["lease_held"], true, "{s}");
    assert!(s["last_error"].is_string(), "{s}");
    assert!(
        w.remote_ids().is_empty(),
        "a failed upload published nothing"
    );

    w.backend
        .fail_next(Op::CommitBlocks, BackendErrorKind::Transient, 0);
    until("a retry uploaded the commits", || {
        status(&c)["dirty"] == false
    });
    assert_eq!(w.remote_ids(), (1..=K).collect());
    until("the lease was released", || {
        status(&c)["lease_held"] == false
    });
}

/// Deferred commits whose lease lapsed while another host wrote are never forced
/// over the remote: the background upload is refused, the deferral ends with the
/// cache dirty and the lease given up, and the next check keeps the commits as a
/// conflict copy and takes the remote.
#[test]
fn deferred_commits_that_lost_the_race_become_a_conflict_copy() {
    let w = MemWorld::with_defaults("deferred-race", "&retry_base_ms=1&retry_attempts=1");
    drop(w.one_row("h1", ""));
    let a = w.open("h1", "&flush_ms=20");
    w.backend
        .fail_next(Op::CommitBlocks, BackendErrorKind::Transient, 1_000_000);
    let before = w.backend.calls(Op::CommitBlocks);
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    until("a deferred upload failed", || {
        w.backend.calls(Op::CommitBlocks) > before
    });
    // The lease lapses and another host (whole-file uploads: not failing) commits.
    w.backend.expire_lease("m.db");
    let b = w.open("h2", "&sync=full");
    b.execute("INSERT INTO t VALUES (3)", []).unwrap();
    w.backend
        .fail_next(Op::CommitBlocks, BackendErrorKind::Transient, 0);

    until("the deferral ended", || {
        status(&a).get("flush_due_ms").is_none()
    });
    let s = status(&a);
    assert_eq!(s["dirty"], true, "the commits stay in the cache: {s}");
    assert_eq!(s["lease_held"], false, "{s}");
    let remote: Vec<i64> = w.remote(|r| column(r, "SELECT x FROM t ORDER BY x"));
    assert_eq!(remote, vec![1, 3], "the remote was never overwritten");

    let here: Vec<i64> = column(&a, "SELECT x FROM t ORDER BY x");
    assert_eq!(here, vec![1, 3], "the next check takes the remote");
    let s = status(&a);
    let conflicts = s["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{s}");
    let kept = Connection::open(conflicts[0].as_str().unwrap()).unwrap();
    let kept: Vec<i64> = column(&kept, "SELECT x FROM t ORDER BY x");
    assert_eq!(kept, vec![1, 2], "the deferred commit is in the copy");
}

/// A table `t(id)` on host h1 of a new memory world, and a connection with
/// `flush_ms=20` (transient failures are not retried inside a call).
fn deferring(tag: &str) -> (MemWorld, Connection) {
    let w = MemWorld::with_defaults(tag, "&retry_base_ms=1&retry_attempts=1");
    drop({
        let c = w.open("h1", "");
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY)")
            .unwrap();
        c
    });
    let c = w.open("h1", "&flush_ms=20");
    (w, c)
}

/// The background upload runs without the cache's lock or the store's mutex: while
/// its Put Block List hangs in the network, the application reads and commits with
/// busy_timeout=0 and never sees SQLITE_BUSY. Its commits go with the next upload.
#[test]
fn a_writer_goes_on_committing_while_deferred_commits_upload() {
    let (w, c) = deferring("deferred-bg");
    c.busy_timeout(Duration::ZERO).unwrap();
    let gate = w.backend.hold(Op::CommitBlocks);
    insert(&c, 1..=5);
    assert!(
        gate.wait_for_call(BOUND),
        "the background upload reached Put Block List"
    );
    insert(&c, 6..=10);
    assert_eq!(ids(&c), (1..=10).collect(), "reads go on too");
    let s = status(&c);
    assert_eq!(s["dirty"], true, "{s}");
    assert!(w.remote_ids().is_empty(), "the first upload is still held");
    gate.open();
    until("every commit was uploaded", || status(&c)["dirty"] == false);
    assert_eq!(w.remote_ids(), (1..=10).collect());
    let s = status(&c);
    assert!(s["conflicts"].as_array().unwrap().is_empty(), "{s}");
    assert!(s["requests"]["commit_blocks"].as_u64().unwrap() >= 2, "{s}");
}

/// A background upload that landed although its reply was lost (as after a crash
/// between the two), while later commits went on: the remote is recognised as that
/// upload (the sidecar recorded its block list), the later commits are uploaded on
/// top of it, and nothing becomes a conflict copy.
#[test]
fn a_background_upload_whose_reply_was_lost_is_built_on_not_taken_as_a_conflict() {
    let (w, c) = deferring("deferred-lost-reply");
    c.busy_timeout(BOUND).unwrap();
    let gate = w.backend.hold(Op::CommitBlocks);
    insert(&c, 1..=5);
    assert!(
        gate.wait_for_call(BOUND),
        "the background upload is in flight"
    );
    let recorded = sidecar_of(&w.cache("h1")).unwrap();
    assert!(
        recorded["uploading"]["blocks"].is_array(),
        "the upload is recorded before it is sent: {recorded}"
    );
    insert(&c, 6..=10);
    w.backend.land_then_fail_next_upload();
    gate.open();
    until("every commit was uploaded", || {
        let s = status(&c);
        s["dirty"] == false && w.remote_ids() == (1..=10).collect()
    });
    let s = status(&c);
    assert!(s["conflicts"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(ids(&c), (1..=10).collect());
    let side = sidecar_of(&w.cache("h1")).unwrap();
    assert!(
        side.get("uploading").is_none(),
        "the record is gone: {side}"
    );
}
