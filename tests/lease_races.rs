//! The lease is never released under a connection that holds it: the last
//! connection's close (which drops the store's mutex while it flushes) against a
//! connection that attaches in that window and starts a write or a batch.

use common::*;

use std::time::Duration;

use common::memworld::MemWorld;
use managedblob::internal::backend::{Backend, BackendErrorKind};
use rusqlite::{Connection, OpenFlags};

/// The cache file opened with SQLite's own unix VFS, holding an EXCLUSIVE lock: the
/// closing connection's flush waits for SHARED outside the store's mutex meanwhile.
fn exclusive_holder(w: &MemWorld) -> Connection {
    let p = Connection::open_with_flags_and_vfs(
        w.cache("h1"),
        OpenFlags::SQLITE_OPEN_READ_WRITE,
        "unix",
    )
    .unwrap();
    p.execute_batch("BEGIN EXCLUSIVE").unwrap();
    p
}

#[test]
fn the_last_close_never_releases_a_lease_taken_by_a_connection_attaching_meanwhile() {
    let w = MemWorld::with_defaults("detach-race", "&retry_base_ms=1");
    w.open("h1", "").execute("CREATE TABLE t(id)", []).unwrap();
    for round in 0..40 {
        let batch = round % 2 == 1;
        let closing = w.open("h1", "");
        let holder = exclusive_holder(&w);
        let closer = std::thread::spawn(move || drop(closing));
        // Let the close decide it is the last connection and wait for SHARED.
        std::thread::sleep(Duration::from_millis(5));
        let writer = w.open("h1", "");
        drop(holder);
        let began = if batch {
            pragma(&writer, "PRAGMA managedblob_batch=begin").map(|_| ())
        } else {
            writer.execute_batch("BEGIN IMMEDIATE")
        };
        if let Err(e) = began {
            // SQLITE_BUSY while the close still held the cache: not this round.
            assert!(is_busy(&e), "round {round}: {e}");
            closer.join().unwrap();
            continue;
        }
        closer.join().unwrap();
        // The writer still holds the lease: nobody else can take it.
        assert_eq!(
            status(&writer)["lease_held"],
            true,
            "round {round} (batch: {batch}): the close released the writer's lease"
        );
        let other = w.backend.acquire_lease("m.db", Duration::from_secs(15));
        assert_eq!(
            other.as_ref().err().map(|e| e.kind),
            Some(BackendErrorKind::LeaseHeld),
            "round {round} (batch: {batch}): another writer could take the lease"
        );
        writer
            .execute("INSERT INTO t VALUES (?1)", [round])
            .unwrap();
        if batch {
            pragma(&writer, "PRAGMA managedblob_batch=end").unwrap();
        } else {
            writer.execute_batch("COMMIT").unwrap();
        }
    }
    let ids = w.remote_ids();
    assert!(!ids.is_empty(), "no round reached the write");
}
