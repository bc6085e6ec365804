//! Processes killed with SIGKILL at awkward moments: inside a batch (alone, or with
//! another process on the same cache) and at a random point of a commit loop. Every
//! acknowledged commit survives and the cache recovers by itself. On both backends
//! (`local::<name>`, `azurite::<name>`); where they differ (the local backend
//! reclaims a dead local owner's lease at once; an Azure lease of a dead process is
//! waited out), the test says so. The random crash soak is tests/crash_soak.rs.

use common::child::{self, Proc};
use common::*;

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Explicit lease duration used by the crash tests on the local backend: well above
/// the "reclaimed, not expired" bound they assert.
const LEASE_SECS: u64 = 30;
/// On Azure a dead process's lease is waited out: the shortest lease Azure allows.
const AZURE_LEASE_SECS: u64 = 15;

/// The crash tests' lease duration on `w`'s backend.
fn crash_lease_secs(w: &World) -> u64 {
    if w.is_local() {
        LEASE_SECS
    } else {
        AZURE_LEASE_SECS
    }
}

/// Entry point of every child process; returns at once in a normal test run.
#[test]
fn child_main() {
    child::child_main(&[
        ("batch_then_sleep", batch_then_sleep),
        ("commit_loop", commit_loop),
        ("commit_one", commit_one),
    ]);
}

/// `batch_then_sleep`: begin a batch, make `MB_K` separate commits, say READY and
/// sleep until killed.
fn batch_then_sleep(uri: &str) {
    let k: i64 = child::env_num("MB_K");
    let c = open(uri);
    assert_eq!(
        pragma(&c, "PRAGMA managedblob_batch=begin")
            .unwrap()
            .as_deref(),
        Some("begin")
    );
    for i in 1..=k {
        c.execute(
            "INSERT INTO t(id, payload) VALUES (?1, ?2)",
            (i, format!("batch row {i}")),
        )
        .unwrap_or_else(|e| panic!("insert {i} inside the batch: {e}"));
    }
    let s = status(&c);
    assert_eq!(s["dirty"], true, "{s}");
    assert_eq!(s["lease_held"], true, "{s}");
    child::say(&format!("READY status={s}"));
    child::sleep_while_parent_alive(Duration::from_secs(60));
    panic!("batch_then_sleep was not killed");
}

/// `commit_one`: one autocommit insert of id `MB_ID` (the process is expected to
/// abort inside it, at the step `MANAGEDBLOB_TEST_CRASH_AT` names).
fn commit_one(uri: &str) {
    let id: i64 = child::env_num("MB_ID");
    let c = open(uri);
    c.execute("INSERT INTO t(id, payload) VALUES (?1, 'crashed')", [id])
        .unwrap_or_else(|e| panic!("insert {id}: {e}"));
    child::say(&format!("ACK {id}"));
}

/// `commit_loop`: autocommit inserts of ids `MB_START`, `MB_START + 1`, ... forever,
/// saying `ACK <id>` after each COMMIT returned OK. The busy timeout covers the
/// lease a killed predecessor may have left on Azure (it expires; it is not
/// reclaimed).
fn commit_loop(uri: &str) {
    let start: i64 = child::env_num("MB_START");
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(AZURE_LEASE_SECS * 5))
        .unwrap();
    let payload = "x".repeat(300);
    for id in start.. {
        assert!(child::parent_alive(), "the parent test process went away");
        match c.execute(
            "INSERT INTO t(id, payload) VALUES (?1, ?2)",
            (id, format!("{id}:{payload}")),
        ) {
            Ok(1) => child::say(&format!("ACK {id}")),
            Ok(n) => panic!("insert {id} changed {n} rows"),
            Err(e) => {
                child::say(&format!("ERR {id} {e}"));
                panic!("insert {id}: {e}; status {}", status(&c));
            }
        }
    }
}

/// Cache h1 of `w` with the crash tests' lease, and table `t(id, payload)` created
/// through it: (lease seconds, URI, the connection).
fn crash_setup(w: &World) -> (u64, String, Connection) {
    let lease_secs = crash_lease_secs(w);
    let uri = w.uri("h1", "a.db", &format!("&lease_secs={lease_secs}"));
    let c = open(&uri);
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, payload TEXT)")
        .unwrap();
    (lease_secs, uri, c)
}

/// The ids in table `t`.
fn ids(c: &Connection) -> BTreeSet<i64> {
    column(c, "SELECT id FROM t ORDER BY id")
}

/// Flush `c` until its local commits are uploaded: on Azure a killed process's lease
/// is not reclaimed but waited out (the flush fails while it is held). Returns how
/// long that took.
fn flush_once_the_lease_is_free(c: &Connection, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match pragma(c, "PRAGMA managedblob_flush") {
            Ok(_) if status(c)["dirty"] == false => return started.elapsed(),
            Ok(_) => {}
            Err(e) => println!("flush while the lease is held: {e}"),
        }
        assert!(
            started.elapsed() < limit,
            "the local commits were not uploaded within {limit:?}; status {}",
            status(c)
        );
        thread::sleep(Duration::from_millis(250));
    }
}

/// Run `commit_loop` from id `start` on `uri` until it acknowledged `acks` commits,
/// let it go on for `pause`, SIGKILL it: every id it acknowledged.
fn commit_then_sigkill(
    name: &str,
    uri: &str,
    start: i64,
    acks: usize,
    pause: Duration,
    lease_secs: u64,
) -> BTreeSet<i64> {
    let mut child = Proc::spawn(name, "commit_loop", uri, &[("MB_START", start.to_string())]);
    let mut acked = BTreeSet::new();
    for _ in 0..acks {
        let m = child.expect("ACK", Duration::from_secs(lease_secs + 30));
        acked.insert(m["ACK ".len()..].trim().parse().unwrap());
    }
    thread::sleep(pause);
    child.sigkill();
    for m in child.drain() {
        if let Some(id) = m.strip_prefix("ACK ") {
            acked.insert(id.trim().parse().unwrap());
        } else {
            panic!("unexpected message {m}\n{}", child.output());
        }
    }
    acked
}

/// Commits inside a batch are local until the batch ends. A process killed inside
/// the batch leaves a dirty cache; the next open uploads those commits at once:
/// the dead process's lease is reclaimed, not waited out (on Azure through the lease
/// the sidecar records).
fn sigkill_inside_batch_commits_reach_remote_on_next_open(w: &World) {
    const K: i64 = 20;
    let (lease_secs, uri, c) = crash_setup(w);
    drop(c);
    let cache = w.cache("h1", "a.db");

    let mut child = Proc::spawn(
        "batcher",
        "batch_then_sleep",
        &uri,
        &[("MB_K", K.to_string())],
    );
    let ready = child.expect("READY", Duration::from_secs(15));
    println!("{ready}");
    child.sigkill();

    // The batch's commits are in the cache only.
    let remote_rows: i64 = w.read_remote("a.db", |r| {
        r.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    });
    assert_eq!(
        remote_rows, 0,
        "batch commits must not reach the remote before the batch ends"
    );
    let side = sidecar(&cache);
    assert_eq!(side["dirty"], true, "sidecar after the kill: {side}");
    let local_rows: i64 = {
        let plain = Connection::open_with_flags(&cache, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
        plain
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(local_rows, K, "the cache holds the batch's commits");
    if w.is_local() {
        let leases = files_with(&w.remote(), ".mb-lease");
        assert_eq!(
            leases.len(),
            1,
            "the dead process left its lease behind: {leases:?}"
        );
    }

    let started = Instant::now();
    let c = open(&uri);
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let s = status(&c);
    let took = started.elapsed();
    println!("reopen took {took:?}; status {s}");
    assert_eq!(n, K);
    assert!(
        took < Duration::from_secs(10),
        "reopening waited {took:?} (lease {lease_secs} s): reads must not wait for the lease"
    );
    // Reclaimed at once on both: the local backend's lease names its owner; on
    // Azure the sidecar records the lease and its owner (tests/lease_reclaim.rs).
    assert_eq!(
        s["dirty"], false,
        "the dead owner's lease should have been reclaimed at once: {s}"
    );
    let s = status(&c);
    assert_eq!(s["dirty"], false, "status after reopen: {s}");
    assert_eq!(s["lease_held"], false, "{s}");
    assert!(uploads(&s) >= 1, "{s}");
    assert_eq!(sidecar(&cache)["dirty"], false);

    let (remote_ids, ok) = w.read_remote("a.db", |r| (ids(r), integrity(r)));
    assert_eq!(ok, "ok");
    assert_eq!(remote_ids, (1..=K).collect::<BTreeSet<_>>());
}

/// Like the test above, but another process has the same cache open all along (and
/// idle) while the batch runs and dies. Its next write takes the dead process's lease
/// (at once on the local backend, in its busy handler once it expired on Azure) and
/// uploads the batch's commits together with its own.
fn sigkill_inside_batch_with_another_process_on_the_same_cache(w: &World) {
    const K: i64 = 20;
    let (lease_secs, uri, c) = crash_setup(w);
    let cache = w.cache("h1", "a.db");
    c.busy_timeout(Duration::from_secs(lease_secs * 5)).unwrap();
    // The child's batch takes the lease at once (a batch begin does not wait):
    // the one kept warm after the setup's write goes back first.
    wait::until_lease_released(&c);

    let mut child = Proc::spawn(
        "batcher",
        "batch_then_sleep",
        &uri,
        &[("MB_K", K.to_string())],
    );
    child.expect("READY", Duration::from_secs(15));
    child.sigkill();
    assert_eq!(sidecar(&cache)["dirty"], true);

    let started = Instant::now();
    c.execute("INSERT INTO t(id, payload) VALUES (?1, 'parent')", [K + 1])
        .unwrap_or_else(|e| {
            panic!(
                "write after the batch holder died: {e}; status {}",
                status(&c)
            )
        });
    let took = started.elapsed();
    let s = status(&c);
    println!("write took {took:?}; status {s}");
    let bound = if w.is_local() {
        // The dead owner's lease is reclaimed.
        Duration::from_secs(10)
    } else {
        // The dead owner's lease expires (at most lease_secs), with 5x slack.
        Duration::from_secs(lease_secs * 5)
    };
    assert!(
        took < bound,
        "the write waited {took:?} (lease {lease_secs} s)"
    );
    assert_eq!(s["dirty"], false, "{s}");
    assert_eq!(sidecar(&cache)["dirty"], false);
    let (remote_ids, ok) = w.read_remote("a.db", |r| (ids(r), integrity(r)));
    assert_eq!(ok, "ok");
    assert_eq!(remote_ids, (1..=K + 1).collect::<BTreeSet<_>>());
}

/// A process killed at a random point of an autocommit loop: every acknowledged
/// commit is in the remote, the remote is intact, and the cache recovers by itself.
/// Three rounds (two on Azure), each continuing the same cache, to hit different
/// points. On Azure the next round waits out the lease the killed process most likely
/// held mid-commit (up to 15 s), hence one round fewer there.
fn sigkill_mid_commit_loop(w: &World) {
    const ACKS: usize = 30;
    let rounds = if w.is_local() { 3 } else { 2 };
    let (lease_secs, uri, c) = crash_setup(w);
    drop(c);

    let mut acked: BTreeSet<i64> = BTreeSet::new();
    let mut next = 1i64;
    for round in 0..rounds {
        acked.extend(commit_then_sigkill(
            &format!("committer-{round}"),
            &uri,
            next,
            ACKS + round,
            Duration::from_micros(fastrand::u64(0..3000)),
            lease_secs,
        ));
        let last_ack = *acked.last().unwrap();

        // Outside a batch a COMMIT returns only after its upload: every acknowledged
        // id is in the remote already, before anything reopens the cache.
        let before = w.read_remote("a.db", ids);
        let missing: Vec<_> = acked.difference(&before).collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged ids not in the remote right after the kill: {missing:?}"
        );

        let c = open(&uri);
        let cached = ids(&c);
        let mut s = status(&c);
        if s["dirty"] == true {
            flush_once_the_lease_is_free(&c, Duration::from_secs(lease_secs + 20));
            s = status(&c);
        }
        assert_eq!(s["dirty"], false, "round {round}: status after reopen: {s}");
        assert_eq!(integrity(&c), "ok", "round {round}: cache integrity");

        let (remote_ids, ok) = w.read_remote("a.db", |r| (ids(r), integrity(r)));
        assert_eq!(ok, "ok", "round {round}: remote integrity");
        let lost: Vec<_> = acked.difference(&remote_ids).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged ids missing from the remote: {lost:?}"
        );
        let max = *remote_ids.last().unwrap();
        assert!(
            max == last_ack || max == last_ack + 1,
            "round {round}: remote ends at {max}, last acknowledged {last_ack}"
        );
        assert_eq!(
            remote_ids,
            (1..=max).collect::<BTreeSet<_>>(),
            "round {round}: remote ids are not contiguous"
        );
        assert_eq!(
            cached, remote_ids,
            "round {round}: the reopened cache differs from the remote"
        );
        println!(
            "round {round}: {} acked, remote up to {max}, status {s}",
            acked.len()
        );
        next = max + 1;
    }
}

/// A process that dies after the remote took its commit, before the cache records
/// it (a clean commit saves its sidecar once, at COMMIT_PHASETWO): at
/// `commit-published` SQLite has not finished the local commit (a hot journal is
/// left), at `commit-phase-two` it has (the sidecar still names the old base).
/// Either way the next open of the same cache has the row exactly once, is
/// identical to the remote, and its next commit lands on top of the crashed one.
fn a_crash_between_a_commits_upload_and_its_sidecar_save_loses_nothing(w: &World) {
    crash_between_upload_and_save(w, "");
}

/// The same with `fetch=lazy`: the chunk list beside the sidecar already names the
/// new version when the process dies at `commit-published`, so the hot journal's
/// rollback has no list for the old base (before, every later open failed with a
/// disk I/O error); the open takes the remote instead.
fn a_lazy_cache_crashed_between_a_commits_upload_and_its_end_reopens(w: &World) {
    crash_between_upload_and_save(w, "&fetch=lazy");
}

fn crash_between_upload_and_save(w: &World, extra: &str) {
    for (host, step, hot) in [
        ("h1", "commit-published", true),
        ("h2", "commit-phase-two", false),
    ] {
        let lease_secs = crash_lease_secs(w);
        let uri = w.uri(
            host,
            &format!("{host}.db"),
            &format!("&lease_secs={lease_secs}{extra}"),
        );
        {
            let c = open(&uri);
            c.execute_batch(
                "CREATE TABLE t(id INTEGER PRIMARY KEY, payload TEXT);
                 INSERT INTO t VALUES (1, 'before');",
            )
            .unwrap();
        }
        let before = sidecar_of(&w.cache(host, &format!("{host}.db"))).unwrap();
        let mut child = Proc::spawn(
            step,
            "commit_one",
            &uri,
            &[
                ("MB_ID", "2".to_string()),
                ("MANAGEDBLOB_TEST_CRASH_AT", step.to_string()),
            ],
        );
        let exit = child.wait_exit(Duration::from_secs(60));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&exit),
            Some(libc::SIGABRT),
            "{step}: the child should have died there\n{}",
            child.output()
        );
        let cache = w.cache(host, &format!("{host}.db"));
        let mut journal = cache.clone().into_os_string();
        journal.push("-journal");
        assert_eq!(
            std::path::Path::new(&journal).exists(),
            hot,
            "{step}: the hot journal"
        );
        let after = sidecar_of(&cache).unwrap();
        assert_eq!(
            after["base"], before["base"],
            "{step}: no save after the upload"
        );
        let remote: BTreeSet<i64> =
            w.read_remote(&format!("{host}.db"), |r| column(r, "SELECT id FROM t"));
        assert_eq!(
            remote,
            BTreeSet::from([1, 2]),
            "{step}: the remote took the commit"
        );

        let c = open(&uri);
        c.busy_timeout(Duration::from_secs(lease_secs * 4)).unwrap();
        assert_eq!(ids(&c), BTreeSet::from([1, 2]), "{step}");
        assert_eq!(integrity(&c), "ok", "{step}");
        c.execute("INSERT INTO t VALUES (3, 'after')", [])
            .unwrap_or_else(|e| panic!("{step}: the next commit: {e}"));
        let remote: BTreeSet<i64> =
            w.read_remote(&format!("{host}.db"), |r| column(r, "SELECT id FROM t"));
        assert_eq!(remote, BTreeSet::from([1, 2, 3]), "{step}");
        let s = status(&c);
        assert_eq!(s["dirty"], false, "{step}: {s}");
        assert_eq!(s["in_flight"], "none", "{step}: {s}");
        drop(c);
        let side = sidecar_of(&cache).unwrap();
        assert_eq!(side["in_flight"], "none", "{step}: {side}");
        assert_eq!(side["dirty"], false, "{step}: {side}");
    }
}

/// `flush_ms`: a process committing in a loop dies right after a background upload
/// landed, before it recorded it; the commits it made meanwhile (durable in the
/// cache, acknowledged) are uploaded on top of that upload by the next open on this
/// machine, and none becomes a conflict copy.
fn a_crash_after_a_background_upload_landed_keeps_the_later_commits(w: &World) {
    let (lease_secs, _, c) = crash_setup(w);
    drop(c);
    let uri = w.uri(
        "h1",
        "a.db",
        &format!("&lease_secs={lease_secs}&flush_ms=20"),
    );
    let mut child = Proc::spawn(
        "deferring writer",
        "commit_loop",
        &uri,
        &[
            ("MB_START", "1".to_string()),
            (
                "MANAGEDBLOB_TEST_CRASH_AT",
                "background-upload-landed".to_string(),
            ),
        ],
    );
    let exit = child.wait_exit(Duration::from_secs(120));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(libc::SIGABRT),
        "the child should have died after its first background upload\n{}",
        child.output()
    );
    let acked: BTreeSet<i64> = child
        .drain()
        .iter()
        .filter_map(|m| m.strip_prefix("ACK ")?.trim().parse().ok())
        .collect();
    assert!(!acked.is_empty(), "{}", child.output());
    let landed: BTreeSet<i64> = w.read_remote("a.db", |r| column(r, "SELECT id FROM t"));
    println!(
        "{} acknowledged, {} in the landed upload",
        acked.len(),
        landed.len()
    );
    let side = sidecar_of(&w.cache("h1", "a.db")).unwrap();
    assert!(side["uploading"]["blocks"].is_array(), "{side}");

    let c = open(&uri);
    c.busy_timeout(Duration::from_secs(lease_secs * 4)).unwrap();
    let here = ids(&c);
    assert!(acked.is_subset(&here), "acknowledged commits lost locally");
    pragma(&c, "PRAGMA managedblob_flush").unwrap();
    let s = status(&c);
    assert_eq!(s["dirty"], false, "{s}");
    assert!(s["conflicts"].as_array().unwrap().is_empty(), "{s}");
    let remote: BTreeSet<i64> = w.read_remote("a.db", |r| column(r, "SELECT id FROM t"));
    assert!(
        acked.is_subset(&remote),
        "acknowledged commits missing from the remote"
    );
    assert_eq!(remote, here);
    assert_eq!(integrity(&c), "ok");
}

/// `flush_ms`: a process committing in a loop, SIGKILLed at random moments (with
/// uploads every 10 ms, often while one is in flight without the locks). Each
/// reopen on this machine uploads what was left: every acknowledged commit reaches
/// the remote, none becomes a conflict copy, the cache equals the remote.
fn sigkill_while_deferring_loses_no_acknowledged_commit(w: &World) {
    let rounds = if w.is_local() { 6 } else { 3 };
    let (lease_secs, _, c) = crash_setup(w);
    drop(c);
    let uri = w.uri(
        "h1",
        "a.db",
        &format!("&lease_secs={lease_secs}&flush_ms=10"),
    );
    let mut acked: BTreeSet<i64> = BTreeSet::new();
    let mut next = 1i64;
    for round in 0..rounds {
        acked.extend(commit_then_sigkill(
            &format!("deferring-{round}"),
            &uri,
            next,
            fastrand::usize(5..40),
            Duration::from_millis(fastrand::u64(0..30)),
            lease_secs,
        ));
        let c = open(&uri);
        c.busy_timeout(Duration::from_secs(lease_secs * 4)).unwrap();
        let cached = ids(&c);
        flush_once_the_lease_is_free(&c, Duration::from_secs(lease_secs + 20));
        let s = status(&c);
        assert!(
            s["conflicts"].as_array().unwrap().is_empty(),
            "round {round}: {s}"
        );
        assert_eq!(integrity(&c), "ok", "round {round}");
        let remote = w.read_remote("a.db", ids);
        let lost: Vec<_> = acked.difference(&remote).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged ids lost: {lost:?}"
        );
        assert_eq!(
            cached, remote,
            "round {round}: the cache differs from the remote"
        );
        println!(
            "round {round}: {} acknowledged, remote holds {}",
            acked.len(),
            remote.len()
        );
        next = remote.last().copied().unwrap_or(0) + 1;
        drop(c);
    }
}

backend_tests!(
    sigkill_while_deferring_loses_no_acknowledged_commit,
    a_crash_after_a_background_upload_landed_keeps_the_later_commits,
    a_crash_between_a_commits_upload_and_its_sidecar_save_loses_nothing,
    a_lazy_cache_crashed_between_a_commits_upload_and_its_end_reopens,
    sigkill_inside_batch_commits_reach_remote_on_next_open,
    sigkill_inside_batch_with_another_process_on_the_same_cache,
    sigkill_mid_commit_loop,
);
