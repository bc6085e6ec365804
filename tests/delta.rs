//! Delta sync through the VFS, on the in-memory backend (block capability, fault
//! injection): transfers proportional to the change, plain SQLite remotes,
//! foreign blobs, crash-safe installs, and a randomized soak.

mod common;
use common::*;

use std::sync::Arc;

use managedblob::backend::memory::MemoryBackend;
use managedblob::backend::Backend;
use managedblob::delta::Manifest;

struct Mem {
    dir: tempfile::TempDir,
    name: String,
    backend: Arc<MemoryBackend>,
}

impl Mem {
    fn new(tag: &str) -> Mem {
        init_logging();
        managedblob::register().unwrap();
        let name = format!(
            "delta-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        Mem {
            dir: tempfile::tempdir().unwrap(),
            backend: MemoryBackend::named(&name),
            name,
        }
    }

    fn cache(&self, host: &str) -> std::path::PathBuf {
        let d = self.dir.path().join(host);
        std::fs::create_dir_all(&d).unwrap();
        d.join("d.db")
    }

    fn open(&self, host: &str, extra: &str) -> rusqlite::Connection {
        open(&format!(
            "file:{}?vfs=managedblob&remote=memory:{}&staleness_ms=0{extra}",
            self.cache(host).display(),
            self.name
        ))
    }

    fn remote_bytes(&self) -> Vec<u8> {
        self.backend.get("d.db").unwrap()
    }

    /// The remote blob opened with plain SQLite (a whole download, as any tool does).
    fn remote_db(&self) -> rusqlite::Connection {
        let f = self
            .dir
            .path()
            .join(format!("whole-{}.db", fastrand::u64(..)));
        std::fs::write(&f, self.remote_bytes()).unwrap();
        rusqlite::Connection::open(&f).unwrap()
    }

    fn block_manifest(&self) -> Option<Manifest> {
        let (_, list) = self.backend.blocks().unwrap().block_list("d.db").unwrap()?;
        Manifest::from_block_list(&list)
    }
}

fn counters(c: &rusqlite::Connection) -> serde_json::Value {
    status(c)["requests"].clone()
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// A database of about `mib` MiB: `rows` rows of 1000 random bytes.
fn fill(c: &rusqlite::Connection, mib: u64) {
    c.execute_batch(&format!(
        "BEGIN; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
         INSERT INTO t SELECT i, randomblob(1000) FROM n; COMMIT;",
        mib * 1000
    ))
    .unwrap();
}

#[test]
fn a_one_row_update_moves_at_most_two_chunks_each_way() {
    let m = Mem::new("onerow");
    let a = m.open("h1", "");
    fill(&a, 24);
    let size = m.remote_bytes().len() as u64;
    assert!(size > 20 << 20, "{size}");
    let manifest = m
        .block_manifest()
        .expect("managedblob writes its own block list");
    let chunk = manifest.chunk_size;

    let b = m.open("h2", "");
    let _: i64 = b
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();

    let before = counters(&a);
    a.execute("UPDATE t SET v = randomblob(1000) WHERE id = 12345", [])
        .unwrap();
    let after = counters(&a);
    let chunks_up = n(&after, "chunks_up") - n(&before, "chunks_up");
    println!("one-row update, writer: before {before} after {after}, chunk {chunk}, size {size}");
    let bytes_up = n(&after, "bytes_up") - n(&before, "bytes_up");
    assert!(
        (1..=2).contains(&chunks_up),
        "chunks up {chunks_up}: {after}"
    );
    assert_eq!(n(&after, "commit_blocks") - n(&before, "commit_blocks"), 1);
    assert_eq!(n(&after, "upload"), n(&before, "upload"), "no whole upload");
    assert!(
        bytes_up <= 2 * chunk + 64 * manifest.ids.len() as u64,
        "bytes up {bytes_up} for a {size}-byte database with {chunk}-byte chunks"
    );

    let before = counters(&b);
    let v: Vec<u8> = b
        .query_row("SELECT v FROM t WHERE id = 12345", [], |r| r.get(0))
        .unwrap();
    let after = counters(&b);
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
        .query_row("SELECT v FROM t WHERE id = 12345", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, expected);
}

#[test]
fn the_remote_stays_a_plain_sqlite_file() {
    let m = Mem::new("plain");
    let a = m.open("h1", "");
    fill(&a, 2);
    for i in 0..20 {
        a.execute(
            "UPDATE t SET v = randomblob(10) WHERE id = ?1",
            [i * 97 + 1],
        )
        .unwrap();
    }
    let r = m.remote_db();
    let ok: String = r
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let count: i64 = r
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 2000);
    let cache = std::fs::read(m.cache("h1")).unwrap();
    assert!(
        cache == m.remote_bytes(),
        "the writer's cache is the remote, byte for byte"
    );
}

#[test]
fn a_foreign_blob_is_downloaded_whole_and_converted_by_the_next_upload() {
    let m = Mem::new("foreign");
    let seed = m.dir.path().join("seed.db");
    {
        let p = rusqlite::Connection::open(&seed).unwrap();
        fill(&p, 3);
    }
    m.backend.put("d.db", &std::fs::read(&seed).unwrap());
    assert!(
        m.block_manifest().is_none(),
        "a whole put has no block list of ours"
    );
    let a = m.open("h1", "");
    let count: i64 = a
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 3000);
    assert_eq!(n(&counters(&a), "download"), 1, "whole download");
    a.execute("UPDATE t SET v = x'00' WHERE id = 1", [])
        .unwrap();
    let manifest = m.block_manifest().expect("converted to chunks");
    assert_eq!(manifest.len, m.remote_bytes().len() as u64);
    // From now on, changes move by chunks.
    let b = m.open("h2", "");
    let _: i64 = b
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    a.execute("UPDATE t SET v = x'01' WHERE id = 2", [])
        .unwrap();
    let before = counters(&b);
    let _: i64 = b
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let after = counters(&b);
    assert_eq!(n(&after, "download"), n(&before, "download"));
    assert!(n(&after, "chunks_down") > n(&before, "chunks_down"));
}

#[test]
fn sync_full_keeps_whole_file_transfers() {
    let m = Mem::new("full");
    let a = m.open("h1", "&sync=full");
    fill(&a, 2);
    let before = counters(&a);
    a.execute("UPDATE t SET v = x'00' WHERE id = 1", [])
        .unwrap();
    let after = counters(&a);
    assert_eq!(n(&after, "upload") - n(&before, "upload"), 1);
    assert_eq!(n(&after, "stage_block"), 0);
    assert_eq!(
        n(&after, "bytes_up") - n(&before, "bytes_up"),
        m.remote_bytes().len() as u64
    );
}

#[test]
fn an_interrupted_chunk_install_is_resynced_by_hashes() {
    let m = Mem::new("torn");
    {
        let a = m.open("h1", "");
        fill(&a, 4);
    }
    let cache = m.cache("h1");
    // Tear the cache: zero a stretch in the middle, as a crash mid-install would,
    // and mark the transfer in flight.
    let mut bytes = std::fs::read(&cache).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 70_000].fill(0);
    std::fs::write(&cache, &bytes).unwrap();
    let p = managedblob::sidecar::path_for(&cache);
    let mut s = managedblob::sidecar::load(&p).unwrap().unwrap();
    s.in_flight = managedblob::sidecar::InFlight::Download;
    managedblob::sidecar::store(&p, &s).unwrap();

    let a = m.open("h1", "");
    let ok: String = a
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let c = counters(&a);
    assert_eq!(n(&c, "download"), 0, "no whole download: {c}");
    assert!(
        n(&c, "chunks_down") >= 1 && n(&c, "chunks_down") <= 3,
        "{c}"
    );
    assert!(std::fs::read(&cache).unwrap() == m.remote_bytes());
}

#[test]
fn randomized_commits_then_a_cold_cache_match_byte_for_byte() {
    let m = Mem::new("random");
    let a = m.open("h1", "");
    fill(&a, 3);
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..60 {
        let batch = rng.bool();
        if batch {
            a.execute_batch("PRAGMA managedblob_batch=begin").unwrap();
        }
        for _ in 0..rng.usize(1..5) {
            match rng.u8(0..4) {
                0 => a
                    .execute("DELETE FROM t WHERE id = ?1", [rng.i64(1..4000)])
                    .map(|_| ()),
                1 => a
                    .execute(
                        "INSERT INTO t(v) VALUES (randomblob(?1))",
                        [rng.i64(1..5000)],
                    )
                    .map(|_| ()),
                _ => a
                    .execute(
                        "UPDATE t SET v = randomblob(?1) WHERE id = ?2",
                        [rng.i64(1..3000), rng.i64(1..4000)],
                    )
                    .map(|_| ()),
            }
            .unwrap();
        }
        if batch {
            a.execute_batch("PRAGMA managedblob_batch=end").unwrap();
        }
        if round == 30 {
            a.execute_batch("VACUUM").unwrap();
        }
    }
    let cold = m.open("h9", "");
    let ok: String = cold
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
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
    assert!(n(&s["requests"], "chunks_up") > 0, "{s}");
}
