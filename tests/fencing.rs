//! Fencing: the lease and the If-Match condition keep a writer that lost its turn
//! from overwriting another host's version. A writer paused with SIGSTOP past its
//! lease (in a batch or inside an open transaction, both sync modes) cannot
//! overwrite what another host wrote meanwhile, and its batch commit is kept aside
//! as a conflict copy; a dead owner's lease is reclaimed at once (local backend);
//! a held lease makes another host's write BUSY until it ends. The figures are in
//! docs/RELIABILITY.md. Children are this test binary re-executed
//! (tests/common/child.rs).

use common::child::{self, Proc};
use common::*;

use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Entry point of every child process; returns at once in a normal test run.
#[test]
fn child_main() {
    child::child_main(&[("hold", hold), ("batch_hold", batch_hold)]);
}

/// `hold`: start a write (`MB_MODE=batch`: a batch with one commit, 'paused'; `txn`:
/// an open `BEGIN IMMEDIATE` transaction with one insert), say READY, wait for the
/// file `MB_GO_FILE` (the parent stops this process meanwhile), then finish it
/// (batch end / COMMIT) and say `END ok` or `END failed: <error>`, with the status.
/// The busy timeout is `MB_BUSY_MS` (5 s when unset).
fn hold(uri: &str) {
    let mode = child::env("MB_MODE");
    let c = open(uri);
    c.busy_timeout(Duration::from_millis(child::setting("MB_BUSY_MS", 5000)))
        .unwrap();
    match mode.as_str() {
        "batch" => {
            pragma(&c, "PRAGMA managedblob_batch=begin").unwrap();
            c.execute("INSERT INTO t(who) VALUES ('paused')", [])
                .unwrap();
        }
        "txn" => {
            c.execute_batch("BEGIN IMMEDIATE; INSERT INTO t(who) VALUES ('paused');")
                .unwrap();
        }
        other => panic!("unknown mode {other}"),
    }
    let s = status(&c);
    assert_eq!(s["lease_held"], true, "{s}");
    if mode == "batch" {
        assert_eq!(s["dirty"], true, "{s}");
    }
    child::say("READY");
    child::wait_for_file(&child::env("MB_GO_FILE"), Duration::from_secs(120));
    let result = match mode.as_str() {
        "batch" => pragma(&c, "PRAGMA managedblob_batch=end").map(|_| ()),
        _ => c.execute_batch("COMMIT"),
    };
    if result.is_err() && !c.is_autocommit() {
        c.execute_batch("ROLLBACK").unwrap();
    }
    let outcome = match result {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("failed: {e}"),
    };
    let s = status(&c);
    child::say(&format!("END {outcome} status={s}"));
}

/// `batch_hold`: begin a batch (taking the lease), insert one row, say READY, hold
/// the batch until the file `MB_GO_FILE` appears, end it (uploading) and say ENDED.
fn batch_hold(uri: &str) {
    let go = child::env("MB_GO_FILE");
    let who = child::env("MB_WHO");
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        pragma(&c, "PRAGMA managedblob_batch=begin")
            .unwrap()
            .as_deref(),
        Some("begin")
    );
    c.execute("INSERT INTO t(who) VALUES (?1)", [&who]).unwrap();
    let s = status(&c);
    assert_eq!(s["lease_held"], true, "{s}");
    child::say("READY");
    child::wait_for_file(&go, Duration::from_secs(120));
    assert_eq!(
        pragma(&c, "PRAGMA managedblob_batch=end")
            .unwrap()
            .as_deref(),
        Some("end")
    );
    let s = status(&c);
    assert_eq!(s["dirty"], false, "{s}");
    assert_eq!(s["lease_held"], false, "{s}");
    child::say(&format!("ENDED status={s}"));
}

// ---------------------------------------------------------------------------
// A held lease

/// One host holds the lease in a batch; another host's write fails with BUSY at
/// busy_timeout 0, and with a busy handler it waits: the handler's first call is what
/// tells the holder to end its batch (an explicit hand-off, no timing), so the write
/// goes through the busy-handler path and succeeds once the batch ended.
fn lease_contention_between_processes(w: &World) {
    // The holder's batch takes the lease right after this table's creation: the
    // lease is not kept warm here.
    let mut c = w.open_with("p", "a.db", "&lease_linger_ms=0");
    c.execute_batch("CREATE TABLE t(who TEXT)").unwrap();

    let go = w.dir.path().join("go-holder");
    let mut a = Proc::spawn(
        "holder",
        "batch_hold",
        &w.uri("a", "a.db", ""),
        &[
            ("MB_GO_FILE", go.display().to_string()),
            ("MB_WHO", "a".into()),
        ],
    );
    a.expect("READY", Duration::from_secs(15));

    c.busy_timeout(Duration::ZERO).unwrap();
    let err = c
        .execute("INSERT INTO t(who) VALUES ('p')", [])
        .expect_err("the lease is held by the other process: the insert must fail");
    assert!(is_busy(&err), "expected SQLITE_BUSY, got {err:?}");
    assert!(err.to_string().contains("database is locked"), "{err}");
    assert!(c.is_autocommit());

    handoff::on_first_busy(&mut c, move || std::fs::write(go, b"go").unwrap());
    c.execute("INSERT INTO t(who) VALUES ('p')", [])
        .unwrap_or_else(|e| panic!("insert after the holder's end: {e}\n{}", a.output()));
    let calls = handoff::busy_calls();
    assert!(
        calls >= 1,
        "the write waited in its busy handler ({calls} calls)"
    );
    println!(
        "second insert done after {calls} busy-handler calls; status {}",
        status(&c)
    );
    let ended = a.expect("ENDED", Duration::from_secs(10));
    println!("holder: {ended}");
    a.wait_success(Duration::from_secs(10));

    let s = status(&c);
    assert_eq!(s["dirty"], false, "{s}");
    let (mut who, ok) = w.read_remote("a.db", |r| (who(r), integrity(r)));
    who.sort();
    assert_eq!(ok, "ok");
    assert_eq!(who, ["a", "p"]);
}

/// The `who` column of table `t`, in insertion order.
fn who(c: &Connection) -> Vec<String> {
    column(c, "SELECT who FROM t ORDER BY rowid")
}

backend_tests!(lease_contention_between_processes);

// ---------------------------------------------------------------------------
// A writer paused past its lease, on every backend

/// The lease of the paused writer: Azure's shortest, on both backends.
const PAUSE_LEASE_SECS: u64 = 15;

/// A writer (process A, another host) begins a batch, holding the lease for
/// `PAUSE_LEASE_SECS`, commits locally and is stopped with SIGSTOP: its lease
/// renewal thread stops with it. While the lease is valid the other host cannot
/// write; once it has expired, it writes. A then resumes and ends its batch: the
/// upload must fail with a clear error (the lease is lost, the remote moved), the
/// remote must keep exactly the other host's version, and A's cache recovers at its
/// next open, its batch commit kept aside as a conflict copy.
fn a_writer_paused_past_its_lease(w: &World) {
    let tag = w.backend_name();
    let go = w.dir.path().join("go");
    {
        let b = w.open("b", "a.db");
        b.execute_batch("CREATE TABLE t(who TEXT)").unwrap();
    }
    let uri_a = w.uri("a", "a.db", &format!("&lease_secs={PAUSE_LEASE_SECS}"));
    let mut a = Proc::spawn(
        &format!("paused-{tag}"),
        "hold",
        &uri_a,
        &[
            ("MB_MODE", "batch".to_string()),
            ("MB_BUSY_MS", "0".to_string()),
            ("MB_GO_FILE", go.display().to_string()),
        ],
    );
    a.expect("READY", Duration::from_secs(30));
    a.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let before = w.remote_bytes("a.db").unwrap();

    // The paused writer is alive: its lease holds while it is valid.
    let b = w.open("b", "a.db");
    b.busy_timeout(Duration::ZERO).unwrap();
    let err = b
        .execute("INSERT INTO t(who) VALUES ('too early')", [])
        .expect_err("the paused writer's lease is still valid");
    assert!(is_busy(&err), "{tag}: {err}");
    assert!(w.remote_bytes("a.db").unwrap() == before, "{tag}");

    // Its lease expires at most PAUSE_LEASE_SECS after the stop (the last renewal
    // came before it): the other host's busy handler waits for that, no sleep.
    b.busy_timeout(Duration::from_secs(PAUSE_LEASE_SECS * 5))
        .unwrap();
    b.execute("INSERT INTO t(who) VALUES ('other host')", [])
        .unwrap_or_else(|e| {
            panic!(
                "{tag}: the other host's write after the lease expired: {e}; status {}\n{}",
                status(&b),
                a.output()
            )
        });
    println!(
        "{tag}: the other host wrote {:?} after the pause",
        stopped.elapsed()
    );
    drop(b);
    let after_b = w.remote_bytes("a.db").unwrap();
    assert!(
        after_b != before,
        "{tag}: the other host's write is not in the remote"
    );

    // Resume the paused writer and let it end its batch.
    std::fs::write(&go, b"go").unwrap();
    a.signal(libc::SIGCONT);
    let end = a.expect("END", Duration::from_secs(60));
    println!("{tag}: {end}");
    let (outcome, s) = child::split_status(&end);
    assert!(
        outcome.starts_with("END failed:"),
        "{tag}: the resumed writer's batch end must fail: {end}"
    );
    let last_error = s["last_error"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        ["lease", "changed", "condition"]
            .iter()
            .any(|word| last_error.contains(word)),
        "{tag}: the error does not say the lease was lost or the remote moved: {end}"
    );
    assert_eq!(s["lease_held"], false, "{tag}: {s}");
    a.wait_success(Duration::from_secs(30));

    // Nothing of the paused writer reached the remote, before or after it exited.
    assert!(
        w.remote_bytes("a.db").unwrap() == after_b,
        "{tag}: the remote changed after the paused writer resumed"
    );
    let (who_remote, ok) = w.read_remote("a.db", |r| (who(r), integrity(r)));
    assert_eq!(ok, "ok", "{tag}");
    assert_eq!(who_remote, ["other host"], "{tag}");

    // The paused writer's cache recovers: it follows the remote, and its batch's
    // local commit is kept aside rather than lost.
    let c = open(&uri_a);
    assert_eq!(who(&c), ["other host"], "{tag}: the paused writer's cache");
    let s = status(&c);
    assert_eq!(s["dirty"], false, "{tag}: {s}");
    let conflicts = s["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{tag}: {s}");
    let kept = Connection::open(conflicts[0].as_str().unwrap()).unwrap();
    assert_eq!(who(&kept), ["paused"], "{tag}: the conflict copy");
    drop(c);
    assert!(
        w.remote_bytes("a.db").unwrap() == after_b,
        "{tag}: the recovery changed the remote"
    );
}

/// [`a_writer_paused_past_its_lease`] on both backends at once (each waits out a
/// 15 s lease): the local backend, and Azurite with the `azure` feature.
#[test]
fn a_writer_paused_past_its_lease_on_every_backend() {
    thread::scope(|scope| {
        let local = scope.spawn(|| a_writer_paused_past_its_lease(&World::local()));
        #[cfg(feature = "azure")]
        let azurite = scope.spawn(|| {
            if let Some(w) = World::azurite() {
                a_writer_paused_past_its_lease(&w);
            }
        });
        let mut failed = Vec::new();
        if local.join().is_err() {
            failed.push("local");
        }
        #[cfg(feature = "azure")]
        if azurite.join().is_err() {
            failed.push("azurite");
        }
        assert!(
            failed.is_empty(),
            "failed on {failed:?} (see the panics above)"
        );
    });
}

// ---------------------------------------------------------------------------
// Paused in a batch or a transaction, both sync modes; a dead owner (local)

/// A writer (one in a batch, one inside an open transaction, on two blobs) is
/// paused with SIGSTOP while it holds the lease. Another host cannot take the lease
/// while it is valid (the paused process is alive), takes it once it expired, and
/// writes. When the paused writer resumes and finishes, its upload is refused: the
/// remote keeps exactly the other host's version, and the paused batch's commit is
/// kept aside as a conflict copy, not lost.
#[test]
fn fencing_a_writer_paused_past_its_lease_cannot_overwrite() {
    const LEASE_SECS: u64 = 15;
    let w = World::new();
    let go = w.dir.path().join("go");
    let mut paused = Vec::new();
    for (hold, sync, blob) in [
        ("batch", "delta", "x.db"),
        ("txn", "delta", "y.db"),
        ("batch", "full", "xf.db"),
        ("txn", "full", "yf.db"),
    ] {
        let c = w.open("b", blob);
        c.execute_batch("CREATE TABLE t(who TEXT)").unwrap();
        drop(c);
        let uri = w.uri(
            &format!("a-{hold}-{sync}"),
            blob,
            &format!("&lease_secs={LEASE_SECS}&sync={sync}"),
        );
        let p = Proc::spawn(
            &format!("paused-{hold}-{sync}"),
            "hold",
            &uri,
            &[
                ("MB_MODE", hold.to_string()),
                ("MB_GO_FILE", go.display().to_string()),
            ],
        );
        paused.push((format!("{hold}, sync={sync}"), blob, uri, p));
    }
    let mut ready = Vec::new();
    for (_, _, _, p) in &mut paused {
        p.expect("READY", Duration::from_secs(30));
        p.signal(libc::SIGSTOP);
        ready.push(Instant::now());
    }
    // What each stopped holder's lease file says: a stopped process renews nothing,
    // so this expiry is final.
    let expiries: Vec<u64> = paused
        .iter()
        .map(|(_, blob, _, _)| lease_expiry_ms(&w, blob))
        .collect();

    // The lease of a paused (alive) holder is not reclaimed early.
    for (_, blob, _, _) in &paused {
        let b = w.open("b", blob);
        b.busy_timeout(Duration::from_millis(500)).unwrap();
        let err = b
            .execute("INSERT INTO t(who) VALUES ('too early')", [])
            .expect_err("the paused writer's lease is still valid");
        assert!(is_busy(&err), "{blob}: {err}");
    }
    // Once it expired, the other host writes (waiting in its busy handler).
    let mut after_b = Vec::new();
    for (i, (mode, blob, _, p)) in paused.iter().enumerate() {
        let b = w.open("b", blob);
        b.busy_timeout(Duration::from_secs(40)).unwrap();
        b.execute("INSERT INTO t(who) VALUES ('other host')", [])
            .unwrap_or_else(|e| panic!("{mode}: the other host's write: {e}\n{}", p.output()));
        let waited = ready[i].elapsed();
        println!("FIGURES fencing {mode}: the other host wrote {waited:?} after the pause");
        assert!(
            unix_ms() >= expiries[i],
            "{mode}: the lease of a live holder was taken before its expiry ({} ms early)",
            expiries[i] - unix_ms()
        );
        after_b.push(std::fs::read(w.remote_blob(blob)).unwrap());
    }

    // Resume the paused writers and let them finish.
    std::fs::write(&go, b"go").unwrap();
    for (i, (mode, blob, uri, p)) in paused.iter_mut().enumerate() {
        p.signal(libc::SIGCONT);
        let end = p.expect("END", Duration::from_secs(30));
        println!("{mode}: {end}");
        assert!(
            end.starts_with("END failed:"),
            "{mode}: the resumed writer's commit must fail: {end}"
        );
        let (_, s) = child::split_status(&end);
        assert_eq!(s["lease_held"], false, "{mode}: {s}");
        p.wait_success(Duration::from_secs(15));
        let now = std::fs::read(w.remote_blob(blob)).unwrap();
        assert!(
            now == after_b[i],
            "{mode}: the remote changed after the paused writer resumed"
        );
        let in_remote = read_remote(&w.remote_blob(blob), |r| {
            assert_eq!(integrity(r), "ok");
            who(r)
        });
        assert_eq!(in_remote, ["other host"], "{mode}");

        // The paused writer's cache recovers: it follows the remote, and a batch's
        // local commit is kept aside rather than lost.
        let c = open(uri);
        assert_eq!(who(&c), ["other host"], "{mode}: the paused writer's cache");
        let s = status(&c);
        assert_eq!(s["dirty"], false, "{s}");
        let conflicts = s["conflicts"].as_array().unwrap();
        if mode.starts_with("batch") {
            assert_eq!(conflicts.len(), 1, "{s}");
            let kept: String = Connection::open(conflicts[0].as_str().unwrap())
                .unwrap()
                .query_row("SELECT who FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(kept, "paused", "the batch's commit is in the conflict copy");
        } else {
            assert!(conflicts.is_empty(), "{s}");
        }
        drop(c);
        assert!(std::fs::read(w.remote_blob(blob)).unwrap() == after_b[i]);
    }
}

/// The local backend's lease of a dead owner (same host and boot, pid gone) is
/// reclaimed at once by another host, without waiting for its expiry (60 s here).
#[test]
fn fencing_a_dead_owners_lease_is_reclaimed_at_once() {
    let w = World::new();
    let go = w.dir.path().join("go-never");
    {
        let c = w.open("b", "a.db");
        c.execute_batch("CREATE TABLE t(who TEXT)").unwrap();
    }
    let uri = w.uri("a", "a.db", "&lease_secs=60");
    let mut p = Proc::spawn(
        "holder",
        "hold",
        &uri,
        &[
            ("MB_MODE", "batch".to_string()),
            ("MB_GO_FILE", go.display().to_string()),
        ],
    );
    p.expect("READY", Duration::from_secs(30));
    p.sigkill();
    let leases = files_with(&w.remote(), ".mb-lease");
    assert_eq!(leases.len(), 1, "the dead holder left its lease file");

    let b = w.open("b", "a.db");
    b.busy_timeout(Duration::ZERO).unwrap();
    let t0 = Instant::now();
    b.execute("INSERT INTO t(who) VALUES ('other host')", [])
        .unwrap_or_else(|e| panic!("the dead owner's lease was not reclaimed: {e}"));
    let took = t0.elapsed();
    println!("FIGURES dead owner's lease (60 s) reclaimed by another host in {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(b);
    let after = std::fs::read(w.remote_blob("a.db")).unwrap();

    // The dead holder's batch commit was never uploaded; its cache keeps it aside.
    let c = open(&uri);
    let who: String = c.query_row("SELECT who FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(who, "other host");
    let s = status(&c);
    assert_eq!(s["conflicts"].as_array().unwrap().len(), 1, "{s}");
    drop(c);
    assert!(std::fs::read(w.remote_blob("a.db")).unwrap() == after);
}

/// Milliseconds since the epoch, the local backend's lease clock.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The expiry recorded in the local remote's lease file of `blob`.
fn lease_expiry_ms(w: &World, blob: &str) -> u64 {
    let path = w.remote().join(format!(".{blob}.mb-lease"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("lease file {}: {e}", path.display()));
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    record["expires_unix_ms"].as_u64().expect("expires_unix_ms")
}
