//! Delta sync on the real backends (local directory and Azurite): transfers
//! proportional to the change, a randomized run checked byte for byte on a cold
//! cache, foreign blobs, and whole downloads that are plain SQLite files.

use common::*;

use common::delta::*;

/// [`block_manifest`] of `blob` in `w`'s remote.
fn manifest_of(w: &World, blob: &str) -> Option<managedblob::internal::delta::Manifest> {
    w.with_backend(|b| block_manifest(b, blob))
}

fn a_one_row_update_moves_at_most_two_chunks_each_way(w: &World) {
    let a = w.open_with("h1", "d.db", "&staleness_ms=0");
    fill(&a, 20_000);
    let size = w.remote_bytes("d.db").unwrap().len() as u64;
    assert!(size > 16 << 20, "tens of MiB: {size}");
    let manifest = manifest_of(w, "d.db").expect("our block list");
    let chunk = manifest.chunk_size;
    let b = w.open_with("h2", "d.db", "&staleness_ms=0");
    let _: i64 = b
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();

    update_moves_at_most_two_chunks_up(&a, 9999, chunk, manifest.ids.len());
    reader_moves_at_most_two_chunks_down(&a, &b, 9999, chunk);
}

fn randomized_commits_then_a_cold_cache_match_byte_for_byte(w: &World) {
    let a = w.open_with("h1", "d.db", "&staleness_ms=0");
    fill(&a, 3000);
    random_changes(&a, 11, 40, 20);
    let cold = w.open("h9", "d.db");
    assert_eq!(integrity(&cold), "ok");
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
    a_foreign_blob_is_converted(
        &w.dir.path().join("seed.db"),
        |bytes| w.put_remote("d.db", bytes),
        || w.open("h1", "d.db"),
        || manifest_of(w, "d.db"),
        || w.remote_bytes("d.db").unwrap().len() as u64,
    );
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

/// On the local backend SQLite tools open the remote file in place and keep their
/// page cache between transactions, trusting the change counter to say when it is
/// stale. So a commit there always writes page 1 with its new counter (no
/// `counter_may_lag`), and a plain connection kept open sees every commit.
#[test]
fn a_plain_connection_kept_open_on_the_local_remote_sees_every_commit() {
    let w = World::local();
    let a = w.open_with("h1", "d.db", "&staleness_ms=0");
    fill(&a, 4000);
    let plain = open(&format!("file:{}?mode=ro", w.remote_blob("d.db").display()));
    let read = |c: &rusqlite::Connection| -> Vec<u8> {
        c.query_row("SELECT v FROM t WHERE id = 3000", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(read(&plain).len(), 1000);
    for round in 0u8..4 {
        let value = vec![round; 1000];
        a.execute("UPDATE t SET v = ?1 WHERE id = 3000", [&value])
            .unwrap();
        assert!(
            read(&plain) == value,
            "round {round}: the plain reader sees the commit"
        );
        assert!(
            w.remote_bytes("d.db").unwrap() == std::fs::read(w.cache("h1", "d.db")).unwrap(),
            "round {round}: the remote file is the writer's cache, counter included"
        );
    }
}
