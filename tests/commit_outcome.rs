//! A transaction SQLite has committed is never reported failed: failures after the
//! remote took a commit (the sidecar save at the commit point, or at
//! SQLITE_FCNTL_COMMIT_PHASETWO) are logged and kept in `last_error`, COMMIT returns
//! OK, and the cache resyncs from the remote.

mod common;
use common::*;

use std::collections::BTreeSet;

use common::memworld::{MemWorld, SYNC_MODES};
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
