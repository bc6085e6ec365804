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
fn converted_by_the_first_upload(w: &World, copies: bool) {
    let image = foreign_database(w);
    w.put_remote("a.db", &image);
    let c = w.open("h1", "a.db");
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

    let other = w.open("h2", "a.db");
    assert_eq!(integrity(&other), "ok");
    assert_eq!(count(&other, "t"), 4002);
    w.read_remote("a.db", |r| assert_eq!(count(r, "t"), 4002));
}

#[test]
fn local_the_unchanged_chunks_are_copied_not_uploaded() {
    converted_by_the_first_upload(&World::local(), true);
}

#[cfg(feature = "azure")]
#[test]
fn azurite_without_put_block_from_url_the_chunks_go_up() {
    if let Some(w) = World::azurite() {
        converted_by_the_first_upload(&w, false);
    }
}
