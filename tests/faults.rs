//! The state machine driven through an in-memory backend that injects faults:
//! retries, terminal failures, lease trouble, and uploads whose reply was lost.

use common::*;

use std::collections::BTreeSet;
use std::time::Duration;

use common::memworld::MemWorld;
use managedblob::internal::backend::memory::Op;
use managedblob::internal::backend::{Backend, BackendErrorKind};

/// A fresh memory world (quick retries) and host h1's connection with `extra`
/// settings, on which table `t(id)` was created.
fn world_with_table(tag: &str, extra: &str) -> (MemWorld, rusqlite::Connection) {
    let w = MemWorld::with_defaults(tag, "&retry_base_ms=1");
    let c = w.open("h1", extra);
    c.execute("CREATE TABLE t(id)", []).unwrap();
    (w, c)
}

/// Compare two images without printing them.
fn assert_same_bytes(local: &[u8], remote: &[u8]) {
    let first_difference = local.iter().zip(remote).position(|(a, b)| a != b);
    assert!(
        local.len() == remote.len() && first_difference.is_none(),
        "local ({} bytes) != remote ({} bytes), first difference at {first_difference:?}",
        local.len(),
        remote.len()
    );
}

/// Every request kind the random-fault test disturbs.
const FAULTY_OPS: [Op; 8] = [
    Op::Upload,
    Op::Stat,
    Op::AcquireLease,
    Op::ReleaseLease,
    Op::StageBlock,
    Op::CommitBlocks,
    Op::BlockList,
    Op::ReadRange,
];

/// Which request publishes a version, per transfer mode, and how many of those
/// requests creating the blob costs besides its first commit (in full mode the empty
/// blob that the first lease needs is itself an upload request).
fn publish_op(extra: &str) -> (Op, &'static str, u64) {
    if extra.contains("sync=full") {
        (Op::Upload, "upload", 1)
    } else {
        (Op::CommitBlocks, "commit_blocks", 0)
    }
}

fn transient_publish_failures_are_retried_with_backoff(extra: &str) {
    let (op, name, creation) = publish_op(extra);
    let (w, c) = world_with_table("retry", extra);
    w.backend.fail_next(op, BackendErrorKind::Transient, 2);
    c.execute("INSERT INTO t VALUES (1)", []).unwrap();
    let s = status(&c);
    assert_eq!(s["requests"]["retries"], 2, "{s}");
    assert_eq!(
        s["requests"][name],
        4 + creation,
        "first commit + 2 failed + 1 good: {s}"
    );
    assert_eq!(s["requests"]["versions_up"], 2, "{s}");
    assert_eq!(w.remote_ids(), BTreeSet::from([1]));
}

#[test]
fn transient_upload_failures_are_retried_with_backoff() {
    transient_publish_failures_are_retried_with_backoff("&sync=full");
}

#[test]
fn transient_block_commit_failures_are_retried_with_backoff() {
    transient_publish_failures_are_retried_with_backoff("");
}

#[test]
fn transient_stage_failures_are_retried_with_backoff() {
    let (w, c) = world_with_table("stage", "");
    w.backend
        .fail_next(Op::StageBlock, BackendErrorKind::Transient, 2);
    c.execute("INSERT INTO t VALUES (1)", []).unwrap();
    let s = status(&c);
    assert_eq!(s["requests"]["retries"], 2, "{s}");
    assert_eq!(w.remote_ids(), BTreeSet::from([1]));
}

fn a_terminal_publish_failure_fails_the_commit_and_leaves_local_equal_to_remote(extra: &str) {
    let (op, name, creation) = publish_op(extra);
    let (w, c) = world_with_table("terminal", &format!("&retry_attempts=3{extra}"));
    c.execute("INSERT INTO t VALUES (1)", []).unwrap();
    w.backend.fail_next(op, BackendErrorKind::Transient, 3);
    let err = c.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
    assert!(err.to_string().to_lowercase().contains("i/o"), "{err}");
    let s = status(&c);
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{s}"
    );
    assert_eq!(s["lease_held"], false);
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "the failed commit was rolled back locally");
    let s = status(&c);
    assert_eq!(
        s["requests"][name],
        5 + creation,
        "no upload of the rolled-back file: {s}"
    );
    assert_eq!(s["requests"]["versions_up"], 2, "{s}");
    assert_eq!(s["requests"]["download"], 0, "{s}");
    assert_same_bytes(&w.cache_bytes("h1"), &w.remote_bytes());
    // The connection stays usable.
    c.execute("INSERT INTO t VALUES (3)", []).unwrap();
    assert_eq!(w.remote_ids(), BTreeSet::from([1, 3]));
}

#[test]
fn a_terminal_upload_failure_fails_the_commit_and_leaves_local_equal_to_remote() {
    a_terminal_publish_failure_fails_the_commit_and_leaves_local_equal_to_remote("&sync=full");
}

#[test]
fn a_terminal_block_commit_failure_fails_the_commit_and_leaves_local_equal_to_remote() {
    a_terminal_publish_failure_fails_the_commit_and_leaves_local_equal_to_remote("");
}

#[test]
fn a_lease_held_elsewhere_is_busy_and_busy_timeout_applies() {
    // The write acquires the lease: none kept warm from the table's creation.
    let (w, mut c) = world_with_table("held", "&lease_linger_ms=0");
    let lease = w
        .backend
        .acquire_lease("m.db", Duration::from_secs(30))
        .unwrap();
    c.busy_timeout(Duration::ZERO).unwrap();
    let err = c.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy),
        "{err}"
    );
    // Released from inside the busy handler (its first call): the insert waits in
    // it, then succeeds.
    let backend = w.backend.clone();
    handoff::on_first_busy(&mut c, move || {
        backend.release_lease("m.db", &lease.id).unwrap();
    });
    c.execute("INSERT INTO t VALUES (1)", []).unwrap();
    assert!(handoff::busy_calls() >= 1, "the busy handler ran");
    assert_eq!(w.remote_ids(), BTreeSet::from([1]));
}

#[test]
fn lease_errors_other_than_busy_surface() {
    // The write acquires the lease: none kept warm from the table's creation.
    let (w, c) = world_with_table("denied", "&lease_linger_ms=0");
    w.backend
        .fail_next(Op::AcquireLease, BackendErrorKind::Denied, 1);
    let err = c.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
    assert_ne!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy),
        "{err}"
    );
    assert!(status(&c)["last_error"]
        .as_str()
        .unwrap()
        .contains("injected"));
    assert!(w.remote_ids().is_empty());
}

#[test]
fn an_upload_that_landed_before_its_retry_is_not_a_conflict() {
    let (w, c) = world_with_table("landed", "");
    w.backend.land_then_fail_next_upload();
    c.execute("INSERT INTO t VALUES (1)", []).unwrap();
    assert_eq!(w.remote_ids(), BTreeSet::from([1]));
    assert_same_bytes(&w.cache_bytes("h1"), &w.remote_bytes());
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(w.remote_ids(), BTreeSet::from([1, 2]));
}

#[test]
fn a_lost_lease_fails_the_batch_end_and_never_overwrites() {
    let (w, a) = world_with_table("lost", "");
    pragma(&a, "PRAGMA managedblob_batch=begin").unwrap();
    a.execute("INSERT INTO t VALUES (1)", []).unwrap();
    // a's writer is "paused" past its lease; another host writes meanwhile.
    w.backend.expire_lease("m.db");
    let b = w.open("h2", "");
    b.execute("INSERT INTO t VALUES (2)", []).unwrap();
    let err = pragma(&a, "PRAGMA managedblob_batch=end")
        .unwrap_err()
        .to_string();
    assert!(err.contains("managedblob"), "{err}");
    assert_eq!(w.remote_ids(), BTreeSet::from([2]), "b's commit survives");
}

#[test]
fn random_faults_every_commit_is_either_in_the_remote_or_failed() {
    random_faults("");
}

#[test]
fn random_faults_with_whole_file_transfers() {
    random_faults("&sync=full");
}

fn random_faults(extra: &str) {
    let (w, c) = world_with_table(
        "random",
        &format!("&retry_attempts=2&staleness_ms=0{extra}"),
    );
    for op in FAULTY_OPS {
        w.backend.set_fail_rate(op, 0.3);
    }
    let mut acknowledged = BTreeSet::new();
    let mut failed = 0;
    for id in 0..200 {
        match c.execute("INSERT INTO t VALUES (?1)", [id]) {
            Ok(_) => {
                acknowledged.insert(id);
            }
            Err(_) => failed += 1,
        }
    }
    for op in FAULTY_OPS {
        w.backend.set_fail_rate(op, 0.0);
    }
    assert!(
        failed > 0 && !acknowledged.is_empty(),
        "faults were injected"
    );
    assert_eq!(w.remote_ids(), acknowledged);
    let local: BTreeSet<i64> = column(&c, "SELECT id FROM t");
    assert_eq!(local, acknowledged, "local never runs ahead of the remote");
}

#[test]
fn retries_stop_at_the_total_time_budget() {
    let (w, c) = world_with_table(
        "budget",
        "&sync=full&retry_attempts=20&retry_base_ms=40&retry_total_ms=150",
    );
    w.backend
        .fail_next(Op::Upload, BackendErrorKind::Transient, 100);
    assert!(c.execute("INSERT INTO t VALUES (1)", []).is_err());
    let s = status(&c);
    let retries = s["requests"]["retries"].as_u64().unwrap();
    assert!(
        (1..19).contains(&retries),
        "the budget, not the attempts, stopped the retries: {s}"
    );
    assert!(
        s["last_error"].as_str().unwrap().contains("gave up after"),
        "{s}"
    );
}
