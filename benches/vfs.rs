//! Side-by-side timings: managedblob against the plain default VFS on the same
//! workload, and the cost of commits and opens on the local backend.
//!
//!     cargo bench --bench vfs            # full run
//!     cargo bench --bench vfs -- --quick # a smoke run (what `cargo test --benches` does)
//!
//! Ratios are measured in one run with the two variants interleaved, round after
//! round, and the median round is reported: this machine is shared and noisy.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

const ROWS: i64 = 20_000;

fn flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_URI
}

fn open_plain(path: &Path) -> Connection {
    Connection::open_with_flags(path, flags()).unwrap()
}

fn open_managed(cache: &Path, remote: &Path, extra: &str) -> Connection {
    let uri = format!(
        "file:{}?vfs=managedblob&remote={}{extra}",
        cache.display(),
        remote.display()
    );
    Connection::open_with_flags(uri, flags()).unwrap()
}

fn fill(c: &Connection) {
    c.execute_batch(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS docs(id INTEGER PRIMARY KEY, k INTEGER, body TEXT);
         CREATE INDEX IF NOT EXISTS docs_k ON docs(k);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO docs(k, body) SELECT (i * 7919) % 20000, hex(randomblob(100)) FROM n;
         COMMIT;",
    )
    .unwrap();
}

/// One workload step, run `n` times.
type Work = fn(&Connection, u64);

fn point_selects(c: &Connection, n: u64) {
    let mut stmt = c
        .prepare_cached("SELECT body FROM docs WHERE id = ?1")
        .unwrap();
    for i in 0..n {
        let id = (i as i64 * 7919) % ROWS + 1;
        let _: String = stmt.query_row([id], |r| r.get(0)).unwrap();
    }
}

fn range_scans(c: &Connection, n: u64) {
    let mut stmt = c
        .prepare_cached(
            "SELECT count(*), sum(length(body)) FROM docs WHERE k BETWEEN ?1 AND ?1 + 200",
        )
        .unwrap();
    for i in 0..n {
        let k = (i as i64 * 131) % ROWS;
        let _: (i64, Option<i64>) = stmt.query_row([k], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    }
}

/// Inserts and updates in transactions of 50 statements. On the managed side this runs
/// inside a batch, so it measures the local write path: the timer covers the
/// transactions only. The batch's begin (lease) and end (the one upload) happen
/// outside it; main times them separately and prints them under the table.
fn insert_mix(c: &Connection, n: u64) {
    for chunk in 0..n.div_ceil(50) {
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        for j in 0..50 {
            let i = chunk * 50 + j;
            if i % 4 == 0 {
                c.execute(
                    "UPDATE docs SET body = hex(randomblob(100)) WHERE id = ?1",
                    [(i as i64 % ROWS) + 1],
                )
                .unwrap();
            } else {
                c.execute(
                    "INSERT INTO docs(k, body) VALUES (?1, hex(randomblob(100)))",
                    [i as i64],
                )
                .unwrap();
            }
        }
        c.execute_batch("COMMIT").unwrap();
    }
}

/// How long `f` takes.
fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn time(c: &Connection, work: Work, n: u64) -> Duration {
    timed(|| work(c, n))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let (rounds, scale) = if quick { (3, 1) } else { (15, 20) };
    managedblob::register().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("remote");
    std::fs::create_dir_all(&remote).unwrap();

    let plain = open_plain(&dir.path().join("plain.db"));
    fill(&plain);
    let managed = open_managed(&dir.path().join("managed.db"), &remote, "");
    fill(&managed);
    // The same database through a lazy cache (`fetch=lazy`) whose chunks are all
    // present: the read path of a warm lazy cache.
    let lazy = open_managed(
        &dir.path().join("lazy.db"),
        &remote,
        "&blob=managed.db&fetch=lazy&staleness_ms=60000",
    );
    let checked: String = lazy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(checked, "ok");

    println!(
        "# managedblob vs plain SQLite (same machine, interleaved, median of {rounds} rounds)\n"
    );
    println!(
        "| workload | ops | plain µs/op | managedblob µs/op | ratio | lazy (warm) µs/op | lazy ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    let cases: [(&str, Work, u64); 3] = [
        ("point select (autocommit)", point_selects, 2_000 * scale),
        (
            "range scan, 200 rows (autocommit)",
            range_scans,
            100 * scale,
        ),
        (
            "insert/update mix, 50 per txn (batch)",
            insert_mix,
            500 * scale,
        ),
    ];
    let mut batch_edges = Vec::new();
    for (name, work, n) in cases {
        let batch = name.contains("batch");
        let (mut p, mut m, mut edges) = (Vec::new(), Vec::new(), Vec::new());
        let mut l = Vec::new();
        for _ in 0..rounds {
            p.push(time(&plain, work, n).as_secs_f64());
            if !batch {
                l.push(time(&lazy, work, n).as_secs_f64());
            }
            // Not in the row's timer: the batch's begin (lease) and end (upload).
            let mut edge = Duration::ZERO;
            if batch {
                edge += timed(|| {
                    managed
                        .execute_batch("PRAGMA managedblob_batch=begin")
                        .unwrap()
                });
            }
            m.push(time(&managed, work, n).as_secs_f64());
            if batch {
                edge += timed(|| {
                    managed
                        .execute_batch("PRAGMA managedblob_batch=end")
                        .unwrap()
                });
                edges.push(edge.as_secs_f64());
            }
        }
        if !edges.is_empty() {
            batch_edges.push((name, median(edges)));
        }
        let (p, m) = (median(p), median(m));
        let (lazy_us, lazy_ratio) = match l.is_empty() {
            true => ("-".to_string(), "-".to_string()),
            false => {
                let l = median(l);
                (
                    format!("{:.2}", l * 1e6 / n as f64),
                    format!("{:.3}", l / p),
                )
            }
        };
        println!(
            "| {name} | {n} | {:.2} | {:.2} | {:.3} | {lazy_us} | {lazy_ratio} |",
            p * 1e6 / n as f64,
            m * 1e6 / n as f64,
            m / p
        );
    }
    for (name, edge) in batch_edges {
        println!(
            "\n(\"{name}\": the managed column times the transactions only; the batch's \
             begin and end, lease and one upload, took {:.0} µs per round (median), outside it.)",
            edge * 1e6
        );
    }

    // Commit and open costs on the local backend.
    println!("\n# Local backend: commit and open\n");
    println!("| operation | µs (median) | requests | bytes up | bytes down |");
    println!("|---|---|---|---|---|");
    let status = |c: &Connection| -> serde_json::Value {
        let t: String = c
            .query_row("PRAGMA managedblob_status", [], |r| r.get(0))
            .unwrap();
        serde_json::from_str(&t).unwrap()
    };
    let counters = |c: &Connection| -> [u64; 3] {
        let s = status(c);
        let r = &s["requests"];
        [
            r["total"].as_u64().unwrap(),
            r["bytes_up"].as_u64().unwrap(),
            r["bytes_down"].as_u64().unwrap(),
        ]
    };
    let commits = if quick { 5 } else { 100 };
    let mut samples = Vec::new();
    let before = counters(&managed);
    for i in 0..commits {
        let t = Instant::now();
        managed
            .execute("INSERT INTO docs(k, body) VALUES (?1, 'x')", [i])
            .unwrap();
        samples.push(t.elapsed().as_secs_f64());
    }
    let after = counters(&managed);
    println!(
        "| one-row autocommit ({} KiB database) | {:.0} | {} | {} | {} |",
        std::fs::metadata(dir.path().join("managed.db"))
            .unwrap()
            .len()
            / 1024,
        median(samples) * 1e6,
        (after[0] - before[0]) / commits as u64,
        (after[1] - before[1]) / commits as u64,
        (after[2] - before[2]) / commits as u64
    );
    drop(managed);
    for (label, wipe) in [
        ("warm open (etag matches)", false),
        ("cold open (whole download)", true),
    ] {
        let mut samples = Vec::new();
        let mut last = [0; 3];
        for _ in 0..rounds {
            let cache = dir.path().join("reader.db");
            if wipe {
                let _ = std::fs::remove_file(&cache);
                let _ = std::fs::remove_file(managedblob::internal::sidecar::path_for(&cache));
            }
            let t = Instant::now();
            let c = open_managed(&cache, &remote, "&blob=managed.db");
            let _: i64 = c
                .query_row("SELECT count(*) FROM docs", [], |r| r.get(0))
                .unwrap();
            samples.push(t.elapsed().as_secs_f64());
            last = counters(&c);
        }
        println!(
            "| {label} | {:.0} | {} | {} | {} |",
            median(samples) * 1e6,
            last[0],
            last[1],
            last[2]
        );
    }
    let _ = std::fs::remove_file(remote.join("managed.db"));
}
