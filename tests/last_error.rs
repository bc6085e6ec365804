//! `last_error` is the last error since the last success of its kind (issue 25):
//! monitoring that alerts on it must not fire for a failure a later success
//! resolved. `last_error_at` and `last_ok_at` say when.

use common::memworld::MemWorld;
use common::*;

use managedblob::internal::backend::memory::Op;
use managedblob::internal::backend::BackendErrorKind;
use std::time::Duration;

#[test]
fn an_unreachable_remote_is_forgotten_once_a_check_reaches_it() {
    let m = MemWorld::new("lasterr");
    m.one_row_then_offline();
    let c = m.open("h1", "&staleness_ms=0&retry_attempts=1");
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "served from the cache while offline");
    let s = status(&c);
    assert!(s["last_error"].is_string(), "{s}");
    assert!(s["last_error_at"].is_string(), "{s}");
    // The remote is back.
    m.backend
        .fail_next(Op::Stat, BackendErrorKind::Transient, 0);
    let _: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let s = status(&c);
    assert!(
        s["last_error"].is_null(),
        "resolved by a check that reached it: {s}"
    );
    assert!(s["last_error_at"].is_null(), "{s}");
    assert!(s["last_ok_at"].is_string(), "{s}");
}

#[test]
fn a_refused_lease_is_forgotten_once_a_commit_lands() {
    let m = MemWorld::new("lasterr-lease");
    let a = m.one_row("a", "");
    pragma(&a, "PRAGMA managedblob_batch=begin").unwrap();
    let b = m.open("b", "");
    b.busy_timeout(Duration::ZERO).unwrap();
    let e = b.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
    assert!(is_busy(&e), "{e}");
    let s = status(&b);
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("held by another writer"),
        "{s}"
    );
    pragma(&a, "PRAGMA managedblob_batch=end").unwrap();
    drop(a);
    b.busy_timeout(Duration::from_secs(10)).unwrap();
    b.execute("INSERT INTO t VALUES (2)", []).unwrap();
    let s = status(&b);
    assert!(s["last_error"].is_null(), "resolved by the commit: {s}");
    assert!(s["last_ok_at"].is_string(), "{s}");
}
