//! Delta sync's workload and measures, shared by tests/delta.rs (memory backend) and
//! tests/delta_backends.rs (local and Azurite): a table of 1000-byte rows, one-row
//! updates whose transfers are counted in chunks, and random changes.

use managedblob::internal::backend::Backend;
use managedblob::internal::delta::Manifest;
use rusqlite::Connection;
use serde_json::Value;

use super::status;

/// Request counter `key` of a status (it must be there).
pub fn n(s: &Value, key: &str) -> u64 {
    s["requests"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {s}"))
}

/// Whether two database images hold the same content: equal byte for byte except
/// the change counter (header offsets 24 and 92), which each cache keeps for itself
/// where the remote's first chunk may lag (`Blocks::counter_may_lag`). The image `b`
/// must still be self-consistent there (counter == version-valid-for), as SQLite
/// needs to trust its page count.
pub fn same_database(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || (b.len() >= 100 && b[24..28] != b[92..96]) {
        return false;
    }
    let mut a = a.to_vec();
    managedblob::internal::delta::ignore_change_counter(b, &mut a);
    a == b
}

/// Create table `t(id, v)` with `rows` rows of 1000 random bytes.
pub fn fill(c: &Connection, rows: u64) {
    c.execute_batch(&format!(
        "BEGIN; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO t SELECT i, randomblob(1000) FROM n; COMMIT;"
    ))
    .unwrap();
}

/// The block list managedblob wrote for `blob`, as a manifest (None for a blob
/// without one of ours: a whole upload or a foreign write).
pub fn block_manifest(b: &dyn Backend, blob: &str) -> Option<Manifest> {
    let (_, list) = b
        .blocks()
        .expect("block capability")
        .block_list(blob)
        .unwrap()?;
    Manifest::from_block_list(&list)
}

/// Update row `id` on writer `a`: one or two chunks go up, by a block commit (no
/// whole upload), at most two chunks and the block list (`list_len` ids) in bytes.
/// Returns the writer's status before and after.
pub fn update_moves_at_most_two_chunks_up(
    a: &Connection,
    id: i64,
    chunk: u64,
    list_len: usize,
) -> (Value, Value) {
    let before = status(a);
    a.execute("UPDATE t SET v = randomblob(1000) WHERE id = ?1", [id])
        .unwrap();
    let after = status(a);
    let chunks_up = n(&after, "chunks_up") - n(&before, "chunks_up");
    let bytes_up = n(&after, "bytes_up") - n(&before, "bytes_up");
    println!("one-row update, writer: before {before} after {after}, chunk {chunk}");
    assert!(
        (1..=2).contains(&chunks_up),
        "chunks up {chunks_up}: {after}"
    );
    assert_eq!(n(&after, "upload"), n(&before, "upload"), "no whole upload");
    assert!(
        bytes_up <= 2 * chunk + 64 * list_len as u64,
        "bytes up {bytes_up} with {chunk}-byte chunks"
    );
    (before, after)
}

/// Reader `b` reads row `id` after writer `a` updated it: one or two chunks come
/// down (no whole download), and the row is the writer's.
pub fn reader_moves_at_most_two_chunks_down(a: &Connection, b: &Connection, id: i64, chunk: u64) {
    let before = status(b);
    let v: Vec<u8> = b
        .query_row("SELECT v FROM t WHERE id = ?1", [id], |r| r.get(0))
        .unwrap();
    let after = status(b);
    let chunks_down = n(&after, "chunks_down") - n(&before, "chunks_down");
    println!("one-row update, reader: before {before} after {after}");
    assert!(
        (1..=2).contains(&chunks_down),
        "chunks down {chunks_down}: {after}"
    );
    assert!(n(&after, "bytes_down") - n(&before, "bytes_down") <= 2 * chunk);
    assert_eq!(
        n(&after, "download"),
        n(&before, "download"),
        "no whole download"
    );
    let expected: Vec<u8> = a
        .query_row("SELECT v FROM t WHERE id = ?1", [id], |r| r.get(0))
        .unwrap();
    assert_eq!(v, expected);
}

/// `rounds` rounds of random deletes, inserts and updates on `a` (half of them in a
/// batch), and a VACUUM at round `vacuum_at`.
pub fn random_changes(a: &Connection, seed: u64, rounds: usize, vacuum_at: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..rounds {
        let batch = rng.bool();
        if batch {
            a.execute_batch("PRAGMA managedblob_batch=begin").unwrap();
        }
        for _ in 0..rng.usize(1..5) {
            let r = match rng.u8(0..4) {
                0 => a.execute("DELETE FROM t WHERE id = ?1", [rng.i64(1..4000)]),
                1 => a.execute(
                    "INSERT INTO t(v) VALUES (randomblob(?1))",
                    [rng.i64(1..5000)],
                ),
                _ => a.execute(
                    "UPDATE t SET v = randomblob(?1) WHERE id = ?2",
                    [rng.i64(1..3000), rng.i64(1..4000)],
                ),
            };
            r.unwrap();
        }
        if batch {
            a.execute_batch("PRAGMA managedblob_batch=end").unwrap();
        }
        if round == vacuum_at {
            a.execute_batch("VACUUM").unwrap();
        }
    }
}

/// A plain SQLite file of 3000 rows, written outside managedblob, is put as the
/// remote by `put`; the cache `open` makes downloads it whole, and its first write
/// converts the blob to chunks (`manifest` of the remote, `remote_len` bytes long).
/// Returns that cache's connection.
pub fn a_foreign_blob_is_converted(
    seed: &std::path::Path,
    put: impl FnOnce(&[u8]),
    open: impl FnOnce() -> Connection,
    manifest: impl Fn() -> Option<Manifest>,
    remote_len: impl Fn() -> u64,
) -> Connection {
    {
        let p = Connection::open(seed).unwrap();
        fill(&p, 3000);
    }
    put(&std::fs::read(seed).unwrap());
    assert!(
        manifest().is_none(),
        "a whole put has no block list of ours"
    );
    let a = open();
    assert_eq!(super::count(&a, "t"), 3000);
    assert_eq!(n(&status(&a), "download"), 1, "whole download");
    a.execute("UPDATE t SET v = x'00' WHERE id = 1", [])
        .unwrap();
    let manifest = manifest().expect("converted to chunks");
    assert_eq!(manifest.len, remote_len());
    a
}
