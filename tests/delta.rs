//! Delta sync through the VFS, on the in-memory backend (block capability, fault
//! injection): transfers proportional to the change, plain SQLite remotes,
//! foreign blobs, crash-safe installs, and a randomized soak.

use common::*;

use common::delta::*;
use common::memworld::MemWorld;

/// A memory world whose caches check the remote at every read.
fn mem(tag: &str) -> MemWorld {
    MemWorld::with_defaults(&format!("delta-{tag}"), "&staleness_ms=0")
}

/// About `mib` MiB: `mib` thousand rows of 1000 random bytes.
fn fill_mib(c: &rusqlite::Connection, mib: u64) {
    fill(c, mib * 1000);
}

#[test]
fn a_one_row_update_moves_at_most_two_chunks_each_way() {
    let m = mem("onerow");
    let a = m.open("h1", "");
    fill_mib(&a, 24);
    let size = m.remote_bytes().len() as u64;
    assert!(size > 20 << 20, "{size}");
    let manifest =
        block_manifest(&*m.backend, "m.db").expect("managedblob writes its own block list");
    let chunk = manifest.chunk_size;

    let b = m.open("h2", "");
    let _: i64 = b
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();

    println!("database of {size} bytes");
    let (before, after) = update_moves_at_most_two_chunks_up(&a, 12345, chunk, manifest.ids.len());
    assert_eq!(n(&after, "commit_blocks") - n(&before, "commit_blocks"), 1);
    reader_moves_at_most_two_chunks_down(&a, &b, 12345, chunk);
}

#[test]
fn the_remote_stays_a_plain_sqlite_file() {
    let m = mem("plain");
    let a = m.open("h1", "");
    fill_mib(&a, 2);
    for i in 0..20 {
        a.execute(
            "UPDATE t SET v = randomblob(10) WHERE id = ?1",
            [i * 97 + 1],
        )
        .unwrap();
    }
    // The remote blob opened with plain SQLite (a whole download, as any tool does).
    let (ok, rows) = m.remote(|r| (integrity(r), count(r, "t")));
    assert_eq!(ok, "ok");
    assert_eq!(rows, 2000);
    let cache = std::fs::read(m.cache("h1")).unwrap();
    assert!(
        same_database(&cache, &m.remote_bytes()),
        "the writer's cache is the remote, byte for byte but the change counter"
    );
}

#[test]
fn a_foreign_blob_is_downloaded_whole_and_converted_by_the_next_upload() {
    let m = mem("foreign");
    let a = a_foreign_blob_is_converted(
        &m.dir.path().join("seed.db"),
        |bytes| m.backend.put("m.db", bytes),
        || m.open("h1", ""),
        || block_manifest(&*m.backend, "m.db"),
        || m.remote_bytes().len() as u64,
    );
    // From now on, changes move by chunks.
    let b = m.open("h2", "");
    let _: i64 = b
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    a.execute("UPDATE t SET v = x'01' WHERE id = 2", [])
        .unwrap();
    let before = status(&b);
    let _: i64 = b
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let after = status(&b);
    assert_eq!(n(&after, "download"), n(&before, "download"));
    assert!(n(&after, "chunks_down") > n(&before, "chunks_down"));
}

#[test]
fn sync_full_keeps_whole_file_transfers() {
    let m = mem("full");
    let a = m.open("h1", "&sync=full");
    fill_mib(&a, 2);
    let before = status(&a);
    a.execute("UPDATE t SET v = x'00' WHERE id = 1", [])
        .unwrap();
    let after = status(&a);
    assert_eq!(n(&after, "upload") - n(&before, "upload"), 1);
    assert_eq!(n(&after, "stage_block"), 0);
    assert_eq!(
        n(&after, "bytes_up") - n(&before, "bytes_up"),
        m.remote_bytes().len() as u64
    );
}

#[test]
fn an_interrupted_chunk_install_is_resynced_by_hashes() {
    let m = mem("torn");
    {
        let a = m.open("h1", "");
        fill_mib(&a, 4);
    }
    let cache = m.cache("h1");
    // Tear the cache: zero a stretch in the middle, as a crash mid-install would,
    // and mark the transfer in flight.
    let mut bytes = std::fs::read(&cache).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 70_000].fill(0);
    std::fs::write(&cache, &bytes).unwrap();
    let p = managedblob::internal::sidecar::path_for(&cache);
    let mut s = managedblob::internal::sidecar::load(&p).unwrap().unwrap();
    s.in_flight = managedblob::internal::sidecar::InFlight::Download;
    managedblob::internal::sidecar::store(&p, &s).unwrap();

    let a = m.open("h1", "");
    let ok: String = a
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let c = status(&a);
    assert_eq!(n(&c, "download"), 0, "no whole download: {c}");
    assert!(
        n(&c, "chunks_down") >= 1 && n(&c, "chunks_down") <= 3,
        "{c}"
    );
    assert!(same_database(
        &std::fs::read(&cache).unwrap(),
        &m.remote_bytes()
    ));
}

#[test]
fn randomized_commits_then_a_cold_cache_match_byte_for_byte() {
    let m = mem("random");
    let a = m.open("h1", "");
    fill_mib(&a, 3);
    random_changes(&a, 7, 60, 30);
    let cold = m.open("h9", "");
    assert_eq!(integrity(&cold), "ok");
    let digest = |c: &rusqlite::Connection| -> (usize, u64) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut stmt = c.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
        let rows: Vec<(i64, Vec<u8>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.hash(&mut h);
        (rows.len(), h.finish())
    };
    assert_eq!(digest(&cold), digest(&a));
    let writer = std::fs::read(m.cache("h1")).unwrap();
    let reader = std::fs::read(m.cache("h9")).unwrap();
    assert!(writer == m.remote_bytes(), "writer's cache == remote");
    assert!(reader == m.remote_bytes(), "cold cache == remote");
    let s = status(&a);
    assert!(n(&s, "chunks_up") > 0, "{s}");
}

/// A commit that changed page 1 only in its change counter keeps the remote's first
/// chunk (one staged block, not two), so the remote's counter lags behind its pages.
/// A reader on another host with the rows in its page cache must still see every
/// commit: its cache moves its own counter when it installs a version without the
/// first chunk, and SQLite drops its page cache on that.
#[test]
fn a_reader_with_a_warm_page_cache_sees_commits_that_kept_the_first_chunk() {
    let m = mem("counter");
    let a = m.open("h1", "");
    fill_mib(&a, 4);
    let b = m.open("h2", "");
    let read = |c: &rusqlite::Connection| -> Vec<u8> {
        c.query_row("SELECT v FROM t WHERE id = 3000", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(
        read(&b).len(),
        1000,
        "the reader's page cache holds the row"
    );
    for round in 0u8..6 {
        let value = vec![round; 1000];
        let before = status(&a);
        a.execute("UPDATE t SET v = ?1 WHERE id = 3000", [&value])
            .unwrap();
        let after = status(&a);
        if round > 0 {
            // The first commit teaches the writer the remote's counter; from then
            // on page 1 stays out.
            assert_eq!(
                n(&after, "stage_block") - n(&before, "stage_block"),
                1,
                "round {round}: only the leaf's chunk is staged: {after}"
            );
        }
        assert!(
            read(&b) == value,
            "round {round}: the reader sees the commit"
        );
    }
    let remote = m.remote_bytes();
    let writer = std::fs::read(m.cache("h1")).unwrap();
    assert_ne!(
        remote[24..28],
        writer[24..28],
        "the remote's change counter lags the writer's"
    );
    assert!(same_database(&writer, &remote));
    let (ok, rows) = m.remote(|r| (integrity(r), count(r, "t")));
    assert_eq!(
        (ok.as_str(), rows),
        ("ok", 4000),
        "the remote is a valid SQLite file"
    );
    let ok: String = b
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}
