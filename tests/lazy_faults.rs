//! Faults met by a lazy cache (`fetch=lazy`, docs/ARCHITECTURE.md "Lazy fetch",
//! "Faults"; issue 24 item 10): a SIGKILL during a fetch or an eviction, a full disk
//! during a fetch, an unreachable remote during a lazy read, and a block list that
//! lies. A lazy cache never serves a byte it did not check: each query answers
//! right or fails with an error.
//!
//! The kill soak runs a few rounds per backend here (`MANAGEDBLOB_LAZY_KILLS`, default
//! 3); the long soak is `#[ignore]`d:
//! `MANAGEDBLOB_LAZY_KILLS=100 cargo test --features azure --release --test lazy_faults
//! -- --ignored --nocapture`.

use common::child::{self, setting, Proc};
use common::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

/// Entry point of every child process; returns at once in a normal test run.
#[test]
fn child_main() {
    child::child_main(&[("committer", committer), ("reader", reader)]);
}

/// Rows of [`ROW`] random bytes in `t`: about 4 MiB, some 64 chunks of 64 KiB.
const ROWS: i64 = 240;
const ROW: i64 = 16384;

/// `a.db` with `t(id, b)` and an empty `acks(id)`, written by host `h1` (a full
/// cache), which is closed.
fn build(uri: &str) {
    let c = open(uri);
    c.execute_batch(&format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         CREATE TABLE acks(id INTEGER PRIMARY KEY);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO t SELECT i, randomblob({ROW}) FROM n;"
    ))
    .unwrap();
}

/// Every row of `t` and every id of `acks`, for comparing copies.
type Rows = (Vec<(i64, Vec<u8>)>, Vec<i64>);

fn rows(c: &Connection) -> rusqlite::Result<Rows> {
    let mut q = c.prepare("SELECT id, b FROM t ORDER BY id")?;
    let t = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut q = c.prepare("SELECT id FROM acks ORDER BY id")?;
    let acks = q
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((t, acks))
}

fn remote_rows(w: &World) -> Rows {
    w.read_remote("a.db", |r| {
        assert_eq!(integrity(r), "ok", "the remote");
        rows(r).unwrap()
    })
}

fn code(e: &rusqlite::Error) -> Option<ErrorCode> {
    e.sqlite_error_code()
}

// ---------------------------------------------------------------------------
// 1. SIGKILL during a fetch and during an eviction

/// `committer`: a full cache on its own host; each commit inserts an id into `acks`
/// and rewrites a row of `t` (a chunk a lazy reader must fetch again), then says
/// `ACK <id>`. While the file `PAUSE_FILE` exists it says `PAUSED` once and waits.
fn committer(uri: &str) {
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let pause = child::env("PAUSE_FILE");
    let mut id: i64 = child::env_num("MB_START");
    child::say("READY");
    loop {
        assert!(child::parent_alive(), "the parent test process went away");
        if Path::new(&pause).exists() {
            child::say("PAUSED");
            while Path::new(&pause).exists() {
                child::sleep_while_parent_alive(Duration::from_millis(10));
            }
        }
        let row = 1 + fastrand::i64(0..ROWS);
        let done = c.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             INSERT INTO acks VALUES ({id});
             UPDATE t SET b = randomblob({ROW}) WHERE id = {row};
             COMMIT;"
        ));
        if let Err(e) = done {
            child::say(&format!("ERR commit {id}: {e}"));
            panic!("commit {id}: {e}");
        }
        child::say(&format!("ACK {id}"));
        id += 1;
        // Bursts of commits between quiet spells: a lazy scan (about a second here)
        // without `history` that meets a chunk changed since it began ends busy, so
        // scans complete only in the quiet spells.
        if fastrand::u32(0..3) == 0 {
            child::pause_ms(500..1500);
        } else {
            child::pause_ms(10..60);
        }
    }
}

/// `reader`: a lazy cache bounded below the database (`cache_max`), so its scans
/// fetch and evict all the time; point reads between them. A busy answer (the remote
/// moved on under a read) is retried; any other error fails. Says `SCAN <evicted>`
/// after each scan, until killed.
fn reader(uri: &str) {
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    child::say("READY");
    loop {
        assert!(child::parent_alive(), "the parent test process went away");
        let started = std::time::Instant::now();
        let scanned = c.query_row("SELECT count(*), sum(length(hex(b))) FROM t", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        });
        match scanned {
            Ok(got) => assert_eq!(got, (ROWS, 2 * ROWS * ROW)),
            Err(e) if is_busy(&e) => {
                child::say(&format!("BUSY {} {:?}", evicted(&c), started.elapsed()));
                continue;
            }
            Err(e) => {
                child::say(&format!("ERR scan: {e}"));
                panic!("scan: {e}; status {}", status(&c));
            }
        }
        for _ in 0..4 {
            let id = 1 + fastrand::i64(0..ROWS);
            match c.query_row("SELECT length(b) FROM t WHERE id = ?1", [id], |r| {
                r.get::<_, i64>(0)
            }) {
                Ok(n) => assert_eq!(n, ROW),
                Err(e) if is_busy(&e) => {}
                Err(e) => {
                    child::say(&format!("ERR point read: {e}"));
                    panic!("point read: {e}");
                }
            }
        }
        child::say(&format!("SCAN {} {:?}", evicted(&c), started.elapsed()));
    }
}

/// Chunks the residency record of `cache` says present (its state bytes start at
/// 4096: src/residency.rs) whose bytes in the cache are all zero: a chunk of this
/// database (random blobs, no free pages) never is, so such a chunk was recorded
/// before its bytes were written.
fn present_but_zero(cache: &Path) -> Vec<usize> {
    const CHUNK: usize = 64 * 1024;
    let record = std::fs::read(format!("{}-managedblob.resident", cache.display())).unwrap();
    let bytes = std::fs::read(cache).unwrap();
    let states = record.get(4096..).unwrap_or_default();
    (0..bytes.len().div_ceil(CHUNK))
        .filter(|&i| matches!(states.get(i), Some(1 | 2)))
        .filter(|&i| {
            bytes[i * CHUNK..bytes.len().min((i + 1) * CHUNK)]
                .iter()
                .all(|b| *b == 0)
        })
        .collect()
}

/// Chunks this reader dropped to stay under `cache_max`.
fn evicted(c: &Connection) -> u64 {
    status(c)["residence"]["chunks_evicted"]
        .as_u64()
        .unwrap_or(0)
}

/// The committer's acknowledged ids among `messages`.
fn absorb_acks(p: &Proc, messages: &[String], acked: &mut BTreeSet<i64>) {
    for m in messages {
        match m.split_once(' ') {
            Some(("ACK", id)) => {
                acked.insert(id.parse().unwrap());
            }
            _ if m == "READY" || m == "PAUSED" => {}
            _ => panic!("{} said {m:?}\n{}", p.name, p.output()),
        }
    }
}

/// `kills` rounds: a committer commits on host `w` while a lazy reader on host `r`
/// (1 MiB `cache_max`, so it evicts) scans; the reader is SIGKILLed at a random
/// moment of its loop. After every kill, with the committer paused: a reopen of the
/// reader's cache passes `PRAGMA integrity_check` and holds the remote's rows, and
/// the remote holds every acknowledged commit.
fn kill_soak(w: &World, kills: usize) {
    build(&w.uri("h1", "a.db", ""));
    let pause = w.path("pause");
    let reader_uri = w.uri("r", "a.db", "&fetch=lazy&cache_max=1MiB&staleness_ms=0");
    let mut committer = Proc::spawn(
        "committer",
        "committer",
        &w.uri("w", "a.db", ""),
        &[
            ("PAUSE_FILE", pause.display().to_string()),
            ("MB_START", "1".into()),
        ],
    );
    committer.expect("READY", Duration::from_secs(60));
    let mut acked = BTreeSet::new();
    let (mut evicted, mut scans, mut busy) = (0u64, 0, 0);
    for round in 0..kills {
        let mut r = Proc::spawn("reader", "reader", &reader_uri, &[]);
        r.expect("READY", Duration::from_secs(60));
        // A random moment: after 0 to 2 scans (done or ended busy), then up to
        // 300 ms into the next.
        let mut heard = Vec::new();
        for _ in 0..fastrand::usize(0..=2) {
            heard.push(r.expect("", Duration::from_secs(60)));
        }
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..300)));
        r.sigkill();
        heard.extend(r.drain());
        for m in heard {
            assert!(!m.starts_with("ERR"), "round {round}: {m}\n{}", r.output());
            let mut words = m.split_whitespace();
            match words.next() {
                Some("SCAN") => scans += 1,
                Some("BUSY") => busy += 1,
                _ => continue,
            }
            eprintln!("{m}");
            evicted = evicted.max(words.next().unwrap().parse().unwrap());
        }
        let zeroed = present_but_zero(&w.cache("r", "a.db"));
        assert!(
            zeroed.is_empty(),
            "round {round}: chunks recorded present hold only zeros: {zeroed:?}"
        );
        // Pause the committer between commits, then check.
        std::fs::write(&pause, b"").unwrap();
        let mut messages = Vec::new();
        loop {
            let m = committer.expect("", Duration::from_secs(60));
            if m == "PAUSED" {
                break;
            }
            messages.push(m);
        }
        absorb_acks(&committer, &messages, &mut acked);
        let remote = remote_rows(w);
        let held: BTreeSet<i64> = remote.1.iter().copied().collect();
        let lost: Vec<_> = acked.difference(&held).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged commits lost: {lost:?}"
        );
        // Reopened unbounded, so that no chunk is dropped before the check reads it.
        let c = open(&w.uri("r", "a.db", "&fetch=lazy&staleness_ms=0"));
        assert_eq!(
            integrity(&c),
            "ok",
            "round {round}: the killed reader's cache"
        );
        assert!(
            rows(&c).unwrap() == remote,
            "round {round}: the reopened lazy cache differs from the remote"
        );
        drop(c);
        std::fs::remove_file(&pause).unwrap();
    }
    committer.sigkill();
    let rest = committer.drain();
    absorb_acks(&committer, &rest, &mut acked);
    let remote = remote_rows(w);
    let held: BTreeSet<i64> = remote.1.iter().copied().collect();
    assert!(acked.is_subset(&held), "acknowledged commits lost");
    assert!(!acked.is_empty(), "no commit in {kills} rounds");
    eprintln!(
        "{kills} kills on {}: {} commits acknowledged; {scans} scans done, {busy} ended \
         busy; up to {evicted} chunks evicted by a reader",
        w.backend_name(),
        acked.len()
    );
}

fn ci_kills() -> usize {
    setting("MANAGEDBLOB_LAZY_KILLS", 3)
}

#[test]
fn local_a_lazy_reader_killed_during_fetches_and_evictions() {
    kill_soak(&World::local(), ci_kills());
}

#[cfg(feature = "azure")]
#[test]
fn azurite_a_lazy_reader_killed_during_fetches_and_evictions() {
    if let Some(w) = World::azurite() {
        kill_soak(&w, ci_kills());
    }
}

/// The long soak (see the module header).
#[test]
#[ignore = "a long soak: MANAGEDBLOB_LAZY_KILLS=100 cargo test --test lazy_faults -- --ignored"]
fn soak_lazy_readers_killed() {
    let kills = setting("MANAGEDBLOB_LAZY_KILLS", 40);
    kill_soak(&World::local(), kills);
    #[cfg(feature = "azure")]
    if let Some(w) = World::azurite() {
        kill_soak(&w, kills);
    }
}

// ---------------------------------------------------------------------------
// 2. A full disk during a fetch

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop (as in
/// tests/full_disk.rs: root only; without root the test says so and passes, except
/// when `CI` is set: then it fails).
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(parent: &Path, name: &str, size: &str) -> Option<SmallDisk> {
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let mounted = is_root
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
                .arg("tmpfs")
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
        if mounted {
            return Some(SmallDisk { dir });
        }
        let why = "mounting a small tmpfs needs root (and mount(8))";
        assert!(std::env::var_os("CI").is_none(), "CI is set and {why}");
        eprintln!("SKIPPED: {why}");
        None
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Fill the file system of `dir` with `ballast` until a write fails for lack of
/// space.
fn fill(ballast: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(ballast).unwrap();
    let block = vec![0x5au8; 16384];
    loop {
        match f.write_all(&block).and_then(|()| f.sync_all()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return,
            Err(e) => panic!("filling {}: {e}", ballast.display()),
        }
    }
}

/// A lazy cache on a small tmpfs, filled up: a query whose chunks are absent fails
/// with SQLITE_FULL (never zeros, never another error), a point query too; once
/// space is freed, the same cache answers every query right.
#[test]
fn a_full_disk_during_a_fetch_is_sqlite_full() {
    let w = World::local();
    build(&w.uri("h1", "a.db", ""));
    let Some(disk) = SmallDisk::mount(w.dir.path(), "small", "8m") else {
        return;
    };
    let remote = remote_rows(&w);
    let uri = uri_with_remote(&disk.dir.join("a.db"), &w.remote_value(), "&fetch=lazy");
    let c = open(&uri);
    let s = status(&c);
    assert_eq!(s["fetch"], "lazy", "{s}");
    fill(&disk.dir.join("ballast"));
    let err = c
        .query_row("SELECT sum(length(hex(b))) FROM t", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::DiskFull), "a scan: {err}");
    let err = c
        .query_row("SELECT b FROM t WHERE id = ?1", [ROWS - 3], |r| {
            r.get::<_, Vec<u8>>(0)
        })
        .unwrap_err();
    assert_eq!(
        code(&err),
        Some(ErrorCode::DiskFull),
        "a point query: {err}"
    );
    let s = status(&c);
    assert!(
        s["last_error"].to_string().contains("writing cache"),
        "the status names the cause: {s}"
    );
    std::fs::remove_file(disk.dir.join("ballast")).unwrap();
    assert_eq!(integrity(&c), "ok");
    assert!(
        rows(&c).unwrap() == remote,
        "the lazy cache differs from the remote"
    );
    drop(c);
    // Reopened, the chunks recorded present are the remote's too.
    let c = open(&uri);
    assert_eq!(integrity(&c), "ok");
    assert!(rows(&c).unwrap() == remote, "the reopened cache differs");
}

// ---------------------------------------------------------------------------
// 3. An unreachable remote during a lazy read

/// A small retry budget: a failing fetch gives up after a few quick attempts.
const RETRY: &str = "&retry_attempts=3&retry_base_ms=5&retry_total_ms=500";

/// Run `sql` (a scan answering one integer) on a fresh connection to `uri` in a
/// thread; its answer, or a failure if it has not answered after a minute (a safety
/// net against a hang: the retry budget ends it far sooner).
fn query_bounded(uri: &str, sql: &'static str) -> (rusqlite::Result<i64>, serde_json::Value) {
    let uri = uri.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let c = open(&uri);
        let got = c.query_row(sql, [], |r| r.get::<_, i64>(0));
        let _ = tx.send((got, status(&c)));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{sql} hangs on an unreachable remote"))
}

/// The checks on the lazy cache `uri` (a cold open: only its first chunk present)
/// while `cut` made the remote unreachable, and after `mend` made it reachable again.
fn unreachable(uri: &str, remote: &Rows, cut: impl FnOnce(), mend: impl FnOnce(), why: &str) {
    let c = open(uri);
    assert_eq!(status(&c)["fetch"], "lazy");
    let (present, total) = {
        let s = status(&c);
        let r = &s["residence"];
        (r["chunks_present"].as_u64(), r["chunks_total"].as_u64())
    };
    assert!(
        present < total,
        "chunks must be absent: {present:?} of {total:?}"
    );
    cut();
    let sum = "SELECT sum(length(hex(b))) FROM t";
    let (got, s) = query_bounded(uri, sum);
    match got {
        Err(e) => {
            assert_eq!(code(&e), Some(ErrorCode::SystemIoFailure), "{e}\n{s}");
            let last = s["last_error"].to_string();
            assert!(
                last.contains(why),
                "last_error names the cause ({why}): {s}"
            );
        }
        Ok(n) => panic!("a scan needing absent chunks answered {n} with the remote cut off"),
    }
    // The same connection: the query errors again, or (never) answers wrong.
    match c.query_row(sum, [], |r| r.get::<_, i64>(0)) {
        Err(e) => assert_eq!(code(&e), Some(ErrorCode::SystemIoFailure), "{e}"),
        Ok(n) => assert_eq!(n, 2 * ROWS * ROW, "zeros or a wrong answer"),
    }
    mend();
    assert_eq!(integrity(&c), "ok");
    assert!(
        rows(&c).unwrap() == *remote,
        "the lazy cache differs from the remote"
    );
}

/// The local remote's directory is moved away while a lazy cache has absent chunks.
#[test]
fn local_an_unreachable_remote_during_a_lazy_read_is_an_io_error() {
    let w = World::local();
    build(&w.uri("h1", "a.db", ""));
    let remote = remote_rows(&w);
    let away = w.path("remote-away");
    unreachable(
        &w.uri("h2", "a.db", &format!("&fetch=lazy{RETRY}")),
        &remote,
        || std::fs::rename(w.remote(), &away).unwrap(),
        || std::fs::rename(&away, w.dir.path().join("remote")).unwrap(),
        "read range failed: the blob does not exist",
    );
}

/// Azurite behind a proxy that closes every connection: the lazy read gives up
/// within its retry budget.
#[cfg(feature = "azure")]
#[test]
fn azurite_an_unreachable_remote_during_a_lazy_read_is_an_io_error() {
    use common::http_proxy::Fate;
    let Some(az) = common::azurite::shared() else {
        return;
    };
    let (direct, proxy, remote_value) = common::azurite::container_behind_proxy(&az);
    managedblob::register().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("h1")).unwrap();
    build(&uri_with_remote(
        &dir.path().join("h1/a.db"),
        &remote_value,
        "",
    ));
    let copy = dir.path().join("copy.db");
    let mut bytes = Vec::new();
    managedblob::internal::backend::Backend::download(&direct, "a.db", &mut bytes).unwrap();
    std::fs::write(&copy, bytes).unwrap();
    let remote = read_remote(&copy, |r| rows(r).unwrap());
    let uri = uri_with_remote(
        &dir.path().join("a.db"),
        &remote_value,
        &format!("&fetch=lazy{RETRY}"),
    );
    unreachable(
        &uri,
        &remote,
        || proxy.set_rule(|_| Fate::ResetBeforeForwarding),
        || proxy.pass_all(),
        "read range failed: network error",
    );
}

// ---------------------------------------------------------------------------
// 4. A block list that lies

/// The local backend's record of the committed block list (`.a.db.mb-blocks`,
/// src/backend/local/blocks.rs), as JSON.
fn block_record(w: &World) -> (PathBuf, serde_json::Value) {
    let path = w.remote().join(".a.db.mb-blocks");
    let text = std::fs::read_to_string(&path).unwrap();
    (path, serde_json::from_str(&text).unwrap())
}

fn sizes(record: &serde_json::Value) -> Vec<u64> {
    record["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[1].as_u64().unwrap())
        .collect()
}

/// A record whose sizes do not add up to the blob's length (the last block one
/// granule longer) is not a block list of this blob: the lazy open takes the blob
/// whole, as another tool's, and reads nothing at the offsets the list claims.
#[test]
fn a_block_list_whose_sizes_do_not_add_up_is_refused() {
    let w = World::local();
    build(&w.uri("h1", "a.db", ""));
    let remote = remote_rows(&w);
    let (path, mut record) = block_record(&w);
    let blocks = record["blocks"].as_array_mut().unwrap();
    let last = blocks.last_mut().unwrap();
    last[1] = (last[1].as_u64().unwrap() + 4096).into();
    std::fs::write(&path, record.to_string()).unwrap();

    let c = w.open_with("h2", "a.db", "&fetch=lazy");
    let s = status(&c);
    assert_eq!(requests(&c, "read_range"), 0, "no ranged read: {s}");
    assert_eq!(requests(&c, "download"), 1, "taken whole: {s}");
    assert_eq!(integrity(&c), "ok");
    assert!(rows(&c).unwrap() == remote);
}

/// A record whose sizes add up but whose chunk size is not the blocks' (twice it:
/// half as many blocks, each claiming 128 KiB under the id of a 64 KiB chunk): every
/// chunk read at the offsets the list claims fails its block id, so nothing is
/// served; the open fails with an error that says so, and opens once the list is
/// true again.
#[test]
fn a_block_list_with_a_wrong_chunk_size_is_refused() {
    let w = World::local();
    build(&w.uri("h1", "a.db", ""));
    let remote = remote_rows(&w);
    let (path, mut record) = block_record(&w);
    let truth = record.to_string();
    let old = sizes(&record);
    let chunk = old[0];
    let total: u64 = old.iter().sum();
    let claimed = chunk * 2;
    let n = total.div_ceil(claimed) as usize;
    let blocks = record["blocks"].as_array_mut().unwrap();
    blocks.truncate(n);
    for (i, b) in blocks.iter_mut().enumerate() {
        let size = if i + 1 == n {
            total - claimed * (n as u64 - 1)
        } else {
            claimed
        };
        b[1] = size.into();
    }
    assert_eq!(sizes(&record).iter().sum::<u64>(), total);
    std::fs::write(&path, record.to_string()).unwrap();

    let uri = w.uri("h2", "a.db", "&fetch=lazy");
    for _ in 0..2 {
        let e = open_error(&uri, "a lying block list");
        assert!(
            e.to_string()
                .contains("chunk 0 of remote blob 'a.db' does not match its block id"),
            "{e}"
        );
    }
    // The true list again: the same cache opens, and holds the remote's rows.
    std::fs::write(&path, truth).unwrap();
    let c = open(&uri);
    assert_eq!(integrity(&c), "ok");
    assert!(rows(&c).unwrap() == remote);
}

/// Blocks whose bytes are not what their ids say (chunk 3 restaged under its own id
/// with other bytes, and the same list committed: sizes right, content wrong): the
/// lazy read of that chunk fails, never serving it; the other chunks are served.
fn a_block_that_lies_about_its_bytes(w: &World) {
    use managedblob::internal::backend::{Block, Condition, Terms};
    build(&w.uri("h1", "a.db", ""));
    let c = w.open_with("h2", "a.db", "&fetch=lazy");
    w.with_backend(|b| {
        let blocks = b.blocks().expect("a backend with blocks");
        let (stat, list) = blocks.block_list("a.db").unwrap().unwrap();
        let (id, size) = &list[3];
        let data = vec![0u8; *size as usize];
        blocks.stage("a.db", Block { id, data }, None).unwrap();
        let ids: Vec<_> = list.iter().map(|(id, _)| id.clone()).collect();
        let terms = Terms {
            condition: &Condition::Match(stat.etag),
            lease: None,
        };
        blocks.commit("a.db", &ids, terms).unwrap();
    });
    let err = c
        .query_row("SELECT sum(length(hex(b))) FROM t", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap_err();
    assert!(!is_busy(&err), "{err}");
    let s = status(&c);
    assert!(
        s["last_error"]
            .to_string()
            .contains("chunk 3 of remote blob 'a.db' does not match its block id"),
        "{err}\n{s}"
    );
    let (present, total) = {
        let r = &s["residence"];
        (
            r["chunks_present"].as_u64().unwrap(),
            r["chunks_total"].as_u64().unwrap(),
        )
    };
    assert!(present < total, "{s}");
    // Never served: a fresh lazy cache fails on it too.
    let fresh = w.open_with("h3", "a.db", "&fetch=lazy");
    assert!(fresh
        .query_row("SELECT sum(length(hex(b))) FROM t", [], |r| r
            .get::<_, i64>(0))
        .is_err());
}

#[test]
fn local_a_block_that_lies_about_its_bytes_is_never_served() {
    a_block_that_lies_about_its_bytes(&World::local());
}

#[cfg(feature = "azure")]
#[test]
fn azurite_a_block_that_lies_about_its_bytes_is_never_served() {
    if let Some(w) = World::azurite() {
        a_block_that_lies_about_its_bytes(&w);
    }
}

/// A lazy cache whose chunk list beside the sidecar is gone (as a kill between the
/// sidecar's save and the list's can leave it) learns it from the remote at the next
/// online open and keeps it: opened again with Azurite unreachable (every connection
/// reset), it serves the chunks it holds. Before the fix the offline open failed with
/// a disk I/O error ("its chunk list is not known yet"), as the kill soak's readers
/// did now and then under load.
#[cfg(feature = "azure")]
#[test]
fn azurite_a_lazy_cache_that_lost_its_chunk_list_opens_offline() {
    use common::http_proxy::Fate;
    let Some(az) = common::azurite::shared() else {
        return;
    };
    let (_direct, proxy, remote_value) = common::azurite::container_behind_proxy(&az);
    managedblob::register().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("h1")).unwrap();
    build(&uri_with_remote(
        &dir.path().join("h1/a.db"),
        &remote_value,
        "",
    ));
    let cache = dir.path().join("a.db");
    let uri = uri_with_remote(&cache, &remote_value, &format!("&fetch=lazy{RETRY}"));
    let q = |c: &Connection| {
        c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
    };
    assert_eq!(q(&open(&uri)).unwrap(), 2);
    let list = format!("{}-managedblob.manifest", cache.display());
    std::fs::remove_file(&list).unwrap();
    assert_eq!(q(&open(&uri)).unwrap(), 2);
    proxy.set_rule(|_| Fate::ResetBeforeForwarding);
    let c = open(&uri);
    assert_eq!(q(&c).unwrap(), 2, "served offline from the chunks it holds");
    let s = status(&c);
    assert!(
        s["last_error"]
            .to_string()
            .contains("gave up after 3 attempts"),
        "{s}"
    );
}
