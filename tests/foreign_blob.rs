//! A blob another tool wrote (one Put Blob, or a file copied into the directory) is
//! converted to managedblob's chunks by the first upload. Where the store can stage a
//! block from a range of a blob (the local and memory stores copy it; Azure's Put
//! Block From URL, which Azurite lacks), the chunks that upload left unchanged are
//! copied from the blob itself instead of going up again.

use common::*;
use rusqlite::Connection;

/// A plain SQLite database of about 4 MiB, as another tool would have written it.
fn foreign_database(w: &World) -> Vec<u8> {
    let path = w.path("plain.db");
    let c = Connection::open(&path).unwrap();
    c.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
         INSERT INTO t SELECT i, randomblob(1000) FROM n;",
    )
    .unwrap();
    drop(c);
    std::fs::read(&path).unwrap()
}

fn bytes_up(c: &Connection) -> u64 {
    status(c)["requests"]["bytes_up"].as_u64().unwrap()
}

/// The first commit converts the blob: `copies` says whether the store copies the
/// unchanged chunks (then little goes up) or takes them all again. Either way the
/// next host reads the same rows, and a later commit moves a chunk or two.
fn converted_by_the_first_upload(w: &World, copies: bool, extra: &str) {
    let image = foreign_database(w);
    w.put_remote("a.db", &image);
    let c = w.open_with("h1", "a.db", extra);
    let before = bytes_up(&c);
    c.execute("INSERT INTO t(b) VALUES (x'01')", []).unwrap();
    let first = bytes_up(&c) - before;
    let size = image.len() as u64;
    eprintln!("converting a {size}-byte blob: {first} bytes up");
    if copies {
        assert!(
            first < size / 8,
            "{first} bytes up to convert a {size}-byte blob"
        );
    } else {
        assert!(
            first >= size * 9 / 10,
            "{first} bytes up for a {size}-byte blob"
        );
    }
    let before = bytes_up(&c);
    c.execute("INSERT INTO t(b) VALUES (x'02')", []).unwrap();
    let second = bytes_up(&c) - before;
    assert!(
        second < 512 * 1024,
        "{second} bytes up for a one-row commit"
    );

    let other = w.open_with("h2", "a.db", extra);
    assert_eq!(integrity(&other), "ok");
    assert_eq!(count(&other, "t"), 4002);
    w.read_remote("a.db", |r| assert_eq!(count(r, "t"), 4002));
    assert_eq!(integrity(&c), "ok");
}

/// A lazy cache of another tool's blob takes it whole (it has no chunk list to
/// fetch by), reads it, opens it again, and converts it with its first upload.
/// Before, every read of such a cache failed ("its chunk list is not known").
#[test]
fn a_lazy_cache_opens_a_foreign_blob() {
    let w = World::local();
    let image = foreign_database(&w);
    w.put_remote("b.db", &image);
    for _ in 0..2 {
        let c = w.open_with("h1", "b.db", "&fetch=lazy");
        assert_eq!(count(&c, "t"), 4000);
        assert_eq!(status(&c)["fetch"], "lazy");
    }
    converted_by_the_first_upload(&World::local(), true, "&fetch=lazy");
}

#[test]
fn local_the_unchanged_chunks_are_copied_not_uploaded() {
    converted_by_the_first_upload(&World::local(), true, "");
}

#[cfg(feature = "azure")]
#[test]
fn azurite_without_put_block_from_url_the_chunks_go_up() {
    if let Some(w) = World::azurite() {
        converted_by_the_first_upload(&w, false, "");
    }
}

/// A rolled-back transaction leaves its bytes in the free pages it reused (SQLite
/// neither reads nor journals them), so those ranges of the cache are no longer the
/// base's: the conversion must upload them, not copy the base's bytes under ids
/// that hash the cache's. A lazy host checks every chunk it fetches against its id.
#[test]
fn a_rolled_back_transaction_keeps_its_ranges_from_being_copied() {
    let w = World::local();
    let path = w.path("plain.db");
    let c = Connection::open(&path).unwrap();
    c.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
         INSERT INTO t SELECT i, randomblob(16000) FROM n;
         DELETE FROM t WHERE id % 2 = 0;",
    )
    .unwrap();
    drop(c);
    w.put_remote("a.db", &std::fs::read(&path).unwrap());
    let c = w.open("h1", "a.db");
    c.execute_batch(
        "PRAGMA cache_size = 8;
         BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO t(b) SELECT randomblob(16000) FROM n;
         ROLLBACK;",
    )
    .unwrap();
    c.execute("INSERT INTO t(b) VALUES (x'01')", []).unwrap();
    let lazy = w.open_with("h2", "a.db", "&fetch=lazy");
    assert_eq!(integrity(&lazy), "ok");
    assert_eq!(count(&lazy, "t"), 201);
}
