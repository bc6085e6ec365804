//! The counter workload of the lost-update tests: one row `c(id=1, v)` that writers
//! increment in `BEGIN IMMEDIATE ... COMMIT`, retrying on SQLITE_BUSY; the final
//! value is exact when no update was lost. In-process ([`run_increments`]) or in
//! child processes (role [`INCREMENT`], driven by [`run_increment_children`]).

use std::ops::Range;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::Value;

use super::child::{self, Proc, Role};
use super::{integrity, is_busy, open, status, World};

/// How a writer paces its increments, and how long the parent waits for it.
#[derive(Clone, Debug)]
pub struct Pace {
    /// The pause after each commit, in microseconds.
    pub pause_us: Range<u64>,
    /// How long one increment may stay busy before the writer fails.
    pub busy_limit: Duration,
    /// How long a child may take to open and say READY.
    pub ready_within: Duration,
    /// How long a child may take for all its increments.
    pub done_within: Duration,
}

impl Pace {
    /// Writers that really interleave: a pause after each commit longer than
    /// SQLite's busy-handler steps (up to 100 ms apart), or the writer that holds the
    /// turn keeps it.
    pub const INTERLEAVED: Pace = Pace {
        pause_us: 5_000..120_000,
        busy_limit: Duration::from_secs(15),
        ready_within: Duration::from_secs(15),
        done_within: Duration::from_secs(40),
    };

    /// Writers as fast as they go (the soak's lost-update runs, on slower remotes).
    pub const SOAK: Pace = Pace {
        pause_us: 0..10_000,
        busy_limit: Duration::from_secs(30),
        ready_within: Duration::from_secs(30),
        done_within: Duration::from_secs(120),
    };

    fn vars(&self) -> [(&'static str, String); 3] {
        [
            ("MB_PAUSE_FROM_US", self.pause_us.start.to_string()),
            ("MB_PAUSE_TO_US", self.pause_us.end.to_string()),
            ("MB_BUSY_LIMIT_MS", self.busy_limit.as_millis().to_string()),
        ]
    }

    fn from_env() -> Pace {
        Pace {
            pause_us: child::env_num("MB_PAUSE_FROM_US")..child::env_num("MB_PAUSE_TO_US"),
            busy_limit: Duration::from_millis(child::env_num("MB_BUSY_LIMIT_MS")),
            ..Pace::SOAK
        }
    }
}

/// Create the counter table through the VFS (so the blob exists) and close.
pub fn create_counter(uri: &str) {
    let c = open(uri);
    c.execute_batch(
        "CREATE TABLE c(id INTEGER PRIMARY KEY, v INTEGER NOT NULL); INSERT INTO c VALUES (1, 0);",
    )
    .unwrap();
}

/// The counter's value in `c`.
pub fn counter(c: &Connection) -> i64 {
    c.query_row("SELECT v FROM c WHERE id = 1", [], |r| r.get(0))
        .unwrap()
}

/// One `UPDATE c SET v=v+1` in `BEGIN IMMEDIATE ... COMMIT`; rolled back on failure.
pub fn increment_once(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("BEGIN IMMEDIATE")?;
    let result = c
        .execute("UPDATE c SET v = v + 1 WHERE id = 1", [])
        .and_then(|n| {
            assert_eq!(n, 1, "the counter row is missing");
            c.execute_batch("COMMIT")
        });
    if result.is_err() && !c.is_autocommit() {
        // COMMIT can fail with BUSY and leave the transaction open.
        c.execute_batch("ROLLBACK")?;
    }
    result
}

/// `n` increments, retrying a whole transaction on SQLITE_BUSY; returns how many
/// BUSY results were retried. Any other error fails.
pub fn run_increments(c: &Connection, n: u32, who: &str, pace: &Pace) -> u32 {
    let mut busy = 0;
    for i in 0..n {
        let deadline = Instant::now() + pace.busy_limit;
        loop {
            match increment_once(c) {
                Ok(()) => {
                    thread::sleep(Duration::from_micros(fastrand::u64(pace.pause_us.clone())));
                    break;
                }
                Err(e) if is_busy(&e) => {
                    busy += 1;
                    assert!(
                        Instant::now() < deadline,
                        "{who}: increment {i} stayed busy for {:?}: {e}; status {}",
                        pace.busy_limit,
                        status(c)
                    );
                    thread::sleep(Duration::from_millis(fastrand::u64(1..10)));
                }
                Err(e) => panic!("{who}: increment {i} failed: {e}; status {}", status(c)),
            }
        }
    }
    busy
}

/// The child role `increment`: open, say READY, wait for the go file, do `MB_N`
/// increments at the parent's pace, say `DONE <n> busy=<retries> status=<json>`.
pub const INCREMENT: Role = ("increment", child_increment);

fn child_increment(uri: &str) {
    let n: u32 = child::env_num("MB_N");
    let pace = Pace::from_env();
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    child::say("READY");
    child::wait_for_file(&child::env("MB_GO_FILE"), Duration::from_secs(30));
    let busy = run_increments(&c, n, "child", &pace);
    let s = status(&c);
    child::say(&format!("DONE {n} busy={busy} status={s}"));
}

/// Spawn one `increment` child per uri, start them together, require each to finish
/// its `n` increments; returns (busy retries, final status) per child.
pub fn run_increment_children(
    w: &World,
    uris: &[String],
    n: u32,
    pace: &Pace,
) -> Vec<(u64, Value)> {
    let go = w.dir.path().join("go");
    let mut procs: Vec<Proc> = uris
        .iter()
        .enumerate()
        .map(|(i, uri)| {
            let mut vars = vec![
                ("MB_N", n.to_string()),
                ("MB_GO_FILE", go.display().to_string()),
            ];
            vars.extend(pace.vars());
            Proc::spawn(&format!("incrementer-{i}"), INCREMENT.0, uri, &vars)
        })
        .collect();
    for p in &mut procs {
        p.expect("READY", pace.ready_within);
    }
    std::fs::write(&go, b"go").unwrap();
    let mut results = Vec::new();
    for p in &mut procs {
        let done = p.expect("DONE", pace.done_within);
        println!("{}: {done}", p.name);
        assert!(done.starts_with(&format!("DONE {n} ")), "{done}");
        let (head, s) = child::split_status(&done);
        let busy: u64 = head
            .split_whitespace()
            .find_map(|w| w.strip_prefix("busy="))
            .and_then(|b| b.parse().ok())
            .expect("DONE carries busy=");
        results.push((busy, s));
        p.wait_success(Duration::from_secs(10));
    }
    results
}

/// The counter in remote blob `blob`, which must be intact.
pub fn remote_counter(w: &World, blob: &str) -> i64 {
    w.read_remote(blob, |r| {
        assert_eq!(integrity(r), "ok", "remote integrity");
        counter(r)
    })
}

/// Check the final counter in the remote and in every cache after reopening: the
/// value, integrity, and nothing left to upload.
pub fn check_counter(w: &World, uris: &[String], expected: i64) {
    assert_eq!(remote_counter(w, "a.db"), expected, "remote");
    for uri in uris {
        let c = open(uri);
        assert_eq!(counter(&c), expected, "cache of {uri} after reopening");
        assert_eq!(integrity(&c), "ok", "cache of {uri}");
        let s = status(&c);
        assert_eq!(s["dirty"], false, "{s}");
    }
}
