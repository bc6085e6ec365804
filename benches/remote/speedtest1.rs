//! S. SQLite's own speedtest1 (`--testset main --size 25 --verify`), a program the
//! user builds from SQLite's `test/speedtest1.c` against the system's shared SQLite,
//! run as a child process: on plain SQLite (a local file, the default rollback
//! journal) and on managedblob (the loadable extension, `LD_PRELOAD`ed) over Azurite
//! behind the delaying proxy, uploading at each COMMIT and with `flush_ms=100`, at 0
//! and 5 ms per request. Like F: wall time, the child's own CPU (user + system, from
//! `wait4`), Azurite's CPU, the HTTP requests at the proxy, and the ratios to plain
//! SQLite and to the floor.
//!
//! Only with `--only=...S... --speedtest1=PATH --extension=PATH`; never by default.
//! The child opens `file:<cache>?vfs=managedblob` (the settings come from
//! `MANAGEDBLOB_*`), which the system SQLite must read as a URI (built with
//! `SQLITE_USE_URI=1`, as Debian's is): speedtest1 opens without `SQLITE_OPEN_URI`.
//!
//! speedtest1 sets no busy handler, so any SQLITE_BUSY ends a run: its SQL run by
//! `sqlite3_exec` stops it (listed as failed), and its prepared statements ignore
//! `sqlite3_step` errors, so a SELECT answered SQLITE_BUSY returns nothing and the
//! verification hash differs (listed too). Before the flusher's read was waited out
//! (`src/store/hold.rs`) and the lease lingered after a deferred upload, about half
//! the `flush_ms` runs ended that way.

use std::fs::File;
use std::process::{Command, Stdio};
use std::sync::Arc;

use super::*;
use cpu::process_cpu;
use http_proxy::{Fate, HttpProxy};
use latency::proxied;

/// speedtest1's arguments before the database: the main test set at a quarter size,
/// with `--verify`, whose hash of every result says whether the runs saw the same data.
const ARGS: [&str; 5] = ["--testset", "main", "--size", "25", "--verify"];

/// One child run.
#[derive(Clone)]
struct Run {
    wall: Duration,
    /// The child's user + system CPU (all its threads), from `wait4`.
    cpu: Duration,
    azurite: Option<Duration>,
    /// HTTP requests forwarded by the proxy, and the Put Block and Put Block List
    /// among them.
    http: u64,
    blocks: u64,
    block_lists: u64,
    /// Bytes of the request bodies the proxy forwarded (issue 26: against `size`).
    up: u64,
    /// The database file's size at the end (plain SQLite's file, managedblob's cache).
    size: u64,
    /// speedtest1's "Verification Hash" line.
    hash: String,
}

/// One variant: the medians of its runs, and what ended the runs that failed.
pub(super) struct Row {
    variant: String,
    /// The proxy's added delay; `None` for plain SQLite.
    delay_ms: Option<u64>,
    runs: usize,
    median: Option<Run>,
    /// Every run's hash equals plain SQLite's.
    same_hash: bool,
    failures: Vec<String>,
}

/// Section S's results.
pub(super) struct Report {
    rows: Vec<Row>,
    /// Writing transactions: the file change counter of plain SQLite's database.
    commits: u64,
    /// speedtest1's first line (the SQLite version it ran on).
    sqlite: String,
}

/// Why S does not run in this invocation (one line), or `None` when it does.
pub(super) fn not_running(plan: &Plan) -> Option<String> {
    let paths = plan.speedtest1.is_some() && plan.extension.is_some();
    match (plan.runs('S'), paths) {
        (true, true) => None,
        (true, false) => Some(
            "S (SQLite's speedtest1) needs --speedtest1=PATH and --extension=PATH: \
             not run (see benches/remote/speedtest1.rs)"
                .into(),
        ),
        (false, _) => Some(
            "S (SQLite's speedtest1) runs only when asked: --only=S --speedtest1=PATH \
             --extension=PATH (see benches/remote/speedtest1.rs)"
                .into(),
        ),
    }
}

/// A managedblob variant: its name, `MANAGEDBLOB_FLUSH_MS` (if any) and added delay.
type Variant = (String, Option<u64>, u64);

/// Requests the proxy saw, by kind.
#[derive(Default)]
struct Classified {
    blocks: AtomicU64,
    block_lists: AtomicU64,
}

/// S: per round, plain SQLite before each managedblob variant (plain is fast, so it
/// runs as often as all of them together); medians over the rounds.
pub(super) fn speedtest1(
    azurite: &azurite::Azurite,
    plan: &Plan,
    start: Instant,
    out: &mut Results,
) {
    let (Some(binary), Some(extension)) = (&plan.speedtest1, &plan.extension) else {
        return;
    };
    let (proxy, area) = proxied(azurite);
    let classified = Arc::new(Classified::default());
    let counts = classified.clone();
    proxy.set_rule(move |req| {
        if req.method == "PUT" && req.query_has("comp=blocklist") {
            counts.block_lists.fetch_add(1, Ordering::SeqCst);
        } else if req.method == "PUT" && req.query_has("comp=block") {
            counts.blocks.fetch_add(1, Ordering::SeqCst);
        }
        Fate::Forward
    });
    let delays: Vec<u64> = plan.delays.iter().copied().filter(|d| *d <= 5).collect();
    let mut variants: Vec<Variant> = delays
        .iter()
        .map(|&d| ("managedblob".to_string(), None, d))
        .collect();
    variants.extend(
        delays
            .iter()
            .map(|&d| ("managedblob, flush_ms=100".to_string(), Some(100), d)),
    );
    let child = Child {
        binary,
        azurite,
        proxy: &proxy,
        classified: &classified,
    };
    let mut plain = Vec::new();
    let mut managed: Vec<(Vec<Run>, Vec<String>)> = vec![Default::default(); variants.len()];
    let (mut commits, mut sqlite) = (0, String::new());
    for round in 1..=plan.s_rounds {
        for ((name, flush_ms, delay), (runs, failures)) in variants.iter().zip(&mut managed) {
            progress(start, &format!("S plain SQLite (round {round})"));
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("plain.db");
            let mut cmd = Command::new(binary);
            cmd.args(ARGS).arg(&db).env_remove("LD_PRELOAD");
            let (run, first_line) = child
                .run(cmd, dir.path(), 0)
                .unwrap_or_else(|e| panic!("plain speedtest1: {e}"));
            (commits, sqlite) = (change_counter(&db), first_line);
            plain.push(Run {
                size: size_of(&db),
                ..run
            });

            progress(start, &format!("S {name} at {delay} ms (round {round})"));
            let dir = tempfile::tempdir().unwrap();
            let blob = format!("speedtest1-{}.db", fastrand::u64(..));
            let cache = dir.path().join(&blob);
            let mut cmd = Command::new(binary);
            cmd.args(ARGS)
                .arg(format!(
                    "file:{}?vfs=managedblob",
                    uri_escape(&cache.display().to_string())
                ))
                .env("LD_PRELOAD", extension)
                .env("MANAGEDBLOB_REMOTE", &area.remote);
            if let Some(ms) = flush_ms {
                cmd.env("MANAGEDBLOB_FLUSH_MS", ms.to_string());
            }
            let outcome = match child.run(cmd, dir.path(), *delay) {
                Ok((run, _)) if run.block_lists == 0 || !cache.exists() => Err(
                    "no commit reached the remote, so the run did not go through \
                     managedblob (does the system SQLite read file: URIs?)"
                        .to_string(),
                ),
                Ok((run, _)) => Ok(Run {
                    size: size_of(&cache),
                    ..run
                }),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(run) => runs.push(run),
                Err(e) => {
                    eprintln!("S {name} at {delay} ms: the run failed: {e}");
                    failures.push(e);
                }
            }
        }
    }
    let hash = plain[0].hash.clone();
    let mut rows = vec![row(
        "plain SQLite (local file)".into(),
        None,
        plain,
        vec![],
        &hash,
    )];
    for ((name, _, delay), (runs, failures)) in variants.into_iter().zip(managed) {
        rows.push(row(name, Some(delay), runs, failures, &hash));
    }
    out.speedtest1 = Some(Report {
        rows,
        commits,
        sqlite,
    });
}

/// What a child run is measured against: the proxy (its counts) and Azurite (its CPU).
struct Child<'a> {
    binary: &'a Path,
    azurite: &'a azurite::Azurite,
    proxy: &'a HttpProxy,
    classified: &'a Classified,
}

impl Child<'_> {
    /// Run `cmd` (output into files in `dir`) with the proxy delaying each request by
    /// `delay_ms`; the run and speedtest1's first line, or what went wrong.
    fn run(&self, mut cmd: Command, dir: &Path, delay_ms: u64) -> Result<(Run, String), String> {
        // Only the settings given here: none inherited from this process's environment.
        let given: Vec<std::ffi::OsString> = cmd.get_envs().map(|(n, _)| n.into()).collect();
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("MANAGEDBLOB_") && !given.contains(&name) {
                cmd.env_remove(name);
            }
        }
        let (out_path, err_path) = (dir.join("stdout.txt"), dir.join("stderr.txt"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&err_path).unwrap());
        self.proxy.set_delay(Duration::from_millis(delay_ms));
        let pid = self.azurite.pid();
        let counts = || {
            (
                self.proxy.counts.forwarded.load(Ordering::SeqCst),
                self.classified.blocks.load(Ordering::SeqCst),
                self.classified.block_lists.load(Ordering::SeqCst),
                self.proxy.counts.body_up.load(Ordering::SeqCst),
            )
        };
        let (azurite0, before) = (process_cpu(pid), counts());
        // Timer: the whole child, from its start to its exit (the last close uploads).
        let t = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        let (status, cpu) = wait4(child.id());
        let wall = t.elapsed();
        let azurite = match (azurite0, process_cpu(pid)) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        };
        let after = counts();
        self.proxy.set_delay(Duration::ZERO);
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        if status != 0 {
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            // The test it was in: "250 - One big UPDATE ....... " (no time yet).
            let last_test = stdout.lines().last().unwrap_or_default();
            let last_test = last_test.trim_end().trim_end_matches('.');
            return Err(format!(
                "exit status {}, in test {}: {}",
                status >> 8,
                last_test.trim(),
                stderr.split_whitespace().collect::<Vec<_>>().join(" ")
            ));
        }
        let hash = stdout
            .lines()
            .find_map(|l| l.strip_prefix("Verification Hash: "))
            .ok_or("no Verification Hash line in its output")?
            .to_string();
        let run = Run {
            wall,
            cpu,
            azurite,
            http: after.0 - before.0,
            blocks: after.1 - before.1,
            block_lists: after.2 - before.2,
            up: after.3 - before.3,
            size: 0,
            hash,
        };
        Ok((run, stdout.lines().next().unwrap_or_default().to_string()))
    }
}

/// Reap child `pid`: its wait status and its user + system CPU time (all threads).
fn wait4(pid: u32) -> (i32, Duration) {
    let mut status = 0;
    // SAFETY: rusage is plain old data, for which all zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 writes only to the status and rusage it is given, both live
        // locals; `pid` is our own child, not yet reaped (std never waits for it).
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if r == pid as libc::pid_t {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "wait4: {err}");
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (status, time(usage.ru_utime) + time(usage.ru_stime))
}

/// The file change counter of a database in rollback-journal mode (header bytes
/// 24..28): one per writing transaction since the database was created.
fn change_counter(db: &Path) -> u64 {
    let header = std::fs::read(db).unwrap();
    u32::from_be_bytes(header[24..28].try_into().unwrap()).into()
}

/// One variant's row: the medians, figure by figure, of its runs.
fn row(
    variant: String,
    delay_ms: Option<u64>,
    runs: Vec<Run>,
    failures: Vec<String>,
    plain_hash: &str,
) -> Row {
    fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
        v.sort();
        v[v.len() / 2]
    }
    let median = (!runs.is_empty()).then(|| Run {
        wall: median(runs.iter().map(|r| r.wall).collect()),
        cpu: median(runs.iter().map(|r| r.cpu).collect()),
        azurite: runs
            .iter()
            .map(|r| r.azurite)
            .collect::<Option<Vec<_>>>()
            .map(median),
        http: median(runs.iter().map(|r| r.http).collect()),
        blocks: median(runs.iter().map(|r| r.blocks).collect()),
        block_lists: median(runs.iter().map(|r| r.block_lists).collect()),
        up: median(runs.iter().map(|r| r.up).collect()),
        size: median(runs.iter().map(|r| r.size).collect()),
        hash: runs[0].hash.clone(),
    });
    Row {
        variant,
        delay_ms,
        runs: runs.len(),
        same_hash: runs.iter().all(|r| r.hash == plain_hash),
        median,
        failures,
    }
}

/// The table of section S, with the ratios to plain SQLite and to the floor.
pub(super) fn speedtest1_table(w: &mut String, report: &Report) {
    let Some(plain) = report
        .rows
        .iter()
        .find_map(|r| r.median.as_ref().filter(|_| r.delay_ms.is_none()))
    else {
        return;
    };
    let _ = writeln!(
        w,
        "\n## S. SQLite's speedtest1 (`{}`: {} writing transactions), as a child process, against plain SQLite\n",
        ARGS.join(" "),
        report.commits
    );
    header(w, "| variant | runs | added delay | wall s | own CPU s (child) | Azurite CPU s | HTTP (proxy) | Put Block | Put Block List | KiB up (proxy) | database KiB | up / database | wall / plain | CPU / plain | floor s | wall / floor | wall / (floor + Azurite CPU) | verification hash |");
    let secs = |d: Duration| format!("{:.2}", d.as_secs_f64());
    let (plain_wall, plain_cpu) = (plain.wall.as_secs_f64(), plain.cpu.as_secs_f64());
    for row in &report.rows {
        let runs = match row.failures.len() {
            0 => row.runs.to_string(),
            n => format!("{} ({n} failed)", row.runs),
        };
        let delay = row.delay_ms.map_or("-".into(), |d| format!("{d} ms"));
        let Some(m) = &row.median else {
            let _ = writeln!(
                w,
                "| {} | {runs} | {delay} | failed | | | | | | | | | | | | | | |",
                row.variant
            );
            continue;
        };
        let wall = m.wall.as_secs_f64();
        let (remote, floor) = match row.delay_ms {
            None => (
                format!("- | - | - | - | - | {:.0} | -", m.size as f64 / 1024.0),
                " | | ".to_string(),
            ),
            Some(d) => {
                let floor = plain_wall + 2.0 * d as f64 / 1e3 * report.commits as f64;
                let server = m.azurite.map_or(0.0, |a| a.as_secs_f64());
                (
                    format!(
                        "{} | {} | {} | {} | {:.0} | {:.0} | {:.2}",
                        m.azurite.map_or("?".into(), secs),
                        m.http,
                        m.blocks,
                        m.block_lists,
                        m.up as f64 / 1024.0,
                        m.size as f64 / 1024.0,
                        m.up as f64 / m.size.max(1) as f64
                    ),
                    format!(
                        "{floor:.2} | {:.2} | {:.2}",
                        wall / floor,
                        wall / (floor + server)
                    ),
                )
            }
        };
        let hash = match (row.delay_ms, row.same_hash) {
            (None, true) => "(the reference)",
            (_, true) => "same as plain",
            (_, false) => "DIFFERS",
        };
        let _ = writeln!(
            w,
            "| {} | {runs} | {delay} | {wall:.2} | {} | {remote} | {:.2} | {:.2} | {floor} | {hash} |",
            row.variant,
            secs(m.cpu),
            wall / plain_wall,
            m.cpu.as_secs_f64() / plain_cpu,
        );
    }
    let _ = writeln!(
        w,
        "\n{}. Each run is a fresh database (speedtest1 creates its tables), timed from the \
         child's start to its exit (managedblob's open, first upload and last close \
         included); per round plain SQLite runs before each managedblob variant, and each \
         figure is the median of its runs. Plain SQLite: a local file, SQLite's defaults \
         (journal_mode=DELETE). managedblob: the extension preloaded, remote and flush_ms \
         from MANAGEDBLOB_*, the rest at their defaults. own CPU: the child's user + system \
         time (wait4), all its threads; Azurite CPU: its process's (utime + stime, 10 ms \
         ticks). Put Block List: the versions published (one per writing transaction when \
         uploading at COMMIT). KiB up (proxy): the request bodies the proxy forwarded \
         (heads not included); database KiB: the file at the end (plain SQLite's file, \
         managedblob's cache); up / database: the goal of issue 26 is at most 2. \
         floor = plain wall + 2 round trips (2 x the added delay) per \
         writing transaction (the file change counter of plain SQLite's database); the \
         last column adds Azurite's CPU to it, as in F. verification hash: speedtest1 \
         --verify's hash of every result, against plain SQLite's (speedtest1 ignores \
         the errors of its prepared statements: a SELECT answered SQLITE_BUSY returns \
         nothing, and the hash differs).",
        report.sqlite.trim_start_matches("-- ")
    );
    for row in report.rows.iter().filter(|r| !r.failures.is_empty()) {
        let delay = row.delay_ms.unwrap_or(0);
        for e in &row.failures {
            let _ = writeln!(w, "\nFailed: {} at {delay} ms: {e}", row.variant);
        }
    }
}
