//! Crash injection: a driver SIGKILLs a writer and a reader at random moments (inside
//! transactions, during uploads, inside batches, during downloads). After each kill
//! every commit acknowledged to its client is in the remote, nothing half-written is
//! trusted, and reopening recovers. `MANAGEDBLOB_SOAK_KILLS` sets the number of kills
//! (default 20, 10 on Azurite); the soak runs
//! `MANAGEDBLOB_SOAK_KILLS=200 cargo test --release --test crash_soak -- --nocapture`.
//! On both backends (`local::` and `azurite::`). The figures are in
//! docs/RELIABILITY.md. Children are this test binary re-executed
//! (tests/common/child.rs). The variant with history on, where after every kill each
//! listed version must be restorable, is tests/crash_soak_history.rs.

use common::child::{self, setting, Proc};
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Entry point of every child process; returns at once in a normal test run.
#[test]
fn child_main() {
    child::child_main(&[
        ("crash_writer", crash_writer),
        ("crash_reader", crash_reader),
    ]);
}

/// Report a failure to the parent and stop.
fn child_fail(c: &Connection, what: &str, e: rusqlite::Error) -> ! {
    child::say(&format!("ERR {what}: {e}"));
    panic!("{what}: {e}; status {}", status(c));
}

/// Insert row `i` of the `n` rows of transaction `txn`.
fn insert_row(c: &Connection, txn: i64, i: i64, n: i64) {
    let size = fastrand::i64(256..2048);
    if let Err(e) = c.execute(
        "INSERT INTO t(txn, i, n, payload) VALUES (?1, ?2, ?3, randomblob(?4))",
        (txn, i, n, size),
    ) {
        child_fail(c, &format!("insert {txn}/{i}"), e);
    }
}

fn exec(c: &Connection, sql: &str, what: &str) {
    if let Err(e) = c.execute_batch(sql) {
        child_fail(c, what, e);
    }
}

/// `crash_writer`: a random mix of autocommit inserts, multi-row transactions,
/// transactions rolled back on purpose, and batches, until killed. Says
/// `TRY <txn> <rows> <kind>` before a transaction, `ACK <txn>...` once its COMMIT
/// (or the batch end that uploads it) returned OK, `LACK <txn>` when a COMMIT
/// inside a batch returned OK (local only), and `RB <txn>` after a rollback.
fn crash_writer(uri: &str) {
    fastrand::seed(child::env_num("MB_SEED"));
    let mut txn: i64 = child::env_num("MB_START");
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let rows: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap_or_else(|e| child_fail(&c, "first read", e));
    child::say(&format!("READY rows={rows}"));
    loop {
        assert!(child::parent_alive(), "the parent test process went away");
        let pick = fastrand::u32(0..100);
        if pick < 6 {
            // A bulk rewrite of an eighth of the filler: a big version to upload and,
            // with delta sync, many chunks for the reader to fetch.
            exec(
                &c,
                &format!(
                    "UPDATE filler SET b = randomblob(16384) WHERE k % 8 = {}",
                    fastrand::u32(0..8)
                ),
                "bulk update",
            );
        } else if pick < 40 {
            child::say(&format!("TRY {txn} 1 auto"));
            insert_row(&c, txn, 0, 1);
            child::say(&format!("ACK {txn}"));
            txn += 1;
        } else if pick < 70 || (80..85).contains(&pick) {
            let rollback = pick >= 80;
            let n = fastrand::i64(2..=6);
            child::say(&format!(
                "TRY {txn} {n} {}",
                if rollback { "rollback" } else { "txn" }
            ));
            exec(&c, "BEGIN IMMEDIATE", "begin");
            for i in 0..n {
                insert_row(&c, txn, i, n);
                if i == n / 2 {
                    child::pause_ms(0..15);
                }
            }
            if rollback {
                exec(&c, "ROLLBACK", "rollback");
                child::say(&format!("RB {txn}"));
            } else {
                exec(&c, "COMMIT", "commit");
                child::say(&format!("ACK {txn}"));
            }
            txn += 1;
        } else {
            // A batch: its commits stay local (LACK) until the end uploads them.
            if let Err(e) = pragma(&c, "PRAGMA managedblob_batch=begin") {
                child_fail(&c, "batch begin", e);
            }
            let mut done = Vec::new();
            for _ in 0..fastrand::usize(1..=4) {
                let n = fastrand::i64(1..=4);
                child::say(&format!("TRY {txn} {n} batch"));
                exec(&c, "BEGIN IMMEDIATE", "begin in batch");
                for i in 0..n {
                    insert_row(&c, txn, i, n);
                }
                exec(&c, "COMMIT", "commit in batch");
                child::say(&format!("LACK {txn}"));
                done.push(txn.to_string());
                txn += 1;
                child::pause_ms(0..20);
            }
            if let Err(e) = pragma(&c, "PRAGMA managedblob_batch=end") {
                child_fail(&c, "batch end", e);
            }
            child::say(&format!("ACK {}", done.join(" ")));
        }
        child::pause_ms(0..10);
    }
}

/// `crash_reader`: read the whole table over and over (with `staleness_ms=0` each
/// read checks the remote and downloads every new version), until killed.
fn crash_reader(uri: &str) {
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    child::say("READY");
    loop {
        assert!(child::parent_alive(), "the parent test process went away");
        if let Err(e) = c.query_row("SELECT count(*), sum(length(payload)) FROM t", [], |r| {
            r.get::<_, i64>(0)
        }) {
            child_fail(&c, "read", e);
        }
        child::pause_ms(0..3);
    }
}

// ---------------------------------------------------------------------------
// The driver

/// What a transaction id stands for in the remote: its row count and its kind.
#[derive(Clone, Debug)]
struct Tried {
    rows: i64,
    kind: String,
}

#[derive(Default)]
struct Soak {
    tried: BTreeMap<i64, Tried>,
    /// COMMIT (or batch end) returned OK: uploaded.
    acked: BTreeSet<i64>,
    /// COMMIT inside a batch returned OK: in the cache only, uploaded at the next open.
    lacked: BTreeSet<i64>,
    rolled_back: BTreeSet<i64>,
    kills: usize,
    rounds: usize,
    /// Counts by (sync mode, what happened).
    writer_kills: BTreeMap<(&'static str, &'static str), usize>,
    reader_kills: BTreeMap<(&'static str, &'static str), usize>,
    recoveries: BTreeMap<(&'static str, &'static str), usize>,
    max_reopen: Duration,
}

impl Soak {
    fn next_txn(&self) -> i64 {
        self.tried.keys().next_back().map_or(1, |t| t + 1)
    }

    fn absorb(&mut self, p: &Proc, messages: &[String]) {
        for m in messages {
            let mut words = m.split_whitespace();
            match words.next() {
                Some("TRY") => {
                    let txn: i64 = words.next().unwrap().parse().unwrap();
                    let rows: i64 = words.next().unwrap().parse().unwrap();
                    let kind = words.next().unwrap().to_string();
                    self.tried.insert(txn, Tried { rows, kind });
                }
                Some("ACK") => {
                    for t in words {
                        self.acked.insert(t.parse().unwrap());
                    }
                }
                Some("LACK") => {
                    self.lacked.insert(words.next().unwrap().parse().unwrap());
                }
                Some("RB") => {
                    self.rolled_back
                        .insert(words.next().unwrap().parse().unwrap());
                }
                Some("READY") => {}
                _ => panic!("{} said {m:?}\n{}", p.name, p.output()),
            }
        }
    }
}

/// Check the remote as plain SQLite: intact, only whole transactions that were
/// tried and not rolled back, and every acknowledged commit. Returns its groups.
fn check_remote(soak: &Soak, blob: &Path, must_have: &BTreeSet<i64>, when: &str) -> Groups {
    let (ok, groups) = read_remote(blob, |r| (integrity(r), txn_groups(r)));
    assert_eq!(ok, "ok", "{when}: remote integrity");
    for (txn, (count, min_n, max_n)) in &groups {
        let tried = soak
            .tried
            .get(txn)
            .unwrap_or_else(|| panic!("{when}: remote holds txn {txn}, never tried"));
        assert!(
            *count == tried.rows && *min_n == tried.rows && *max_n == tried.rows,
            "{when}: txn {txn} is half there: {count} of {} rows",
            tried.rows
        );
        assert_ne!(
            tried.kind, "rollback",
            "{when}: txn {txn} was rolled back but is in the remote"
        );
    }
    let missing: Vec<_> = must_have
        .iter()
        .filter(|t| !groups.contains_key(t))
        .collect();
    assert!(
        missing.is_empty(),
        "{when}: acknowledged commits missing from the remote: {missing:?}"
    );
    groups
}

fn journal_is_hot(cache: &Path) -> bool {
    let mut journal = cache.as_os_str().to_owned();
    journal.push("-journal");
    match std::fs::read(PathBuf::from(journal)) {
        Ok(bytes) => bytes.len() >= 8 && bytes[..8].iter().any(|b| *b != 0),
        Err(_) => false,
    }
}

/// An upload's files in the remote: temp files (a whole upload, a block being staged,
/// a block commit being built) and staged blocks.
fn transfer_files(remote: &Path) -> BTreeSet<PathBuf> {
    let mut files: BTreeSet<PathBuf> = files_with(remote, ".mb-tmp-").into_iter().collect();
    for dir in files_with(remote, ".mb-staged") {
        files.extend(
            std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path()),
        );
    }
    files
}

/// Where a writer was when it died, from what it left on disk.
fn classify_writer_kill(
    cache: &Path,
    tmp_now: &BTreeSet<PathBuf>,
    tmp_before: &BTreeSet<PathBuf>,
) -> &'static str {
    let side = sidecar_of(cache);
    let in_flight = side
        .as_ref()
        .and_then(|s| s["in_flight"].as_str().map(str::to_string))
        .unwrap_or_default();
    let dirty = side.as_ref().is_some_and(|s| s["dirty"] == true);
    let hot = journal_is_hot(cache);
    if tmp_now.difference(tmp_before).next().is_some() {
        if hot {
            "during the upload of a COMMIT"
        } else {
            "during the upload at a batch end"
        }
    } else if in_flight == "commit" {
        // Only a dirty cache's commit saves the sidecar before its phase two.
        "after the upload of a dirty cache's commit, before the local commit completed"
    } else if hot && dirty {
        "inside a transaction inside a batch"
    } else if hot {
        // A clean commit's sidecar keeps the old base until its phase two, so this
        // includes kills after the upload, before the local commit completed.
        "inside a transaction or after its upload (hot journal)"
    } else if dirty {
        "inside a batch, between local commit and upload"
    } else {
        "between transactions"
    }
}

/// Where a reader was when it died.
fn classify_reader_kill(cache: &Path, pid: libc::pid_t) -> &'static str {
    let side = sidecar_of(cache);
    let in_flight = side
        .as_ref()
        .and_then(|s| s["in_flight"].as_str().map(str::to_string))
        .unwrap_or_default();
    let download = files_with(
        cache.parent().unwrap(),
        &format!("-managedblob.download-{pid}-"),
    );
    if in_flight == "download" {
        "while writing a downloaded version into the cache"
    } else if !download.is_empty() {
        "during a download"
    } else {
        "reading or idle"
    }
}

/// A database of `mib` MiB (so uploads and downloads take measurable time) with the
/// transaction table the writer fills.
fn create_soak_db(uri: &str, mib: u32) {
    let c = open(uri);
    c.execute_batch(&format!(
        "CREATE TABLE filler(k INTEGER PRIMARY KEY, b BLOB);
         CREATE TABLE t(txn INTEGER NOT NULL, i INTEGER NOT NULL, n INTEGER NOT NULL,
                        payload BLOB, PRIMARY KEY (txn, i));
         BEGIN;
         WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < {})
         INSERT INTO filler SELECT k, randomblob(16384) FROM s;
         COMMIT;",
        mib * 64
    ))
    .unwrap();
}

/// Reopen the writer's cache: it must recover by itself (a hot journal is rolled back
/// at the first read, local batch commits are uploaded at the next check), end clean
/// and equal to the remote. Returns the kind of recovery and how long it took.
fn reopen_writer(uri: &str, cache: &Path, when: &str) -> (&'static str, Duration, Groups) {
    let started = Instant::now();
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    for _ in 0..2 {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .unwrap_or_else(|e| panic!("{when}: reading the reopened writer cache: {e}"));
    }
    let s = status(&c);
    let took = started.elapsed();
    assert_eq!(s["dirty"], false, "{when}: writer cache still dirty: {s}");
    assert_eq!(s["in_flight"], "none", "{when}: {s}");
    assert_eq!(s["lease_held"], false, "{when}: {s}");
    assert!(
        s["conflicts"].as_array().unwrap().is_empty(),
        "{when}: a single writer must never produce a conflict copy: {s}"
    );
    assert_eq!(integrity(&c), "ok", "{when}: writer cache integrity");
    let groups = txn_groups(&c);
    let kind = match (
        s["requests"]["versions_up"].as_u64().unwrap(),
        s["requests"]["versions_down"].as_u64().unwrap(),
    ) {
        (0, 0) => "clean: nothing to do",
        (_, 0) => "uploaded local commits left by the dead writer",
        (0, _) => "resynced the cache from the remote",
        _ => "uploaded and resynced",
    };
    drop(c);
    assert!(
        files_with(cache.parent().unwrap(), ".conflict-").is_empty(),
        "{when}: conflict copy in the writer's cache directory"
    );
    (kind, took, groups)
}

fn reopen_reader(uri: &str, cache: &Path, when: &str) -> Groups {
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
        .unwrap_or_else(|e| panic!("{when}: reading the reopened reader cache: {e}"));
    let s = status(&c);
    assert_eq!(s["dirty"], false, "{when}: reader cache: {s}");
    assert_eq!(s["in_flight"], "none", "{when}: reader cache: {s}");
    assert_eq!(integrity(&c), "ok", "{when}: reader cache integrity");
    let groups = txn_groups(&c);
    drop(c);
    let leftovers = files_with(cache.parent().unwrap(), "-managedblob.download-");
    assert!(
        leftovers.is_empty(),
        "{when}: download side files of dead readers were not removed: {leftovers:?}"
    );
    groups
}

/// SIGKILL a writer and a reader at random moments, over and over, and check after
/// each kill that nothing acknowledged was lost and every cache recovers. On both
/// backends (`local::` and `azurite::`). `MANAGEDBLOB_SOAK_KILLS` kills (default 20
/// on the local backend, 10 on Azurite).
///
/// On Azurite a killed writer's lease cannot be reclaimed by its pid as the local
/// backend does: it stays held until it expires (`lease_secs=30` here; Azure leases
/// last 15 to 60 s). So that a round does not wait that out, the test breaks the
/// blob's lease through the backend (`Backend::break_lease`, an operator's tool)
/// after each writer kill: this stands in for the lease's expiry. Uncommitted staged
/// blocks are not visible in the remote there either, so a writer killed during an
/// upload is counted under the hot-journal or batch class it was in.
fn crash_injection_sigkill_writers_and_readers(w: &World) {
    let target: usize = setting("MANAGEDBLOB_SOAK_KILLS", if w.is_local() { 20 } else { 10 });
    let mib: u32 = setting("MANAGEDBLOB_SOAK_DB_MIB", 4);
    let seed: u64 = setting("MANAGEDBLOB_SOAK_SEED", fastrand::u64(..));
    println!(
        "crash soak ({}): {target} kills, {mib} MiB database, sync=delta and sync=full \
         rounds alternating, MANAGEDBLOB_SOAK_SEED={seed}",
        w.backend_name()
    );
    fastrand::seed(seed);
    let started = Instant::now();
    // The remote directory, on the local backend (where upload temp files show).
    let remote_dir = w.is_local().then(|| w.remote());
    let transfers = || {
        remote_dir
            .as_deref()
            .map(transfer_files)
            .unwrap_or_default()
    };
    let mut lease_breaks = 0usize;
    // check_remote on a fresh copy of the remote blob (removed after, on Azurite).
    let check_remote_now = |soak: &Soak, must_have: &BTreeSet<i64>, when: &str| {
        let copy = w.remote_copy("a.db");
        let groups = check_remote(soak, &copy, must_have, when);
        if !w.is_local() {
            let _ = std::fs::remove_file(&copy);
        }
        groups
    };
    // Rounds alternate between delta sync (the default: blocks staged and committed,
    // ranges read) and whole-file transfers, on the same caches and remote.
    let uris = |mode: &str| {
        (
            w.uri("w", "a.db", &format!("&lease_secs=30&sync={mode}")),
            w.uri("r", "a.db", &format!("&staleness_ms=0&sync={mode}")),
        )
    };
    let writer_cache = w.cache("w", "a.db");
    let reader_cache = w.cache("r", "a.db");
    create_soak_db(&uris("delta").0, mib);
    drop(open(&uris("delta").1));

    let mut soak = Soak::default();
    while soak.kills < target {
        let round = soak.rounds;
        soak.rounds += 1;
        let mode = if round % 2 == 0 { "delta" } else { "full" };
        let (writer_uri, reader_uri) = uris(mode);
        let tmp_before = transfers();
        // Every other delta round on the local backend, each in-place commit pauses
        // half-written (remote hot journal), so kills land there too.
        let pause = if w.is_local() && round % 4 == 0 {
            "50"
        } else {
            "0"
        };
        let mut writer = Proc::spawn(
            &format!("writer-{round}"),
            "crash_writer",
            &writer_uri,
            &[
                ("MB_START", soak.next_txn().to_string()),
                ("MB_SEED", fastrand::u64(..).to_string()),
                ("MANAGEDBLOB_TEST_IN_PLACE_PAUSE_MS", pause.to_string()),
            ],
        );
        let mut reader = Proc::spawn(&format!("reader-{round}"), "crash_reader", &reader_uri, &[]);
        writer.expect("READY", Duration::from_secs(60));
        reader.expect("READY", Duration::from_secs(60));

        // Two kills at random moments, in random order.
        let reader_first = fastrand::u32(0..20) < 17;
        thread::sleep(Duration::from_millis(fastrand::u64(20..700)));
        let mut kill_writer = |soak: &mut Soak| {
            writer.sigkill();
            let remote_journal = remote_dir.as_deref().map(|d| d.join("a.db-journal"));
            let class = if remote_journal.is_some_and(|j| j.exists()) {
                "during an in-place commit (remote hot journal)"
            } else {
                classify_writer_kill(&writer_cache, &transfers(), &tmp_before)
            };
            if !w.is_local() {
                // Stands in for the expiry of the dead writer's lease (see above).
                w.with_backend(|b| b.break_lease("a.db"))
                    .unwrap_or_else(|e| panic!("breaking the dead writer's lease: {e}"));
                lease_breaks += 1;
            }
            *soak.writer_kills.entry((mode, class)).or_default() += 1;
            soak.kills += 1;
            class
        };
        let mut classes = Vec::new();
        if reader_first {
            let pid = reader.pid();
            reader.sigkill();
            let class = classify_reader_kill(&reader_cache, pid);
            *soak.reader_kills.entry((mode, class)).or_default() += 1;
            soak.kills += 1;
            classes.push(format!("reader: {class}"));
            thread::sleep(Duration::from_millis(fastrand::u64(0..300)));
            classes.push(format!("writer: {}", kill_writer(&mut soak)));
        } else {
            classes.push(format!("writer: {}", kill_writer(&mut soak)));
            thread::sleep(Duration::from_millis(fastrand::u64(0..300)));
            let pid = reader.pid();
            reader.sigkill();
            let class = classify_reader_kill(&reader_cache, pid);
            *soak.reader_kills.entry((mode, class)).or_default() += 1;
            soak.kills += 1;
            classes.push(format!("reader: {class}"));
        }
        let messages = writer.drain();
        soak.absorb(&writer, &messages);
        for m in reader.drain() {
            assert!(
                m == "READY",
                "{} said {m:?}\n{}",
                reader.name,
                reader.output()
            );
        }
        let when = format!("round {round}, sync={mode} ({})", classes.join("; "));

        // Outside a batch, COMMIT returns only after the upload: every acknowledged
        // commit is in the remote before anything reopens the cache (on the local
        // backend once its next accessor rolled back a half-done in-place commit).
        w.with_backend(|b| b.stat("a.db"))
            .unwrap_or_else(|e| panic!("{when}: stat after the kills: {e}"));
        check_remote_now(
            &soak,
            &soak.acked,
            &format!("{when}, right after the kills"),
        );

        // Reopening recovers: batch commits acknowledged locally reach the remote.
        let (kind, took, writer_groups) = reopen_writer(&writer_uri, &writer_cache, &when);
        *soak.recoveries.entry((mode, kind)).or_default() += 1;
        soak.max_reopen = soak.max_reopen.max(took);
        assert!(
            took < Duration::from_secs(10),
            "{when}: reopening took {took:?}: a dead writer's lease must be reclaimed, not \
             waited out (lease 30 s)"
        );
        let everything: BTreeSet<i64> = soak.acked.union(&soak.lacked).copied().collect();
        let remote_groups =
            check_remote_now(&soak, &everything, &format!("{when}, after reopening"));
        assert_eq!(
            writer_groups, remote_groups,
            "{when}: writer cache != remote"
        );
        let reader_groups = reopen_reader(&reader_uri, &reader_cache, &when);
        assert_eq!(
            reader_groups, remote_groups,
            "{when}: reader cache != remote"
        );
        if round % 10 == 0 || soak.kills >= target {
            println!(
                "round {round}: kills {} ({}), acknowledged {} + {} in batches, remote holds {} \
                 transactions, {:.1} s",
                soak.kills,
                classes.join("; "),
                soak.acked.len(),
                soak.lacked.len(),
                remote_groups.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }

    let elapsed = started.elapsed();
    let final_groups = w.read_remote("a.db", txn_groups);
    let verified = soak
        .acked
        .union(&soak.lacked)
        .filter(|t| final_groups.contains_key(t))
        .count();
    let leftover_tmp = transfers();
    let leftover_bytes: u64 = leftover_tmp
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    let sidecar_tmp = files_with(writer_cache.parent().unwrap(), "-managedblob.json.tmp-").len()
        + files_with(reader_cache.parent().unwrap(), "-managedblob.json.tmp-").len();
    println!("CRASH SOAK FIGURES ({}, seed {seed})", w.backend_name());
    println!(
        "  kills: {} in {} rounds, {:.1} s",
        soak.kills,
        soak.rounds,
        elapsed.as_secs_f64()
    );
    for (who, table) in [
        ("writer killed", &soak.writer_kills),
        ("reader killed", &soak.reader_kills),
        ("writer reopen", &soak.recoveries),
    ] {
        let classes: BTreeSet<&str> = table.keys().map(|(_, c)| *c).collect();
        for class in classes {
            let n = |mode| table.get(&(mode, class)).copied().unwrap_or(0);
            println!(
                "  {who} {class}: {} (delta {}, full {})",
                n("delta") + n("full"),
                n("delta"),
                n("full")
            );
        }
    }
    println!(
        "  transactions tried {}, acknowledged {} (+{} locally in batches, uploaded at reopen), \
         rolled back {}; {} acknowledged commits verified in the final remote (and each one \
         in the remote right after the kill of its writer, before any reopen)",
        soak.tried.len(),
        soak.acked.len(),
        soak.lacked.difference(&soak.acked).count(),
        soak.rolled_back.len(),
        verified
    );
    println!("  slowest reopen with recovery: {:?}", soak.max_reopen);
    if !w.is_local() {
        println!("  leases broken after a writer kill (standing in for expiry): {lease_breaks}");
    }
    if w.is_local() {
        println!(
            "  left behind: {} upload temp files and staged blocks in the remote ({} bytes), \
             {} sidecar temp files",
            leftover_tmp.len(),
            leftover_bytes,
            sidecar_tmp
        );
    } else {
        println!(
            "  left behind: {sidecar_tmp} sidecar temp files (uncommitted blocks in the \
             remote are not visible here)"
        );
    }
    assert_eq!(verified, soak.acked.union(&soak.lacked).count());
    // Swept by the reopens (at open) and by the commits (after each).
    assert!(
        leftover_tmp.is_empty() && sidecar_tmp == 0,
        "left behind: {leftover_tmp:?} ({leftover_bytes} bytes), {sidecar_tmp} sidecar temps"
    );
    assert!(
        !soak.acked.is_empty(),
        "the writers never committed anything"
    );
}

backend_tests!(crash_injection_sigkill_writers_and_readers);
