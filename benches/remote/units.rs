//! U. Units of change per commit (issue 26): what a one-row autocommit moves, and
//! what another host's refresh after it moves, as the database grows (64 MiB, 1 GiB,
//! 4 GiB by default; `--units-mib=64,1024,4096`, `--units-commits=N`).
//!
//! Per size and backend: host A builds the database in one transaction (section A's
//! build: rows of 1000 random bytes in `t(id INTEGER PRIMARY KEY, b BLOB)`, the first
//! upload, so A's cache is full), host B opens it cold (a second full cache, with
//! `staleness_ms=0`), then A makes N one-row autocommits and B reads
//! (`SELECT max(id)`) after each one, which refreshes it. On Azurite each host goes
//! through a loopback proxy of its own, so the HTTP requests and the bytes of their
//! bodies are each host's own; the proxies add 0, then 5 ms per request (the same two
//! caches go on: 5 ms's commits follow 0 ms's). On the local backend the bytes are
//! managedblob's own counters (`PRAGMA managedblob_status`), where a block-list commit
//! counts `ids x (BLOCK_ID_LEN x 4/3 + 20)` bytes, an estimate of its XML body.
//!
//! Host A's figures per commit cover everything A sent from the start of the commit to
//! the end of B's read after it (so a lease A releases in the background meanwhile is
//! counted), the wall time only the autocommit itself. Only with
//! `--only=...U...` in a full run (it builds gigabytes); the quick run covers it at
//! 4 MiB with 3 commits.

use std::sync::Arc;

use super::*;
use http_proxy::{Fate, HttpProxy};

/// What one host's proxy forwarded over a step.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Wire {
    http: u64,
    /// Requests in sequence (see `ProxyCounts::rounds`).
    rounds: u64,
    /// Request bodies sent to Azurite, and response bodies sent back.
    up: u64,
    down: u64,
    /// The bodies of the Put Block List requests among `up`, and their number.
    block_list_up: u64,
    block_lists: u64,
}

impl Wire {
    fn since(self, before: Wire) -> Wire {
        Wire {
            http: self.http - before.http,
            rounds: self.rounds - before.rounds,
            up: self.up - before.up,
            down: self.down - before.down,
            block_list_up: self.block_list_up - before.block_list_up,
            block_lists: self.block_lists - before.block_lists,
        }
    }

    fn plus(self, o: Wire) -> Wire {
        Wire {
            http: self.http + o.http,
            rounds: self.rounds + o.rounds,
            up: self.up + o.up,
            down: self.down + o.down,
            block_list_up: self.block_list_up + o.block_list_up,
            block_lists: self.block_lists + o.block_lists,
        }
    }
}

/// A host's proxy in front of Azurite, counting the Put Block List bodies.
struct Tap {
    proxy: HttpProxy,
    /// (bytes, requests) of Put Block List.
    block_lists: Arc<(AtomicU64, AtomicU64)>,
}

impl Tap {
    fn start(azurite: &azurite::Azurite) -> Tap {
        let proxy = HttpProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], azurite.port)));
        let block_lists: Arc<(AtomicU64, AtomicU64)> = Arc::default();
        let counts = block_lists.clone();
        proxy.set_rule(move |req| {
            if req.method == "PUT" && req.query_has("comp=blocklist") {
                counts.0.fetch_add(req.body_len, Ordering::SeqCst);
                counts.1.fetch_add(1, Ordering::SeqCst);
            }
            Fate::Forward
        });
        Tap { proxy, block_lists }
    }

    /// The `remote` setting for `container` through this proxy.
    fn remote(&self, container: &str) -> String {
        format!(
            "http://{}/{}/{container}?{}",
            self.proxy.addr,
            azurite::DEV_ACCOUNT,
            azurite::account_sas("rwdlac")
        )
    }

    fn now(&self) -> Wire {
        let c = &self.proxy.counts;
        Wire {
            http: c.forwarded.load(Ordering::SeqCst),
            rounds: c.rounds(),
            up: c.body_up.load(Ordering::SeqCst),
            down: c.body_down.load(Ordering::SeqCst),
            block_list_up: self.block_lists.0.load(Ordering::SeqCst),
            block_lists: self.block_lists.1.load(Ordering::SeqCst),
        }
    }
}

/// One backend (and added delay) at one size.
pub(super) struct UnitsRow {
    kind: Kind,
    /// The proxies' added delay; `None` on the local backend.
    delay_ms: Option<u64>,
    /// The database's size before the commits.
    size: u64,
    /// Host A's autocommits: times, and managedblob's counts.
    commit: Samples,
    /// Host A's proxy over the commits (totals).
    commit_wire: Wire,
    /// Host B's refreshes: times, and managedblob's counts.
    refresh: Samples,
    refresh_wire: Wire,
}

/// The build of one size on one backend (host A's one transaction, the first upload).
pub(super) struct UnitsBuild {
    kind: Kind,
    size: u64,
    build: Duration,
    cost: Cost,
    /// Host B's cold open and first read.
    cold_open: Duration,
}

#[derive(Default)]
pub(super) struct UnitsReport {
    pub(super) rows: Vec<UnitsRow>,
    pub(super) builds: Vec<UnitsBuild>,
    commits: usize,
}

/// The two hosts' connections and how to count them.
struct Hosts<'a> {
    a: Connection,
    b: Connection,
    taps: Option<(&'a Tap, &'a Tap)>,
}

impl Hosts<'_> {
    fn wire(&self) -> (Wire, Wire) {
        self.taps
            .map_or_else(Default::default, |(a, b)| (a.now(), b.now()))
    }
}

/// Host A builds a database of `mib` MiB at `uris.0`, cached at `cache_a`; host B
/// opens it cold at `uris.1`.
fn build_and_open<'a>(
    kind: Kind,
    (uri_a, uri_b): (&str, &str),
    cache_a: &Path,
    mib: u64,
    taps: Option<(&'a Tap, &'a Tap)>,
    start: Instant,
    out: &mut UnitsReport,
) -> Hosts<'a> {
    progress(start, &format!("U {} {mib} MiB: build", kind.name()));
    let a = open(uri_a);
    let before = Cost::of(&a);
    let t = Instant::now();
    build(&a, mib * MIB);
    let build_time = t.elapsed();
    let cost = Cost::of(&a).since(before);
    progress(
        start,
        &format!("U {} {mib} MiB: host B's cold open", kind.name()),
    );
    let t = Instant::now();
    let b = open(uri_b);
    assert_eq!(max_id(&b), max_id(&a));
    out.builds.push(UnitsBuild {
        kind,
        size: size_of(cache_a),
        build: build_time,
        cost,
        cold_open: t.elapsed(),
    });
    Hosts { a, b, taps }
}

/// `n` one-row autocommits on host A, each followed by host B's read.
fn commits(hosts: &Hosts, kind: Kind, delay_ms: Option<u64>, n: usize, size: u64) -> UnitsRow {
    let mut row = UnitsRow {
        kind,
        delay_ms,
        size,
        commit: Samples::default(),
        commit_wire: Wire::default(),
        refresh: Samples::default(),
        refresh_wire: Wire::default(),
    };
    let (a, b) = (&hosts.a, &hosts.b);
    for _ in 0..n {
        let (cost_a, (wire_a, _)) = (Cost::of(a), hosts.wire());
        // Timer: the whole autocommit (lease, upload, release if it does).
        let t = Instant::now();
        let inserted = a.execute(&format!("INSERT INTO t(b) VALUES (randomblob({ROW}))"), []);
        let commit_time = t.elapsed();
        if let Err(e) = inserted {
            panic!("host A's one-row commit: {e}; its status: {}", status(a));
        }
        let expected = a.last_insert_rowid();

        let (cost_b, (_, wire_b)) = (Cost::of(b), hosts.wire());
        // Timer: B's read transaction: its freshness check, the fetch and install.
        let t = Instant::now();
        let seen = max_id(b);
        let refresh_time = t.elapsed();
        let (after_a, after_b) = hosts.wire();
        row.refresh.push(refresh_time, Cost::of(b).since(cost_b));
        row.refresh_wire = row.refresh_wire.plus(after_b.since(wire_b));
        assert_eq!(seen, expected, "host B sees the new row");

        row.commit.push(commit_time, Cost::of(a).since(cost_a));
        row.commit_wire = row.commit_wire.plus(after_a.since(wire_a));
    }
    row
}

/// Section U, every size in `plan.units` on every backend asked for.
pub(super) fn units(
    azurite: Option<&azurite::Azurite>,
    plan: &Plan,
    start: Instant,
    out: &mut Results,
) {
    let (sizes, n) = (&plan.units, plan.units_commits);
    let report = out.units.get_or_insert_with(UnitsReport::default);
    report.commits = n;
    for &mib in sizes {
        let blob = format!("units-{mib}m.db");
        if plan.kinds.contains(&Kind::Local) {
            let area = Area::new(Kind::Local, None);
            let hosts = build_and_open(
                Kind::Local,
                (
                    &area.uri("a", &blob, ""),
                    &area.uri("b", &blob, "&staleness_ms=0"),
                ),
                &area.cache("a", &blob),
                mib,
                None,
                start,
                report,
            );
            progress(start, &format!("U local {mib} MiB: {n} commits"));
            let size = size_of(&area.cache("a", &blob));
            let row = commits(&hosts, Kind::Local, None, n, size);
            report.rows.push(row);
        }
        let Some(azurite) = azurite.filter(|_| plan.kinds.contains(&Kind::Azurite)) else {
            continue;
        };
        let area = Area::new(Kind::Azurite, Some(azurite));
        let container = area
            .azure
            .as_ref()
            .expect("an Azure area")
            .url()
            .container();
        let (tap_a, tap_b) = (Tap::start(azurite), Tap::start(azurite));
        let uri = |host: &str, tap: &Tap, extra: &str| {
            format!(
                "file:{}?vfs=managedblob&remote={}{extra}",
                area.cache(host, &blob).display(),
                uri_escape(&tap.remote(container))
            )
        };
        let hosts = build_and_open(
            Kind::Azurite,
            (&uri("a", &tap_a, ""), &uri("b", &tap_b, "&staleness_ms=0")),
            &area.cache("a", &blob),
            mib,
            Some((&tap_a, &tap_b)),
            start,
            report,
        );
        for &delay in plan.delays.iter().filter(|d| **d <= 5) {
            progress(
                start,
                &format!("U Azurite {mib} MiB at {delay} ms: {n} commits"),
            );
            for tap in [&tap_a, &tap_b] {
                tap.proxy.set_delay(Duration::from_millis(delay));
            }
            let size = size_of(&area.cache("a", &blob));
            let row = commits(&hosts, Kind::Azurite, Some(delay), n, size);
            report.rows.push(row);
        }
    }
}

/// The tables of section U.
pub(super) fn units_table(w: &mut String, report: &UnitsReport) {
    let kib = |v: f64| format!("{:.1}", v / 1024.0);
    let _ = writeln!(
        w,
        "\n## U. Units of change: one-row autocommit on host A, host B's refresh after each\n"
    );
    header(
        w,
        "| backend | added delay | database | commits | A: KiB up | of which block list | A: KiB up (managedblob's count) | A: KiB down | A: requests (HTTP) | A: in sequence | A: ms (median) | p90 | B: KiB down | B: KiB up | B: requests (HTTP) | B: ms (median) | B down / A up |",
    );
    for r in &report.rows {
        let n = r.commit.n() as f64;
        let per = |v: u64| v as f64 / n;
        let (a, b) = (&r.commit.total, &r.refresh.total);
        let (wa, wb) = (&r.commit_wire, &r.refresh_wire);
        // Bytes: the proxy's bodies on Azurite, managedblob's counters locally.
        let (a_up, a_down, b_down, b_up, list) = match r.kind {
            Kind::Azurite => (wa.up, wa.down, wb.down, wb.up, Some(wa.block_list_up)),
            Kind::Local => (a.up, a.down, b.down, b.up, None),
        };
        let list = list.map_or("(estimate in up)".into(), |l| {
            format!(
                "{} ({:.0} %, {:.1} per commit)",
                kib(per(l)),
                100.0 * l as f64 / a_up.max(1) as f64,
                per(wa.block_lists)
            )
        });
        let http = |c: &Cost, w: &Wire| match r.kind {
            Kind::Azurite => format!("{:.1} ({:.1})", per(c.requests), per(w.http)),
            Kind::Local => format!("{:.1}", per(c.requests)),
        };
        let rounds = match r.delay_ms {
            Some(d) if d > 0 => format!("{:.1}", per(wa.rounds)),
            Some(_) => format!("({:.1})", per(wa.rounds)),
            None => "-".into(),
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {list} | {} | {} | {} | {rounds} | {} | {} | {} | {} | {} | {} | {:.2} |",
            r.kind.name(),
            r.delay_ms.map_or("-".into(), |d| format!("{d} ms")),
            bytes(r.size),
            r.commit.n(),
            kib(per(a_up)),
            kib(per(a.up)),
            kib(per(a_down)),
            http(a, wa),
            ms(r.commit.median_ms()),
            ms(r.commit.p90_ms()),
            kib(per(b_down)),
            kib(per(b_up)),
            http(b, wb),
            ms(r.refresh.median_ms()),
            b_down as f64 / a_up.max(1) as f64,
        );
    }
    let _ = writeln!(
        w,
        "\nPer commit (means over {} commits; times are medians). KiB: on Azurite the \
         HTTP bodies counted by each host's proxy (heads not included), on the local \
         backend managedblob's own counters (its block-list estimate included); \
         managedblob's count (`requests.bytes_up`) estimates a block list's body. A: \
         everything host A sent from the start of a commit to the end of host B's read \
         after it; the time is the autocommit's alone. requests: \
         managedblob's counted calls; (HTTP): requests forwarded by the host's proxy. in \
         sequence: rounds at A's proxy (in parentheses at 0 ms, where parallel requests \
         can count as rounds of their own). B: host B (a full cache, staleness_ms=0) \
         reads `SELECT max(id)` after each of A's commits, which refreshes it. Goals \
         (issue 26, Azurite): at most 24 KiB up at 64 MiB and 48 KiB at 1 GiB, at most \
         2.2 requests per commit, B's refresh at most 2x A's bytes up.",
        report.commits
    );
    let _ = writeln!(w, "\nBuilds (host A, one transaction, the first upload):\n");
    header(
        w,
        "| backend | database | build s | requests (managedblob) | bytes up | host B's cold open s |",
    );
    for b in &report.builds {
        let _ = writeln!(
            w,
            "| {} | {} | {:.1} | {} | {} | {:.1} |",
            b.kind.name(),
            bytes(b.size),
            b.build.as_secs_f64(),
            b.cost.requests,
            bytes(b.cost.up),
            b.cold_open.as_secs_f64(),
        );
    }
}
