//! The VFS through rusqlite, on the local backend: the Python store's cases, batches,
//! journal modes, configuration errors and crash recovery.

mod common;
use common::*;

use std::time::Duration;

fn count(c: &rusqlite::Connection, table: &str) -> i64 {
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn remote_count(w: &World, blob: &str, table: &str) -> i64 {
    read_remote(&w.remote_blob(blob), |r| count(r, table))
}

#[test]
fn first_write_in_one_transaction_uploads_once() {
    let w = World::new();
    let c = w.open("h1", "a.db");
    c.execute_batch("BEGIN; CREATE TABLE t(x); INSERT INTO t VALUES (1); COMMIT;")
        .unwrap();
    let s = status(&c);
    assert_eq!(s["requests"]["upload"], 1, "{s}");
    assert_eq!(s["requests"]["download"], 0, "{s}");
    assert_eq!(s["requests"]["bytes_down"], 0, "{s}");
    assert_eq!(s["dirty"], false);
    assert_eq!(s["lease_held"], false);
    assert_eq!(remote_count(&w, "a.db", "t"), 1);
}

#[test]
fn second_batch_on_the_same_cache_downloads_nothing() {
    let w = World::new();
    {
        let c = w.open("h1", "a.db");
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    let c = w.open("h1", "a.db");
    pragma(&c, "PRAGMA managedblob_batch=begin").unwrap();
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    pragma(&c, "PRAGMA managedblob_batch=end").unwrap();
    let s = status(&c);
    assert_eq!(s["requests"]["download"], 0, "{s}");
    assert_eq!(s["requests"]["upload"], 1, "{s}");
    assert_eq!(remote_count(&w, "a.db", "t"), 2);
}

#[test]
fn a_remote_change_is_downloaded_once() {
    let w = World::new();
    let a = w.open_with("h1", "a.db", "&staleness_ms=0");
    a.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let b = w.open_with("h2", "a.db", "&staleness_ms=0");
    assert_eq!(count(&b, "t"), 1);
    assert_eq!(requests(&b, "download"), 1);
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(count(&b, "t"), 2);
    assert_eq!(count(&b, "t"), 2);
    assert_eq!(
        requests(&b, "download"),
        2,
        "one download per remote change"
    );
    assert_eq!(
        requests(&a, "download"),
        0,
        "the writer never downloads its own commits"
    );
}

#[test]
fn staleness_bounds_the_checks() {
    let w = World::new();
    let a = w.open("h1", "a.db");
    a.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let b = w.open_with("h2", "a.db", "&staleness_ms=60000");
    assert_eq!(count(&b, "t"), 1);
    let stats_before = requests(&b, "stat");
    for _ in 0..20 {
        assert_eq!(count(&b, "t"), 1);
    }
    assert_eq!(
        requests(&b, "stat"),
        stats_before,
        "reads within the bound stat nothing"
    );
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(count(&b, "t"), 1, "a stale read within the bound");
    pragma(&b, "PRAGMA managedblob_refresh").unwrap();
    assert_eq!(count(&b, "t"), 2, "refresh takes the new version now");
}

#[test]
fn a_failed_transaction_uploads_nothing() {
    let w = World::new();
    let c = w.open("h1", "a.db");
    c.execute_batch("CREATE TABLE t(x UNIQUE); INSERT INTO t VALUES (1);")
        .unwrap();
    let uploads = requests(&c, "upload");
    let err = c.execute_batch("BEGIN; INSERT INTO t VALUES (2); INSERT INTO t VALUES (1); COMMIT;");
    assert!(err.is_err());
    c.execute_batch("ROLLBACK").unwrap();
    assert_eq!(requests(&c, "upload"), uploads);
    c.execute_batch("BEGIN; INSERT INTO t VALUES (3); ROLLBACK;")
        .unwrap();
    assert_eq!(requests(&c, "upload"), uploads);
    assert_eq!(remote_count(&w, "a.db", "t"), 1);
    assert_eq!(status(&c)["lease_held"], false);
}

#[test]
fn a_write_on_a_moved_remote_is_busy_then_retries_on_the_new_version() {
    let w = World::new();
    let a = w.open("h1", "a.db");
    a.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    // b reads, with a long staleness bound, then a writes again.
    let b = w.open_with("h2", "a.db", "&staleness_ms=600000");
    assert_eq!(count(&b, "t"), 1);
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    // b's autocommit write sees the moved remote at RESERVED, refreshes, retries.
    b.busy_timeout(Duration::from_secs(5)).unwrap();
    b.execute("INSERT INTO t VALUES (3)", []).unwrap();
    assert_eq!(remote_count(&w, "a.db", "t"), 3, "no lost update");
}

#[test]
fn batches_nest_are_shared_by_connections_and_upload_once() {
    let w = World::new();
    let a = w.open("h1", "a.db");
    let b = w.open("h1", "a.db");
    a.execute("CREATE TABLE t(x)", []).unwrap();
    let uploads = requests(&a, "upload");
    pragma(&a, "PRAGMA managedblob_batch=begin").unwrap();
    pragma(&b, "PRAGMA managedblob_batch=begin").unwrap();
    for i in 0..100 {
        let c = if i % 2 == 0 { &a } else { &b };
        c.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
    }
    assert_eq!(status(&a)["dirty"], true);
    assert_eq!(status(&a)["lease_held"], true);
    assert_eq!(status(&b)["batch_depth"], 2);
    pragma(&b, "PRAGMA managedblob_batch=end").unwrap();
    assert_eq!(
        requests(&a, "upload"),
        uploads,
        "the inner end uploads nothing"
    );
    assert_eq!(remote_count(&w, "a.db", "t"), 0);
    pragma(&a, "PRAGMA managedblob_batch=end").unwrap();
    assert_eq!(requests(&a, "upload"), uploads + 1, "exactly one upload");
    assert_eq!(remote_count(&w, "a.db", "t"), 100);
    let s = status(&b);
    assert_eq!(s["dirty"], false);
    assert_eq!(s["lease_held"], false);
    let err = pragma(&a, "PRAGMA managedblob_batch=end")
        .unwrap_err()
        .to_string();
    assert!(err.contains("without a matching"), "{err}");
}

#[test]
fn flush_uploads_inside_a_batch() {
    let w = World::new();
    let c = w.open("h1", "a.db");
    c.execute("CREATE TABLE t(x)", []).unwrap();
    pragma(&c, "PRAGMA managedblob_batch=begin").unwrap();
    c.execute("INSERT INTO t VALUES (1)", []).unwrap();
    assert_eq!(remote_count(&w, "a.db", "t"), 0);
    pragma(&c, "PRAGMA managedblob_flush").unwrap();
    assert_eq!(remote_count(&w, "a.db", "t"), 1);
    assert_eq!(status(&c)["lease_held"], true, "the batch keeps its lease");
    pragma(&c, "PRAGMA managedblob_batch=end").unwrap();
    assert_eq!(status(&c)["lease_held"], false);
}

#[test]
fn a_batch_blocks_other_hosts_writers() {
    let w = World::new();
    let a = w.open("h1", "a.db");
    a.execute("CREATE TABLE t(x)", []).unwrap();
    pragma(&a, "PRAGMA managedblob_batch=begin").unwrap();
    let b = w.open("h2", "a.db");
    b.busy_timeout(Duration::from_millis(0)).unwrap();
    let err = b.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy),
        "{err}"
    );
    pragma(&a, "PRAGMA managedblob_batch=end").unwrap();
    b.execute("INSERT INTO t VALUES (1)", []).unwrap();
    assert_eq!(remote_count(&w, "a.db", "t"), 1);
}

#[test]
fn closing_the_last_connection_flushes_a_batch() {
    let w = World::new();
    {
        let c = w.open("h1", "a.db");
        c.execute("CREATE TABLE t(x)", []).unwrap();
        pragma(&c, "PRAGMA managedblob_batch=begin").unwrap();
        c.execute("INSERT INTO t VALUES (1)", []).unwrap();
    }
    assert_eq!(remote_count(&w, "a.db", "t"), 1);
}

#[test]
fn journal_modes_delete_truncate_persist_memory_upload() {
    for mode in ["DELETE", "TRUNCATE", "PERSIST", "MEMORY"] {
        let w = World::new();
        let c = w.open("h1", "a.db");
        let got: String = c
            .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(got.to_uppercase(), mode);
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);")
            .unwrap();
        assert_eq!(remote_count(&w, "a.db", "t"), 2, "{mode}");
        let other = w.open("h2", "a.db");
        assert_eq!(count(&other, "t"), 2, "{mode}");
    }
}

#[test]
fn wal_and_off_journal_modes_fail_with_a_clear_message() {
    let w = World::new();
    let c = w.open("h1", "a.db");
    for mode in ["WAL", "off"] {
        let err = c
            .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| {
                r.get::<_, String>(0)
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("not supported on a managed database"), "{err}");
    }
}

#[test]
fn a_remote_with_a_wal_header_opens_reads_writes_and_uploads() {
    let w = World::new();
    let blob = w.remote_blob("py.db");
    {
        let p = rusqlite::Connection::open(&blob).unwrap();
        p.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .unwrap();
    }
    let _ = std::fs::remove_file(w.remote().join("py.db-wal"));
    let _ = std::fs::remove_file(w.remote().join("py.db-shm"));
    let header = std::fs::read(&blob).unwrap();
    assert_eq!(
        (header[18], header[19]),
        (2, 2),
        "the fixture is a WAL database"
    );

    let c = w.open("h1", "py.db");
    assert_eq!(count(&c, "t"), 1);
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(remote_count(&w, "py.db", "t"), 2);
    let ok: String = read_remote(&blob, |r| {
        r.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap()
    });
    assert_eq!(ok, "ok");
}

#[test]
fn a_sqlite_file_copied_into_the_remote_is_picked_up() {
    let w = World::new();
    {
        let p = rusqlite::Connection::open(w.remote_blob("copied.db")).unwrap();
        p.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (42);")
            .unwrap();
    }
    let c = w.open("h1", "copied.db");
    let v: i64 = c.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 42);
}

#[test]
fn config_errors_name_the_setting_in_rusqlite_errors() {
    let w = World::new();
    let cache = w.cache("h1", "a.db");
    let cases = [
        (
            format!("file:{}?vfs=managedblob", cache.display()),
            "'remote' is missing",
        ),
        (uri(&cache, &w.remote(), "&lease_secs=5"), "'lease_secs'"),
        (
            uri(&cache, &w.remote(), "&staleness_ms=soon"),
            "'staleness_ms'",
        ),
        (
            format!(
                "file:{}?vfs=managedblob&remote=s3://bucket/x",
                cache.display()
            ),
            "unknown scheme",
        ),
        (
            format!(
                "file:{}?vfs=managedblob&remote={}",
                cache.display(),
                w.dir.path().join("no-such-dir").display()
            ),
            "'remote'",
        ),
        (uri(&cache, &w.remote(), "&blob=../escape.db"), "'blob'"),
    ];
    for (uri, expected) in cases {
        let err = match rusqlite::Connection::open_with_flags(&uri, flags()) {
            Ok(_) => panic!("{uri} opened"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expected), "{uri}: {err}");
        assert!(err.contains("managedblob"), "{uri}: {err}");
        assert!(!cache.exists(), "{uri}: a failed open leaves no cache file");
    }
}

#[test]
fn read_only_mode_reads_and_refuses_writes() {
    let w = World::new();
    let a = w.open("h1", "a.db");
    a.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let r = open(&w.uri("h2", "a.db", "&mode=ro"));
    assert_eq!(count(&r, "t"), 1);
    let err = r.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly),
        "{err}"
    );
    assert_eq!(requests(&r, "upload"), 0);
    assert_eq!(requests(&r, "lease_acquire"), 0);
}

fn sidecar_path(cache: &std::path::Path) -> std::path::PathBuf {
    managedblob::sidecar::path_for(cache)
}

fn set_dirty(cache: &std::path::Path) {
    let p = sidecar_path(cache);
    let mut s = managedblob::sidecar::load(&p).unwrap().unwrap();
    s.dirty = true;
    managedblob::sidecar::store(&p, &s).unwrap();
}

#[test]
fn dirty_cache_with_unchanged_remote_uploads_its_commits_on_open() {
    let w = World::new();
    {
        let c = w.open("h1", "a.db");
        c.execute("CREATE TABLE t(x)", []).unwrap();
    }
    // Simulate commits that never reached the remote: write the cache with plain
    // SQLite, then mark the sidecar dirty (what a batch does before a crash).
    let cache = w.cache("h1", "a.db");
    {
        let p = rusqlite::Connection::open(&cache).unwrap();
        p.execute("INSERT INTO t VALUES (7)", []).unwrap();
    }
    set_dirty(&cache);
    let c = w.open("h1", "a.db");
    assert_eq!(status(&c)["dirty"], false);
    assert_eq!(remote_count(&w, "a.db", "t"), 1);
}

#[test]
fn dirty_cache_with_moved_remote_keeps_a_conflict_copy_and_takes_the_remote() {
    let w = World::new();
    {
        let c = w.open("h1", "a.db");
        c.execute("CREATE TABLE t(x)", []).unwrap();
    }
    let cache = w.cache("h1", "a.db");
    {
        let p = rusqlite::Connection::open(&cache).unwrap();
        p.execute("INSERT INTO t VALUES (1)", []).unwrap();
    }
    set_dirty(&cache);
    {
        let other = w.open("h2", "a.db");
        other.execute("INSERT INTO t VALUES (2)", []).unwrap();
        other.execute("INSERT INTO t VALUES (3)", []).unwrap();
    }
    let c = w.open("h1", "a.db");
    assert_eq!(count(&c, "t"), 2, "the cache follows the remote");
    let s = status(&c);
    let conflicts = s["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{s}");
    let copy = conflicts[0].as_str().unwrap();
    assert!(copy.contains("a.db.conflict-"), "{copy}");
    let kept = rusqlite::Connection::open(copy).unwrap();
    assert_eq!(count(&kept, "t"), 1, "the local commit is kept");
    assert_eq!(
        remote_count(&w, "a.db", "t"),
        2,
        "the remote was not overwritten"
    );
}

#[test]
fn garbage_in_a_dirty_cache_is_recovered() {
    let w = World::new();
    {
        let c = w.open("h1", "a.db");
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    let cache = w.cache("h1", "a.db");
    std::fs::write(&cache, vec![0x5a; 8192]).unwrap();
    set_dirty(&cache);
    let c = w.open("h1", "a.db");
    assert_eq!(count(&c, "t"), 1);
    assert_eq!(
        remote_count(&w, "a.db", "t"),
        1,
        "garbage never reaches the remote"
    );
    assert_eq!(status(&c)["conflicts"].as_array().unwrap().len(), 1);
}

#[test]
fn an_interrupted_download_is_resynced() {
    let w = World::new();
    {
        let c = w.open("h1", "a.db");
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    let cache = w.cache("h1", "a.db");
    // A torn cache: half written, sidecar says a download was in flight.
    let len = std::fs::metadata(&cache).unwrap().len();
    std::fs::write(&cache, vec![0u8; len as usize / 2]).unwrap();
    let p = sidecar_path(&cache);
    let mut s = managedblob::sidecar::load(&p).unwrap().unwrap();
    s.in_flight = managedblob::sidecar::InFlight::Download;
    managedblob::sidecar::store(&p, &s).unwrap();
    let c = w.open("h1", "a.db");
    assert_eq!(count(&c, "t"), 1);
    assert_eq!(status(&c)["in_flight"], "none");
}

#[test]
fn a_remote_that_is_not_a_database_fails_the_open_clearly() {
    let w = World::new();
    std::fs::write(
        w.remote_blob("junk.db"),
        b"this is not sqlite at all, not even close",
    )
    .unwrap();
    let err = match rusqlite::Connection::open_with_flags(w.uri("h1", "junk.db", ""), flags()) {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("not a SQLite database"), "{err}");
    assert!(w.remote_blob("junk.db").exists(), "nothing deleted");
}

#[test]
fn an_existing_local_database_seeds_an_empty_remote() {
    let w = World::new();
    let cache = w.cache("h1", "seed.db");
    {
        let p = rusqlite::Connection::open(&cache).unwrap();
        p.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (5);")
            .unwrap();
    }
    let c = w.open("h1", "seed.db");
    c.execute("INSERT INTO t VALUES (6)", []).unwrap();
    assert_eq!(remote_count(&w, "seed.db", "t"), 2);
}

#[test]
fn a_rollback_after_a_cache_spill_uploads_nothing() {
    let w = World::new();
    let c = w.open("h1", "a.db");
    c.execute_batch("CREATE TABLE t(x); PRAGMA cache_size=2;")
        .unwrap();
    let uploads = requests(&c, "upload");
    c.execute_batch("BEGIN;").unwrap();
    for i in 0..2000 {
        c.execute("INSERT INTO t VALUES (?1)", [format!("{i:0200}")])
            .unwrap();
    }
    c.execute_batch("ROLLBACK;").unwrap();
    assert_eq!(
        requests(&c, "upload"),
        uploads,
        "a rollback publishes nothing"
    );
    assert_eq!(count(&c, "t"), 0);
    assert_eq!(status(&c)["lease_held"], false);
    c.execute("INSERT INTO t VALUES (1)", []).unwrap();
    assert_eq!(remote_count(&w, "a.db", "t"), 1);
}

#[test]
fn a_cold_open_of_a_multi_megabyte_database_downloads_it_whole() {
    // Regression: the unix VFS masks single writes above 128 KiB, so the cache must
    // be written in page-sized pieces.
    let w = World::new();
    let a = w.open("h1", "big.db");
    a.execute_batch(
        "BEGIN; CREATE TABLE t(x);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO t SELECT hex(randomblob(500)) FROM n; COMMIT;",
    )
    .unwrap();
    let size = std::fs::metadata(w.remote_blob("big.db")).unwrap().len();
    assert!(size > 2 << 20, "{size}");
    let b = w.open("h2", "big.db");
    assert_eq!(count(&b, "t"), 3000);
    let s = status(&b);
    assert_eq!(s["requests"]["bytes_down"], size, "{s}");
    let ok: String = b
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn an_interrupted_commit_is_resynced_from_the_remote() {
    let w = World::new();
    {
        let c = w.open("h1", "a.db");
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    // The process died between the upload and the end of SQLite's local commit: the
    // sidecar says so, and the cache holds something else (here: an extra row).
    let cache = w.cache("h1", "a.db");
    {
        let p = rusqlite::Connection::open(&cache).unwrap();
        p.execute("INSERT INTO t VALUES (99)", []).unwrap();
    }
    let p = sidecar_path(&cache);
    let mut s = managedblob::sidecar::load(&p).unwrap().unwrap();
    s.in_flight = managedblob::sidecar::InFlight::Commit;
    managedblob::sidecar::store(&p, &s).unwrap();
    let c = w.open("h1", "a.db");
    assert_eq!(count(&c, "t"), 1, "the cache follows the remote");
    let s = status(&c);
    assert_eq!(s["in_flight"], "none");
    assert_eq!(s["requests"]["download"], 1, "{s}");
    assert_eq!(
        remote_count(&w, "a.db", "t"),
        1,
        "the remote was not touched"
    );
}

#[test]
fn two_connections_in_one_process_share_the_cache() {
    let w = World::new();
    let a = w.open_with("h1", "a.db", "&staleness_ms=0");
    let b = w.open_with("h1", "a.db", "&staleness_ms=0");
    a.execute("CREATE TABLE t(x)", []).unwrap();
    b.execute("INSERT INTO t VALUES (1)", []).unwrap();
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(count(&a, "t"), 2);
    assert_eq!(count(&b, "t"), 2);
    assert_eq!(
        requests(&a, "download"),
        0,
        "the shared store never downloads its own commits"
    );
    assert_eq!(remote_count(&w, "a.db", "t"), 2);
    // While a reads inside a transaction, another host's commit makes b's next
    // read need a refresh, which must wait for a's transaction (SQLITE_BUSY).
    a.execute_batch("BEGIN; SELECT count(*) FROM t;").unwrap();
    let other = w.open("h2", "a.db");
    other.execute("INSERT INTO t VALUES (3)", []).unwrap();
    b.busy_timeout(Duration::ZERO).unwrap();
    let err = b
        .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
        .unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy),
        "{err}"
    );
    a.execute_batch("COMMIT").unwrap();
    assert_eq!(count(&b, "t"), 3);
    assert_eq!(count(&a, "t"), 3);
    assert_eq!(
        requests(&b, "download"),
        1,
        "the version downloaded while the cache was busy is installed, not fetched again"
    );
}

#[test]
fn a_deleted_cache_is_downloaded_again_not_mistaken_for_the_synced_one() {
    let w = World::new();
    {
        let c = w.open("h1", "a.db");
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    let cache = w.cache("h1", "a.db");
    std::fs::remove_file(&cache).unwrap();
    let c = w.open("h1", "a.db");
    assert_eq!(
        count(&c, "t"),
        1,
        "the remote's content, not an empty database"
    );
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(remote_count(&w, "a.db", "t"), 2);
}
