//! `fetch=lazy`: a host opens a remote database without downloading it, and a read
//! fetches the chunks it needs (docs/ARCHITECTURE.md, "Lazy fetch"). Every scenario
//! runs on the local remote and on Azurite, counting requests (never timing them).

use common::*;
use rusqlite::Connection;
use serde_json::Value;

/// Rows of [`ROW`] random bytes: about 16.5 MiB, some 260 chunks of 64 KiB.
const ROWS: i64 = 1000;
const ROW: i64 = 16384;

/// `a.db`, written by host `h1` (a full cache). Returns its size.
fn build(w: &World) -> (Connection, u64) {
    let c = w.open("h1", "a.db");
    c.execute_batch(&format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO t SELECT i, randomblob({ROW}) FROM n;"
    ))
    .unwrap();
    let size: i64 = c
        .query_row(
            "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (c, size as u64)
}

fn lazy(w: &World, host: &str, extra: &str) -> Connection {
    w.open_with(host, "a.db", &format!("&fetch=lazy{extra}"))
}

fn reads(c: &Connection) -> u64 {
    requests(c, "read_range")
}

fn residence(s: &Value) -> (u64, u64) {
    let r = &s["residence"];
    (
        r["chunks_present"]
            .as_u64()
            .unwrap_or_else(|| panic!("{s}")),
        r["chunks_total"].as_u64().unwrap_or_else(|| panic!("{s}")),
    )
}

fn head(c: &Connection, id: i64) -> rusqlite::Result<String> {
    c.query_row(
        "SELECT hex(substr(b, 1, 8)) FROM t WHERE id = ?1",
        [id],
        |r| r.get(0),
    )
}

/// Bytes of disk the file takes (a sparse file takes less than its length).
fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

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
            unread += 1;
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

/// Writing is refused with an error that names the setting (until lazy writes land).
#[test]
fn a_lazy_cache_refuses_writes_with_a_clear_error() {
    let w = World::local();
    build(&w);
    let c = lazy(&w, "h2", "");
    let e = c
        .execute("INSERT INTO t(b) VALUES (x'00')", [])
        .unwrap_err();
    let s = status(&c);
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("fetch=lazy"),
        "{e}: {s}"
    );
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
