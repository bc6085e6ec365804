//! The VFS through rusqlite: the Python store's cases, batches, journal modes,
//! configuration errors and crash recovery. Every test runs on the local backend
//! (`local::*`) and, with the `azure` feature, on an Azurite container (`azurite::*`,
//! skipped when Azurite is not installed, unless CI is set); see `backend_tests!` at the
//! end and tests/common/lib.rs.

use common::*;

use std::time::Duration;

fn remote_count(w: &World, blob: &str, table: &str) -> i64 {
    w.read_remote(blob, |r| count(r, table))
}

fn first_write_in_one_transaction_uploads_once(w: &World) {
    let c = w.open("h1", "a.db");
    c.execute_batch("BEGIN; CREATE TABLE t(x); INSERT INTO t VALUES (1); COMMIT;")
        .unwrap();
    let s = status(&c);
    assert_eq!(uploads(&s), 1, "{s}");
    assert_eq!(fetches(&s), 0, "{s}");
    assert_eq!(s["requests"]["bytes_down"], 0, "{s}");
    assert_eq!(s["dirty"], false);
    assert_eq!(s["lease_held"], true, "kept warm for the next write");
    wait::until_lease_released(&c);
    assert_eq!(remote_count(w, "a.db", "t"), 1);
}

fn second_batch_on_the_same_cache_downloads_nothing(w: &World) {
    drop(w.one_row("h1", "a.db"));
    let c = w.open("h1", "a.db");
    pragma(&c, "PRAGMA managedblob_batch=begin").unwrap();
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    pragma(&c, "PRAGMA managedblob_batch=end").unwrap();
    let s = status(&c);
    assert_eq!(fetches(&s), 0, "{s}");
    assert_eq!(uploads(&s), 1, "{s}");
    assert_eq!(remote_count(w, "a.db", "t"), 2);
}

fn a_remote_change_is_downloaded_once(w: &World) {
    let a = w.open_with("h1", "a.db", "&staleness_ms=0");
    a.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let b = w.open_with("h2", "a.db", "&staleness_ms=0");
    assert_eq!(count(&b, "t"), 1);
    assert_eq!(fetches(&status(&b)), 1);
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(count(&b, "t"), 2);
    assert_eq!(count(&b, "t"), 2);
    assert_eq!(fetches(&status(&b)), 2, "one download per remote change");
    assert_eq!(
        fetches(&status(&a)),
        0,
        "the writer never downloads its own commits"
    );
}

fn staleness_bounds_the_checks(w: &World) {
    let a = w.one_row("h1", "a.db");
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

fn a_failed_transaction_uploads_nothing(w: &World) {
    let c = w.open("h1", "a.db");
    c.execute_batch("CREATE TABLE t(x UNIQUE); INSERT INTO t VALUES (1);")
        .unwrap();
    let before = uploads(&status(&c));
    let err = c.execute_batch("BEGIN; INSERT INTO t VALUES (2); INSERT INTO t VALUES (1); COMMIT;");
    assert!(err.is_err());
    c.execute_batch("ROLLBACK").unwrap();
    assert_eq!(uploads(&status(&c)), before);
    c.execute_batch("BEGIN; INSERT INTO t VALUES (3); ROLLBACK;")
        .unwrap();
    assert_eq!(uploads(&status(&c)), before);
    assert_eq!(remote_count(w, "a.db", "t"), 1);
    assert_eq!(status(&c)["lease_held"], false);
}

fn a_write_on_a_moved_remote_is_busy_then_retries_on_the_new_version(w: &World) {
    let a = w.one_row("h1", "a.db");
    // b reads, with a long staleness bound, then a writes again.
    let b = w.open_with("h2", "a.db", "&staleness_ms=600000");
    assert_eq!(count(&b, "t"), 1);
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    // b's autocommit write sees the moved remote at RESERVED, refreshes, retries.
    b.busy_timeout(Duration::from_secs(5)).unwrap();
    b.execute("INSERT INTO t VALUES (3)", []).unwrap();
    assert_eq!(remote_count(w, "a.db", "t"), 3, "no lost update");
}

fn batches_nest_are_shared_by_connections_and_upload_once(w: &World) {
    let a = w.open("h1", "a.db");
    let b = w.open("h1", "a.db");
    a.execute("CREATE TABLE t(x)", []).unwrap();
    let before = uploads(&status(&a));
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
        uploads(&status(&a)),
        before,
        "the inner end uploads nothing"
    );
    assert_eq!(remote_count(w, "a.db", "t"), 0);
    pragma(&a, "PRAGMA managedblob_batch=end").unwrap();
    assert_eq!(uploads(&status(&a)), before + 1, "exactly one upload");
    assert_eq!(remote_count(w, "a.db", "t"), 100);
    let s = status(&b);
    assert_eq!(s["dirty"], false);
    assert_eq!(s["lease_held"], false);
    let err = pragma(&a, "PRAGMA managedblob_batch=end")
        .unwrap_err()
        .to_string();
    assert!(err.contains("without a matching"), "{err}");
}

/// Host h1's connection to a.db, inside a batch that created table `t(x)` (uploaded)
/// and inserted one row (local only).
fn batch_holding_one_row(w: &World) -> rusqlite::Connection {
    let c = w.open("h1", "a.db");
    c.execute("CREATE TABLE t(x)", []).unwrap();
    pragma(&c, "PRAGMA managedblob_batch=begin").unwrap();
    c.execute("INSERT INTO t VALUES (1)", []).unwrap();
    c
}

fn flush_uploads_inside_a_batch(w: &World) {
    let c = batch_holding_one_row(w);
    assert_eq!(remote_count(w, "a.db", "t"), 0);
    pragma(&c, "PRAGMA managedblob_flush").unwrap();
    assert_eq!(remote_count(w, "a.db", "t"), 1);
    assert_eq!(status(&c)["lease_held"], true, "the batch keeps its lease");
    pragma(&c, "PRAGMA managedblob_batch=end").unwrap();
    assert_eq!(status(&c)["lease_held"], false);
}

fn a_batch_blocks_other_hosts_writers(w: &World) {
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
    assert_eq!(remote_count(w, "a.db", "t"), 1);
}

fn a_batch_on_a_blob_that_does_not_exist_yet_holds_the_lease(w: &World) {
    let a = w.open("h1", "new.db");
    pragma(&a, "PRAGMA managedblob_batch=begin").unwrap();
    assert!(
        w.remote_exists("new.db"),
        "created empty (If-None-Match:*) to be leased"
    );
    assert_eq!(status(&a)["lease_held"], true);
    a.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    // Another host cannot create or write the database meanwhile.
    let b = w.open("h2", "new.db");
    b.busy_timeout(Duration::ZERO).unwrap();
    let err = b.execute_batch("CREATE TABLE t(x)").unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy),
        "{err}"
    );
    pragma(&a, "PRAGMA managedblob_batch=end").unwrap();
    assert_eq!(remote_count(w, "new.db", "t"), 1);
}

fn closing_the_last_connection_flushes_a_batch(w: &World) {
    drop(batch_holding_one_row(w));
    assert_eq!(remote_count(w, "a.db", "t"), 1);
}

fn journal_modes_delete_truncate_persist_memory_upload(w: &World) {
    for mode in ["DELETE", "TRUNCATE", "PERSIST", "MEMORY"] {
        let db = format!("{mode}.db");
        let c = w.open("h1", &db);
        let got: String = c
            .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(got.to_uppercase(), mode);
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);")
            .unwrap();
        assert_eq!(remote_count(w, &db, "t"), 2, "{mode}");
        let other = w.open("h2", &db);
        assert_eq!(count(&other, "t"), 2, "{mode}");
    }
}

fn wal_and_off_journal_modes_answer_the_mode_in_force(w: &World) {
    let c = w.open("h1", "a.db");
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    for mode in ["WAL", "off"] {
        let now: String = c
            .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(now, "delete", "journal_mode={mode}");
    }
    // Still a rollback-journal database: writes work and publish as before.
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    let header = std::fs::read(w.cache("h1", "a.db")).unwrap();
    assert_eq!((header[18], header[19]), (1, 1));
}

fn a_remote_with_a_wal_header_opens_reads_writes_and_uploads(w: &World) {
    // Made by another tool (here: plain SQLite in a scratch directory), then put into
    // the remote as is.
    let scratch = w.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let fixture = scratch.join("py.db");
    {
        let p = rusqlite::Connection::open(&fixture).unwrap();
        p.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .unwrap();
    }
    let header = std::fs::read(&fixture).unwrap();
    assert_eq!(
        (header[18], header[19]),
        (2, 2),
        "the fixture is a WAL database"
    );
    w.put_remote("py.db", &header);

    let c = w.open("h1", "py.db");
    assert_eq!(count(&c, "t"), 1);
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(remote_count(w, "py.db", "t"), 2);
    let uploaded = w.remote_bytes("py.db").expect("the blob");
    assert_eq!(
        (uploaded[18], uploaded[19]),
        (1, 1),
        "the next upload carries rollback-journal mode"
    );
    let ok: String = w.read_remote("py.db", |r| {
        r.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap()
    });
    assert_eq!(ok, "ok");
}

fn a_sqlite_file_copied_into_the_remote_is_picked_up(w: &World) {
    // On the local backend a file copied into the directory, on Azure a blob uploaded
    // by another tool: a plain SQLite file made without the VFS.
    let made = w.dir.path().join("made-elsewhere.db");
    {
        let p = rusqlite::Connection::open(&made).unwrap();
        p.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (42);")
            .unwrap();
    }
    w.put_remote("copied.db", &std::fs::read(&made).unwrap());
    let c = w.open("h1", "copied.db");
    let v: i64 = c.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 42);
}

fn config_errors_name_the_setting_in_rusqlite_errors(w: &World) {
    let cache = w.cache("h1", "a.db");
    let cases = [
        (
            format!("file:{}?vfs=managedblob", cache.display()),
            "'remote' is missing",
        ),
        (w.uri("h1", "a.db", "&lease_secs=5"), "'lease_secs'"),
        (w.uri("h1", "a.db", "&staleness_ms=soon"), "'staleness_ms'"),
        (
            format!(
                "file:{}?vfs=managedblob&remote=s3://bucket/x",
                cache.display()
            ),
            "unknown scheme",
        ),
        (w.uri("h1", "a.db", "&blob=../escape.db"), "'blob'"),
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

/// A remote that does not exist (a missing directory; a container never created) fails
/// the open with a message that says so, and leaves no cache file behind, so the open
/// can simply be retried once the remote exists.
fn a_missing_remote_fails_the_open_by_name_and_leaves_no_cache(w: &World) {
    let cache = w.cache("h1", "a.db");
    let (missing, expected) = w.missing_remote();
    let uri = uri_with_remote(&cache, &missing, "");
    let err = match rusqlite::Connection::open_with_flags(&uri, flags()) {
        Ok(_) => panic!("{uri} opened"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(expected), "{err}");
    assert!(err.contains("managedblob"), "{err}");
    let left: Vec<_> = std::fs::read_dir(cache.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "a failed open left {left:?} behind (the error was: {err})"
    );
}

fn read_only_mode_reads_and_refuses_writes(w: &World) {
    let _a = w.one_row("h1", "a.db");
    let r = open(&w.uri("h2", "a.db", "&mode=ro"));
    assert_eq!(count(&r, "t"), 1);
    let err = r.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly),
        "{err}"
    );
    assert_eq!(uploads(&status(&r)), 0);
    assert_eq!(requests(&r, "lease_acquire"), 0);
}

fn sidecar_path(cache: &std::path::Path) -> std::path::PathBuf {
    managedblob::internal::sidecar::path_for(cache)
}

fn set_dirty(cache: &std::path::Path) {
    let p = sidecar_path(cache);
    let mut s = managedblob::internal::sidecar::load(&p).unwrap().unwrap();
    s.dirty = true;
    managedblob::internal::sidecar::store(&p, &s).unwrap();
}

/// Cache h1 of a.db whose table `t` holds `x` in a commit that never reached the
/// remote: written with plain SQLite, then the sidecar marked dirty (what a batch
/// does before a crash). The remote has the table, empty.
fn dirty_cache_holding(w: &World, x: i64) {
    {
        let c = w.open("h1", "a.db");
        c.execute("CREATE TABLE t(x)", []).unwrap();
    }
    let cache = w.cache("h1", "a.db");
    {
        let p = rusqlite::Connection::open(&cache).unwrap();
        p.execute("INSERT INTO t VALUES (?1)", [x]).unwrap();
    }
    set_dirty(&cache);
}

fn dirty_cache_with_unchanged_remote_uploads_its_commits_on_open(w: &World) {
    dirty_cache_holding(w, 7);
    let c = w.open("h1", "a.db");
    assert_eq!(status(&c)["dirty"], false);
    assert_eq!(remote_count(w, "a.db", "t"), 1);
}

fn dirty_cache_with_moved_remote_keeps_a_conflict_copy_and_takes_the_remote(w: &World) {
    dirty_cache_holding(w, 1);
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
        remote_count(w, "a.db", "t"),
        2,
        "the remote was not overwritten"
    );
}

fn garbage_in_a_dirty_cache_is_recovered(w: &World) {
    drop(w.one_row("h1", "a.db"));
    let cache = w.cache("h1", "a.db");
    std::fs::write(&cache, vec![0x5a; 8192]).unwrap();
    set_dirty(&cache);
    let c = w.open("h1", "a.db");
    assert_eq!(count(&c, "t"), 1);
    assert_eq!(
        remote_count(w, "a.db", "t"),
        1,
        "garbage never reaches the remote"
    );
    assert_eq!(status(&c)["conflicts"].as_array().unwrap().len(), 1);
}

fn an_interrupted_download_is_resynced(w: &World) {
    drop(w.one_row("h1", "a.db"));
    let cache = w.cache("h1", "a.db");
    // A torn cache: half written, sidecar says a download was in flight.
    let len = std::fs::metadata(&cache).unwrap().len();
    std::fs::write(&cache, vec![0u8; len as usize / 2]).unwrap();
    let p = sidecar_path(&cache);
    let mut s = managedblob::internal::sidecar::load(&p).unwrap().unwrap();
    s.in_flight = managedblob::internal::sidecar::InFlight::Download;
    managedblob::internal::sidecar::store(&p, &s).unwrap();
    let c = w.open("h1", "a.db");
    assert_eq!(count(&c, "t"), 1);
    assert_eq!(status(&c)["in_flight"], "none");
}

fn a_remote_that_is_not_a_database_fails_the_open_clearly(w: &World) {
    w.put_remote("junk.db", b"this is not sqlite at all, not even close");
    let err = match rusqlite::Connection::open_with_flags(w.uri("h1", "junk.db", ""), flags()) {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("not a SQLite database"), "{err}");
    assert!(w.remote_exists("junk.db"), "nothing deleted");
    assert_eq!(
        w.remote_bytes("junk.db").unwrap(),
        b"this is not sqlite at all, not even close",
        "nothing changed"
    );
}

fn an_existing_local_database_seeds_an_empty_remote(w: &World) {
    let cache = w.cache("h1", "seed.db");
    {
        let p = rusqlite::Connection::open(&cache).unwrap();
        p.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (5);")
            .unwrap();
    }
    let c = w.open("h1", "seed.db");
    c.execute("INSERT INTO t VALUES (6)", []).unwrap();
    assert_eq!(remote_count(w, "seed.db", "t"), 2);
}

fn a_rollback_after_a_cache_spill_uploads_nothing(w: &World) {
    let c = w.open("h1", "a.db");
    c.execute_batch("CREATE TABLE t(x); PRAGMA cache_size=2;")
        .unwrap();
    let before = uploads(&status(&c));
    c.execute_batch("BEGIN;").unwrap();
    for i in 0..2000 {
        c.execute("INSERT INTO t VALUES (?1)", [format!("{i:0200}")])
            .unwrap();
    }
    c.execute_batch("ROLLBACK;").unwrap();
    assert_eq!(uploads(&status(&c)), before, "a rollback publishes nothing");
    assert_eq!(count(&c, "t"), 0);
    assert_eq!(status(&c)["lease_held"], false);
    c.execute("INSERT INTO t VALUES (1)", []).unwrap();
    assert_eq!(remote_count(w, "a.db", "t"), 1);
}

fn a_cold_open_of_a_multi_megabyte_database_downloads_it_whole(w: &World) {
    // Regression: the unix VFS masks single writes above 128 KiB, so the cache must
    // be written in page-sized pieces.
    let a = w.open("h1", "big.db");
    a.execute_batch(
        "BEGIN; CREATE TABLE t(x);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO t SELECT hex(randomblob(500)) FROM n; COMMIT;",
    )
    .unwrap();
    let size = std::fs::metadata(w.remote_copy("big.db")).unwrap().len();
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

fn an_interrupted_commit_is_resynced_from_the_remote(w: &World) {
    drop(w.one_row("h1", "a.db"));
    // The process died between the upload and the end of SQLite's local commit: the
    // sidecar says so, and the cache holds something else (here: an extra row).
    let cache = w.cache("h1", "a.db");
    {
        let p = rusqlite::Connection::open(&cache).unwrap();
        p.execute("INSERT INTO t VALUES (99)", []).unwrap();
    }
    let p = sidecar_path(&cache);
    let mut s = managedblob::internal::sidecar::load(&p).unwrap().unwrap();
    s.in_flight = managedblob::internal::sidecar::InFlight::Commit;
    managedblob::internal::sidecar::store(&p, &s).unwrap();
    let c = w.open("h1", "a.db");
    assert_eq!(count(&c, "t"), 1, "the cache follows the remote");
    let s = status(&c);
    assert_eq!(s["in_flight"], "none");
    assert_eq!(fetches(&s), 1, "{s}");
    assert_eq!(
        remote_count(w, "a.db", "t"),
        1,
        "the remote was not touched"
    );
}

fn two_connections_in_one_process_share_the_cache(w: &World) {
    let a = w.open_with("h1", "a.db", "&staleness_ms=0");
    let b = w.open_with("h1", "a.db", "&staleness_ms=0");
    a.execute("CREATE TABLE t(x)", []).unwrap();
    b.execute("INSERT INTO t VALUES (1)", []).unwrap();
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(count(&a, "t"), 2);
    assert_eq!(count(&b, "t"), 2);
    assert_eq!(
        fetches(&status(&a)),
        0,
        "the shared store never downloads its own commits"
    );
    assert_eq!(remote_count(w, "a.db", "t"), 2);
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
    let s = status(&b);
    assert_eq!(fetches(&s), 1, "{s}");
    assert_eq!(
        fetch_requests(&s),
        1,
        "the version downloaded while the cache was busy is installed, not fetched again: {s}"
    );
}

fn a_deleted_cache_is_downloaded_again_not_mistaken_for_the_synced_one(w: &World) {
    drop(w.one_row("h1", "a.db"));
    let cache = w.cache("h1", "a.db");
    std::fs::remove_file(&cache).unwrap();
    let c = w.open("h1", "a.db");
    assert_eq!(
        count(&c, "t"),
        1,
        "the remote's content, not an empty database"
    );
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(remote_count(w, "a.db", "t"), 2);
}

backend_tests!(
    first_write_in_one_transaction_uploads_once,
    a_batch_on_a_blob_that_does_not_exist_yet_holds_the_lease,
    second_batch_on_the_same_cache_downloads_nothing,
    a_remote_change_is_downloaded_once,
    staleness_bounds_the_checks,
    a_failed_transaction_uploads_nothing,
    a_write_on_a_moved_remote_is_busy_then_retries_on_the_new_version,
    batches_nest_are_shared_by_connections_and_upload_once,
    flush_uploads_inside_a_batch,
    a_batch_blocks_other_hosts_writers,
    closing_the_last_connection_flushes_a_batch,
    journal_modes_delete_truncate_persist_memory_upload,
    wal_and_off_journal_modes_answer_the_mode_in_force,
    a_remote_with_a_wal_header_opens_reads_writes_and_uploads,
    a_sqlite_file_copied_into_the_remote_is_picked_up,
    config_errors_name_the_setting_in_rusqlite_errors,
    a_missing_remote_fails_the_open_by_name_and_leaves_no_cache,
    read_only_mode_reads_and_refuses_writes,
    dirty_cache_with_unchanged_remote_uploads_its_commits_on_open,
    dirty_cache_with_moved_remote_keeps_a_conflict_copy_and_takes_the_remote,
    garbage_in_a_dirty_cache_is_recovered,
    an_interrupted_download_is_resynced,
    a_remote_that_is_not_a_database_fails_the_open_clearly,
    an_existing_local_database_seeds_an_empty_remote,
    a_rollback_after_a_cache_spill_uploads_nothing,
    a_cold_open_of_a_multi_megabyte_database_downloads_it_whole,
    an_interrupted_commit_is_resynced_from_the_remote,
    two_connections_in_one_process_share_the_cache,
    a_deleted_cache_is_downloaded_again_not_mistaken_for_the_synced_one,
);
