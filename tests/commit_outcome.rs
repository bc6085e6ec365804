//! A transaction SQLite has committed is never reported failed: failures after the
//! remote took a commit (the sidecar save at the commit point, or at
//! SQLITE_FCNTL_COMMIT_PHASETWO) are logged and kept in `last_error`, COMMIT returns
//! OK, and the cache resyncs from the remote.

mod common;
use common::*;

use std::collections::BTreeSet;

use common::memworld::{MemWorld, SYNC_MODES};
use managedblob::backend::memory::Op;
use managedblob::backend::BackendErrorKind;
use managedblob::sidecar;

/// Commit one row while the sidecar save number `skip` (0: the commit point's,
/// 1: COMMIT_PHASETWO's) fails, and check the outcome.
fn a_failed_save_after_the_upload_does_not_fail_the_commit(skip: usize) {
    for mode in SYNC_MODES {
        let w = MemWorld::with_defaults("committed", "&retry_base_ms=1");
        let extra = format!("&sync={mode}");
        let c = w.open("h1", &extra);
        c.execute("CREATE TABLE t(id)", []).unwrap();
        c.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
            .unwrap();
        sidecar::fail_one_save_after(&sidecar::path_for(&w.cache("h1")), skip);
        c.execute("COMMIT", [])
            .unwrap_or_else(|e| panic!("{mode}, save {skip}: COMMIT failed: {e}"));
        assert_eq!(w.remote_ids(), BTreeSet::from([1]), "{mode}");
        let last_error = status(&c)["last_error"].as_str().unwrap_or("").to_string();
        assert!(
            last_error.contains("was committed") && last_error.contains("injected fault"),
            "{mode}: {last_error}"
        );
        // The same connection goes on: the next write sees the committed row once.
        c.execute("INSERT INTO t VALUES (2)", []).unwrap();
        assert_eq!(w.remote_ids(), BTreeSet::from([1, 2]), "{mode}");
        drop(c);
        // The next open is consistent: clean, identical to the remote.
        let c = w.open("h1", &extra);
        assert_eq!(integrity(&c), "ok");
        let ids: BTreeSet<i64> = column(&c, "SELECT id FROM t");
        assert_eq!(ids, BTreeSet::from([1, 2]), "{mode}");
        let s = sidecar(&w.cache("h1"));
        assert_eq!(s["in_flight"], "none", "{mode}: {s}");
        assert_eq!(s["dirty"], false, "{mode}: {s}");
        assert_eq!(w.cache_bytes("h1"), w.remote_bytes(), "{mode}");
    }
}

#[test]
fn a_failed_sidecar_save_at_commit_phasetwo_does_not_fail_the_commit() {
    a_failed_save_after_the_upload_does_not_fail_the_commit(1);
}

#[test]
fn a_failed_sidecar_save_after_the_upload_does_not_fail_the_commit() {
    a_failed_save_after_the_upload_does_not_fail_the_commit(0);
}

/// The request that publishes a version in `mode`, and the read that checks it.
fn publish_and_read_back(mode: &str) -> (Op, Op) {
    if mode == "full" {
        (Op::Upload, Op::Download)
    } else {
        (Op::CommitBlocks, Op::BlockList)
    }
}

/// A COMMIT whose outcome is unknown says "may have been applied" (in the error and
/// in `last_error`); the next statement resolves it and says how: adopted when it
/// landed, not applied (and not uploaded again: the application was told it failed)
/// when it did not.
fn ambiguous_commit(mode: &str, landed: bool) {
    let w = MemWorld::with_defaults("ambiguous", "&retry_base_ms=1&retry_attempts=3");
    let extra = format!("&sync={mode}");
    let c = w.open("h1", &extra);
    c.execute("CREATE TABLE t(id)", []).unwrap();
    let (publish, read_back) = publish_and_read_back(mode);
    if landed {
        // The first attempt lands, its reply is lost; the retry is refused by its
        // own condition, and the read-back that would tell fails.
        w.backend.land_then_fail_next_upload();
        w.backend
            .fail_next(read_back, BackendErrorKind::Transient, 100);
    } else {
        // Every attempt fails with a transient error: any might have landed.
        w.backend.fail_next(publish, BackendErrorKind::Transient, 3);
    }
    let e = c.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
    assert!(e.to_string().contains("I/O"), "{mode}: {e}");
    let last_error = status(&c)["last_error"].as_str().unwrap().to_string();
    assert!(
        last_error.contains("may have been applied"),
        "{mode}: {last_error}"
    );
    assert!(sidecar(&w.cache("h1"))["pending_commit"].is_object());
    w.backend
        .fail_next(read_back, BackendErrorKind::Transient, 0);
    // The next statement resolves it.
    let ids: BTreeSet<i64> = column(&c, "SELECT id FROM t");
    let (expected_ids, expected) = if landed {
        (BTreeSet::from([1]), "had been applied")
    } else {
        (BTreeSet::new(), "was not applied")
    };
    assert_eq!(ids, expected_ids, "{mode}, landed {landed}");
    assert_eq!(w.remote_ids(), expected_ids, "{mode}, landed {landed}");
    let last_error = status(&c)["last_error"].as_str().unwrap().to_string();
    assert!(last_error.contains(expected), "{mode}: {last_error}");
    assert_eq!(w.cache_bytes("h1"), w.remote_bytes(), "{mode}");
    let s = sidecar(&w.cache("h1"));
    assert!(s.get("pending_commit").is_none(), "{mode}: {s}");
    // Writing goes on.
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    let mut after = expected_ids.clone();
    after.insert(2);
    assert_eq!(w.remote_ids(), after, "{mode}");
}

#[test]
fn an_ambiguous_commit_that_landed_is_adopted() {
    for mode in SYNC_MODES {
        ambiguous_commit(mode, true);
    }
}

#[test]
fn an_ambiguous_commit_that_did_not_land_is_resolved_as_not_applied() {
    for mode in SYNC_MODES {
        ambiguous_commit(mode, false);
    }
}
