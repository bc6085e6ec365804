//! F. A mixed workload like SQLite's speedtest1: many small transactions of
//! inserts, updates by key and by range, deletes, selects by index and an occasional
//! index change or larger transaction, run identically on plain SQLite (a local
//! file) and on managedblob over Azurite behind the delaying proxy.

use super::*;
use cpu::{Clocks, CpuSpent};
use http_proxy::HttpProxy;
use latency::{proxied, step};

/// Rows in the table before the timed part.
const START_ROWS: i64 = 2000;
const WORDS: [&str; 16] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa",
];

/// The schema and the starting rows (not timed).
fn setup(c: &Connection) {
    c.execute_batch(
        "BEGIN;
         CREATE TABLE t1(a INTEGER PRIMARY KEY, b INTEGER NOT NULL, c TEXT NOT NULL);
         CREATE INDEX t1b ON t1(b);
         CREATE INDEX t1c ON t1(c);",
    )
    .unwrap();
    let mut rng = fastrand::Rng::with_seed(0);
    for _ in 0..START_ROWS {
        insert(c, &mut rng);
    }
    c.execute_batch("COMMIT").unwrap();
}

fn words(rng: &mut fastrand::Rng) -> String {
    let n = rng.usize(3..=8);
    (0..n)
        .map(|_| WORDS[rng.usize(..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn insert(c: &Connection, rng: &mut fastrand::Rng) {
    c.prepare_cached("INSERT INTO t1(b, c) VALUES (?1, ?2)")
        .unwrap()
        .execute((rng.i64(0..1_000_000), words(rng)))
        .unwrap();
}

fn exec(c: &Connection, sql: &str, params: impl rusqlite::Params) {
    c.prepare_cached(sql).unwrap().execute(params).unwrap();
}

/// Run `f` in one explicit transaction.
fn transaction(c: &Connection, f: impl FnOnce()) {
    c.execute_batch("BEGIN").unwrap();
    f();
    c.execute_batch("COMMIT").unwrap();
}

/// Transactions run, by kind.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Tally {
    pub(super) writes: u64,
    pub(super) reads: u64,
}

/// The timed part: `n` transactions, each drawn from a generator seeded with its
/// index, so every run does the same work on the same data.
fn run(c: &Connection, n: usize) -> Tally {
    let mut tally = Tally::default();
    let mut rows = START_ROWS;
    for i in 0..n {
        let rng = &mut fastrand::Rng::with_seed(i as u64 + 1);
        let key = rng.i64(1..=rows);
        let b = rng.i64(0..1_000_000);
        let write = match i % 20 {
            0..=4 => {
                let k = rng.usize(1..=4);
                if k == 1 {
                    insert(c, rng);
                } else {
                    transaction(c, || (0..k).for_each(|_| insert(c, rng)));
                }
                rows += k as i64;
                true
            }
            5..=7 => {
                exec(
                    c,
                    "UPDATE t1 SET b = ?1, c = ?2 WHERE a = ?3",
                    (b, words(rng), key),
                );
                true
            }
            8 | 9 => {
                exec(
                    c,
                    "UPDATE t1 SET b = b + 7 WHERE b BETWEEN ?1 AND ?1 + 999",
                    [b],
                );
                true
            }
            10 => {
                exec(c, "DELETE FROM t1 WHERE a = ?1", [key]);
                true
            }
            18 if i % 200 == 18 => {
                // The occasional larger transaction.
                transaction(c, || {
                    (0..100).for_each(|_| insert(c, rng));
                    exec(
                        c,
                        "UPDATE t1 SET c = c || ' x' WHERE b BETWEEN ?1 AND ?1 + 20000",
                        [b],
                    );
                });
                rows += 100;
                true
            }
            18 => {
                transaction(c, || {
                    insert(c, rng);
                    exec(c, "UPDATE t1 SET b = ?1 WHERE a = ?2", [b, key]);
                });
                rows += 1;
                true
            }
            19 if i % 250 == 19 => {
                // An index change: created, then dropped the next time.
                let exists: bool = c
                    .query_row(
                        "SELECT count(*) FROM sqlite_schema WHERE name = 't1bc'",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                let ddl = if exists {
                    "DROP INDEX t1bc"
                } else {
                    "CREATE INDEX t1bc ON t1(b, c)"
                };
                c.execute_batch(ddl).unwrap();
                true
            }
            kind => {
                select(c, kind, key, b, rng);
                false
            }
        };
        if write {
            tally.writes += 1;
        } else {
            tally.reads += 1;
        }
    }
    tally
}

/// A read-only autocommit statement: by key, by an index range, by a text prefix,
/// or a small self-join.
fn select(c: &Connection, kind: usize, key: i64, b: i64, rng: &mut fastrand::Rng) {
    let row_count = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> i64 {
        let mut stmt = c.prepare_cached(sql).unwrap();
        let mut rows = stmt.query(params).unwrap();
        let mut n = 0;
        while rows.next().unwrap().is_some() {
            n += 1;
        }
        n
    };
    let prefix = WORDS[rng.usize(..WORDS.len())];
    match kind % 4 {
        0 => row_count("SELECT b, c FROM t1 WHERE a = ?1", &[&key]),
        1 => row_count(
            "SELECT count(*), sum(b) FROM t1 WHERE b BETWEEN ?1 AND ?1 + 10000",
            &[&b],
        ),
        2 => row_count(
            "SELECT a FROM t1 WHERE c >= ?1 AND c < ?1 || 'z' ORDER BY c LIMIT 10",
            &[&prefix],
        ),
        _ => row_count(
            "SELECT count(*) FROM t1 x JOIN t1 y ON y.a = x.b % 1000 WHERE x.a BETWEEN ?1 AND ?1 + 20",
            &[&key],
        ),
    };
}

/// What the data came to (the same in every variant, or the runs differ).
fn digest(c: &Connection) -> (i64, i64, i64) {
    c.query_row("SELECT count(*), sum(b), sum(length(c)) FROM t1", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .unwrap()
}

/// One variant's run (or the medians of its runs).
pub(super) struct MixedRow {
    pub(super) variant: String,
    /// The proxy's added delay; `None` for plain SQLite.
    pub(super) delay_ms: Option<u64>,
    pub(super) wall: Duration,
    pub(super) cpu: CpuSpent,
    pub(super) rounds: u64,
    pub(super) http: u64,
    pub(super) tally: Tally,
    /// How many runs the figures are the medians of.
    pub(super) runs: usize,
}

/// What the data ends as (see [`digest`]).
type Digest = (i64, i64, i64);

/// A managedblob variant of F: its name, extra URI parameters and added delay.
type Variant = (String, String, u64);

/// F: plain SQLite and the `flush_ms` variants (cheap: interleaved over rounds,
/// medians kept), then managedblob uploading at each COMMIT at each delay (once).
pub(super) fn mixed(azurite: &azurite::Azurite, plan: &Plan, start: Instant, out: &mut Results) {
    let (n, rounds) = plan.f;
    let (proxy, area) = proxied(azurite);
    let uploading: Vec<Variant> = plan
        .delays
        .iter()
        .filter(|d| **d <= 5)
        .map(|&d| ("managedblob".to_string(), String::new(), d))
        .collect();
    let mut deferred: Vec<Variant> = Vec::new();
    if let Some(flush) = plan.flush_ms {
        let known = managedblob::Key::ALL
            .iter()
            .any(|k| k.uri_name() == "flush_ms");
        if known {
            for d in plan.delays.iter().filter(|d| **d <= 5) {
                deferred.push((
                    format!("managedblob, flush_ms={flush}"),
                    format!("&flush_ms={flush}"),
                    *d,
                ));
            }
        } else {
            eprintln!(
                "skipping F with flush_ms={flush}: this build has no flush_ms setting \
                 (unknown URI parameters are ignored, so the run would measure the default)"
            );
        }
    }
    let mut blobs = 0;
    let mut plain_runs = Vec::new();
    let mut deferred_runs: Vec<Vec<MixedRow>> = deferred.iter().map(|_| Vec::new()).collect();
    let mut expected: Digest = (0, 0, 0);
    for round in 0..rounds {
        progress(
            start,
            &format!("F plain SQLite: {n} transactions (round {})", round + 1),
        );
        let (row, digest) = run_plain(azurite, n);
        plain_runs.push(row);
        expected = digest;
        for (v, runs) in deferred.iter().zip(&mut deferred_runs) {
            blobs += 1;
            let run = run_managed(azurite, &proxy, &area, v, blobs, n, &expected, start);
            runs.extend(run);
        }
    }
    out.mixed.push(median_row(plain_runs));
    for v in &uploading {
        blobs += 1;
        if let Some(row) = run_managed(azurite, &proxy, &area, v, blobs, n, &expected, start) {
            out.mixed.push(row);
        }
    }
    for runs in deferred_runs.into_iter().filter(|r| !r.is_empty()) {
        out.mixed.push(median_row(runs));
    }
}

/// Plain SQLite on a local file: its row and the digest of the data it ends with.
fn run_plain(azurite: &azurite::Azurite, n: usize) -> (MixedRow, Digest) {
    let pid = Some(azurite.pid());
    let plain_dir = tempfile::tempdir().unwrap();
    let c = Connection::open(plain_dir.path().join("plain.db")).unwrap();
    c.execute_batch("PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL;")
        .unwrap();
    setup(&c);
    let clocks = Clocks::now(None, pid);
    // Timer: the transactions and the close.
    let t = Instant::now();
    let tally = run(&c, n);
    let expected = digest(&c);
    drop(c);
    let row = MixedRow {
        variant: "plain SQLite (local file)".into(),
        delay_ms: None,
        wall: t.elapsed(),
        cpu: clocks.spent(None, pid),
        rounds: 0,
        http: 0,
        tally,
        runs: 1,
    };
    (row, expected)
}

/// One managedblob run of `variant` into a new blob; it must end with `expected`.
#[allow(clippy::too_many_arguments)]
fn run_managed(
    azurite: &azurite::Azurite,
    proxy: &HttpProxy,
    area: &Area,
    (variant, extra, delay_ms): &Variant,
    blob_no: usize,
    n: usize,
    expected: &Digest,
    start: Instant,
) -> Option<MixedRow> {
    let pid = Some(azurite.pid());
    progress(
        start,
        &format!("F {variant} at {delay_ms} ms: {n} transactions"),
    );
    let blob = format!("mixed-{blob_no}.db");
    proxy.set_delay(Duration::ZERO);
    let c = match Connection::open_with_flags(area.uri("w", &blob, extra), flags()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipping F {variant}: the open was refused: {e}");
            return None;
        }
    };
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    setup(&c);
    proxy.set_delay(Duration::from_millis(*delay_ms));
    let clocks = Clocks::now(Some(proxy), pid);
    // Timer: the transactions and the close (which uploads what is deferred).
    let (tally, cost) = step(proxy, || {
        let tally = run(&c, n);
        assert_eq!(
            digest(&c),
            *expected,
            "{variant}: the same data as plain SQLite"
        );
        drop(c);
        tally
    });
    Some(MixedRow {
        variant: variant.clone(),
        delay_ms: Some(*delay_ms),
        wall: cost.time,
        cpu: clocks.spent(Some(proxy), pid),
        rounds: cost.rounds,
        http: cost.http,
        tally,
        runs: 1,
    })
}

/// The medians, figure by figure, of one variant's runs.
fn median_row(mut runs: Vec<MixedRow>) -> MixedRow {
    fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
        v.sort();
        v[v.len() / 2]
    }
    let wall = median(runs.iter().map(|r| r.wall).collect());
    let own = median(runs.iter().map(|r| r.cpu.own).collect());
    let proxy = median(runs.iter().map(|r| r.cpu.proxy).collect());
    let azurite = runs
        .iter()
        .map(|r| r.cpu.azurite)
        .collect::<Option<Vec<_>>>()
        .map(median);
    let rounds = median(runs.iter().map(|r| r.rounds).collect());
    let http = median(runs.iter().map(|r| r.http).collect());
    let count = runs.len();
    let mut row = runs.swap_remove(0);
    row.wall = wall;
    row.cpu = CpuSpent {
        own,
        proxy,
        azurite,
    };
    row.rounds = rounds;
    row.http = http;
    row.runs = count;
    row
}

/// Own CPU beyond plain SQLite's, per writing transaction (empty for plain itself).
fn extra_cpu_per_write(row: &MixedRow, plain: &MixedRow) -> String {
    if row.delay_ms.is_none() {
        return String::new();
    }
    let extra = row.cpu.own.as_secs_f64() - plain.cpu.own.as_secs_f64();
    ms(extra * 1e3 / row.tally.writes.max(1) as f64)
}

/// The table of section F, with the ratios to plain SQLite and to the floor.
pub(super) fn mixed_table(w: &mut String, rows: &[MixedRow]) {
    let Some(plain) = rows.iter().find(|r| r.delay_ms.is_none()) else {
        return;
    };
    let tally = plain.tally;
    let _ = writeln!(
        w,
        "\n## F. Mixed workload ({} transactions: {} writing, {} read-only), against plain SQLite\n",
        tally.writes + tally.reads,
        tally.writes,
        tally.reads
    );
    header(w, "| variant | runs | added delay | wall s | own CPU s | proxy CPU s | Azurite CPU s | requests in sequence | HTTP (proxy) | wall / plain | own CPU / plain | own CPU over plain per write, ms | floor s | wall / floor | wall / (floor + Azurite CPU) |");
    let secs = |d: Duration| format!("{:.2}", d.as_secs_f64());
    let plain_wall = plain.wall.as_secs_f64();
    for row in rows {
        let wall = row.wall.as_secs_f64();
        let (delay, floor) = match row.delay_ms {
            None => ("-".to_string(), " | | ".to_string()),
            Some(d) => {
                let floor = plain_wall + 2.0 * d as f64 / 1e3 * row.tally.writes as f64;
                let server = row.cpu.azurite.map_or(0.0, |a| a.as_secs_f64());
                (
                    format!("{d} ms"),
                    format!(
                        "{floor:.2} | {:.2} | {:.2}",
                        wall / floor,
                        wall / (floor + server)
                    ),
                )
            }
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {} |",
            row.variant,
            row.runs,
            delay,
            wall,
            secs(row.cpu.own),
            secs(row.cpu.proxy),
            row.cpu.azurite.map_or("?".into(), secs),
            row.rounds,
            row.http,
            wall / plain_wall,
            row.cpu.own.as_secs_f64() / plain.cpu.own.as_secs_f64(),
            extra_cpu_per_write(row, plain),
            floor,
        );
    }
    let _ = writeln!(
        w,
        "\nruns: plain SQLite and the flush_ms variants run interleaved, round by round, \
         and each figure is the median of its runs; the variants that upload at each \
         COMMIT run once. Timed from after the setup (schema and {START_ROWS} rows) to \
         after the close. Plain SQLite: journal_mode=DELETE, synchronous=FULL. floor = \
         plain wall + 2 round trips (2 x the added delay) per writing transaction; on \
         loopback Azurite serves requests on the same 2 cores, so the last column adds \
         its CPU time to the floor (real Azure's service time is part of its round \
         trip). own \
         CPU excludes the in-process proxy's threads; the Azurite CPU is its process's \
         (utime + stime, 10 ms ticks). Goals (issue 11): own CPU / plain at most 1.2; \
         at 5 ms wall / floor at most 1.25; with flush_ms=100 at 5 ms wall / plain at \
         most 1.3."
    );
}
