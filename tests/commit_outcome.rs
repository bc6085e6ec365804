//! A transaction SQLite has committed is never reported failed: failures after the
//! remote took a commit (the sidecar save at the commit point, or at
//! SQLITE_FCNTL_COMMIT_PHASETWO) are logged and kept in `last_error`, COMMIT returns
//! OK, and the cache resyncs from the remote.

use common::*;

use std::collections::BTreeSet;

use common::memworld::{MemWorld, SYNC_MODES};
use managedblob::internal::backend::memory::Op;
use managedblob::internal::backend::BackendErrorKind;
use managedblob::internal::sidecar;

/// Which sidecar saves a commit makes after the remote took it.
#[derive(Clone, Copy, Debug)]
enum Save {
    /// A clean cache's commit saves once, at COMMIT_PHASETWO.
    CleanPhaseTwo,
    /// A dirty cache's commit (its batch's upload failed) saves at the commit point,
    /// so a crash before phase two finds those commits uploaded, not a conflict ...
    DirtyCommitPoint,
    /// ... and again at COMMIT_PHASETWO.
    DirtyPhaseTwo,
}

/// Commit one row while the given sidecar save fails, and check the outcome.
fn a_failed_save_after_the_upload_does_not_fail_the_commit(save: Save) {
    for mode in SYNC_MODES {
        let w = MemWorld::with_defaults("committed", "&retry_base_ms=1&retry_attempts=1");
        let extra = format!("&sync={mode}");
        let c = w.open("h1", &extra);
        c.execute("CREATE TABLE t(id)", []).unwrap();
        let mut expected = BTreeSet::from([1]);
        if !matches!(save, Save::CleanPhaseTwo) {
            // A batch whose upload fails leaves the cache dirty.
            c.execute_batch("PRAGMA managedblob_batch=begin; INSERT INTO t VALUES (0);")
                .unwrap();
            let (publish, _) = publish_and_read_back(mode);
            w.backend
                .fail_next(publish, BackendErrorKind::Transient, 1000);
            assert!(
                c.execute_batch("PRAGMA managedblob_batch=end").is_err(),
                "{mode}"
            );
            w.backend.fail_next(publish, BackendErrorKind::Transient, 0);
            assert_eq!(status(&c)["dirty"], true, "{mode}");
            assert_eq!(w.remote_ids(), BTreeSet::new(), "{mode}");
            expected.insert(0);
        }
        c.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
            .unwrap();
        let skip = usize::from(matches!(save, Save::DirtyPhaseTwo));
        sidecar::fail_one_save_after(&sidecar::path_for(&w.cache("h1")), skip);
        c.execute("COMMIT", [])
            .unwrap_or_else(|e| panic!("{mode}, {save:?}: COMMIT failed: {e}"));
        assert_eq!(w.remote_ids(), expected, "{mode}, {save:?}");
        let last_error = status(&c)["last_error"].as_str().unwrap_or("").to_string();
        assert!(
            last_error.contains("was committed") && last_error.contains("injected fault"),
            "{mode}, {save:?}: {last_error}"
        );
        // The same connection goes on: the next write sees the committed row once.
        c.execute("INSERT INTO t VALUES (2)", []).unwrap();
        expected.insert(2);
        assert_eq!(w.remote_ids(), expected, "{mode}, {save:?}");
        drop(c);
        // The next open is consistent: clean, identical to the remote.
        let c = w.open("h1", &extra);
        assert_eq!(integrity(&c), "ok");
        let ids: BTreeSet<i64> = column(&c, "SELECT id FROM t");
        assert_eq!(ids, expected, "{mode}, {save:?}");
        let s = sidecar(&w.cache("h1"));
        assert_eq!(s["in_flight"], "none", "{mode}, {save:?}: {s}");
        assert_eq!(s["dirty"], false, "{mode}, {save:?}: {s}");
        assert_eq!(w.cache_bytes("h1"), w.remote_bytes(), "{mode}, {save:?}");
    }
}

#[test]
fn a_failed_sidecar_save_at_commit_phasetwo_does_not_fail_the_commit() {
    a_failed_save_after_the_upload_does_not_fail_the_commit(Save::CleanPhaseTwo);
    a_failed_save_after_the_upload_does_not_fail_the_commit(Save::DirtyPhaseTwo);
}

#[test]
fn a_failed_sidecar_save_after_the_upload_does_not_fail_the_commit() {
    a_failed_save_after_the_upload_does_not_fail_the_commit(Save::DirtyCommitPoint);
}

/// A clean cache's commit saves its sidecar once (at COMMIT_PHASETWO): the durable
/// save at the commit point is only for a cache that was dirty. Counted by failing
/// the second save: a commit that made two would report it.
#[test]
fn a_clean_commit_saves_the_sidecar_once() {
    for mode in SYNC_MODES {
        let w = MemWorld::with_defaults("one_save", "&retry_base_ms=1");
        let c = w.open("h1", &format!("&sync={mode}"));
        c.execute("CREATE TABLE t(id)", []).unwrap();
        c.execute("INSERT INTO t VALUES (0)", []).unwrap();
        sidecar::fail_one_save_after(&sidecar::path_for(&w.cache("h1")), 1);
        c.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let last_error = status(&c)["last_error"].as_str().unwrap_or("").to_string();
        assert!(
            !last_error.contains("injected fault"),
            "{mode}: {last_error}"
        );
        assert_eq!(w.remote_ids(), BTreeSet::from([0, 1]), "{mode}");
        let s = sidecar(&w.cache("h1"));
        assert_eq!(s["in_flight"], "none", "{mode}: {s}");
        assert_eq!(s["base"], status(&c)["etag"], "{mode}: {s}");
    }
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
