//! Writes into chunks a lazy cache never fetched (src/store/lazy_write.rs): SQLite
//! reuses free pages without reading them, so a lazy host inserting into a database
//! with a long freelist writes into many absent chunks. Nothing is fetched at those
//! writes; the commit point completes them in one parallel round (rounds are
//! counted, never timed), a rollback forgets them, and a crash mid-transaction
//! leaves the cache right.

use common::child::{self, Proc};
use common::*;
use rusqlite::Connection;
use std::time::Duration;

/// Entry point of every child process; returns at once in a normal test run.
#[test]
fn child_main() {
    child::child_main(&[("spill_and_abort", spill_and_abort)]);
}

/// `spill_and_abort`: in one transaction, insert rows into reused free pages with a
/// page cache so small that SQLite writes them into the cache file before the
/// commit, then die without committing.
fn spill_and_abort(uri: &str) {
    let c = open(uri);
    c.execute_batch("PRAGMA cache_size = 8; BEGIN IMMEDIATE;")
        .unwrap();
    insert_new(&c, 10_000, NEW_ROWS);
    child::say("SPILLED");
    std::process::abort();
}

/// Rows of [`ROW`] random bytes (each an overflow chain of four or five pages): 16
/// MiB; every other row of the middle is then deleted, which leaves runs of free
/// pages between live ones (so that no chunk is free from end to end: a chunk
/// written over whole needs no fetch).
const ROWS: i64 = 1000;
const ROW: i64 = 16384;
/// Rows a lazy host inserts: they take about 1.6 MiB of the free pages.
const NEW_ROWS: i64 = 100;

/// `a.db` written by host `h1` (a full cache), with a long freelist in the middle.
fn build_with_freelist(w: &World) {
    let c = w.open("h1", "a.db");
    c.execute_batch(&format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO t SELECT i, randomblob({ROW}) FROM n;
         DELETE FROM t WHERE id BETWEEN 200 AND 800 AND id % 2 = 0;"
    ))
    .unwrap();
    let free: i64 = c
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .unwrap();
    assert!(free > 1000, "{free} free pages");
}

/// Insert `n` rows of [`ROW`] bytes with ids from `first`, reading nothing of `t`
/// but the path to its last leaf.
fn insert_new(c: &Connection, first: i64, n: i64) {
    c.execute(
        "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2)
         INSERT INTO t SELECT i, randomblob(?3) FROM n",
        [first, first + n - 1, ROW],
    )
    .unwrap();
}

fn lazy(w: &World, host: &str, extra: &str) -> Connection {
    let c = w.open_with(host, "a.db", &format!("&fetch=lazy{extra}"));
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// (fetch rounds, chunks fetched) so far.
fn fetched(c: &Connection) -> (u64, u64) {
    let s = status(c);
    let rounds = s["residence"]["fetch_rounds"]
        .as_u64()
        .unwrap_or_else(|| panic!("{s}"));
    (rounds, requests(c, "read_range"))
}

fn rows(c: &Connection) -> Vec<(i64, Vec<u8>)> {
    let mut q = c.prepare("SELECT id, b FROM t ORDER BY id").unwrap();
    let rows = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    rows
}

/// The chunks the insert wrote into without reading are many (each reused free
/// page would have cost a fetch in sequence); the commit fetches them in one round.
fn insert_into_free_pages(w: &World) {
    build_with_freelist(w);
    let c = lazy(w, "h2", "");
    let (rounds, reads) = fetched(&c);
    insert_new(&c, 5000, NEW_ROWS);
    let (rounds, reads) = (fetched(&c).0 - rounds, fetched(&c).1 - reads);
    assert!(
        reads >= 15,
        "the insert wrote into {reads} chunks it lacked (the test needs many)"
    );
    assert!(
        rounds <= 6,
        "{rounds} rounds of fetches in sequence for {reads} chunks written into"
    );
    eprintln!("{rounds} rounds of fetches in sequence for {reads} chunks written into");
    assert_eq!(integrity(&c), "ok");
    let full = w.open("h3", "a.db");
    assert_eq!(integrity(&full), "ok");
    assert_eq!(
        rows(&full),
        rows(&c),
        "a full host reads what the lazy one wrote"
    );
}

#[test]
fn local_an_insert_into_free_pages_fetches_in_one_round() {
    insert_into_free_pages(&World::local());
}

#[cfg(feature = "azure")]
#[test]
fn azurite_an_insert_into_free_pages_fetches_in_one_round() {
    if let Some(w) = World::azurite() {
        insert_into_free_pages(&w);
    }
}

/// A rolled-back transaction that wrote into absent chunks fetches none of them,
/// and the cache reads the committed database afterwards.
#[test]
fn a_rollback_forgets_the_chunks_it_wrote_into() {
    let w = World::local();
    build_with_freelist(&w);
    let c = lazy(&w, "h2", "");
    let before = fetched(&c);
    c.execute_batch("PRAGMA cache_size = 8; BEGIN").unwrap();
    insert_new(&c, 5000, NEW_ROWS);
    c.execute_batch("ROLLBACK").unwrap();
    let reads = fetched(&c).1 - before.1;
    assert!(
        reads <= 5,
        "{reads} chunks fetched for a transaction that rolled back"
    );
    assert_eq!(integrity(&c), "ok");
    let h1 = w.open("h1", "a.db");
    assert_eq!(rows(&c), rows(&h1));
    insert_new(&c, 5000, 10);
    let full = w.open("h3", "a.db");
    assert_eq!(rows(&full), rows(&c));
}

/// In a batch the commit points complete the chunks (they then hold local commits
/// and a bounded cache keeps them); the batch's end uploads them, and a full host
/// reads the same rows.
#[test]
fn writes_into_free_pages_in_a_bounded_batch() {
    let w = World::local();
    build_with_freelist(&w);
    let c = lazy(&w, "h2", "&cache_max=1MiB");
    pragma(&c, "PRAGMA managedblob_batch=begin").unwrap();
    insert_new(&c, 5000, NEW_ROWS / 2);
    assert_eq!(integrity(&c), "ok");
    insert_new(&c, 6000, NEW_ROWS / 2);
    pragma(&c, "PRAGMA managedblob_batch=end").unwrap();
    assert_eq!(integrity(&c), "ok");
    let full = w.open("h3", "a.db");
    assert_eq!(rows(&full), rows(&c));
}

/// A process dies in a transaction whose writes into absent chunks reached the
/// cache file (a small page cache spills): the record read back takes those chunks
/// for absent, SQLite's journal rolls the transaction back, and the cache is the
/// committed database.
#[test]
fn a_crash_mid_transaction_leaves_the_cache_right() {
    let w = World::local();
    build_with_freelist(&w);
    let h1 = w.open("h1", "a.db");
    let uri = w.uri("h2", "a.db", "&fetch=lazy");
    let mut p = Proc::spawn("crasher", "spill_and_abort", &uri, &[]);
    p.expect("SPILLED", Duration::from_secs(60));
    assert!(!p.wait_exit(Duration::from_secs(30)).success());
    let journal = format!("{}-journal", w.cache("h2", "a.db").display());
    assert!(
        std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0),
        "the transaction spilled into the cache (a hot journal is left)"
    );
    let c = lazy(&w, "h2", "");
    assert_eq!(integrity(&c), "ok");
    assert_eq!(rows(&c), rows(&h1));
}
