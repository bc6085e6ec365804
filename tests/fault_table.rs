//! Fault injection on the memory backend (tests/common/memworld.rs): transient errors
//! at a rate and slow responses, with three hosts writing; a COMMIT is in the remote
//! if and only if it returned OK, and retries stay within their bounds in count and
//! time. Then the races and lost replies the soak found, and lease trouble (a parked
//! lease, a release that fails). The figures are in docs/RELIABILITY.md.

use common::child::setting;
use common::memworld::*;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use managedblob::internal::backend::memory::Op;
use managedblob::internal::backend::BackendErrorKind;
use rusqlite::Connection;

/// Table `t` with id 1.
const ONE_ID: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);";

/// The lease tests' settings: two quick tries, Azure's shortest lease, whole files,
/// and the lease released right after each commit (the release is what fails).
const LEASE_TROUBLE: &str =
    "&retry_attempts=2&retry_base_ms=1&lease_secs=15&sync=full&lease_linger_ms=0";

/// 256 KiB of filler, so a small commit changes a few chunks out of several and
/// delta sync stages and reads ranges rather than whole files.
const MEM_SCHEMA: &str = "CREATE TABLE filler(b BLOB);
     WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < 32)
     INSERT INTO filler SELECT randomblob(8192) FROM s;";

/// Transient errors on every kind of request and slow responses, three hosts
/// writing at once: each COMMIT that returned OK is in the remote, each that failed
/// is not (not even in part), and every cache converges on the remote. In both sync
/// modes.
#[test]
fn fault_injection_a_commit_is_in_the_remote_iff_it_returned_ok() {
    for mode in SYNC_MODES {
        fault_injection_run(mode);
    }
}

fn fault_injection_run(mode: &str) {
    const HOSTS: usize = 3;
    let ops_per_host: usize = setting("MANAGEDBLOB_SOAK_FAULT_OPS", 50);
    let rate: f64 = setting("MANAGEDBLOB_SOAK_FAULT_RATE", 0.3);
    let m = Arc::new(MemWorld::new(&format!("rate-{mode}")));
    // A release that fails (after its retries) parks the lease until it lapses, and
    // other hosts wait for that: the shortest lease keeps such stalls short.
    let extra =
        format!("&retry_attempts=3&retry_base_ms=1&staleness_ms=0&lease_secs=15&sync={mode}");
    {
        let c = m.open("h0", &extra);
        c.execute_batch(MEM_SCHEMA).unwrap();
        c.execute_batch(
            "CREATE TABLE t(txn INTEGER NOT NULL, i INTEGER NOT NULL, n INTEGER NOT NULL, \
             PRIMARY KEY (txn, i))",
        )
        .unwrap();
    }
    let calls_before = m.calls();
    for op in ALL_OPS {
        m.backend.set_fail_rate(op, rate);
    }
    // Slow responses: the latency jumps between 0 and 20 ms while the hosts work.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let jitter = {
        let (backend, stop) = (m.backend.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let ms = [0, 0, 1, 5, 20][fastrand::usize(0..5)];
                backend.set_latency(Duration::from_millis(ms));
                thread::sleep(Duration::from_millis(30));
            }
            backend.set_latency(Duration::ZERO);
        })
    };
    let started = Instant::now();
    // The hosts close together: a host that closes while others still write would
    // leave them waiting for its lease to lapse whenever its release fails.
    let done = Arc::new(std::sync::Barrier::new(HOSTS));
    let workers: Vec<_> = (1..=HOSTS)
        .map(|h| {
            let m = m.clone();
            let extra = extra.clone();
            let done = done.clone();
            thread::spawn(move || {
                // A cold cache cannot open while the remote fails: try again.
                let uri = m.uri(&format!("h{h}"), &extra);
                let c = (0..100)
                    .find_map(|_| Connection::open_with_flags(&uri, flags()).ok())
                    .expect("opening under faults kept failing");
                c.busy_timeout(Duration::from_secs(2)).unwrap();
                let mut acked = BTreeSet::new();
                let mut failed: BTreeMap<String, usize> = BTreeMap::new();
                let mut slowest = Duration::ZERO;
                for k in 0..ops_per_host {
                    let txn = (h * 100_000 + k) as i64;
                    let n = if fastrand::bool() {
                        1
                    } else {
                        fastrand::i64(2..=4)
                    };
                    let t0 = Instant::now();
                    // The step that failed goes with the code: a write refused at
                    // the lease never reached COMMIT.
                    let result = (|| -> Result<(), (&'static str, rusqlite::Error)> {
                        if n == 1 {
                            c.execute("INSERT INTO t VALUES (?1, 0, 1)", [txn])
                                .map_err(|e| ("autocommit INSERT", e))?;
                            return Ok(());
                        }
                        c.execute_batch("BEGIN IMMEDIATE")
                            .map_err(|e| ("BEGIN IMMEDIATE", e))?;
                        for i in 0..n {
                            c.execute("INSERT INTO t VALUES (?1, ?2, ?3)", [txn, i, n])
                                .map_err(|e| ("INSERT", e))?;
                        }
                        c.execute_batch("COMMIT").map_err(|e| ("COMMIT", e))
                    })();
                    slowest = slowest.max(t0.elapsed());
                    if !c.is_autocommit() {
                        c.execute_batch("ROLLBACK").unwrap();
                    }
                    match result {
                        Ok(()) => {
                            acked.insert(txn);
                        }
                        Err((step, e)) => {
                            let key = match &e {
                                rusqlite::Error::SqliteFailure(f, _) => {
                                    format!("{step}: {:?} ({})", f.code, f.extended_code)
                                }
                                other => format!("{step}: {other}"),
                            };
                            *failed.entry(key).or_default() += 1;
                        }
                    }
                }
                done.wait();
                let s = status(&c);
                (acked, failed, slowest, s)
            })
        })
        .collect();
    let mut acked = BTreeSet::new();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    let mut retries = 0;
    for t in workers {
        let (a, f, s, st) = t.join().expect("worker panicked");
        acked.extend(a);
        for (k, v) in f {
            *failed.entry(k).or_default() += v;
        }
        slowest = slowest.max(s);
        retries += st["requests"]["retries"].as_u64().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    jitter.join().unwrap();
    for op in ALL_OPS {
        m.backend.set_fail_rate(op, 0.0);
    }
    let elapsed = started.elapsed();
    let calls: Vec<String> = ALL_OPS
        .iter()
        .zip(m.calls_since(&calls_before))
        .filter(|(_, n)| *n > 0)
        .map(|(o, n)| format!("{o:?} {n}"))
        .collect();

    let (ok, groups) = m.remote(|r| (integrity(r), txn_groups(r)));
    assert_eq!(ok, "ok", "{mode}: remote integrity");
    for (txn, (count, min_n, max_n)) in &groups {
        assert!(
            count == min_n && min_n == max_n,
            "{mode}: txn {txn} is half in the remote: {count} rows of {max_n}"
        );
    }
    let in_remote: BTreeSet<i64> = groups.keys().copied().collect();
    let lost: Vec<_> = acked.difference(&in_remote).collect();
    let phantom: Vec<_> = in_remote.difference(&acked).collect();
    assert!(
        lost.is_empty(),
        "{mode}: commits that returned OK are missing: {lost:?}"
    );
    assert!(
        phantom.is_empty(),
        "{mode}: commits that failed are in the remote: {phantom:?}"
    );
    let failures: usize = failed.values().sum();
    assert!(
        failures > 0 && !acked.is_empty(),
        "{mode}: faults were injected: {failed:?}"
    );
    // The property is about COMMIT: some failures must have happened at the commit
    // point (the upload; SQLITE_IOERR_FSYNC), not only at the lease before it.
    let at_commit: usize = failed
        .iter()
        .filter(|(k, _)| {
            (k.starts_with("COMMIT") || k.starts_with("autocommit INSERT")) && k.ends_with("(1034)")
        })
        .map(|(_, n)| n)
        .sum();
    assert!(
        at_commit > 0,
        "{mode}: no failure at the commit point: {failed:?}"
    );
    // With retry_attempts=3 and retry_base_ms=1, a request gives up within about
    // 3 x 20 ms of latency plus a few ms of backoff; a statement makes at most ~10
    // requests and may wait out busy_timeout (2 s) for another host's lease: about
    // 2.7 s at worst. The bound has 5x slack: it catches unbounded retries, not a
    // slow machine. (retries_stay_within_their_bounds counts the attempts exactly.)
    assert!(
        slowest < Duration::from_secs(15),
        "{mode}: a statement took {slowest:?}: retries are not bounded"
    );
    for h in 0..=HOSTS {
        let c = m.open(&format!("h{h}"), &extra);
        assert_eq!(
            txn_groups(&c),
            groups,
            "{mode}: host h{h} after faults stopped"
        );
        assert_eq!(integrity(&c), "ok");
    }
    println!(
        "FIGURES fault injection, sync={mode}: rate {rate} on every request kind, latency 0-20 \
         ms, {HOSTS} hosts x {ops_per_host} transactions in {:.1} s: {} committed and present, \
         {failures} failed and absent {failed:?}; requests {}; {retries} retries; slowest \
         statement {slowest:?}",
        elapsed.as_secs_f64(),
        acked.len(),
        calls.join(", ")
    );
}

/// A remote request failing transiently is tried exactly `retry_attempts` times, with
/// exponential backoff, then the statement fails; even with a slow remote the wait is
/// bounded by the backoff schedule plus the latency of the requests made. For every
/// request a commit or a refresh makes, in both sync modes.
#[test]
fn retries_stay_within_their_bounds() {
    let mut figures = Vec::new();
    for mode in SYNC_MODES {
        for attempts in [1u32, 3, 5] {
            retries_run(mode, attempts, &mut figures);
        }
    }
    println!("FIGURES retry bounds (base 20 ms, latency 10 ms per request):");
    for f in figures {
        println!("  {f}");
    }
}

fn retries_run(mode: &str, attempts: u32, figures: &mut Vec<String>) {
    const BASE_MS: u64 = 20;
    const LATENCY: Duration = Duration::from_millis(10);
    let m = MemWorld::new(&format!("bounds-{mode}-{attempts}"));
    let extra =
        format!("&retry_attempts={attempts}&retry_base_ms={BASE_MS}&staleness_ms=0&sync={mode}");
    let c = m.open("h1", &extra);
    c.execute_batch(MEM_SCHEMA).unwrap();
    c.execute_batch(ONE_ID).unwrap();
    m.backend.set_latency(LATENCY);

    // Chunked requests run on parallel workers, each chunk with its own retries.
    let per_chunk = [Op::StageBlock, Op::ReadRange];
    let mut check = |op: Op, what: &str, action: &dyn Fn() -> rusqlite::Result<()>| {
        let what = format!("sync={mode}: {what}");
        let calls_before = m.calls();
        let retries_before = status(&c)["requests"]["retries"].as_u64().unwrap();
        m.backend.fail_next(op, BackendErrorKind::Transient, 1000);
        let t0 = Instant::now();
        let result = action();
        let took = t0.elapsed();
        m.backend.fail_next(op, BackendErrorKind::Transient, 0);
        let err = match result {
            Ok(()) => panic!("{what}: succeeded although every {op:?} failed"),
            Err(e) => e.to_string(),
        };
        let calls = m.calls_since(&calls_before);
        let op_calls = calls[ALL_OPS.iter().position(|o| *o == op).unwrap()];
        let s = status(&c);
        let retries = s["requests"]["retries"].as_u64().unwrap() - retries_before;
        let requests = op_calls / attempts as usize;
        if per_chunk.contains(&op) {
            assert!(
                op_calls > 0 && op_calls % attempts as usize == 0,
                "{what}: {op:?} tried {op_calls} times with retry_attempts={attempts}"
            );
        } else {
            assert_eq!(
                op_calls, attempts as usize,
                "{what}: {op:?} tried {op_calls} times with retry_attempts={attempts}"
            );
        }
        assert_eq!(
            retries,
            (requests as u64) * u64::from(attempts - 1),
            "{what}: retries"
        );
        let last = s["last_error"].as_str().unwrap_or_default().to_string();
        assert!(
            last.contains(&format!("gave up after {attempts} attempts")),
            "{what}: last_error {last:?}; statement error {err}"
        );
        // Backoff before retry r is BASE * 2^(r-1), less up to 25 % jitter.
        let backoff: u64 = (1..attempts).map(|r| BASE_MS << (r - 1)).sum();
        let all_calls: usize = calls.iter().sum();
        let low = Duration::from_millis(backoff * 3 / 4) + LATENCY * attempts;
        // The most the schedule and the latency add up to, with 5x slack for a
        // loaded machine (a lower bound needs none: nothing makes it faster).
        let high = (Duration::from_millis(backoff * requests as u64) + LATENCY * all_calls as u32)
            * 5
            + Duration::from_millis(500);
        assert!(
            took >= low && took <= high,
            "{what}: failing took {took:?}, expected {low:?}..{high:?}"
        );
        figures.push(format!(
            "{what}, attempts={attempts}: {op_calls} tries ({requests} request(s)), failed after \
             {} ms",
            took.as_millis()
        ));
    };
    let commit_ops: &[Op] = if mode == "full" {
        &[Op::Upload]
    } else {
        &[Op::StageBlock, Op::CommitBlocks]
    };
    for (k, op) in commit_ops.iter().enumerate() {
        check(*op, &format!("COMMIT whose {op:?} fails"), &|| {
            c.execute("INSERT INTO t VALUES (?1)", [100 + k as i64])
                .map(|_| ())
        });
    }
    check(Op::AcquireLease, "write whose lease request fails", &|| {
        c.execute("INSERT INTO t VALUES (200)", []).map(|_| ())
    });
    check(Op::Stat, "refresh whose stat fails", &|| {
        pragma(&c, "PRAGMA managedblob_refresh").map(|_| ())
    });
    // Another host commits a small change; then the refresh's transfer fails.
    {
        m.backend.set_latency(Duration::ZERO);
        let other = m.open("h2", &extra);
        other.execute("INSERT INTO t VALUES (4)", []).unwrap();
        m.backend.set_latency(LATENCY);
    }
    let refresh_ops: &[Op] = if mode == "full" {
        &[Op::Download]
    } else {
        &[Op::BlockList, Op::ReadRange]
    };
    for op in refresh_ops {
        check(*op, &format!("refresh whose {op:?} fails"), &|| {
            pragma(&c, "PRAGMA managedblob_refresh").map(|_| ())
        });
    }
    // Once the remote answers again, everything works and nothing was lost.
    m.backend.set_latency(Duration::ZERO);
    c.execute("INSERT INTO t VALUES (5)", []).unwrap();
    let ids: Vec<i64> = m.remote(|r| column(r, "SELECT id FROM t ORDER BY id"));
    assert_eq!(
        ids,
        [1, 4, 5],
        "sync={mode} attempts={attempts}: failed commits are absent"
    );
}

/// Delta sync reads the chunks of a new version with ranged reads pinned to it; when
/// another host commits meanwhile, the pinned read fails. That is a race, not a
/// fault: the reader's statement waits (busy handler) and gets the newer version,
/// rather than failing with a disk I/O error. (Found by the crash soak: a reader with
/// `staleness_ms=0` failed "read range failed: expected etag ...".)
#[test]
fn a_commit_racing_a_ranged_refresh_is_retried_not_an_io_error() {
    let m = MemWorld::new("race");
    let extra = "&staleness_ms=0&sync=delta";
    let a = m.open("a", extra);
    a.execute_batch(MEM_SCHEMA).unwrap();
    a.execute_batch(ONE_ID).unwrap();
    let b = m.open("b", extra);
    b.busy_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        b.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        1
    );
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    // The version b starts fetching is replaced before its chunks arrive.
    let reads = m.backend.calls(Op::ReadRange);
    m.backend
        .fail_next(Op::ReadRange, BackendErrorKind::ConditionFailed, 1);
    let n = b.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0));
    assert!(
        m.backend.calls(Op::ReadRange) > reads,
        "the refresh did not read ranges"
    );
    assert_eq!(
        n.as_ref().ok(),
        Some(&2),
        "a racing commit failed the read: {n:?}; status {}",
        status(&b)
    );
}

/// The one case where a failed COMMIT can still be in the remote: the upload landed
/// but its reply was lost, and the check that would tell (reading the remote back to
/// compare) fails too. The outcome is unknown to the client; what is guaranteed is
/// that the COMMIT reports failure, the remote holds one consistent version, and the
/// cache follows the remote at the next read instead of diverging from it.
#[test]
fn a_lost_reply_that_cannot_be_checked_leaves_cache_and_remote_consistent() {
    for mode in SYNC_MODES {
        let m = MemWorld::new(&format!("unknown-{mode}"));
        let extra = format!("&retry_attempts=3&retry_base_ms=1&staleness_ms=0&sync={mode}");
        let c = m.open("h1", &extra);
        c.execute_batch(ONE_ID).unwrap();
        // The check reads the remote back: whole in full mode, its block list in delta.
        let check_op = if mode == "full" {
            Op::Download
        } else {
            Op::BlockList
        };
        m.backend.land_then_fail_next_upload();
        m.backend
            .fail_next(check_op, BackendErrorKind::Transient, 1000);
        let result = c.execute("INSERT INTO t VALUES (2)", []);
        m.backend
            .fail_next(check_op, BackendErrorKind::Transient, 0);
        let remote_ids: Vec<i64> = m.remote(|r| column(r, "SELECT id FROM t ORDER BY id"));
        let s = status(&c);
        println!(
            "sync={mode}: lost reply, check impossible: result {result:?}; remote \
             {remote_ids:?}; last_error {}",
            s["last_error"]
        );
        let err =
            result.expect_err("the COMMIT cannot know its outcome and must not report success");
        assert_eq!(remote_ids, [1, 2], "{mode}: the upload did land");
        let last = s["last_error"].as_str().unwrap_or_default();
        assert!(
            !last.is_empty(),
            "{mode}: the failure is explained in last_error: {s} ({err})"
        );
        // The cache does not stay behind the remote: the next read takes the version.
        let ids: Vec<i64> = column(&c, "SELECT id FROM t ORDER BY id");
        assert_eq!(ids, [1, 2], "{mode}: the cache follows the remote");
        let s = status(&c);
        assert_eq!(s["dirty"], false, "{mode}: {s}");
        assert!(s["conflicts"].as_array().unwrap().is_empty(), "{mode}: {s}");
        c.execute("INSERT INTO t VALUES (3)", []).unwrap();
        assert_eq!(integrity(&c), "ok");
    }
}

/// A release that fails parks the lease (README: "this process's next writer may
/// renew and reuse it instead of waiting for itself"). If that renewal fails once,
/// transiently, the process must not lock itself out: once the remote answers again
/// its next write goes through, instead of waiting out its own forgotten lease.
#[test]
fn a_parked_lease_survives_a_transient_renewal_failure() {
    let m = MemWorld::new("parked");
    let c = m.open("h1", LEASE_TROUBLE);
    c.execute_batch(ONE_ID).unwrap();
    m.backend
        .fail_next(Op::ReleaseLease, BackendErrorKind::Transient, 2);
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(status(&c)["lease_held"], true, "the lease is parked");
    assert!(
        m.backend.lease_holder_exists("m.db"),
        "the release failed: the remote still holds the lease"
    );
    let acquired = requests(&c, "lease_acquire");
    m.backend
        .fail_next(Op::RenewLease, BackendErrorKind::Transient, 2);
    c.busy_timeout(Duration::ZERO).unwrap();
    let during = c.execute("INSERT INTO t VALUES (3)", []);
    let err = during.expect_err("a write while the parked lease cannot be renewed");
    assert!(
        status(&c)["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("injected"),
        "the renewal failure is the reason: {err}; {}",
        status(&c)
    );
    assert!(c.is_autocommit());
    // Still parked: held here and at the remote, not forgotten.
    assert_eq!(status(&c)["lease_held"], true, "{}", status(&c));
    assert!(m.backend.lease_holder_exists("m.db"));
    assert_eq!(
        m.remote_ids(),
        BTreeSet::from([1, 2]),
        "nothing of the failed write"
    );
    // The remote answers again: the parked lease is renewed and used at once, with
    // no wait in the busy handler (busy_timeout 0) and no new acquisition.
    let after = c.execute("INSERT INTO t VALUES (4)", []);
    let s = status(&c);
    assert!(
        after.is_ok(),
        "the process locked itself out with its own lease: {after:?}; status {s}"
    );
    assert_eq!(
        s["requests"]["lease_acquire"].as_u64(),
        Some(acquired),
        "the parked lease was reused, not acquired again: {s}"
    );
    assert_eq!(m.remote_ids(), BTreeSet::from([1, 2, 4]));
}

/// A writer whose snapshot is stale takes the lease, sees the remote moved, and gives
/// the lease back before it refreshes (README: "a writer whose snapshot is stale gets
/// SQLITE_BUSY at its first write and its retry runs on the new version"). When that
/// release fails (after its retries), the lease must not be forgotten while still
/// held: otherwise every writer, this one included, waits for it to lapse
/// (`lease_secs`, 15 s here) although the remote answers again at once.
#[test]
fn a_stale_writer_whose_lease_release_fails_does_not_block_everyone() {
    let m = MemWorld::new("adopt");
    let a = m.open("a", LEASE_TROUBLE);
    a.execute_batch(ONE_ID).unwrap();
    let b = m.open("b", LEASE_TROUBLE);
    let n: i64 = b
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    // The remote moves; b's snapshot (checked less than staleness_ms ago) is stale.
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    m.backend
        .fail_next(Op::ReleaseLease, BackendErrorKind::Transient, 2);
    b.busy_timeout(Duration::from_secs(3)).unwrap();
    let t0 = Instant::now();
    let result = b.execute("INSERT INTO t VALUES (3)", []);
    let took = t0.elapsed();
    a.busy_timeout(Duration::from_secs(3)).unwrap();
    let other = a.execute("INSERT INTO t VALUES (4)", []);
    println!("stale writer: {result:?} after {took:?}; other host: {other:?}");
    assert!(
        result.is_ok() && other.is_ok(),
        "a lease whose release failed was forgotten while held: the stale writer got \
         {result:?} after {took:?}, the other host {other:?}; status {}",
        status(&b)
    );
}
