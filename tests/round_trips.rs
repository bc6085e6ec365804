//! Round trips per commit on Azurite, counted (never timed): HTTP requests from the
//! status pragma's `http` counts, and requests in sequence from the order the
//! loopback proxy of tests/common/http_proxy.rs sees them. Staged chunks go out in
//! parallel, so a run of Put Block requests is one round; every other request waits
//! for the one before it (the store sends them one after another).
//!
//! A one-row autocommit into a 64 MiB database changes two regions of the file:
//! page 1 (only its file change counter, in chunk 0) and the leaf page near the end.
//! The first chunk is not staged again for a counter alone (the remote's counter may
//! lag on Azure), so in steady state, with the lease kept warm between commits, that
//! is 1 Put Block and 1 Put Block List: 2 rounds and 2 HTTP requests per commit.
#![cfg(feature = "azure")]

use common::*;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::azurite::{self, Azurite};
use common::http_proxy::{Fate, HttpProxy, Request};
use common::memworld::MemWorld;
use rusqlite::Connection;

/// The database the commits go into.
const DB_BYTES: u64 = 64 << 20;
const COMMITS: u64 = 100;

/// What the proxy saw, by kind, in arrival order.
type Log = Arc<Mutex<Vec<&'static str>>>;

/// The kind of an Azure request, as billed.
fn kind(r: &Request) -> &'static str {
    let put = r.method == "PUT";
    if r.is_waiter_mark() {
        return "waiter_mark";
    }
    if r.query_has("comp=lease") {
        return match r.header("x-ms-lease-action") {
            Some("acquire") => "lease_acquire",
            Some("renew") => "lease_renew",
            Some("release") => "lease_release",
            _ => "lease_other",
        };
    }
    match r.method.as_str() {
        _ if r.query_has("comp=block") && put => "put_block",
        _ if r.query_has("comp=blocklist") && put => "put_block_list",
        _ if r.query_has("comp=blocklist") => "get_block_list",
        "HEAD" => "get_properties",
        "GET" => "get_blob",
        "PUT" => "put_blob",
        _ => "other",
    }
}

/// Requests in sequence: a run of Put Block is one round (parallel), any other
/// request one round, except the store clock's requests beside the commit, never in
/// its way: a renewal, a look at the waiter mark.
fn rounds(log: &[&str]) -> usize {
    let log: Vec<&str> = log
        .iter()
        .copied()
        .filter(|k| *k != "lease_renew" && *k != "waiter_mark")
        .collect();
    log.iter()
        .enumerate()
        .filter(|(i, k)| !(**k == "put_block" && *i > 0 && log[i - 1] == "put_block"))
        .count()
}

struct Setup {
    _az: Arc<Azurite>,
    proxy: HttpProxy,
    log: Log,
    remote: String,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Option<Setup> {
        init_logging();
        managedblob::register().expect("register");
        let az = azurite::shared()?;
        let (_, proxy, remote) = azurite::container_behind_proxy(&az);
        let log: Log = Arc::default();
        let seen = log.clone();
        proxy.set_rule(move |r| {
            seen.lock().unwrap().push(kind(r));
            Fate::Forward
        });
        Some(Setup {
            _az: az,
            proxy,
            log,
            remote,
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn open(&self, host: &str, extra: &str) -> Connection {
        let cache = self.dir.path().join(host).join("big.db");
        std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
        let c = open(&uri_with_remote(&cache, &self.remote, extra));
        c.busy_timeout(Duration::from_secs(30)).unwrap();
        c
    }

    fn mark(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    fn since(&self, mark: usize) -> Vec<&'static str> {
        self.log.lock().unwrap()[mark..].to_vec()
    }

    /// A 64 MiB database with a small table `t` at its end.
    fn big_database(&self, host: &str, extra: &str) -> Connection {
        let c = self.open(host, extra);
        c.execute_batch(&format!(
            "PRAGMA page_size=4096;
             BEGIN;
             CREATE TABLE filler(b BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
               INSERT INTO filler SELECT randomblob(4000) FROM n;
             CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             COMMIT;",
            DB_BYTES / 4096
        ))
        .unwrap();
        let size: i64 = c
            .query_row(
                "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(size as u64 >= DB_BYTES, "{size}");
        c
    }
}

fn http_total(c: &Connection) -> u64 {
    status(c)["requests"]["http"]["total"].as_u64().unwrap()
}

fn insert(c: &Connection, i: u64) {
    c.execute("INSERT INTO t(v) VALUES (?1)", [format!("row {i}")])
        .unwrap();
}

/// Steady state, one connection: every one-row autocommit is the staged chunks in
/// parallel then Put Block List (2 in sequence); no stat, no lease request, no Get
/// Properties between commits.
#[test]
fn steady_one_row_autocommits_are_two_rounds_each() {
    let Some(s) = Setup::new() else { return };
    let c = s.big_database("h1", "");
    insert(&c, 0);
    let http_before = http_total(&c);
    let start = s.mark();
    let began = std::time::Instant::now();
    let mut worst = 0;
    // A commit that starts a linger (1 s, the default) or more after the one before
    // started may find the lease given back (a loaded machine can stall this thread
    // that long): it takes it again, a third request in sequence. Only such commits
    // may; most commits must be steady.
    let mut idle_commits = 0;
    let mut last_start = began;
    for i in 1..=COMMITS {
        let mark = s.mark();
        let start = std::time::Instant::now();
        let idle = start - last_start >= Duration::from_millis(1000);
        last_start = start;
        insert(&c, i);
        let commit = s.since(mark);
        assert_eq!(
            commit.iter().filter(|k| **k == "put_block_list").count(),
            1,
            "commit {i}: {commit:?}"
        );
        if idle {
            idle_commits += 1;
            assert!(
                rounds(&commit) <= 3,
                "commit {i} after an idle gap: {commit:?}"
            );
        } else {
            worst = worst.max(rounds(&commit));
        }
    }
    assert!(
        idle_commits <= COMMITS / 10,
        "{idle_commits} of {COMMITS} commits came after an idle gap: the machine is too \
         loaded for this test to see a steady state"
    );
    let took = began.elapsed();
    let log = s.since(start);
    let http = http_total(&c) - http_before;
    println!(
        "{COMMITS} one-row autocommits into {} MiB: {http} HTTP requests, at most {worst} \
         in sequence per commit; kinds: {:?}",
        DB_BYTES >> 20,
        counts(&log)
    );
    assert!(worst <= 2, "{worst} requests in sequence in a commit");
    assert_eq!(
        http,
        log.len() as u64,
        "the status counts what the proxy saw"
    );
    for k in ["get_properties", "get_blob"] {
        assert!(
            !log.contains(&k),
            "a {k} between commits: {:?}",
            counts(&log)
        );
    }
    for k in ["lease_acquire", "lease_release"] {
        let n = log.iter().filter(|x| **x == k).count() as u64;
        assert!(
            n <= idle_commits,
            "{n} {k} between commits, {idle_commits} after an idle gap: {:?}",
            counts(&log)
        );
    }
    // One region per commit (the leaf near the end): 1 Put Block + 1 Put Block List.
    // Page 1 changed only in its change counter, so the first chunk is not staged
    // again (src/store/stage.rs, `kept_first_chunk`). A renewal may fall in (one per
    // lease_secs / 3). The bound is 250 for 100 commits.
    // Beside them, the clock's looks at the waiter mark while the lease is kept
    // warm: one per quarter linger (default 1 s) after the first half linger.
    let marks = log.iter().filter(|k| **k == "waiter_mark").count() as u64;
    let looks_at_most = (took.as_millis() / 250) as u64 + 1;
    assert!(
        marks <= looks_at_most,
        "{marks} looks at the waiter mark in {took:?}"
    );
    let per_commit_floor = 2 * COMMITS;
    assert!(
        http - marks <= per_commit_floor + 2 + 2 * idle_commits,
        "{http} HTTP requests for {COMMITS} commits: {:?}",
        counts(&log)
    );
    drop(s.proxy);
}

/// A commit that changes a dozen chunks stages them all in one round: Put Block
/// List follows one round of parallel Put Blocks (2 in sequence), not one round per
/// four chunks (speedtest1's writing transactions change about 22 chunks each).
/// Rounds are the proxy's: with a delay on every request, overlapping requests are
/// one round.
#[test]
fn a_commit_of_many_chunks_stages_them_in_one_round() {
    let Some(s) = Setup::new() else { return };
    let c = s.big_database("h1", "");
    insert(&c, 0);
    // One 4000-byte row per page, 16 pages per 64 KiB chunk: rows 1,000 apart are
    // in different chunks.
    let rows: Vec<String> = (1..=12).map(|i| (i * 1000).to_string()).collect();
    s.proxy.set_delay(Duration::from_millis(30));
    let rounds_before = s.proxy.counts.rounds();
    let mark = s.mark();
    c.execute(
        &format!(
            "UPDATE filler SET b = randomblob(4000) WHERE rowid IN ({})",
            rows.join(",")
        ),
        [],
    )
    .unwrap();
    let rounds = s.proxy.counts.rounds() - rounds_before;
    let commit = s.since(mark);
    let staged = commit.iter().filter(|k| **k == "put_block").count();
    println!("a commit of {staged} chunks: {rounds} rounds, {commit:?}");
    assert!(staged >= 12, "{commit:?}");
    assert_eq!(
        rounds, 2,
        "{staged} chunks staged in one round, then the list: {commit:?}"
    );
    s.proxy.set_delay(Duration::ZERO);
}

/// A single commit from a fresh process (a new store over a cache already in step):
/// the open's freshness check, then Acquire Lease (its reply carries the ETag: no Get
/// Properties), the staged chunks, Put Block List: 3 in sequence before the
/// statement returns; the lease goes back after its linger, not in the commit.
#[test]
fn a_fresh_process_commits_in_three_rounds() {
    let Some(s) = Setup::new() else { return };
    drop(s.big_database("h1", ""));
    let opened = s.mark();
    let c = s.open("h1", "");
    let at_open = s.since(opened);
    assert_eq!(at_open, ["get_properties"], "the open's freshness check");
    let mark = s.mark();
    insert(&c, 1);
    let commit = s.since(mark);
    println!("a fresh process's commit: {commit:?}");
    assert_eq!(commit.first(), Some(&"lease_acquire"), "{commit:?}");
    assert!(!commit.contains(&"get_properties"), "{commit:?}");
    assert!(!commit.contains(&"lease_release"), "{commit:?}");
    assert!(rounds(&commit) <= 3, "{commit:?}");
    // At close the warm lease goes back.
    let closing = s.mark();
    drop(c);
    assert_eq!(s.since(closing), ["lease_release"]);
}

/// The warm lease is released in the background once idle for the linger; another
/// host's writer waits for it through busy_timeout, then commits.
#[test]
fn a_warm_lease_goes_back_when_idle_and_another_host_then_writes() {
    let Some(s) = Setup::new() else { return };
    let a = s.big_database("h1", "&lease_linger_ms=300");
    insert(&a, 1);
    assert_eq!(status(&a)["lease_held"], true, "kept warm after the commit");
    let b = s.open("h2", "");
    insert(&b, 2);
    let count: i64 = b
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 2);
    wait::until_lease_released(&a);
    assert!(s.since(0).contains(&"lease_release"));
}

/// With `lease_linger_ms=0` the lease goes back inside the commit, as before.
#[test]
fn linger_zero_releases_in_the_commit() {
    let Some(s) = Setup::new() else { return };
    let c = s.big_database("h1", "&lease_linger_ms=0");
    let mark = s.mark();
    insert(&c, 1);
    let commit = s.since(mark);
    assert_eq!(commit.first(), Some(&"lease_acquire"), "{commit:?}");
    assert_eq!(commit.last(), Some(&"lease_release"), "{commit:?}");
    assert_eq!(status(&c)["lease_held"], false);
}

fn counts(log: &[&'static str]) -> std::collections::BTreeMap<&'static str, usize> {
    let mut m = std::collections::BTreeMap::new();
    for k in log {
        *m.entry(*k).or_default() += 1;
    }
    m
}

/// The measurement behind `lease_linger_ms`'s default (docs/BENCHMARKS.md), run by
/// hand: `cargo test --features azure --test round_trips -- --ignored --nocapture`.
/// 100 one-row autocommits into 4 MiB, with the lease released at once and kept
/// warm, each with 0 and 5 ms added per request by the proxy. Prints; asserts no
/// timing.
#[test]
#[ignore]
fn measure_commits_with_and_without_linger() {
    let Some(s) = Setup::new() else { return };
    let c = s.open("m", "");
    c.execute_batch(
        "CREATE TABLE filler(b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
           INSERT INTO filler SELECT randomblob(4000) FROM n;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);",
    )
    .unwrap();
    drop(c);
    println!(
        "| added per request | lease_linger_ms | ms per commit | HTTP per commit | in sequence |"
    );
    println!("|---|---|---|---|---|");
    for delay_ms in [0u64, 5] {
        for linger in [0u64, 1000] {
            s.proxy.set_delay(Duration::ZERO);
            let c = s.open("m", &format!("&lease_linger_ms={linger}"));
            insert(&c, 0);
            s.proxy.set_delay(Duration::from_millis(delay_ms));
            let before = http_total(&c);
            let mut worst = 0;
            let started = std::time::Instant::now();
            for i in 1..=COMMITS {
                let mark = s.mark();
                insert(&c, i);
                worst = worst.max(rounds(&s.since(mark)));
            }
            let ms = started.elapsed().as_secs_f64() * 1000.0 / COMMITS as f64;
            let http = (http_total(&c) - before) as f64 / COMMITS as f64;
            println!("| {delay_ms} ms | {linger} | {ms:.1} | {http:.2} | {worst} |");
            s.proxy.set_delay(Duration::ZERO);
            drop(c);
        }
    }
}

/// The idle release races the next write: with a 1 ms linger the renewer's idle
/// check fires between and during commits. It releases a lease only while still idle
/// past its deadline, so no write ever finds the lease it woke gone (its publish
/// would fail, fenced by the lease) and every commit lands.
#[test]
fn the_idle_release_never_takes_a_lease_a_write_woke() {
    let m = MemWorld::with_defaults("linger-race", "&retry_base_ms=1&lease_linger_ms=1");
    let c = m.open("h1", "");
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY)", [])
        .unwrap();
    for i in 0..300 {
        c.execute("INSERT INTO t VALUES (?1)", [i])
            .unwrap_or_else(|e| panic!("commit {i}: {e}; {}", status(&c)));
    }
    assert_eq!(m.remote_ids(), (0..300).collect());
    wait::until_lease_released(&c);
    assert!(!m.backend.lease_holder_exists("m.db"));
}

/// A write that woke the warm lease keeps it past the linger's deadline: the idle
/// check that fires during the transaction finds the lease in use and leaves it.
#[test]
fn a_transaction_keeps_the_lease_it_woke_past_the_linger() {
    let m = MemWorld::with_defaults("linger-woken", "&retry_base_ms=1&lease_linger_ms=2000");
    let c = m.open("h1", "");
    c.execute_batch("CREATE TABLE t(id); INSERT INTO t VALUES (1);")
        .unwrap();
    assert_eq!(status(&c)["lease_held"], true, "warm after the commit");
    c.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (2);")
        .unwrap();
    // Past the deadline the commit above set: its idle check has run.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(m.backend.lease_holder_exists("m.db"), "still leased");
    assert_eq!(status(&c)["lease_held"], true);
    c.execute_batch("COMMIT").unwrap();
    assert_eq!(m.remote_ids(), [1, 2].into_iter().collect());
    assert_eq!(
        status(&c)["lease_held"],
        true,
        "warm again after this commit"
    );
}

/// A host that commits without a break keeps its warm lease for at most
/// `WarmTurn::LIMIT` lingers, then gives another host's waiting writer its turn:
/// the other writer gets in while the first is still committing.
#[test]
fn a_busy_writer_does_not_starve_another_host() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let Some(s) = Setup::new() else { return };
    const LINGER: &str = "&lease_linger_ms=100";
    let a = s.open("h1", LINGER);
    a.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, commits) = (stop.clone(), commits.clone());
        std::thread::spawn(move || {
            // Far more commits than the other host's busy_timeout lasts.
            for i in 0..100_000u64 {
                if stop.load(Ordering::SeqCst) {
                    return true;
                }
                insert(&a, i);
                commits.fetch_add(1, Ordering::SeqCst);
            }
            false
        })
    };
    while commits.load(Ordering::SeqCst) < 5 {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(status_of(&s, "h1")["lease_held"], true);
    let b = s.open("h2", LINGER);
    b.execute("INSERT INTO t(v) VALUES ('from h2')", [])
        .expect("h2's writer got its turn within its busy_timeout");
    let stopped_by_us = {
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap()
    };
    assert!(stopped_by_us, "h1 ran out of commits before h2 got in");
    let n: i64 = b
        .query_row("SELECT count(*) FROM t WHERE v = 'from h2'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 1);
}

fn status_of(s: &Setup, host: &str) -> serde_json::Value {
    status(&s.open(host, "&lease_linger_ms=100"))
}
