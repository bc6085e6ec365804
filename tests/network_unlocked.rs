//! Nobody in the process queues behind the network: while one connection waits on
//! the remote (its COMMIT's upload, a freshness check), `PRAGMA managedblob_status`
//! answers at once, and another connection that needs the store gets SQLITE_BUSY,
//! so its busy handler (busy_timeout) decides how long to wait. The slow remote is
//! a gate on the memory backend, opened by the test: outcomes and orderings, never
//! timings.

use common::memworld::{MemWorld, SYNC_MODES};
use common::*;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use managedblob::internal::backend::memory::Op;
use rusqlite::{Connection, ErrorCode};

/// A safety net against a test that would hang (the old behaviour: queueing behind
/// the network), never a timing assertion.
const NEVER: Duration = Duration::from_secs(60);

/// Run `f` on another thread and return its result; fail if it never returns.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(NEVER) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("never returned: {what}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("panicked: {what}"),
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DatabaseBusy)
}

fn count(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
}

/// A connection to host h1's cache that fails at once with SQLITE_BUSY.
fn impatient(m: &MemWorld, extra: &str) -> Connection {
    let c = m.open("h1", extra);
    c.busy_timeout(Duration::ZERO).unwrap();
    c
}

/// The request a commit's upload ends with in each sync mode.
fn upload_op(mode: &str) -> Op {
    if mode == "full" {
        Op::Upload
    } else {
        Op::CommitBlocks
    }
}

/// While connection A's COMMIT is held inside its upload: the status of another
/// connection to the same database answers and shows the upload in progress; a
/// reader with busy_timeout=0 gets SQLITE_BUSY, and one with a busy_timeout
/// completes after the upload, seeing the commit.
#[test]
fn status_answers_and_readers_get_busy_during_an_upload() {
    for mode in SYNC_MODES {
        let m = MemWorld::new("nu-upload");
        let extra = format!("&sync={mode}");
        let a = m.one_row("h1", &extra);
        let b = m.open("h1", &extra);
        // Opened first: opening a connection waits for the store (it is no lock call
        // and cannot answer BUSY).
        let reader = impatient(&m, &extra);
        let patient = m.open("h1", &extra);
        patient.busy_timeout(NEVER).unwrap();
        let gate = m.backend.hold(upload_op(mode));
        let commit: JoinHandle<rusqlite::Result<usize>> =
            thread::spawn(move || a.execute("INSERT INTO t VALUES (2)", []));
        assert!(
            gate.wait_for_call(NEVER),
            "{mode}: the commit reached the upload"
        );

        let (b, s) = within("status during an upload", move || {
            let s = status(&b);
            (b, s)
        });
        let waiting: Vec<&str> = s["waiting_on"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            waiting.contains(&if mode == "full" {
                "upload"
            } else {
                "commit_blocks"
            }),
            "{mode}: {s}"
        );
        assert_eq!(s["lease_held"], true, "{mode}: {s}");
        assert!(
            !commit.is_finished(),
            "{mode}: the commit waits for its upload"
        );

        // (The connection comes back: closing one waits for the store, which may
        // have to flush.)
        let (reader, refused) = within("an impatient read during an upload", move || {
            let r = count(&reader);
            (reader, r)
        });
        assert!(refused.as_ref().is_err_and(is_busy), "{mode}: {refused:?}");

        let released = Arc::new(AtomicBool::new(false));
        let patient = {
            let released = released.clone();
            thread::spawn(move || {
                let n = count(&patient);
                (n, released.load(Ordering::SeqCst))
            })
        };
        released.store(true, Ordering::SeqCst);
        gate.open();
        assert_eq!(commit.join().unwrap().unwrap(), 1, "{mode}");
        let (n, after_release) = patient.join().unwrap();
        assert_eq!(n.unwrap(), 2, "{mode}: the patient reader sees the commit");
        assert!(after_release, "{mode}: it completed after the upload");
        let s = status(&b);
        assert_eq!(s["waiting_on"], serde_json::json!([]), "{mode}: {s}");
        assert_eq!(m.remote_query::<i64>("SELECT count(*) FROM t"), 2);
        drop(reader);
    }
}

/// How often [`count_busy`] was called (one test uses it).
static BUSY_CALLS: AtomicUsize = AtomicUsize::new(0);

/// A busy handler that counts its calls and keeps retrying.
fn count_busy(_attempt: i32) -> bool {
    BUSY_CALLS.fetch_add(1, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(1));
    true
}

/// While reader C checks the remote for a new version (its stat held), reader B of
/// the same cache, whose file lock is free, gets SQLITE_BUSY instead of queueing
/// behind C: at once with busy_timeout=0, and through its busy handler, which
/// retries until C's check is done.
#[test]
fn a_reader_gets_busy_while_another_checks_the_remote() {
    // No linger: a lease kept warm after the setup's write would spare the check.
    let m = MemWorld::with_defaults("nu-stat", "&staleness_ms=0&lease_linger_ms=0");
    let setup = m.one_row("h1", "");
    let c = m.open("h1", "");
    let b = impatient(&m, "");
    let gate = m.backend.hold(Op::Stat);
    let checker = thread::spawn(move || count(&c));
    assert!(gate.wait_for_call(NEVER), "reader C checks the remote");

    let (mut b, refused) = within("an impatient read during a check", move || {
        let r = count(&b);
        (b, r)
    });
    assert!(refused.as_ref().is_err_and(is_busy), "{refused:?}");
    assert_eq!(status(&setup)["waiting_on"], serde_json::json!(["stat"]));

    // With a busy handler, B retries until the check is done.
    b.busy_handler(Some(count_busy)).unwrap();
    let retrying = thread::spawn(move || count(&b));
    while BUSY_CALLS.load(Ordering::SeqCst) == 0 {
        assert!(!retrying.is_finished(), "B finished without a retry");
        thread::sleep(Duration::from_millis(1));
    }
    gate.open();
    assert_eq!(retrying.join().unwrap().unwrap(), 1);
    assert_eq!(checker.join().unwrap().unwrap(), 1);
}

/// A write that starts while another connection checks the remote gets BUSY too
/// (SHARED -> RESERVED needs the store), and succeeds once the check is done.
#[test]
fn a_write_gets_busy_while_another_connection_checks_the_remote() {
    let m = MemWorld::new("nu-write");
    let setup = m.one_row("h1", "");
    let b = impatient(&m, "");
    b.execute_batch("BEGIN").unwrap();
    assert_eq!(
        count(&b).unwrap(),
        1,
        "B holds SHARED in a read transaction"
    );

    let c = m.open("h1", "");
    let gate = m.backend.hold(Op::Stat);
    let refresh = {
        thread::spawn(move || {
            c.query_row("PRAGMA managedblob_refresh", [], |r| r.get::<_, String>(0))
        })
    };
    assert!(gate.wait_for_call(NEVER), "the refresh checks the remote");
    let (b, refused) = within("a write during a check", move || {
        let r = b.execute("INSERT INTO t VALUES (2)", []);
        (b, r)
    });
    assert!(refused.as_ref().is_err_and(is_busy), "{refused:?}");

    gate.open();
    refresh.join().unwrap().unwrap();
    b.execute("INSERT INTO t VALUES (2)", []).unwrap();
    b.execute_batch("COMMIT").unwrap();
    assert_eq!(count(&setup).unwrap(), 2);
    assert_eq!(m.remote_query::<i64>("SELECT count(*) FROM t"), 2);
}

/// When nothing waits on the network, connections that contend for the store only
/// wait for each other's short local work: readers with busy_timeout=0 never see
/// BUSY. A batch holds the lease, so every read goes through the store.
#[test]
fn readers_never_get_busy_when_nothing_is_slow() {
    let m = MemWorld::new("nu-quiet");
    let w = m.one_row("h1", "");
    w.query_row("PRAGMA managedblob_batch=begin", [], |_| Ok(()))
        .unwrap();
    let readers: Vec<JoinHandle<()>> = (0..8)
        .map(|_| {
            let c = impatient(&m, "");
            thread::spawn(move || {
                for _ in 0..1000 {
                    assert_eq!(count(&c).unwrap(), 1);
                }
            })
        })
        .collect();
    let status_reader = {
        let c = impatient(&m, "");
        thread::spawn(move || {
            for _ in 0..200 {
                assert_eq!(status(&c)["lease_held"], true);
            }
        })
    };
    for r in readers {
        r.join().unwrap();
    }
    status_reader.join().unwrap();
    w.query_row("PRAGMA managedblob_batch=end", [], |_| Ok(()))
        .unwrap();
}
