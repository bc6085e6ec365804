//! The crash soak with history on (local backend): a counter writer with
//! `history=5` (so a prune runs at nearly every commit) is SIGKILLed at random
//! moments, including inside in-place commits (remote hot journal), inside snapshots
//! and inside prunes (the test pauses of `local/in_place.rs` and
//! `local/versions.rs` widen those windows). After every kill, each version listed
//! opens with `version=<id>`, passes `PRAGMA integrity_check` and holds a counter
//! value that was acknowledged or was in flight when its writer died; the listed
//! versions' counters never go down from older to newer, and none is ahead of the
//! blob. At the end a clean commit leaves exactly the retention and nothing
//! unreferenced in the version store.
//!
//! `MANAGEDBLOB_SOAK_KILLS` sets the number of kills (default 12, one per round); the
//! long form is
//! `MANAGEDBLOB_SOAK_KILLS=200 cargo test --release --test crash_soak_history -- --nocapture`.
//! Figures in docs/RELIABILITY.md. Children are this test binary re-executed
//! (tests/common/child.rs).

use common::child::{self, setting, Proc};
use common::counter::counter;
use common::*;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use managedblob::internal::backend::VersionInfo;
use rusqlite::Connection;

/// Versions kept (`history=5`).
const RETENTION: usize = 5;

/// Rows of 4 KiB filler: each commit rewrites one, so each version holds chunks of
/// its own and a prune has chunks to collect.
const FILLER_ROWS: i64 = 256;

#[test]
fn child_main() {
    child::child_main(&[("history_writer", history_writer)]);
}

fn child_fail(c: &Connection, what: &str, e: rusqlite::Error) -> ! {
    child::say(&format!("ERR {what}: {e}"));
    panic!("{what}: {e}; status {}", status(c));
}

fn exec(c: &Connection, sql: &str, what: &str) {
    if let Err(e) = c.execute_batch(sql) {
        child_fail(c, what, e);
    }
}

/// Take the counter from `value - 1` to `value` and rewrite one filler row, in one
/// transaction.
fn increment_to(c: &Connection, value: i64) {
    exec(c, "BEGIN IMMEDIATE", "begin");
    let before = c
        .query_row("SELECT v FROM c WHERE id = 1", [], |r| r.get::<_, i64>(0))
        .unwrap_or_else(|e| child_fail(c, "read the counter", e));
    assert_eq!(before, value - 1, "the counter moved under a single writer");
    exec(c, "UPDATE c SET v = v + 1 WHERE id = 1", "increment");
    exec(
        c,
        &format!(
            "UPDATE filler SET b = randomblob(4096) WHERE k = {}",
            fastrand::i64(1..=FILLER_ROWS)
        ),
        "filler update",
    );
    exec(c, "COMMIT", "commit");
}

/// `history_writer`: increments until killed, alone or in batches. Says `READY <v>`,
/// then `TRY <v>` before each commit, `LACK <v>` when a commit inside a batch
/// returned (local only), `ACK <v>` once the value is published.
fn history_writer(uri: &str) {
    fastrand::seed(child::env_num("MB_SEED"));
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut value = c
        .query_row("SELECT v FROM c WHERE id = 1", [], |r| r.get::<_, i64>(0))
        .unwrap_or_else(|e| child_fail(&c, "first read", e));
    child::say(&format!("READY {value}"));
    loop {
        assert!(child::parent_alive(), "the parent test process went away");
        if fastrand::u32(0..100) < 75 {
            value += 1;
            child::say(&format!("TRY {value}"));
            increment_to(&c, value);
            child::say(&format!("ACK {value}"));
        } else {
            exec(&c, "PRAGMA managedblob_batch=begin", "batch begin");
            for _ in 0..fastrand::usize(1..=3) {
                value += 1;
                child::say(&format!("TRY {value}"));
                increment_to(&c, value);
                child::say(&format!("LACK {value}"));
            }
            exec(&c, "PRAGMA managedblob_batch=end", "batch end");
            child::say(&format!("ACK {value}"));
        }
        child::pause_ms(0..10);
    }
}

/// What the writers said, and what a kept version may therefore hold.
#[derive(Default)]
struct Ledger {
    /// Published: an autocommit's COMMIT or a batch end returned.
    acked: BTreeSet<i64>,
    /// Committed inside a batch: in the writer's cache, uploaded at its next open.
    lacked: BTreeSet<i64>,
    /// Tried by a writer after its last ACK when it was killed: may be published.
    in_flight: BTreeSet<i64>,
}

impl Ledger {
    /// Record a killed writer's messages.
    fn absorb(&mut self, p: &Proc, messages: &[String]) {
        let mut since_ack = BTreeSet::new();
        for m in messages {
            let mut words = m.split_whitespace();
            let head = words.next();
            let value: Option<i64> = words.next().map(|v| v.parse().unwrap());
            match (head, value) {
                (Some("READY"), _) => {}
                (Some("TRY"), Some(v)) => {
                    since_ack.insert(v);
                }
                (Some("LACK"), Some(v)) => {
                    self.lacked.insert(v);
                }
                (Some("ACK"), Some(v)) => {
                    self.acked.insert(v);
                    since_ack.clear();
                }
                _ => panic!("{} said {m:?}\n{}", p.name, p.output()),
            }
        }
        self.in_flight.extend(since_ack);
    }

    /// Whether a version holding counter `v` can be one the writers published: the
    /// first version (0), an acknowledged value, or one in flight at a kill (a value
    /// committed inside a batch that then ended is neither: half a batch).
    fn may_hold(&self, v: i64) -> bool {
        v == 0 || self.acked.contains(&v) || self.in_flight.contains(&v)
    }

    fn newest_promised(&self) -> i64 {
        let acked = self.acked.last().copied().unwrap_or(0);
        acked.max(self.lacked.last().copied().unwrap_or(0))
    }
}

/// The version store beside the blob (local backend layout, `local/versions.rs`).
struct Shelf<'a>(&'a Path);

impl Shelf<'_> {
    fn names(&self, sub: &str) -> Vec<String> {
        std::fs::read_dir(self.0.join(sub))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn temp_files(&self) -> usize {
        ["chunks", "manifests"]
            .iter()
            .flat_map(|sub| self.names(sub))
            .filter(|n| n.contains(".tmp-"))
            .count()
    }

    /// Chunk files no manifest names (left by a killed snapshot or prune).
    fn unreferenced_chunks(&self) -> usize {
        #[derive(serde::Deserialize)]
        struct Manifest {
            chunks: Vec<(String, u64)>,
        }
        let mut live = HashSet::new();
        for name in self.names("manifests") {
            if name.ends_with(".json") {
                let bytes = std::fs::read(self.0.join("manifests").join(&name)).unwrap();
                let m: Manifest = serde_json::from_slice(&bytes).unwrap();
                live.extend(m.chunks.into_iter().map(|(chunk, _)| chunk));
            }
        }
        self.names("chunks")
            .iter()
            .filter(|n| !n.contains(".tmp-") && !live.contains(*n))
            .count()
    }
}

/// Where the writer was when it died, from what it left on disk. `paused` is the
/// step this round's test pause widened.
fn classify(remote: &Path, shelf: &Shelf, listed: usize, paused: &str) -> &'static str {
    if remote.join("a.db-journal").exists() {
        "during an in-place commit (remote hot journal)"
    } else if shelf.temp_files() > 0 {
        "inside a snapshot or prune, writing a file (temp file left)"
    } else if listed > RETENTION {
        "after a snapshot, before its prune dropped a manifest"
    } else if shelf.unreferenced_chunks() > 0 {
        match paused {
            "snapshot" => "inside a snapshot (chunks written, no manifest yet)",
            "prune" => "inside a prune (manifests dropped, chunks not yet collected)",
            _ => "inside a snapshot or prune (unreferenced chunks left)",
        }
    } else {
        "elsewhere (inside a transaction, an upload, between commits)"
    }
}

/// Check every listed version: it opens with `version=<id>`, is intact, holds a
/// value the writers may have published; counters never go down along the list.
/// Returns the listed versions and their counters.
fn check_versions(
    w: &World,
    ledger: &Ledger,
    when: &str,
    checked: &mut BTreeSet<String>,
) -> Vec<(VersionInfo, i64)> {
    let listed = w.with_backend(|b| b.history().unwrap().versions("a.db").unwrap());
    assert!(
        !listed.is_empty() && listed.len() <= RETENTION + 1,
        "{when}: {} versions listed, retention {RETENTION} (+1 between a snapshot and its \
         prune): {listed:?}",
        listed.len()
    );
    let mut out = Vec::new();
    for v in listed {
        let c = open(&w.uri("v", "a.db", &format!("&version={}", v.id)));
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{when}: version {} does not open: {e}", v.id));
        assert_eq!(check, "ok", "{when}: version {} integrity", v.id);
        let value = counter(&c);
        drop(c);
        assert!(
            ledger.may_hold(value),
            "{when}: version {} holds counter {value}, neither acknowledged nor in flight \
             (acknowledged up to {:?}, in flight {:?})",
            v.id,
            ledger.acked.last(),
            ledger.in_flight.iter().rev().take(4).collect::<Vec<_>>()
        );
        checked.insert(v.id.clone());
        out.push((v, value));
    }
    for pair in out.windows(2) {
        let ((a, va), (b, vb)) = (&pair[0], &pair[1]);
        assert!(
            a.id < b.id && a.time <= b.time && va <= vb,
            "{when}: versions out of order: {} (counter {va}) then {} (counter {vb})",
            a.id,
            b.id
        );
    }
    // The pinned files are checked; keep the disk small over a long soak.
    for f in files_with(w.cache("v", "a.db").parent().unwrap(), ".version-") {
        std::fs::remove_file(f).unwrap();
    }
    out
}

/// SIGKILL a counter writer with history on at random moments; after each kill,
/// every listed version is restorable and consistent (see the file's doc).
#[test]
fn local_kills_with_history_leave_every_listed_version_restorable() {
    let w = World::local();
    let target: usize = setting("MANAGEDBLOB_SOAK_KILLS", 12);
    let seed: u64 = setting("MANAGEDBLOB_SOAK_SEED", fastrand::u64(..));
    println!(
        "history crash soak (local): {target} kills, history={RETENTION}, \
         MANAGEDBLOB_SOAK_SEED={seed}"
    );
    fastrand::seed(seed);
    let started = Instant::now();
    let remote = w.remote();
    let shelf_dir = remote.join(".a.db.mb-versions");
    let shelf = Shelf(&shelf_dir);
    let uri = |mode: &str| {
        w.uri(
            "w",
            "a.db",
            &format!("&history={RETENTION}&lease_secs=30&sync={mode}"),
        )
    };
    create_soak_db(&uri("delta"));

    let mut ledger = Ledger::default();
    let mut kills: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut checked = BTreeSet::new();
    let mut max_listed = 0;
    for round in 0..target {
        let mode = if round % 4 == 3 { "full" } else { "delta" };
        // Each round widens one window: an in-place commit, a snapshot or a prune.
        let paused = ["in-place", "snapshot", "prune"][round % 3];
        let (in_place_ms, history_pause) = match paused {
            "in-place" => ("50", String::new()),
            step => ("0", format!("{step}:40")),
        };
        let mut writer = Proc::spawn(
            &format!("writer-{round}"),
            "history_writer",
            &uri(mode),
            &[
                ("MB_SEED", fastrand::u64(..).to_string()),
                (
                    "MANAGEDBLOB_TEST_IN_PLACE_PAUSE_MS",
                    in_place_ms.to_string(),
                ),
                ("MANAGEDBLOB_TEST_HISTORY_PAUSE", history_pause),
            ],
        );
        writer.expect("READY", Duration::from_secs(60));
        thread::sleep(Duration::from_millis(fastrand::u64(20..900)));
        writer.sigkill();
        let messages = writer.drain();
        ledger.absorb(&writer, &messages);
        let listed_now = w.with_backend(|b| b.history().unwrap().versions("a.db").unwrap());
        let class = classify(&remote, &shelf, listed_now.len(), paused);
        *kills.entry(class).or_default() += 1;
        max_listed = max_listed.max(listed_now.len());
        let when = format!("round {round}, sync={mode}, pause {paused} ({class})");

        // Before anything reopens the blob (a hot remote journal still there).
        let versions = check_versions(
            &w,
            &ledger,
            &format!("{when}, right after the kill"),
            &mut checked,
        );

        // The blob is never behind its newest kept version.
        w.with_backend(|b| b.stat("a.db"))
            .unwrap_or_else(|e| panic!("{when}: stat after the kill: {e}"));
        let blob_value = w.read_remote("a.db", |r| {
            assert_eq!(integrity(r), "ok", "{when}: remote integrity");
            counter(r)
        });
        let newest = versions.last().map_or(0, |(_, v)| *v);
        assert!(
            newest <= blob_value,
            "{when}: the newest kept version holds {newest}, the blob {blob_value}"
        );

        // Reopening recovers: what was committed locally in a batch is published.
        let c = open(&uri(mode));
        let value = counter(&c);
        let s = status(&c);
        assert_eq!(s["dirty"], false, "{when}: {s}");
        assert_eq!(integrity(&c), "ok", "{when}: writer cache");
        drop(c);
        assert!(
            ledger.may_hold(value) && value >= ledger.newest_promised(),
            "{when}: after reopening the counter is {value}; acknowledged or committed in \
             a batch up to {}",
            ledger.newest_promised()
        );
        assert_eq!(
            w.read_remote("a.db", counter),
            value,
            "{when}: the remote after reopening"
        );
        check_versions(
            &w,
            &ledger,
            &format!("{when}, after reopening"),
            &mut checked,
        );
        if round % 10 == 0 || round + 1 == target {
            println!(
                "round {round}: {class}; counter {value}, {} versions listed, {:.1} s",
                versions.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }

    // A clean commit: its snapshot and prune leave the retention and no garbage.
    let c = open(&uri("delta"));
    let value = counter(&c) + 1;
    c.execute("UPDATE c SET v = v + 1 WHERE id = 1", [])
        .unwrap();
    drop(c);
    ledger.acked.insert(value);
    let last = check_versions(&w, &ledger, "after a last clean commit", &mut checked);
    assert_eq!(last.len(), RETENTION, "{last:?}");
    assert_eq!(
        last.last().unwrap().1,
        value,
        "the newest version is the last commit"
    );
    let (temps, garbage) = (shelf.temp_files(), shelf.unreferenced_chunks());

    println!("HISTORY CRASH SOAK FIGURES (local, history={RETENTION}, seed {seed})");
    println!(
        "  kills: {target} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (class, n) in &kills {
        println!("  writer killed {class}: {n}");
    }
    println!(
        "  acknowledged {} values (+{} in batches), {} in flight at a kill; {} distinct \
         versions opened and checked; at most {max_listed} listed after a kill",
        ledger.acked.len(),
        ledger.lacked.len(),
        ledger.in_flight.len(),
        checked.len()
    );
    println!("  left in the version store after the last commit: {temps} temp files, {garbage} unreferenced chunks");
    assert_eq!(
        (temps, garbage),
        (0, 0),
        "the last prune collects what kills left"
    );
}

/// The counter and the filler the writer rewrites a row of at each commit, in one
/// transaction: every kept version holds the counter row.
fn create_soak_db(uri: &str) {
    let c = open(uri);
    c.execute_batch(&format!(
        "BEGIN;
         CREATE TABLE c(id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
         INSERT INTO c VALUES (1, 0);
         CREATE TABLE filler(k INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < {FILLER_ROWS})
         INSERT INTO filler SELECT k, randomblob(4096) FROM s;
         COMMIT;"
    ))
    .unwrap();
}
