//! L. Lazy against full (issue 24, item 11): what a host with an empty cache pays to
//! answer queries with `fetch=lazy` (chunks fetched on read) against `fetch=full`
//! (the whole database first). Only with `--only=...L...` in a full run (it builds a
//! 1 GiB database; `--lazy-mib=N` another size, `--lazy-queries=N` the random reads);
//! the quick run covers it at 4 MiB (`cache_max=1MiB`), on Azurite at 5 ms only.
//!
//! The database: `doc(id INTEGER PRIMARY KEY, k INTEGER, body TEXT)` with an index on
//! `k` and an FTS5 index over `body` (external content), rows of about 40 words drawn
//! from a vocabulary of 4096 made-up words, and a rare term planted in a few rows. It is
//! built with plain SQLite in one transaction, then published through managedblob:
//! SQLite's backup API into a `fetch=full` connection on host "w" (the first upload),
//! whose cache goes after it (a 1 GiB run holds at most three copies on disk).
//!
//! Per backend (local; Azurite through a loopback proxy adding 0, then 5 ms per
//! request), per mode (lazy, full), each step on a host whose cache was wiped:
//! (a) open (and the schema read) + a point query by rowid, (b) an indexed lookup on
//! `k`, (c) an FTS5 query for the rare term, (d) a full scan of `doc`; then, on a lazy
//! host with `cache_max` (64 MiB), random point queries: the cache file's allocated
//! bytes (`st_blocks * 512`) sampled every 2 ms and after each query, and the queries
//! that fetched nothing (a hit rate computed from `requests.chunks_down` per query:
//! the status counts no reads); and a warm lazy host taking another host's one-row
//! commit (host "w", a lazy cache, straight to the remote).

use std::os::unix::fs::MetadataExt as _;
use std::sync::{atomic::AtomicBool, Arc};

use super::*;
use http_proxy::HttpProxy;

/// The rare term, planted in `RARE_ROWS` rows spread over the table.
const RARE: &str = "zyzzyvaquux";
const RARE_ROWS: i64 = 5;
/// Words per row and the vocabulary's size.
const WORDS: usize = 40;
const VOCABULARY: usize = 4096;

/// The size and the workload of section L.
pub(super) struct LazyPlan {
    pub(super) mib: u64,
    /// Random point queries on the bounded lazy host.
    pub(super) queries: usize,
    /// `cache_max` of the bounded lazy host, in MiB.
    pub(super) cache_max_mib: u64,
}

impl LazyPlan {
    pub(super) fn new(mib: u64, queries: usize, cache_max_mib: u64) -> LazyPlan {
        LazyPlan {
            mib,
            queries,
            cache_max_mib,
        }
    }

    /// `--lazy-mib=N`, `--lazy-queries=N`, `--lazy-cache-max=N` (MiB).
    pub(super) fn apply_args(&mut self, args: &[String]) {
        let arg = |flag: &str| {
            args.iter().find_map(|a| a.strip_prefix(flag)).map(|v| {
                v.parse::<u64>()
                    .unwrap_or_else(|e| panic!("{flag}{v}: a number expected ({e})"))
            })
        };
        self.mib = arg("--lazy-mib=").unwrap_or(self.mib);
        self.queries = arg("--lazy-queries=").map_or(self.queries, |n| n as usize);
        self.cache_max_mib = arg("--lazy-cache-max=").unwrap_or(self.cache_max_mib);
    }
}

/// What one step cost: managedblob's counters, and on Azurite the proxy's.
#[derive(Clone, Copy, Default)]
pub(super) struct Took {
    time: Duration,
    cost: Cost,
    /// HTTP requests forwarded, requests in sequence, response bodies (Azurite only).
    http: u64,
    rounds: u64,
    body_down: u64,
    /// Chunks managedblob downloaded (`requests.chunks_down`).
    chunks: u64,
}

impl Took {
    fn plus(self, o: Took) -> Took {
        Took {
            time: self.time + o.time,
            cost: self.cost.plus(o.cost),
            http: self.http + o.http,
            rounds: self.rounds + o.rounds,
            body_down: self.body_down + o.body_down,
            chunks: self.chunks + o.chunks,
        }
    }
}

/// One backend (and added delay) and mode.
pub(super) struct LazyRow {
    kind: Kind,
    delay_ms: Option<u64>,
    mode: &'static str,
    open: Took,
    point: Took,
    index: Took,
    fts: Took,
    scan: Took,
}

/// The bounded lazy host's random reads.
pub(super) struct RandomRow {
    kind: Kind,
    delay_ms: Option<u64>,
    queries: usize,
    /// Queries that fetched no chunk.
    hits: usize,
    chunks_down: u64,
    took: Took,
    /// The most the cache file held on disk, and the number of samples.
    max_disk: u64,
    samples: u64,
    /// Samples above `cache_max` + one chunk.
    over: u64,
    chunk_size: u64,
    evicted: u64,
}

/// A warm lazy host taking another host's one-row commit.
pub(super) struct TakeRow {
    kind: Kind,
    delay_ms: Option<u64>,
    took: Took,
}

#[derive(Default)]
pub(super) struct LazyReport {
    size: u64,
    rows_in_db: i64,
    build: Duration,
    /// Per backend: the publish (backup into host "w") time and cost.
    publishes: Vec<(Kind, Duration, Cost)>,
    rows: Vec<LazyRow>,
    random: Vec<RandomRow>,
    takes: Vec<TakeRow>,
    cache_max: u64,
}

/// Where the readers' requests go: straight (local) or through a counting proxy.
struct Readers<'a> {
    area: &'a Area,
    blob: &'a str,
    /// The proxy and the readers' `remote` through it (Azurite).
    proxy: Option<(&'a HttpProxy, String)>,
    delay_ms: Option<u64>,
}

impl Readers<'_> {
    fn uri(&self, host: &str, extra: &str) -> String {
        match &self.proxy {
            None => self.area.uri(host, self.blob, extra),
            Some((_, remote)) => format!(
                "file:{}?vfs=managedblob&remote={}{extra}",
                self.area.cache(host, self.blob).display(),
                uri_escape(remote)
            ),
        }
    }

    /// Run `f`, timed and counted at the proxy.
    fn step<T>(&self, f: impl FnOnce() -> T) -> (T, Took) {
        let proxy = self.proxy.as_ref().map(|(p, _)| {
            let n = &p.counts;
            (
                n.forwarded.load(Ordering::SeqCst),
                n.rounds(),
                n.body_down.load(Ordering::SeqCst),
            )
        });
        let t = Instant::now();
        let value = f();
        let time = t.elapsed();
        let mut took = Took {
            time,
            ..Took::default()
        };
        if let (Some((p, _)), Some((http, rounds, down))) = (&self.proxy, proxy) {
            let n = &p.counts;
            took.http = n.forwarded.load(Ordering::SeqCst) - http;
            took.rounds = n.rounds() - rounds;
            took.body_down = n.body_down.load(Ordering::SeqCst) - down;
        }
        (value, took)
    }
}

/// Chunks the store behind `c` downloaded so far.
fn chunks_down(c: &Connection) -> u64 {
    status(c)["requests"]["chunks_down"].as_u64().unwrap_or(0)
}

/// Fill in a step's managedblob counts once its connection is known.
fn counted(mut took: Took, c: &Connection, (before, chunks): (Cost, u64)) -> Took {
    took.cost = Cost::of(c).since(before);
    took.chunks = chunks_down(c) - chunks;
    took
}

/// Build the database at `path` with plain SQLite, one transaction, until it holds
/// at least `bytes`; returns its rows.
fn build_plain(path: &Path, bytes: u64) -> i64 {
    let c = Connection::open(path).unwrap();
    let fts5: bool = c
        .query_row("SELECT sqlite_compileoption_used('ENABLE_FTS5')", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(fts5, "the linked SQLite has no FTS5");
    c.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;
         BEGIN;
         CREATE TABLE doc(id INTEGER PRIMARY KEY, k INTEGER, body TEXT);
         CREATE INDEX doc_k ON doc(k);
         CREATE VIRTUAL TABLE doc_fts USING fts5(body, content='doc', content_rowid='id');",
    )
    .unwrap();
    let mut rng = fastrand::Rng::with_seed(24);
    let syllables = [
        "ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "da", "gu", "ho",
    ];
    let vocabulary: Vec<String> = (0..VOCABULARY)
        .map(|i| {
            let (mut w, mut n) = (String::new(), i + VOCABULARY);
            while n > 0 {
                w.push_str(syllables[n % syllables.len()]);
                n /= syllables.len();
            }
            w
        })
        .collect();
    let mut insert = c
        .prepare("INSERT INTO doc(id, k, body) VALUES (?1, ?2, ?3)")
        .unwrap();
    let mut index = c
        .prepare("INSERT INTO doc_fts(rowid, body) VALUES (?1, ?2)")
        .unwrap();
    let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    let (mut id, mut body) = (0i64, String::new());
    loop {
        for _ in 0..1_000 {
            id += 1;
            body.clear();
            for w in 0..WORDS {
                if w > 0 {
                    body.push(' ');
                }
                body.push_str(&vocabulary[rng.usize(..VOCABULARY)]);
            }
            insert
                .execute(rusqlite::params![id, rng.i64(0..1 << 40), &body])
                .unwrap();
            index.execute(rusqlite::params![id, &body]).unwrap();
        }
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        if (pages * page_size) as u64 >= bytes {
            break;
        }
    }
    // The rare term, in a few rows spread over the table (index and FTS kept in step).
    for i in 0..RARE_ROWS {
        let row = 1 + i * (id - 1) / (RARE_ROWS - 1).max(1);
        let old: String = c
            .query_row("SELECT body FROM doc WHERE id = ?1", [row], |r| r.get(0))
            .unwrap();
        let new = format!("{old} {RARE}");
        c.execute(
            "INSERT INTO doc_fts(doc_fts, rowid, body) VALUES ('delete', ?1, ?2)",
            rusqlite::params![row, old],
        )
        .unwrap();
        c.execute(
            "UPDATE doc SET body = ?2 WHERE id = ?1",
            rusqlite::params![row, new],
        )
        .unwrap();
        index.execute(rusqlite::params![row, new]).unwrap();
    }
    drop((insert, index));
    c.execute_batch("COMMIT").unwrap();
    id
}

/// Publish the plain database `plain` as `blob` through host "w" (a full cache):
/// SQLite's backup API, one write transaction, the first upload. Host "w"'s cache is
/// removed after it (disk: a 1 GiB run holds at most three copies at once).
fn publish(area: &Area, blob: &str, plain: &Path, out: &mut LazyReport) {
    let source = Connection::open(plain).unwrap();
    let mut w = open(&area.uri("w", blob, ""));
    let before = Cost::fresh();
    let t = Instant::now();
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut w).unwrap();
        let done = backup.step(-1).unwrap();
        assert_eq!(done, rusqlite::backup::StepResult::Done);
    }
    let time = t.elapsed();
    out.publishes
        .push((area.kind, time, Cost::of(&w).since(before)));
    drop(w);
    area.wipe("w", blob);
}

const POINT: &str = "SELECT length(body) FROM doc WHERE id = ?1";
const INDEXED: &str =
    "SELECT count(*), sum(length(body)) FROM doc WHERE k >= ?1 AND k < ?1 + 1048576";
const FTS: &str =
    "SELECT count(*), sum(length(d.body)) FROM doc_fts f JOIN doc d ON d.id = f.rowid \
                   WHERE doc_fts MATCH ?1";
// (`?1` is 0: every query here takes one argument.)
const SCAN: &str = "SELECT count(*), sum(length(body)) + ?1 FROM doc";

/// Open on `host` (wiped first) and read the schema: the open step.
fn cold_open(r: &Readers, host: &str, extra: &str) -> (Connection, Took) {
    r.area.wipe(host, r.blob);
    let before = Cost::fresh();
    let (c, took) = r.step(|| {
        let c = open(&r.uri(host, extra));
        let _: i64 = c
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        c
    });
    let took = counted(took, &c, (before, 0));
    (c, took)
}

/// One query on `c`, timed and counted; returns its first column.
fn query(r: &Readers, c: &Connection, sql: &str, arg: rusqlite::types::Value) -> (i64, Took) {
    let before = (Cost::of(c), chunks_down(c));
    let (v, took) = r.step(|| c.query_row(sql, [arg], |row| row.get::<_, i64>(0)).unwrap());
    (v, counted(took, c, before))
}

/// Steps (a)-(d) in `mode` (`""` or `"&fetch=lazy"`), each on a host with an empty cache.
fn modes(r: &Readers, rows: i64, out: &mut LazyReport, start: Instant) {
    for (mode, extra) in [("lazy", "&fetch=lazy"), ("full", "")] {
        progress(
            start,
            &format!("L {} {}: {mode}", r.area.kind.name(), delay(r.delay_ms)),
        );
        let host = format!("l-{mode}");
        let (c, open_took) = cold_open(r, &host, extra);
        let (len, point) = query(r, &c, POINT, (rows / 2 + 7).into());
        assert!(len > 0);
        drop(c);
        let (c, o) = cold_open(r, &host, extra);
        let (_, index) = query(r, &c, INDEXED, (1i64 << 39).into());
        let index = o.plus(index);
        drop(c);
        let (c, o) = cold_open(r, &host, extra);
        let (found, fts) = query(r, &c, FTS, RARE.to_string().into());
        assert_eq!(found, RARE_ROWS, "the rare term's rows");
        let fts = o.plus(fts);
        drop(c);
        let (c, o) = cold_open(r, &host, extra);
        let (n, scan) = query(r, &c, SCAN, 0.into());
        assert!(n >= rows);
        let scan = o.plus(scan);
        drop(c);
        r.area.wipe(&host, r.blob);
        out.rows.push(LazyRow {
            kind: r.area.kind,
            delay_ms: r.delay_ms,
            mode,
            open: open_took,
            point,
            index,
            fts,
            scan,
        });
    }
}

/// Random point queries on a lazy host with `cache_max`, its disk use sampled.
fn random(r: &Readers, rows: i64, plan: &LazyPlan, out: &mut LazyReport) {
    let host = "l-bounded";
    let extra = format!("&fetch=lazy&cache_max={}MiB", plan.cache_max_mib);
    r.area.wipe(host, r.blob);
    let path = r.area.cache(host, r.blob);
    let (stop, disk) = (Arc::new(AtomicBool::new(false)), Arc::new(Disk::default()));
    let sampler = {
        let (stop, disk, path) = (stop.clone(), disk.clone(), path.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                disk.sample(&path);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let (c, _) = cold_open(r, host, &extra);
    let chunk_size = status(&c)["residence"]["chunk_size"].as_u64().unwrap_or(0);
    let bound = plan.cache_max_mib * MIB + chunk_size;
    disk.bound.store(bound, Ordering::SeqCst);
    let mut took = Took::default();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut hits = 0;
    for _ in 0..plan.queries {
        let (len, q) = query(r, &c, POINT, rng.i64(1..=rows).into());
        assert!(len > 0);
        disk.sample(&path);
        hits += usize::from(q.cost.down == 0);
        took = took.plus(q);
    }
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let residence = &status(&c)["residence"];
    out.random.push(RandomRow {
        kind: r.area.kind,
        delay_ms: r.delay_ms,
        queries: plan.queries,
        hits,
        chunks_down: took.chunks,
        took,
        max_disk: disk.max.load(Ordering::SeqCst),
        samples: disk.samples.load(Ordering::SeqCst),
        over: disk.over.load(Ordering::SeqCst),
        chunk_size,
        evicted: residence["chunks_evicted"].as_u64().unwrap_or(0),
    });
    drop(c);
    r.area.wipe(host, r.blob);
}

/// Samples of a cache file's allocated bytes (`st_blocks * 512`).
#[derive(Default)]
struct Disk {
    max: AtomicU64,
    samples: AtomicU64,
    /// Samples above `bound` (0: not known yet, nothing counted).
    over: AtomicU64,
    bound: AtomicU64,
}

impl Disk {
    fn sample(&self, path: &Path) {
        let used = std::fs::metadata(path).map_or(0, |m| m.blocks() * 512);
        self.max.fetch_max(used, Ordering::SeqCst);
        self.samples.fetch_add(1, Ordering::SeqCst);
        let bound = self.bound.load(Ordering::SeqCst);
        if bound > 0 && used > bound {
            self.over.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A warm lazy host (one point query done) takes another host's one-row commit (host
/// "w", a lazy cache too, straight to the remote): its next read of the same row.
fn take_commit(r: &Readers, rows: i64, out: &mut LazyReport) {
    let host = "l-taker";
    let (c, _) = cold_open(r, host, "&fetch=lazy&staleness_ms=0");
    let row = rows / 3 + 1;
    let (len, _) = query(r, &c, POINT, row.into());
    r.area.wipe("w", r.blob);
    let w = open(&r.area.uri("w", r.blob, "&fetch=lazy"));
    w.execute(
        "INSERT INTO doc(k, body) VALUES (42, 'one row from another host')",
        [],
    )
    .unwrap();
    let (again, took) = query(r, &c, POINT, row.into());
    assert_eq!(len, again);
    out.takes.push(TakeRow {
        kind: r.area.kind,
        delay_ms: r.delay_ms,
        took,
    });
    drop((c, w));
    r.area.wipe(host, r.blob);
    r.area.wipe("w", r.blob);
}

fn delay(d: Option<u64>) -> String {
    d.map_or("-".into(), |d| format!("{d} ms"))
}

/// Section L on every backend asked for.
pub(super) fn lazy(
    azurite: Option<&azurite::Azurite>,
    plan: &Plan,
    start: Instant,
    out: &mut Results,
) {
    let lp = &plan.lazy;
    let report = out.lazy.get_or_insert_with(LazyReport::default);
    report.cache_max = lp.cache_max_mib * MIB;
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.db");
    progress(start, &format!("L build {} MiB with plain SQLite", lp.mib));
    let t = Instant::now();
    let rows = build_plain(&plain, lp.mib * MIB);
    report.build = t.elapsed();
    report.size = size_of(&plain);
    report.rows_in_db = rows;
    let blob = format!("lazy-{}m.db", lp.mib);
    if plan.kinds.contains(&Kind::Local) {
        let area = Area::new(Kind::Local, None);
        progress(start, "L local: publish");
        publish(&area, &blob, &plain, report);
        let r = Readers {
            area: &area,
            blob: &blob,
            proxy: None,
            delay_ms: None,
        };
        modes(&r, rows, report, start);
        progress(start, "L local: random reads");
        random(&r, rows, lp, report);
        take_commit(&r, rows, report);
    }
    let Some(azurite) = azurite.filter(|_| plan.kinds.contains(&Kind::Azurite)) else {
        return;
    };
    let area = Area::new(Kind::Azurite, Some(azurite));
    progress(start, "L Azurite: publish");
    publish(&area, &blob, &plain, report);
    // Azurite holds its copy: the plain one goes.
    let _ = std::fs::remove_file(&plain);
    // The readers go through a proxy of their own; host "w" goes straight to Azurite.
    let proxy = HttpProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], azurite.port)));
    let container = area
        .azure
        .as_ref()
        .expect("an Azure area")
        .url()
        .container();
    let remote = format!(
        "http://{}/{}/{container}?{}",
        proxy.addr,
        azurite::DEV_ACCOUNT,
        azurite::account_sas("rwdlac")
    );
    // The quick run (CI's smoke) takes 5 ms only.
    let delays: Vec<u64> = plan
        .delays
        .iter()
        .copied()
        .filter(|d| *d <= 5 && (!plan.quick || *d == 5))
        .collect();
    for d in delays {
        proxy.set_delay(Duration::from_millis(d));
        let r = Readers {
            area: &area,
            blob: &blob,
            proxy: Some((&proxy, remote.clone())),
            delay_ms: Some(d),
        };
        modes(&r, rows, report, start);
        progress(start, &format!("L Azurite {d} ms: random reads"));
        random(&r, rows, lp, report);
        take_commit(&r, rows, report);
    }
}

/// The tables of section L.
pub(super) fn lazy_table(w: &mut String, report: &LazyReport) {
    let _ = writeln!(
        w,
        "\n## L. Lazy against full: queries on a host with an empty cache\n"
    );
    let _ = writeln!(
        w,
        "Database: {} ({} rows of `doc(id, k, body)`, an index on `k`, FTS5 over `body`); \
         built with plain SQLite in {:.1} s.\n",
        bytes(report.size),
        report.rows_in_db,
        report.build.as_secs_f64()
    );
    header(
        w,
        "| backend | added delay | mode | step | ms | requests (HTTP) | in sequence | chunks | down | % of the database |",
    );
    for r in &report.rows {
        let steps = [
            ("open (schema read)", r.open),
            ("(a) open + point query by rowid", r.open.plus(r.point)),
            ("(b) open + indexed lookup", r.index),
            ("(c) open + FTS5 rare term", r.fts),
            ("(d) open + full scan", r.scan),
        ];
        for (step, t) in steps {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {step} | {} | {} | {} | {} | {} | {:.2} |",
                r.kind.name(),
                delay(r.delay_ms),
                r.mode,
                ms(t.time.as_secs_f64() * 1e3),
                reqs(r.kind, t.cost.requests as f64, t.http as f64),
                rounds(r.delay_ms, t.rounds),
                t.chunks,
                bytes(down(r.kind, &t)),
                100.0 * down(r.kind, &t) as f64 / report.size.max(1) as f64,
            );
        }
    }
    let _ = writeln!(
        w,
        "\nOne sample per step, each on a host whose cache was wiped (open included). \
         requests: managedblob's counted calls; (HTTP): requests the readers' proxy \
         forwarded (Azurite). in sequence: rounds at the proxy (in parentheses at 0 ms). \
         down: response bodies at the proxy on Azurite, managedblob's \
         `requests.bytes_down` locally. chunks: `requests.chunks_down`."
    );
    let _ = writeln!(
        w,
        "\nRandom point queries on a lazy host with `cache_max={}` (an empty cache at the \
         start):\n",
        bytes(report.cache_max)
    );
    header(
        w,
        "| backend | added delay | queries | no fetch (hit rate) | chunks fetched | ms per query | requests (HTTP) | down | max disk KiB (st_blocks) | samples | over cache_max + chunk | chunk | cache_max + chunk KiB | chunks evicted |",
    );
    for r in &report.random {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} ({:.0} %) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.kind.name(),
            delay(r.delay_ms),
            r.queries,
            r.hits,
            100.0 * r.hits as f64 / r.queries.max(1) as f64,
            r.chunks_down,
            ms(r.took.time.as_secs_f64() * 1e3 / r.queries.max(1) as f64),
            reqs(r.kind, r.took.cost.requests as f64, r.took.http as f64),
            bytes(down(r.kind, &r.took)),
            r.max_disk / 1024,
            r.samples,
            r.over,
            bytes(r.chunk_size),
            (report.cache_max + r.chunk_size) / 1024,
            r.evicted,
        );
    }
    let _ = writeln!(
        w,
        "\nHit rate: the queries that fetched no chunk (the status has no read counter, \
         so it is counted per query from `requests.chunks_down`). Disk: the cache file's \
         allocated bytes, sampled every 2 ms and after each query."
    );
    let _ = writeln!(
        w,
        "\nA warm lazy host (`staleness_ms=0`) reading a row again after another \
         host's one-row commit (host \"w\", a lazy cache, straight to the remote; \
         `INSERT INTO doc(k, body)`):\n"
    );
    header(
        w,
        "| backend | added delay | chunks down | down | requests (HTTP) | in sequence | ms |",
    );
    for r in &report.takes {
        let t = &r.took;
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.kind.name(),
            delay(r.delay_ms),
            t.chunks,
            bytes(down(r.kind, t)),
            reqs(r.kind, t.cost.requests as f64, t.http as f64),
            rounds(r.delay_ms, t.rounds),
            ms(t.time.as_secs_f64() * 1e3),
        );
    }
    let _ = writeln!(
        w,
        "\nPublishing (SQLite's backup API into host \"w\", one upload):\n"
    );
    header(w, "| backend | s | requests | bytes up |");
    for (kind, time, cost) in &report.publishes {
        let _ = writeln!(
            w,
            "| {} | {:.1} | {} | {} |",
            kind.name(),
            time.as_secs_f64(),
            cost.requests,
            bytes(cost.up)
        );
    }
}

/// Bytes down: the proxy's response bodies on Azurite, managedblob's count locally.
fn down(kind: Kind, t: &Took) -> u64 {
    match kind {
        Kind::Azurite => t.body_down,
        Kind::Local => t.cost.down,
    }
}

fn rounds(delay_ms: Option<u64>, n: u64) -> String {
    match delay_ms {
        Some(d) if d > 0 => n.to_string(),
        Some(_) => format!("({n})"),
        None => "-".into(),
    }
}
