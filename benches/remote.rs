//! What the remote costs: managedblob over a local directory and over Azurite, side
//! by side, in one run. Starts and stops its own Azurite (installed by
//! `scripts/azurite.sh` into `target/azurite`; the full run installs it when missing).
//!
//!     cargo bench --features azure --bench remote               # full run
//!     cargo bench --features azure --bench remote -- --quick    # 1 and 4 MiB only
//!     cargo test --features azure --bench remote                # the smoke run (quick)
//!
//! Without `--bench` among its arguments (as under `cargo test --benches`), or with
//! `MANAGEDBLOB_BENCH_QUICK=1`, the run is the quick one. `--only=ABCDEF` picks
//! sections, `--backend=local|azurite` one backend, `--mib=64,512` the sizes of A and
//! B, `--flush-ms=100` adds F's deferred-upload variant (skipped, saying so, where the
//! build has no `flush_ms` setting), `--only=S` with `--speedtest1=` and `--extension=`
//! runs S (`--speedtest1-rounds=N` rounds; 3, or 1 in the quick run). `--only=U`
//! runs U, with `--units-mib=64,1024,4096` its sizes and `--units-commits=N` its
//! commits per size (50).
//!
//! - A. Delta sync: one-row commit, and the reader's reopen after another host's
//!   one-row commit, `sync=delta` against `sync=full`, at 4, 64 and 512 MiB.
//! - B. Open: warm (etag matches) against cold (whole download) at 1, 64 and 512 MiB,
//!   and the raw transfer of the same blob (a file copy; one SDK download), each
//!   timed without and with an fsync of the written file.
//! - C. Commit: one-row autocommit latency; 1,000 autocommits against one batch of
//!   1,000 commits.
//! - D. Freshness: point selects in autocommit with `staleness_ms=0`, the default
//!   (1000), and inside a batch (lease held).
//! - E. Round trips (Azurite only): one-row autocommits into a 64 MiB database
//!   through a loopback proxy that delays each request by 0, 5 and 20 ms; per commit
//!   the requests in sequence, HTTP requests, ms and CPU.
//! - F. Mixed workload (Azurite only): a speedtest1-like mix of small transactions on
//!   plain SQLite and on managedblob behind the proxy at 0 and 5 ms: wall, own CPU,
//!   Azurite's CPU, requests, and the ratios to plain and to the floor.
//! - S. SQLite's own speedtest1 (Azurite only, never by default): a speedtest1 binary
//!   built by the user, run as a child on plain SQLite and on managedblob (the
//!   loadable extension preloaded) behind the proxy at 0 and 5 ms, uploading at each
//!   COMMIT and with flush_ms=100; F's figures for a child process. Needs
//!   `--only=S --speedtest1=PATH --extension=PATH` (see benches/remote/speedtest1.rs):
//!
//!       cargo bench --features azure --bench remote -- --only=S \
//!           --speedtest1=/tmp/speedtest1/speedtest1 \
//!           --extension=loadable/target/release/libmanagedblob.so
//!
//! - U. Units of change (issue 26; never by default in the full run, it builds
//!   gigabytes): per database size (64 MiB, 1 GiB, 4 GiB) and backend, one-row
//!   autocommits on host A, each followed by host B's refresh: bytes up and down
//!   (on Azurite the HTTP bodies at a proxy per host, with the Put Block List's share),
//!   requests, requests in sequence and ms, on Azurite at 0 and 5 ms per request
//!   (see benches/remote/units.rs).
//!
//! - L. Lazy against full (issue 24; never by default in the full run, it builds
//!   1 GiB): open + point query, indexed lookup, FTS5 rare term and full scan on a
//!   host with an empty cache, `fetch=lazy` against `fetch=full`, random reads under
//!   `cache_max`, and a lazy host taking another's commit (benches/remote/lazy.rs;
//!   `--lazy-mib=1024`, `--lazy-queries=N`, `--lazy-cache-max=64` in MiB).
//!
//! The quick form runs E and F at 0 and 5 ms only, on small sizes, U at 4 MiB
//! with 3 commits, and L at 4 MiB (Azurite at 5 ms only).
//!
//! `requests` are managedblob's counted remote calls (`PRAGMA managedblob_status`);
//! `HTTP` are the HTTP requests the Azure SDK actually sent (counted from its
//! transport's trace events): a counted whole upload or download may be many HTTP
//! requests. Progress goes to stderr, the markdown tables to stdout at the end.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use managedblob::internal::backend::azure::AzureBackend;
use managedblob::internal::backend::Backend;
use rusqlite::{Connection, OpenFlags};

use common::{azurite, http_proxy, uri_escape};
#[path = "remote/area.rs"]
mod area;
use area::*;
#[path = "remote/cpu.rs"]
mod cpu;
#[path = "remote/latency.rs"]
mod latency;
#[path = "remote/lazy.rs"]
mod lazy;
use latency::LatencyRow;
#[path = "remote/mixed.rs"]
mod mixed;
use mixed::MixedRow;
#[path = "remote/measure.rs"]
mod measure;
use measure::*;
#[path = "remote/speedtest1.rs"]
mod speedtest1;
#[path = "remote/tables.rs"]
mod tables;
use tables::*;
#[path = "remote/units.rs"]
mod units;

const MIB: u64 = 1 << 20;
/// Bytes of random payload per row (about four rows to a 4 KiB page).
const ROW: u64 = 1000;

// ---------------------------------------------------------------------------------
// The plan.

struct Plan {
    quick: bool,
    /// Sizes (MiB) of section A, with the number of commit + reopen pairs each.
    a: Vec<(u64, usize)>,
    /// Sizes (MiB) of section B, with the number of rounds each.
    b: Vec<(u64, usize)>,
    /// Database size (MiB) and number of commits of section C.
    c: (u64, usize),
    /// Time per variant and round, and rounds, of section D.
    d: (Duration, usize),
    /// Database size (MiB) and steady commits per delay of section E.
    e: (u64, usize),
    /// Transactions of section F, and rounds of its quick variants (plain SQLite and
    /// `flush_ms`, interleaved; medians reported).
    f: (usize, usize),
    /// The proxy's added delays (ms) of E; F runs those up to 5 ms.
    delays: Vec<u64>,
    /// F's deferred-upload variant (`--flush-ms=N`).
    flush_ms: Option<u64>,
    /// Section S: the speedtest1 binary and the loadable extension (`--speedtest1=`,
    /// `--extension=`), and its rounds (`--speedtest1-rounds=N`).
    speedtest1: Option<PathBuf>,
    extension: Option<PathBuf>,
    s_rounds: usize,
    /// Section U: database sizes (MiB) and one-row commits per size.
    units: Vec<u64>,
    units_commits: usize,
    /// Section L.
    lazy: lazy::LazyPlan,
    sections: String,
    kinds: Vec<Kind>,
}

impl Plan {
    fn from_args() -> Plan {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick")
            || !args.iter().any(|a| a == "--bench")
            || std::env::var_os("MANAGEDBLOB_BENCH_QUICK").is_some_and(|v| v != "0");
        let sections = args
            .iter()
            .find_map(|a| a.strip_prefix("--only="))
            .unwrap_or(if quick { "ABCDEFUL" } else { "ABCDEF" })
            .to_uppercase();
        let kinds = match args.iter().find_map(|a| a.strip_prefix("--backend=")) {
            Some("local") => vec![Kind::Local],
            Some("azurite") => vec![Kind::Azurite],
            Some(other) => panic!("--backend={other}: expected local or azurite"),
            None => vec![Kind::Local, Kind::Azurite],
        };
        let flush_ms = args
            .iter()
            .find_map(|a| a.strip_prefix("--flush-ms="))
            .map(|v| v.parse().expect("--flush-ms=N: a number of milliseconds"));
        let path = |flag: &str| {
            args.iter()
                .find_map(|a| a.strip_prefix(flag))
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{flag}{p}: {e}")))
        };
        let (speedtest1, extension) = (path("--speedtest1="), path("--extension="));
        let s_rounds = args
            .iter()
            .find_map(|a| a.strip_prefix("--speedtest1-rounds="))
            .map(|v| v.parse().expect("--speedtest1-rounds=N: a number"));
        let mut plan = if quick {
            Plan {
                quick,
                a: vec![(1, 3), (4, 3)],
                b: vec![(1, 3), (4, 3)],
                c: (4, 20),
                d: (Duration::from_millis(200), 1),
                e: (4, 10),
                f: (60, 1),
                delays: vec![0, 5],
                flush_ms,
                speedtest1,
                extension,
                s_rounds: s_rounds.unwrap_or(1),
                units: vec![4],
                units_commits: 3,
                lazy: lazy::LazyPlan::new(4, 20, 1),
                sections,
                kinds,
            }
        } else {
            Plan {
                quick,
                a: vec![(4, 31), (64, 15), (512, 7)],
                b: vec![(1, 15), (64, 9), (512, 7)],
                c: (4, 1000),
                d: (Duration::from_secs(1), 5),
                e: (64, 50),
                f: (1000, 5),
                delays: vec![0, 5, 20],
                flush_ms,
                speedtest1,
                extension,
                s_rounds: s_rounds.unwrap_or(3),
                units: vec![64, 1024, 4096],
                units_commits: 50,
                lazy: lazy::LazyPlan::new(1024, 1000, 64),
                sections,
                kinds,
            }
        };
        if let Some(list) = args.iter().find_map(|a| a.strip_prefix("--mib=")) {
            let keep: Vec<u64> = list.split(',').map(|v| v.parse().unwrap()).collect();
            plan.a.retain(|(s, _)| keep.contains(s));
            plan.b.retain(|(s, _)| keep.contains(s));
        }
        if let Some(list) = args.iter().find_map(|a| a.strip_prefix("--units-mib=")) {
            plan.units = list
                .split(',')
                .map(|v| v.parse().expect("--units-mib=64,1024: sizes in MiB"))
                .collect();
        }
        if let Some(n) = args.iter().find_map(|a| a.strip_prefix("--units-commits=")) {
            plan.units_commits = n.parse().expect("--units-commits=N: a number");
        }
        plan.lazy.apply_args(&args);
        plan
    }

    fn runs(&self, section: char) -> bool {
        self.sections.contains(section)
    }
}

/// The Azurite to use, started here; `None` (after saying why) when it is not
/// installed in a quick run without CI. The full run installs it when missing.
fn start_azurite(plan: &Plan) -> Option<azurite::Azurite> {
    let bin = azurite::bin();
    if !bin.exists() && !plan.quick && std::env::var_os("AZURITE_BLOB").is_none() {
        eprintln!(
            "Azurite is missing at {}: running scripts/azurite.sh",
            bin.display()
        );
        let ok = std::process::Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/azurite.sh"),
        )
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
        assert!(
            ok,
            "scripts/azurite.sh failed; install Azurite 3.35.0 first"
        );
    }
    if !bin.exists() {
        return azurite::missing(&format!(
            "Azurite is not installed at {} (run scripts/azurite.sh, or set AZURITE_BLOB)",
            bin.display()
        ));
    }
    Some(azurite::start(&bin, &[]))
}

// ---------------------------------------------------------------------------------
// Results.

struct BuildRow {
    kind: Kind,
    mode: &'static str,
    size: u64,
    time: Duration,
    cost: Cost,
}

/// Section A, one backend, one size, one mode.
struct DeltaRow {
    kind: Kind,
    mib: u64,
    mode: &'static str,
    size: u64,
    commit: Samples,
    reopen: Samples,
}

/// Section B, one backend, one size.
struct OpenRow {
    kind: Kind,
    mib: u64,
    size: u64,
    warm: Samples,
    cold: Samples,
    /// A cold lazy open (`fetch=lazy`): the block list, the first chunk, and the
    /// chunks the first read needs.
    lazy: Samples,
    raw: Samples,
    raw_synced: Samples,
}

struct CommitRow {
    kind: Kind,
    /// The database size before and after.
    size: (u64, u64),
    auto: Samples,
    auto_total: Duration,
    batch_total: Duration,
    batch: Cost,
    commits: usize,
}

struct ReadRow {
    kind: Kind,
    variant: &'static str,
    ops: Vec<f64>,
    per_op: f64,
    cost: Cost,
    reads: u64,
}

#[derive(Default)]
struct Results {
    builds: Vec<BuildRow>,
    delta: Vec<DeltaRow>,
    opens: Vec<OpenRow>,
    commits: Vec<CommitRow>,
    reads: Vec<ReadRow>,
    latency: Vec<LatencyRow>,
    mixed: Vec<MixedRow>,
    speedtest1: Option<speedtest1::Report>,
    units: Option<units::UnitsReport>,
    lazy: Option<lazy::LazyReport>,
}

// ---------------------------------------------------------------------------------
// Sections.

const MODES: [(&str, &str); 2] = [("delta", ""), ("full", "&sync=full")];

/// Build blob `blob` of `mib` MiB through a writer on host "w" (one transaction, the
/// first upload); returns the writer.
fn build_blob(
    area: &Area,
    blob: &str,
    mib: u64,
    mode: &'static str,
    extra: &str,
    out: &mut Results,
) -> Connection {
    let w = open(&area.uri("w", blob, extra));
    let before = Cost::of(&w);
    let t = Instant::now();
    build(&w, mib * MIB);
    let time = t.elapsed();
    out.builds.push(BuildRow {
        kind: area.kind,
        mode,
        size: size_of(&area.cache("w", blob)),
        time,
        cost: Cost::of(&w).since(before),
    });
    w
}

/// A: one-row commits by a writer, each followed by the reader's reopen (its cache
/// holds the previous version) and first read.
fn delta_sync(area: &Area, mib: u64, iters: usize, start: Instant, out: &mut Results) {
    for (mode, extra) in MODES {
        let blob = format!("{mode}-{mib}m.db");
        progress(
            start,
            &format!("A {} {mib} MiB sync={mode}: build", area.kind.name()),
        );
        let w = build_blob(area, &blob, mib, mode, extra, out);
        // The reader takes the first version (a cold open, not measured here).
        let reader = area.uri("r", &blob, extra);
        assert_eq!(max_id(&open(&reader)), max_id(&w));
        progress(
            start,
            &format!(
                "A {} {mib} MiB sync={mode}: {iters} commits",
                area.kind.name()
            ),
        );
        let (mut commit, mut reopen) = (Samples::default(), Samples::default());
        for _ in 0..iters {
            let before = Cost::of(&w);
            // Timer: the whole autocommit (lease, upload, release).
            let t = Instant::now();
            one_row(&w);
            commit.push(t.elapsed(), Cost::of(&w).since(before));
            let expected = max_id(&w);

            let before = Cost::fresh();
            // Timer: the reader's open (freshness check, delta fetch) and first read.
            let t = Instant::now();
            let r = open(&reader);
            let seen = max_id(&r);
            let time = t.elapsed();
            reopen.push(time, Cost::of(&r).since(before));
            assert_eq!(seen, expected, "the reader sees the new row");
        }
        out.delta.push(DeltaRow {
            kind: area.kind,
            mib,
            mode,
            size: size_of(&area.cache("w", &blob)),
            commit,
            reopen,
        });
    }
}

/// B: warm open, cold open and the raw transfer of the same blob, interleaved.
fn opens(area: &Area, mib: u64, rounds: usize, start: Instant, out: &mut Results) {
    let blob = format!("delta-{mib}m.db");
    if !area.cache("w", &blob).exists() {
        progress(start, &format!("B {} {mib} MiB: build", area.kind.name()));
        drop(build_blob(area, &blob, mib, "delta", "", out));
    }
    progress(
        start,
        &format!("B {} {mib} MiB: {rounds} rounds", area.kind.name()),
    );
    let (warm_uri, cold_uri) = (area.uri("bw", &blob, ""), area.uri("bc", &blob, ""));
    let lazy_uri = area.uri("bl", &blob, "&fetch=lazy");
    let expected = max_id(&open(&warm_uri));
    let raw_dest = area.dir.path().join("raw-copy");
    let (mut warm, mut cold, mut lazy) =
        (Samples::default(), Samples::default(), Samples::default());
    let (mut raw, mut raw_synced) = (Samples::default(), Samples::default());
    let open_and_read = |uri: &str, samples: &mut Samples| {
        let before = Cost::fresh();
        // Timer: the open (stat, and for a cold cache the download) and first read.
        let t = Instant::now();
        let c = open(uri);
        let seen = max_id(&c);
        samples.push(t.elapsed(), Cost::of(&c).since(before));
        assert_eq!(seen, expected);
    };
    for _ in 0..rounds {
        open_and_read(&warm_uri, &mut warm);
        area.wipe("bc", &blob);
        open_and_read(&cold_uri, &mut cold);
        area.wipe("bl", &blob);
        open_and_read(&lazy_uri, &mut lazy);
        let _ = std::fs::remove_file(&raw_dest);
        let http = http_now();
        let (n, transfer, synced) = area.raw_download(&blob, &raw_dest);
        let cost = Cost {
            requests: 1,
            http: http_now() - http,
            down: n,
            ..Cost::default()
        };
        raw.push(transfer, cost);
        raw_synced.push(synced, Cost::default());
    }
    out.opens.push(OpenRow {
        kind: area.kind,
        mib,
        size: size_of(&area.cache("bw", &blob)),
        warm,
        cold,
        lazy,
        raw,
        raw_synced,
    });
}

/// C: one-row autocommits, then the same number of commits in one batch.
fn commits(area: &Area, mib: u64, n: usize, start: Instant, out: &mut Results) -> String {
    let blob = format!("commit-{mib}m.db");
    progress(start, &format!("C {}: build {mib} MiB", area.kind.name()));
    let w = build_blob(area, &blob, mib, "delta", "", out);
    out.builds.pop(); // the same as section A's build
    let initial = size_of(&area.cache("w", &blob));
    progress(start, &format!("C {}: {n} autocommits", area.kind.name()));
    let mut auto = Samples::default();
    let t0 = Instant::now();
    for _ in 0..n {
        let before = Cost::of(&w);
        let t = Instant::now();
        one_row(&w);
        auto.push(t.elapsed(), Cost::of(&w).since(before));
    }
    let auto_total = t0.elapsed();
    progress(
        start,
        &format!("C {}: {n} commits in one batch", area.kind.name()),
    );
    let before = Cost::of(&w);
    // Timer: the batch's begin (lease) and end (one upload) included.
    let t0 = Instant::now();
    pragma(&w, "PRAGMA managedblob_batch=begin");
    for _ in 0..n {
        one_row(&w);
    }
    pragma(&w, "PRAGMA managedblob_batch=end");
    let batch_total = t0.elapsed();
    let batch = Cost::of(&w).since(before);
    out.commits.push(CommitRow {
        kind: area.kind,
        size: (initial, size_of(&area.cache("w", &blob))),
        auto,
        auto_total,
        batch_total,
        batch,
        commits: n,
    });
    blob
}

/// D: point selects in autocommit for `dur`, per variant, in interleaved rounds.
fn reads(area: &Area, blob: &str, plan: &Plan, start: Instant, out: &mut Results) {
    let (dur, rounds) = plan.d;
    progress(
        start,
        &format!("D {}: {rounds} rounds of {dur:?}", area.kind.name()),
    );
    let fresh0 = open(&area.uri("d0", blob, "&staleness_ms=0"));
    let default = open(&area.uri("d1000", blob, ""));
    let writer = open(&area.uri("w", blob, ""));
    let rows = max_id(&writer);
    let variants: [(&'static str, &Connection, bool); 3] = [
        ("staleness_ms=0", &fresh0, false),
        ("staleness_ms=1000 (default)", &default, false),
        ("inside a batch (lease held)", &writer, true),
    ];
    let mut results: Vec<(Vec<f64>, Cost, u64, f64)> =
        vec![(Vec::new(), Cost::default(), 0, 0.0); 3];
    for _ in 0..rounds {
        for (i, (_, c, batch)) in variants.iter().enumerate() {
            if *batch {
                pragma(c, "PRAGMA managedblob_batch=begin");
            }
            let mut stmt = c
                .prepare_cached("SELECT length(b) FROM t WHERE id = ?1")
                .unwrap();
            let before = Cost::of(c);
            // Timer: the selects only; the batch variant's begin (lease) and end
            // (nothing to upload) are outside it.
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed() < dur {
                for _ in 0..16 {
                    let id = (n as i64 * 7919) % rows + 1;
                    let len: i64 = stmt.query_row([id], |r| r.get(0)).unwrap();
                    assert_eq!(len, ROW as i64);
                    n += 1;
                }
            }
            let time = t.elapsed().as_secs_f64();
            let cost = Cost::of(c).since(before);
            drop(stmt);
            if *batch {
                pragma(c, "PRAGMA managedblob_batch=end");
            }
            let r = &mut results[i];
            r.0.push(n as f64 / time);
            r.1 = r.1.plus(cost);
            r.2 += n;
            r.3 += time;
        }
    }
    for ((variant, _, _), (ops, cost, reads, time)) in variants.iter().zip(results) {
        out.reads.push(ReadRow {
            kind: area.kind,
            variant,
            ops,
            per_op: time / reads as f64,
            cost,
            reads,
        });
    }
}

fn azurite_version() -> String {
    // node_modules/.bin/azurite-blob -> node_modules/azurite/package.json
    let bin = azurite::bin();
    let package = bin
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .join("azurite/package.json");
    std::fs::read_to_string(package)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string))
        .unwrap_or_else(|| "(version unknown)".into())
}

fn main() {
    let plan = Plan::from_args();
    let start = Instant::now();
    count_http_requests();
    managedblob::register().unwrap();

    let mut kinds = plan.kinds.clone();
    let azurite = if kinds.contains(&Kind::Azurite) {
        let a = start_azurite(&plan);
        if a.is_none() {
            kinds.retain(|k| *k != Kind::Azurite);
        }
        a
    } else {
        None
    };
    if let Some(a) = &azurite {
        progress(start, &format!("Azurite listening on 127.0.0.1:{}", a.port));
    }

    let mut out = Results::default();
    let mut sizes: Vec<u64> = Vec::new();
    if plan.runs('A') {
        sizes.extend(plan.a.iter().map(|(s, _)| *s));
    }
    if plan.runs('B') {
        sizes.extend(plan.b.iter().map(|(s, _)| *s));
    }
    sizes.sort_unstable();
    sizes.dedup();
    for mib in sizes {
        for &kind in &kinds {
            let area = Area::new(kind, azurite.as_ref());
            if let Some((_, iters)) = plan.a.iter().find(|(s, _)| *s == mib) {
                if plan.runs('A') {
                    delta_sync(&area, mib, *iters, start, &mut out);
                }
            }
            if let Some((_, rounds)) = plan.b.iter().find(|(s, _)| *s == mib) {
                if plan.runs('B') {
                    opens(&area, mib, *rounds, start, &mut out);
                }
            }
        }
    }
    if plan.runs('C') || plan.runs('D') {
        for &kind in &kinds {
            let area = Area::new(kind, azurite.as_ref());
            let (mib, n) = plan.c;
            let blob = if plan.runs('C') {
                commits(&area, mib, n, start, &mut out)
            } else {
                let blob = format!("commit-{mib}m.db");
                drop(build_blob(&area, &blob, mib, "delta", "", &mut out));
                out.builds.pop();
                blob
            };
            if plan.runs('D') {
                reads(&area, &blob, &plan, start, &mut out);
            }
        }
    }
    if let Some(a) = azurite.as_ref().filter(|_| kinds.contains(&Kind::Azurite)) {
        if plan.runs('E') {
            latency::latency(a, &plan, start, &mut out);
        }
        if plan.runs('F') {
            mixed::mixed(a, &plan, start, &mut out);
        }
        if speedtest1::not_running(&plan).is_none() {
            speedtest1::speedtest1(a, &plan, start, &mut out);
        }
    }
    if plan.runs('U') {
        let azurite = azurite.as_ref().filter(|_| kinds.contains(&Kind::Azurite));
        units::units(azurite, &plan, start, &mut out);
    }
    if plan.runs('L') {
        let azurite = azurite.as_ref().filter(|_| kinds.contains(&Kind::Azurite));
        lazy::lazy(azurite, &plan, start, &mut out);
    }
    if let Some(why) = speedtest1::not_running(&plan) {
        progress(start, &why);
    }
    progress(start, "done");
    drop(azurite);
    print!("{}", tables(&plan, &out, &azurite_version()));
    println!(
        "\nTotal run time: {:.0} s{}.",
        start.elapsed().as_secs_f64(),
        if plan.quick { " (quick)" } else { "" }
    );
}
