//! Delta sync on the real backends (local directory and Azurite): transfers
//! proportional to the change, a randomized run checked byte for byte on a cold
//! cache, foreign blobs, and whole downloads that are plain SQLite files.

mod common;
use common::*;

use managedblob::delta::Manifest;

fn n(s: &serde_json::Value, key: &str) -> u64 {
    s["requests"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {s}"))
}

fn block_manifest(w: &World, blob: &str) -> Option<Manifest> {
    w.with_backend(|b| {
        let (_, list) = b
            .blocks()
            .expect("block capability")
            .block_list(blob)
            .unwrap()?;
        Manifest::from_block_list(&list)
    })
}

fn fill(c: &rusqlite::Connection, rows: u64) {
    c.execute_batch(&format!(
        "BEGIN; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO t SELECT i, randomblob(1000) FROM n; COMMIT;"
    ))
    .unwrap();
}

fn a_one_row_update_moves_at_most_two_chunks_each_way(w: &World) {
    let a = w.open_with("h1", "d.db", "&staleness_ms=0");
    fill(&a, 20_000);
    let size = w.remote_bytes("d.db").unwrap().len() as u64;
    assert!(size > 16 << 20, "tens of MiB: {size}");
    let manifest = block_manifest(w, "d.db").expect("our block list");
    let chunk = manifest.chunk_size;
    let b = w.open_with("h2", "d.db", "&staleness_ms=0");
    let _: i64 = b
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();

    let before = status(&a);
    a.execute("UPDATE t SET v = randomblob(1000) WHERE id = 9999", [])
        .unwrap();
    let after = status(&a);
    let chunks_up = n(&after, "chunks_up") - n(&before, "chunks_up");
    assert!(
        (1..=2).contains(&chunks_up),
        "{chunks_up} chunks up: {after}"
    );
    let list_bytes = 64 * manifest.ids.len() as u64;
    assert!(n(&after, "bytes_up") - n(&before, "bytes_up") <= 2 * chunk + list_bytes);
    assert_eq!(n(&after, "upload"), n(&before, "upload"), "no whole upload");

    let before = status(&b);
    let v: Vec<u8> = b
        .query_row("SELECT v FROM t WHERE id = 9999", [], |r| r.get(0))
        .unwrap();
    let after = status(&b);
    let chunks_down = n(&after, "chunks_down") - n(&before, "chunks_down");
    assert!(
        (1..=2).contains(&chunks_down),
        "{chunks_down} chunks down: {after}"
    );
    assert!(n(&after, "bytes_down") - n(&before, "bytes_down") <= 2 * chunk);
    assert_eq!(
        n(&after, "download"),
        n(&before, "download"),
        "no whole download"
    );
    let expected: Vec<u8> = a
        .query_row("SELECT v FROM t WHERE id = 9999", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, expected);
}

fn randomized_commits_then_a_cold_cache_match_byte_for_byte(w: &World) {
    let a = w.open_with("h1", "d.db", "&staleness_ms=0");
    fill(&a, 3000);
    let mut rng = fastrand::Rng::with_seed(11);
    for round in 0..40 {
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
        if round == 20 {
            a.execute_batch("VACUUM").unwrap();
        }
    }
    let cold = w.open("h9", "d.db");
    let ok: String = cold
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let remote = w.remote_bytes("d.db").unwrap();
    assert!(
        std::fs::read(w.cache("h1", "d.db")).unwrap() == remote,
        "writer == remote"
    );
    assert!(
        std::fs::read(w.cache("h9", "d.db")).unwrap() == remote,
        "cold cache == remote"
    );
    assert!(n(&status(&a), "chunks_up") > 0);
}

fn a_foreign_blob_is_downloaded_whole_and_converted_by_the_next_upload(w: &World) {
    let seed = w.dir.path().join("seed.db");
    {
        let p = rusqlite::Connection::open(&seed).unwrap();
        fill(&p, 3000);
    }
    w.put_remote("d.db", &std::fs::read(&seed).unwrap());
    assert!(
        block_manifest(w, "d.db").is_none(),
        "a whole put has no block list of ours"
    );
    let a = w.open("h1", "d.db");
    let count: i64 = a
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 3000);
    assert_eq!(n(&status(&a), "download"), 1, "whole download");
    a.execute("UPDATE t SET v = x'00' WHERE id = 1", [])
        .unwrap();
    let manifest = block_manifest(w, "d.db").expect("converted to chunks");
    assert_eq!(manifest.len, w.remote_bytes("d.db").unwrap().len() as u64);
}

fn a_whole_download_of_a_managed_blob_is_a_plain_sqlite_file(w: &World) {
    let a = w.open("h1", "d.db");
    fill(&a, 2000);
    for i in 0..10 {
        a.execute("UPDATE t SET v = randomblob(7) WHERE id = ?1", [i * 13 + 1])
            .unwrap();
    }
    // remote_copy is a whole download (the SDK's for Azure, a file copy for local).
    w.read_remote("d.db", |r| {
        let ok: String = r
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let count: i64 = r
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 2000);
    });
}

backend_tests!(
    a_one_row_update_moves_at_most_two_chunks_each_way,
    randomized_commits_then_a_cold_cache_match_byte_for_byte,
    a_foreign_blob_is_downloaded_whole_and_converted_by_the_next_upload,
    a_whole_download_of_a_managed_blob_is_a_plain_sqlite_file,
);
