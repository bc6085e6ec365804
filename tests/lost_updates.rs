//! Lost updates: processes on separate caches ("hosts"), processes sharing one cache,
//! and threads on two caches each add increments to one counter row
//! (tests/common/counter.rs); the final value is exact, in the remote and in every
//! cache. The figures are in docs/RELIABILITY.md.
//!
//! The tests named in `backend_tests!` run on both backends (`local::<name>` and,
//! with the `azure` feature, `azurite::<name>` on a fresh Azurite container).
//! `MANAGEDBLOB_SOAK_INCREMENTS` sets the increments per process of the soak-style
//! runs. Children are this test binary re-executed (tests/common/child.rs).

use common::child::setting;
use common::counter::*;
use common::*;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Entry point of every child process; returns at once in a normal test run.
#[test]
fn child_main() {
    common::child::child_main(&[INCREMENT]);
}

fn summarize(label: &str, results: &[(u64, Value)], started: Instant) {
    let sum = |k: &str| -> u64 {
        results
            .iter()
            .map(|(_, s)| s["requests"][k].as_u64().unwrap())
            .sum()
    };
    let busy: u64 = results.iter().map(|(b, _)| b).sum();
    println!(
        "FIGURES {label}: {} processes, {:.1} s, busy retries {busy}, versions uploaded {}, \
         versions downloaded {}, lease acquisitions {}",
        results.len(),
        started.elapsed().as_secs_f64(),
        sum("versions_up"),
        sum("versions_down"),
        sum("lease_acquire")
    );
}

/// Four processes, each on its own cache ("host"), on one remote: the lease and the
/// If-Match fence serialise them, and no increment is lost. On both backends
/// (`local::` and `azurite::`); `MANAGEDBLOB_SOAK_INCREMENTS` increments per process
/// (default 20 on the local backend, 15 on Azurite).
fn lost_updates_four_hosts(w: &World) {
    let m: u32 = setting(
        "MANAGEDBLOB_SOAK_INCREMENTS",
        if w.is_local() { 20 } else { 15 },
    );
    let started = Instant::now();
    create_counter(&w.uri("h0", "a.db", ""));
    let uris: Vec<String> = (1..=4)
        .map(|h| w.uri(&format!("h{h}"), "a.db", ""))
        .collect();
    let results = run_increment_children(w, &uris, m, &Pace::SOAK);
    for (_, s) in &results {
        assert!(
            s["requests"]["versions_up"].as_u64().unwrap() >= u64::from(m),
            "{s}"
        );
    }
    // Every host but the one that wrote last must have refreshed at least once after
    // another host's commit, or the processes did not interleave.
    let refreshed = results
        .iter()
        .filter(|(_, s)| s["requests"]["versions_down"].as_u64().unwrap() >= 2)
        .count();
    assert!(refreshed >= 3, "the hosts did not interleave: {results:?}");
    check_counter(w, &uris, i64::from(4 * m));
    summarize(
        &format!("lost_updates_four_hosts ({})", w.backend_name()),
        &results,
        started,
    );
}

backend_tests!(
    lost_updates_four_hosts,
    two_processes_one_cache,
    two_hosts_interleaved_writers_no_lost_update,
    two_hosts_interleaved_writers_threads,
);

/// Two processes sharing one cache file: SQLite's POSIX locks on the cache and the
/// remote lease serialise them.
#[test]
fn lost_updates_two_processes_one_cache() {
    let m: u32 = setting("MANAGEDBLOB_SOAK_INCREMENTS", 20) * 2;
    let w = World::new();
    let started = Instant::now();
    let uri = w.uri("h1", "a.db", "");
    create_counter(&uri);
    let uris = vec![uri.clone(), uri.clone()];
    let results = run_increment_children(&w, &uris, m, &Pace::SOAK);
    for (_, s) in &results {
        assert_eq!(
            s["requests"]["versions_down"], 0,
            "one cache downloads nothing: {s}"
        );
    }
    check_counter(&w, &uris, i64::from(2 * m));
    summarize("lost_updates_two_processes_one_cache", &results, started);
}

/// Both at once: two processes share cache h1, two more have a cache each.
#[test]
fn lost_updates_shared_cache_and_separate_hosts() {
    let m: u32 = setting("MANAGEDBLOB_SOAK_INCREMENTS", 20);
    let w = World::new();
    let started = Instant::now();
    create_counter(&w.uri("h1", "a.db", ""));
    let uris = vec![
        w.uri("h1", "a.db", ""),
        w.uri("h1", "a.db", ""),
        w.uri("h2", "a.db", ""),
        w.uri("h3", "a.db", ""),
    ];
    let results = run_increment_children(&w, &uris, m, &Pace::SOAK);
    check_counter(&w, &uris, i64::from(4 * m));
    summarize(
        "lost_updates_shared_cache_and_separate_hosts",
        &results,
        started,
    );
}

/// Two processes, one cache file, one remote: SQLite's POSIX locks on the cache and
/// the remote lease serialise them, and no increment is lost.
fn two_processes_one_cache(w: &World) {
    const N: u32 = 50;
    let uri = w.uri("h1", "a.db", "");
    create_counter(&uri);
    let results = run_increment_children(w, &[uri.clone(), uri.clone()], N, &Pace::INTERLEAVED);
    // One cache: nothing to download, ever; and every commit uploaded by itself.
    for (_, s) in &results {
        assert_eq!(fetches(s), 0, "{s}");
        assert!(uploads(s) >= u64::from(N), "{s}");
    }
    // The remote, and the shared cache (intact, nothing left to upload).
    check_counter(w, &[uri], i64::from(2 * N));
}

/// Two hosts (two caches) on one remote, one process each: the lease and the
/// If-Match fence serialise them, and a BUSY from a moved remote refreshes the cache
/// before the retry.
fn two_hosts_interleaved_writers_no_lost_update(w: &World) {
    const N: u32 = 50;
    // Interleaving needs each commit to give the lease back (a warm lease keeps the
    // turn while its writer pauses less than the linger).
    const NO_LINGER: &str = "&lease_linger_ms=0";
    create_counter(&w.uri("h1", "a.db", NO_LINGER));
    let uris = [
        w.uri("h1", "a.db", NO_LINGER),
        w.uri("h2", "a.db", NO_LINGER),
    ]
    .to_vec();
    let results = run_increment_children(w, &uris, N, &Pace::INTERLEAVED);
    let statuses: Vec<&Value> = results.iter().map(|(_, s)| s).collect();
    for s in &statuses {
        assert!(uploads(s) >= u64::from(N), "{s}");
    }
    // h2 downloads once when it opens; any further download is a refresh after the
    // other host committed. Each host refreshing at least once shows the writers did
    // interleave (else this test would prove little).
    let downloads: Vec<u64> = statuses.iter().map(|s| fetches(s)).collect();
    assert!(
        downloads[0] >= 1 && downloads[1] >= 2,
        "the two hosts did not interleave (downloads {downloads:?}): {statuses:?}"
    );
    // The remote, and each cache after reopening.
    check_counter(w, &uris, i64::from(2 * N));
}

/// The same with two caches in one process, on two threads.
fn two_hosts_interleaved_writers_threads(w: &World) {
    const N: u32 = 50;
    // As above: each commit gives the lease back, so the writers can interleave.
    const NO_LINGER: &str = "&lease_linger_ms=0";
    create_counter(&w.uri("h1", "a.db", NO_LINGER));
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let workers: Vec<_> = ["h1", "h2"]
        .into_iter()
        .map(|host| {
            let uri = w.uri(host, "a.db", NO_LINGER);
            let barrier = barrier.clone();
            thread::spawn(move || {
                let c = open(&uri);
                c.busy_timeout(Duration::from_secs(10)).unwrap();
                barrier.wait();
                let busy = run_increments(&c, N, &uri, &Pace::INTERLEAVED);
                (busy, status(&c))
            })
        })
        .collect();
    let mut downloads = Vec::new();
    for t in workers {
        let (busy, s) = t.join().expect("worker panicked");
        println!("busy retries: {busy}; status {s}");
        downloads.push(fetches(&s));
    }
    assert!(
        downloads[0] >= 1 && downloads[1] >= 2,
        "the two caches did not interleave (downloads {downloads:?})"
    );
    assert_eq!(remote_counter(w, "a.db"), i64::from(2 * N));
}
