//! `fetch=lazy`: a host opens a remote database without downloading it, and a read
//! fetches the chunks it needs (docs/ARCHITECTURE.md, "Lazy fetch"). Every scenario
//! runs on the local remote and on Azurite, counting requests (never timing them).
//! Several processes sharing one lazy cache: `tests/lazy_sharing.rs`.

use common::*;
use rusqlite::Connection;

mod lazy;
use lazy::*;

/// The open costs the block list and one chunk; a point query a few chunks; the
/// cache stays sparse; a whole scan then brings everything and the copy is exact.
fn open_and_point_query(w: &World) {
    let (h1, size) = build(w);
    let c = lazy(w, "h2", "");
    let s = status(&c);
    assert_eq!(s["fetch"], "lazy", "{s}");
    assert_eq!(requests(&c, "download"), 0, "{s}");
    assert_eq!(requests(&c, "block_list"), 1, "{s}");
    assert_eq!(reads(&c), 1, "the open fetches the first chunk only: {s}");
    let (present, total) = residence(&s);
    assert_eq!(present, 1, "{s}");
    assert!(total > 200, "{s}");
    let cache = w.cache("h2", "a.db");
    assert_eq!(std::fs::metadata(&cache).unwrap().len(), size);

    assert_eq!(head(&c, 500).unwrap(), head(&h1, 500).unwrap());
    let point = reads(&c) - 1;
    assert!(
        (1..=8).contains(&point),
        "a point query fetched {point} chunks"
    );
    assert!(
        allocated(&cache) < size / 4,
        "the cache takes {} of {size} bytes on disk",
        allocated(&cache)
    );

    // Reopened, the chunks fetched are still there: the same query fetches nothing.
    drop(c);
    let c = lazy(w, "h2", "");
    let before = reads(&c);
    assert_eq!(head(&c, 500).unwrap(), head(&h1, 500).unwrap());
    assert_eq!(reads(&c), before, "present chunks are not fetched again");

    // A scan brings the rest, each chunk once; the copy is the database.
    let sum = "SELECT sum(length(b)), count(*) FROM t";
    let all: (i64, i64) = c
        .query_row(sum, [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(all, (ROWS * ROW, ROWS));
    assert_eq!(integrity(&c), "ok");
    let s = status(&c);
    let (present, total) = residence(&s);
    assert_eq!(present, total, "{s}");
    assert!(reads(&c) <= total + 1, "each chunk fetched once: {s}");
    let ids: Vec<String> = (1..=ROWS)
        .step_by(97)
        .map(|i| head(&c, i).unwrap())
        .collect();
    let want: Vec<String> = (1..=ROWS)
        .step_by(97)
        .map(|i| head(&h1, i).unwrap())
        .collect();
    assert_eq!(ids, want);
}

#[test]
fn local_a_lazy_open_fetches_what_queries_read() {
    open_and_point_query(&World::local());
}

#[cfg(feature = "azure")]
#[test]
fn azurite_a_lazy_open_fetches_what_queries_read() {
    if let Some(w) = World::azurite() {
        open_and_point_query(&w);
    }
}

/// Another host's commit costs a lazy reader the block list and the chunks it then
/// reads, not the version's bytes.
fn another_hosts_commit(w: &World) {
    let (h1, _) = build(w);
    let c = lazy(w, "h2", "&staleness_ms=0");
    let _: i64 = c
        .query_row("SELECT sum(length(b)) FROM t", [], |r| r.get(0))
        .unwrap();
    h1.execute("UPDATE t SET b = zeroblob(?1) WHERE id = 10", [ROW])
        .unwrap();
    let (lists, fetched, bytes) = (
        requests(&c, "block_list"),
        reads(&c),
        status(&c)["requests"]["bytes_down"].as_u64().unwrap(),
    );
    assert_eq!(head(&c, 10).unwrap(), "0000000000000000");
    let s = status(&c);
    assert_eq!(requests(&c, "block_list"), lists + 1, "{s}");
    assert_eq!(requests(&c, "download"), 0, "{s}");
    let chunks = reads(&c) - fetched;
    assert!((1..=4).contains(&chunks), "{chunks} chunks fetched: {s}");
    let down = s["requests"]["bytes_down"].as_u64().unwrap() - bytes;
    assert!(
        down < 512 * 1024,
        "{down} bytes down for a one-row commit: {s}"
    );
    assert_eq!(head(&c, 11).unwrap(), head(&h1, 11).unwrap());
    assert_eq!(integrity(&c), "ok");
}

#[test]
fn local_another_hosts_commit_costs_its_block_list() {
    another_hosts_commit(&World::local());
}

#[cfg(feature = "azure")]
#[test]
fn azurite_another_hosts_commit_costs_its_block_list() {
    if let Some(w) = World::azurite() {
        another_hosts_commit(&w);
    }
}

/// Inside one read transaction, the remote moves on: a chunk the new version has
/// unchanged is fetched from it (same bytes: block ids name content); a chunk it
/// changed ends the read with SQLITE_BUSY_SNAPSHOT; the retry reads the new version.
fn moved_during_a_read(w: &World) {
    let (h1, _) = build(w);
    let c = lazy(w, "h2", "");
    let old_300 = head(&h1, 300).unwrap();
    let old_950 = head(&h1, 950).unwrap();
    c.execute_batch("BEGIN").unwrap();
    head(&c, 1).unwrap();
    h1.execute(
        "UPDATE t SET b = zeroblob(?1) WHERE id BETWEEN 900 AND 1000",
        [ROW],
    )
    .unwrap();
    assert_eq!(
        head(&c, 300).unwrap(),
        old_300,
        "unchanged: read from the new version"
    );
    let e = head(&c, 950).unwrap_err();
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => assert_eq!(f.extended_code, 517, "{e}"),
        other => panic!("expected SQLITE_BUSY_SNAPSHOT, got {other}"),
    }
    assert_ne!(old_950, "0000000000000000");
    let _ = c.execute_batch("ROLLBACK");
    assert_eq!(head(&c, 950).unwrap(), "0000000000000000");
    assert_eq!(head(&c, 300).unwrap(), old_300);
    assert_eq!(integrity(&c), "ok");
}

#[test]
fn local_a_remote_that_moves_during_a_read() {
    moved_during_a_read(&World::local());
}

#[cfg(feature = "azure")]
#[test]
fn azurite_a_remote_that_moves_during_a_read() {
    if let Some(w) = World::azurite() {
        moved_during_a_read(&w);
    }
}

/// A writer on another host commits in a loop while a fresh lazy reader runs whole
/// scans and integrity checks: each one either completes with a consistent answer
/// or ends with SQLITE_BUSY (retry); none sees two versions. `PRAGMA
/// integrity_check` turns a page it could not read into a line of its report instead
/// of an error ("failed to get page N", "error code=517", and the pages it could then
/// not reach as "never used"): such a report counts as a retry, and only
/// when the status says the remote moved on under it; any other finding fails.
fn writer_in_a_loop(w: &World) {
    let (h1, _) = build(w);
    drop(h1);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, uri) = (stop.clone(), w.uri("h1", "a.db", ""));
        std::thread::spawn(move || {
            let c = open(&uri);
            c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
            let mut commits = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let id = 1 + i64::from(commits * 37 % ROWS as u32);
                c.execute("UPDATE t SET b = randomblob(?1) WHERE id = ?2", [ROW, id])
                    .unwrap();
                commits += 1;
                // An application's pace, not a stress loop: about ten commits a
                // second. (Faster, and every whole check would meet a chunk changed
                // twice since it began: without `history` the older bytes are gone.)
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            commits
        })
    };
    let c = lazy(w, "h2", "&staleness_ms=0");
    let (mut ok, mut busy, mut unread) = (0, 0, 0);
    while ok < 3 {
        let checked = integrity(&c);
        if checked != "ok" {
            let s = status(&c);
            let moved = s["last_error"].as_str().unwrap_or("").contains("moved on");
            let only_unread = checked.lines().skip(1).all(|l| {
                l.contains("failed to get page")
                    || l.contains("error code=517")
                    || l.contains("never used")
            });
            assert!(moved && only_unread, "{checked}\n{s}");
            if unread == 0 || std::env::var_os("LAZY_DEBUG").is_some() {
                eprintln!(
                    "a check met a move: {}",
                    checked.lines().nth(1).unwrap_or("")
                );
            }
            unread += 1;
            assert!(busy + unread < 200, "no check completes");
            continue;
        }
        let scanned = c.query_row("SELECT count(*), sum(length(b)) FROM t", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        });
        match scanned {
            Ok(found) => {
                assert_eq!(found, (ROWS, ROWS * ROW));
                ok += 1;
            }
            Err(e) if is_busy(&e) => busy += 1,
            Err(e) => panic!("{e}"),
        }
        assert!(busy + unread < 200, "no scan completes");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let commits = writer.join().unwrap();
    assert!(commits > 0);
    eprintln!(
        "{commits} commits meanwhile; {ok} checks and scans completed, {busy} scans and \
         {unread} checks retried"
    );
}

#[test]
fn local_a_lazy_reader_beside_a_writer_in_a_loop() {
    writer_in_a_loop(&World::local());
}

#[cfg(feature = "azure")]
#[test]
fn azurite_a_lazy_reader_beside_a_writer_in_a_loop() {
    if let Some(w) = World::azurite() {
        writer_in_a_loop(&w);
    }
}

/// Every row, for comparing copies.
fn rows(c: &Connection) -> Vec<(i64, Vec<u8>)> {
    let mut q = c.prepare("SELECT id, b FROM t ORDER BY id").unwrap();
    let rows = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    rows
}

/// A lazy cache writes: a new row, an update of rows it never read, a delete and an
/// insert that reuse free pages it never read, a batch; each commit uploads what
/// changed (absent chunks keep their block ids) and a full host reads the same
/// database.
fn lazy_writes(w: &World) {
    let (h1, _) = build(w);
    drop(h1);
    let c = lazy(w, "h2", "");
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let up = |c: &Connection| status(c)["requests"]["bytes_up"].as_u64().unwrap();
    let before = up(&c);
    c.execute("INSERT INTO t(id, b) VALUES (2000, x'0102')", [])
        .unwrap();
    let one_row = up(&c) - before;
    assert!(one_row < 512 * 1024, "{one_row} bytes up for one row");
    let (present, total) = residence(&status(&c));
    assert!(
        present * 4 < total,
        "{present} of {total} chunks present after a row"
    );

    c.execute(
        "UPDATE t SET b = zeroblob(?1) WHERE id BETWEEN 700 AND 710",
        [ROW],
    )
    .unwrap();
    c.execute("DELETE FROM t WHERE id BETWEEN 100 AND 300", [])
        .unwrap();
    c.execute(
        "INSERT INTO t(id, b) SELECT 5000 + id, randomblob(?1) FROM t WHERE id BETWEEN 400 AND 500",
        [ROW],
    )
    .unwrap();
    pragma(&c, "PRAGMA managedblob_batch=begin").unwrap();
    for i in 0..5 {
        c.execute(
            "INSERT INTO t(id, b) VALUES (?1, randomblob(300))",
            [9000 + i],
        )
        .unwrap();
    }
    pragma(&c, "PRAGMA managedblob_batch=end").unwrap();
    assert_eq!(integrity(&c), "ok");

    let full = w.open("h3", "a.db");
    assert_eq!(integrity(&full), "ok");
    assert_eq!(
        rows(&full),
        rows(&c),
        "the full host reads what the lazy one wrote"
    );
    let back = w.open("h1", "a.db");
    assert_eq!(count(&back, "t"), count(&c, "t"));
}

#[test]
fn local_a_lazy_cache_writes_and_commits() {
    lazy_writes(&World::local());
}

#[cfg(feature = "azure")]
#[test]
fn azurite_a_lazy_cache_writes_and_commits() {
    if let Some(w) = World::azurite() {
        lazy_writes(&w);
    }
}

/// VACUUM on a lazy cache reads every page and rewrites the file shorter: the
/// upload re-lays the chunks; nothing absent is staged as a hole.
#[test]
fn vacuum_on_a_lazy_cache() {
    let w = World::local();
    let (h1, _) = build(&w);
    h1.execute("DELETE FROM t WHERE id % 2 = 0", []).unwrap();
    drop(h1);
    let c = lazy(&w, "h2", "");
    c.execute_batch("VACUUM").unwrap();
    assert_eq!(integrity(&c), "ok");
    let full = w.open("h3", "a.db");
    assert_eq!(integrity(&full), "ok");
    assert_eq!(rows(&full), rows(&c));
}

/// A lazy cache opened with the default `fetch=full` is completed first: SQLite
/// never reads a hole.
#[test]
fn a_full_open_completes_a_lazy_cache() {
    let w = World::local();
    let (h1, _) = build(&w);
    let c = lazy(&w, "h2", "");
    head(&c, 3).unwrap();
    drop(c);
    let c = w.open("h2", "a.db");
    assert_eq!(integrity(&c), "ok");
    assert_eq!(head(&c, 700).unwrap(), head(&h1, 700).unwrap());
    let record = format!("{}-managedblob.resident", w.cache("h2", "a.db").display());
    assert!(!std::path::Path::new(&record).exists());
    assert_eq!(status(&c)["fetch"], "full");
}

/// A lost (or torn) residency record costs no fetch for the chunks the cache holds:
/// a miss hashes the cache's bytes first, and they match their block ids.
#[test]
fn a_lost_record_is_rebuilt_from_the_cache_without_fetching() {
    let w = World::local();
    let (h1, _) = build(&w);
    let c = lazy(&w, "h2", "");
    assert_eq!(integrity(&c), "ok");
    drop(c);
    let record = format!("{}-managedblob.resident", w.cache("h2", "a.db").display());
    std::fs::remove_file(&record).unwrap();
    let c = lazy(&w, "h2", "");
    let before = reads(&c);
    assert_eq!(integrity(&c), "ok");
    assert!(
        reads(&c) - before <= 1,
        "{} chunks fetched again (the first chunk may be: its counter is the cache's own)",
        reads(&c) - before
    );
    assert_eq!(head(&c, 640).unwrap(), head(&h1, 640).unwrap());
    let (present, total) = residence(&status(&c));
    assert_eq!(present, total);
}

/// `cache_max`: after each statement over a database four times the bound the cache
/// is back under it (space given back: the file's allocated size), a chunk a read
/// transaction still uses is not dropped (one statement may pass the bound by what
/// it reads), and the answers are right.
#[test]
fn a_bounded_cache_stays_under_cache_max() {
    let w = World::local();
    let (h1, size) = build(&w);
    let c = lazy(&w, "h2", "&cache_max=4MiB");
    let s = status(&c);
    assert_eq!(s["residence"]["holes"], true, "{s}");
    let all: (i64, i64) = c
        .query_row("SELECT count(*), sum(length(b)) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(all, (ROWS, ROWS * ROW));
    for _ in 0..3 {
        // Each check reads every page, a read transaction at a time.
        assert_eq!(integrity(&c), "ok");
    }
    let cache = w.cache("h2", "a.db");
    let s = status(&c);
    let (present, total) = residence(&s);
    let chunk = s["residence"]["chunk_size"].as_u64().unwrap();
    assert!(
        present * chunk <= (4 << 20) + chunk * 64,
        "{present} of {total} chunks present: {s}"
    );
    assert!(
        s["residence"]["chunks_evicted"].as_u64().unwrap() > 0,
        "{s}"
    );
    assert!(
        allocated(&cache) < size / 2,
        "the cache of {size} bytes takes {} on disk",
        allocated(&cache)
    );
    assert_eq!(head(&c, 123).unwrap(), head(&h1, 123).unwrap());
    assert_eq!(head(&c, 999).unwrap(), head(&h1, 999).unwrap());
}

/// Local commits kept in the cache (a batch) are never dropped, whatever the bound.
#[test]
fn a_bounded_cache_never_drops_local_commits() {
    let w = World::local();
    let (h1, _) = build(&w);
    drop(h1);
    let c = lazy(&w, "h2", "&cache_max=1MiB");
    pragma(&c, "PRAGMA managedblob_batch=begin").unwrap();
    c.execute(
        "UPDATE t SET b = zeroblob(?1) WHERE id BETWEEN 10 AND 200",
        [ROW],
    )
    .unwrap();
    // Reads far away fill the cache past the bound many times over.
    for _ in 0..2 {
        assert_eq!(integrity(&c), "ok");
    }
    pragma(&c, "PRAGMA managedblob_batch=end").unwrap();
    let full = w.open("h3", "a.db");
    assert_eq!(head(&full, 150).unwrap(), "0000000000000000");
    assert_eq!(rows(&full), rows(&c));
}

/// A lazy cache removed with its record left behind (`rm a.db a.db-managedblob.json`,
/// or only `rm a.db`): the record describes nothing, and the new cache fetches
/// what it reads instead of trusting holes.
#[test]
fn a_record_left_beside_a_removed_cache_is_not_trusted() {
    let w = World::local();
    let (h1, _) = build(&w);
    let cache = w.cache("h2", "a.db");
    let sidecar = format!("{}-managedblob.json", cache.display());
    for remove_sidecar in [true, false] {
        let c = lazy(&w, "h2", "");
        assert_eq!(integrity(&c), "ok");
        drop(c);
        std::fs::remove_file(&cache).unwrap();
        if remove_sidecar {
            std::fs::remove_file(&sidecar).unwrap();
        }
        let c = lazy(&w, "h2", "");
        assert_eq!(integrity(&c), "ok", "sidecar removed: {remove_sidecar}");
        assert_eq!(head(&c, 777).unwrap(), head(&h1, 777).unwrap());
    }
}

/// A scan reads the file in order: readahead fetches a growing window, so the round
/// trips in sequence are a fraction of the chunks (each round fetches in parallel).
fn scan_reads_ahead(w: &World) {
    let (h1, _) = build(w);
    drop(h1);
    let c = lazy(w, "h2", "");
    let hexed: i64 = c
        .query_row("SELECT sum(length(hex(b))) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(hexed, 2 * ROWS * ROW);
    let s = status(&c);
    let (present, total) = residence(&s);
    let rounds = s["residence"]["fetch_rounds"].as_u64().unwrap();
    assert!(present * 10 >= total * 9, "{s}");
    assert!(
        rounds * 4 < present,
        "{rounds} rounds in sequence for {present} chunks: {s}"
    );
    eprintln!("a scan of {present} chunks took {rounds} rounds of fetches");
}

#[test]
fn local_a_scan_reads_ahead() {
    scan_reads_ahead(&World::local());
}

#[cfg(feature = "azure")]
#[test]
fn azurite_a_scan_reads_ahead() {
    if let Some(w) = World::azurite() {
        scan_reads_ahead(&w);
    }
}

/// With `history` on (writer and reader), a chunk the remote changed while a read
/// transaction ran comes from the kept version of the reader's base: the read goes
/// on, on its snapshot, instead of ending with SQLITE_BUSY_SNAPSHOT (on Azure: the
/// writer's snapshot of that version, found by the ETag it keeps).
fn moved_during_a_read_with_history(w: &World) {
    let writer = w.open_with("h1", "a.db", "&history=10");
    writer
        .execute_batch(&format!(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
             INSERT INTO t SELECT i, randomblob({ROW}) FROM n;"
        ))
        .unwrap();
    let old_950 = head(&writer, 950).unwrap();
    let c = lazy(w, "h2", "&history=10");
    c.execute_batch("BEGIN").unwrap();
    head(&c, 1).unwrap();
    writer
        .execute(
            "UPDATE t SET b = zeroblob(?1) WHERE id BETWEEN 900 AND 1000",
            [ROW],
        )
        .unwrap();
    assert_eq!(
        head(&c, 950).unwrap(),
        old_950,
        "the snapshot's bytes, from history"
    );
    c.execute_batch("COMMIT").unwrap();
    assert_eq!(head(&c, 950).unwrap(), "0000000000000000");
    assert_eq!(integrity(&c), "ok");
}

#[test]
fn local_a_remote_that_moves_during_a_read_with_history() {
    moved_during_a_read_with_history(&World::local());
}

#[cfg(feature = "azure")]
#[test]
fn azurite_a_remote_that_moves_during_a_read_with_history() {
    if let Some(w) = World::azurite() {
        moved_during_a_read_with_history(&w);
    }
}

/// Deferred uploads (`flush_ms`) work on a lazy cache as on a full one: the commits
/// return at once, the background upload reads only chunks the cache holds, and a
/// full host then reads them.
#[test]
fn deferred_uploads_from_a_lazy_cache() {
    let w = World::local();
    let (h1, _) = build(&w);
    drop(h1);
    let c = lazy(&w, "h2", "&flush_ms=50");
    for i in 0..20 {
        c.execute(
            "UPDATE t SET b = zeroblob(?1) WHERE id = ?2",
            [ROW, 1 + i * 45],
        )
        .unwrap();
    }
    common::wait::wait_until("the deferred commits are uploaded", || {
        status(&c)["dirty"] == false
    });
    let (present, total) = residence(&status(&c));
    assert!(
        present * 2 < total,
        "{present} of {total}: the upload fetched nothing it did not need"
    );
    let full = w.open("h3", "a.db");
    assert_eq!(integrity(&full), "ok");
    assert_eq!(head(&full, 1 + 19 * 45).unwrap(), "0000000000000000");
    assert_eq!(rows(&full), rows(&c));
}
