//! The local backend's delta commit written in place under a SQLite rollback journal
//! (src/backend/local/in_place.rs): it writes O(changed pages), a crash at any step
//! leaves the old or the new version (for this backend and for plain SQLite), and a
//! SQLite reader of the remote file makes it wait instead of seeing a torn file.
//!
//! Crashes are real: the commit runs in a child process (this test binary
//! re-executed) that aborts at the step named in `MANAGEDBLOB_TEST_CRASH_AT`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread;

use managedblob::internal::backend::local::LocalBackend;
use managedblob::internal::backend::{Backend, BackendErrorKind, BlockId, Condition, Etag};
use managedblob::internal::delta::{chunk_size_for, ChunkId};
use rusqlite::{Connection, OpenFlags};

const BLOB: &str = "corpus.db";

/// A plain SQLite database of about `mib` MiB: `t(k, v)` with 4 KiB pages.
fn make_db(path: &Path, mib: u64) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(&format!(
        "PRAGMA page_size=4096; PRAGMA journal_mode=DELETE;
         CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < {})
         INSERT INTO t SELECT k, randomblob(1000) FROM s;",
        mib * 1024
    ))
    .unwrap();
}

/// The database file cut into chunks as the store cuts it: (id, bytes) in order.
fn chunks(path: &Path) -> Vec<(BlockId, Vec<u8>)> {
    let bytes = fs::read(path).unwrap();
    let size = chunk_size_for(bytes.len() as u64) as usize;
    bytes
        .chunks(size)
        .enumerate()
        .map(|(i, c)| (ChunkId::new(i as u32, c).as_bytes().to_vec(), c.to_vec()))
        .collect()
}

/// Stage the chunks of `path` the remote lacks; return the whole id list.
fn stage_changed(b: &LocalBackend, path: &Path, have: &[(BlockId, Vec<u8>)]) -> Vec<BlockId> {
    let blocks = b.blocks().unwrap();
    let now = chunks(path);
    for (i, (id, data)) in now.iter().enumerate() {
        if have.get(i).map(|(old, _)| old) != Some(id) {
            blocks.stage_block(BLOB, id, data.clone(), None).unwrap();
        }
    }
    now.into_iter().map(|(id, _)| id).collect()
}

/// A remote holding a copy of a fresh `mib` MiB database (committed as blocks), and a
/// local copy of it with `rows` rows changed (not yet committed).
struct Setup {
    dir: tempfile::TempDir,
    backend: LocalBackend,
    old: Vec<u8>,
    new: Vec<u8>,
    etag: Etag,
    ids: Vec<BlockId>,
}

impl Setup {
    fn new(mib: u64, rows: &[i64]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("remote")).unwrap();
        let backend = LocalBackend::new(dir.path().join("remote")).unwrap();
        let local = dir.path().join("local.db");
        make_db(&local, mib);
        let ids = stage_changed(&backend, &local, &[]);
        let stat = backend
            .blocks()
            .unwrap()
            .commit_blocks(BLOB, &ids, &Condition::Create, None)
            .unwrap();
        let before = chunks(&local);
        let c = Connection::open(&local).unwrap();
        for k in rows {
            c.execute("UPDATE t SET v = randomblob(1000) WHERE k = ?1", [k])
                .unwrap();
        }
        drop(c);
        let ids = stage_changed(&backend, &local, &before);
        Setup {
            old: before.into_iter().flat_map(|(_, c)| c).collect(),
            new: fs::read(&local).unwrap(),
            etag: stat.etag,
            ids,
            backend,
            dir,
        }
    }

    fn remote(&self) -> PathBuf {
        self.dir.path().join("remote")
    }

    fn blob(&self) -> PathBuf {
        self.remote().join(BLOB)
    }

    fn journal(&self) -> PathBuf {
        self.remote().join(format!("{BLOB}-journal"))
    }

    /// A plain read-only SQLite connection to the remote file.
    fn read_only(&self) -> Connection {
        Connection::open_with_flags(self.blob(), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
    }

    /// [`Self::read_only`] in a read transaction that has read the file (so it holds
    /// SQLite's shared lock until its COMMIT).
    fn reader_in_a_transaction(&self) -> Connection {
        let reader = self.read_only();
        reader.execute_batch("BEGIN").unwrap();
        let _: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        reader
    }

    fn commit(&self, b: &LocalBackend) -> managedblob::internal::backend::BackendResult<Etag> {
        b.blocks()
            .unwrap()
            .commit_blocks(BLOB, &self.ids, &Condition::Match(self.etag.clone()), None)
            .map(|s| s.etag)
    }

    /// A fresh setup (4 MiB, rows [`SPREAD`]) whose commit died in a child process at
    /// `step`.
    fn crashed_at(step: &str) -> Setup {
        let s = Setup::new(4, &SPREAD);
        s.commit_in_child(step);
        s
    }

    /// Run the commit in a child process that aborts at `step`.
    fn commit_in_child(&self, step: &str) {
        let ids: Vec<String> = self
            .ids
            .iter()
            .map(|id| ChunkId::from_bytes(id).unwrap().to_base64())
            .collect();
        let ids_file = self.dir.path().join("ids");
        fs::write(&ids_file, ids.join("\n")).unwrap();
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
            .env("MB_IN_PLACE_CHILD", "1")
            .env("MB_REMOTE", self.remote())
            .env("MB_IDS", &ids_file)
            .env("MB_ETAG", &self.etag.0)
            .env("MANAGEDBLOB_TEST_CRASH_AT", step)
            .status()
            .unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGABRT),
            "the child should have died at step {step}: {status:?}"
        );
    }
}

/// The child: commit the staged blocks (and die where the environment says).
#[test]
fn child_main() {
    if std::env::var("MB_IN_PLACE_CHILD").is_err() {
        return;
    }
    let b = LocalBackend::new(std::env::var("MB_REMOTE").unwrap()).unwrap();
    let ids: Vec<BlockId> = fs::read_to_string(std::env::var("MB_IDS").unwrap())
        .unwrap()
        .lines()
        .map(|l| ChunkId::from_base64(l).unwrap().as_bytes().to_vec())
        .collect();
    let etag = Etag(std::env::var("MB_ETAG").unwrap());
    b.blocks()
        .unwrap()
        .commit_blocks(BLOB, &ids, &Condition::Match(etag), None)
        .unwrap();
}

fn integrity(c: &Connection) -> String {
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_one_row_commit_at_64_mib_writes_only_the_changed_pages_in_place() {
    let s = Setup::new(64, &[40_000]);
    let inode = fs::metadata(s.blob()).unwrap().ino();
    let before = s.backend.commit_bytes_written();
    let etag = s.commit(&s.backend).unwrap();
    let written = s.backend.commit_bytes_written() - before;
    println!(
        "one-row commit into {} MiB: {written} bytes written (journal and pages)",
        s.old.len() >> 20
    );
    // A one-row update changes a leaf page and the header page; with the journal's
    // copies of them, a few pages: far below one chunk, let alone the file.
    assert!(
        written > 0 && written < 64 * 1024,
        "{written} bytes written"
    );
    assert_eq!(fs::metadata(s.blob()).unwrap().ino(), inode, "not in place");
    assert!(
        fs::read(s.blob()).unwrap() == s.new,
        "the remote is the new version"
    );
    assert!(!s.journal().exists());
    assert_ne!(etag, s.etag);
    let listed = s
        .backend
        .blocks()
        .unwrap()
        .block_list(BLOB)
        .unwrap()
        .unwrap();
    assert_eq!(listed.0.etag, etag);
    assert_eq!(
        listed.1.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        s.ids.iter().collect::<Vec<_>>()
    );
    let c = s.read_only();
    assert_eq!(integrity(&c), "ok");
}

/// Where the child dies, and whether the remote is then the new version.
const CRASH_STEPS: [(&str, bool); 5] = [
    ("journaled", false),
    ("half-written", false),
    ("blob-synced", false),
    ("journal-deleted", true),
    ("etag-recorded", true),
];

/// Rows spread over many chunks, so "half-written" is a torn file without the journal.
const SPREAD: [i64; 6] = [10, 900, 1900, 2900, 3900, 4000];

#[test]
fn a_crash_at_each_step_leaves_the_old_or_new_version_for_this_backend() {
    for (step, lands) in CRASH_STEPS {
        let s = Setup::crashed_at(step);
        let fresh = LocalBackend::new(s.remote()).unwrap();
        let stat = fresh.stat(BLOB).unwrap().unwrap();
        let mut bytes = Vec::new();
        fresh.download(BLOB, &mut bytes).unwrap();
        assert!(
            !s.journal().exists(),
            "{step}: the hot journal was rolled back"
        );
        let listed = fresh.blocks().unwrap().block_list(BLOB).unwrap().unwrap();
        if lands {
            assert!(
                bytes == s.new,
                "{step}: the remote should be the new version"
            );
            assert_ne!(stat.etag, s.etag, "{step}: new content under the old etag");
        } else {
            assert!(
                bytes == s.old,
                "{step}: the remote should be the old version"
            );
            assert_eq!(
                stat.etag, s.etag,
                "{step}: the rollback gives the old etag back"
            );
            assert_eq!(
                listed.1.len(),
                s.ids.len(),
                "{step}: block list still valid"
            );
        }
        // A block list is either the version's own or empty (a whole download).
        assert!(listed.1.is_empty() || listed.0 == stat, "{step}");
        let c = s.read_only();
        assert_eq!(integrity(&c), "ok", "{step}");
        drop(c);
        if !lands {
            // The staged blocks are still there: the same commit, retried, lands.
            s.commit(&fresh).unwrap();
            assert!(
                fs::read(s.blob()).unwrap() == s.new,
                "{step}: the retry landed"
            );
        }
    }
}

#[test]
fn a_crash_at_each_step_leaves_the_old_or_new_version_for_plain_sqlite() {
    for (step, lands) in CRASH_STEPS {
        let s = Setup::crashed_at(step);
        // A plain SQLite connection (read-write, so it can roll a hot journal back
        // itself), before this backend has looked at the blob.
        let c = Connection::open(s.blob()).unwrap();
        assert_eq!(integrity(&c), "ok", "{step}");
        let count: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 4096, "{step}");
        drop(c);
        assert!(
            !s.journal().exists(),
            "{step}: SQLite rolled the journal back"
        );
        let on_disk = fs::read(s.blob()).unwrap();
        let expected = if lands { &s.new } else { &s.old };
        assert!(
            on_disk == *expected,
            "{step}: the file is the {} version",
            if lands { "new" } else { "old" }
        );
        // This backend then serves the same bytes.
        let mut bytes = Vec::new();
        LocalBackend::new(s.remote())
            .unwrap()
            .download(BLOB, &mut bytes)
            .unwrap();
        assert!(bytes == *expected, "{step}");
    }
}

#[test]
fn the_sqlite3_shell_rolls_back_a_half_written_commit() {
    let Ok(shell) = which_sqlite3() else {
        eprintln!("no sqlite3 shell on PATH: skipped");
        return;
    };
    let s = Setup::new(4, &SPREAD);
    s.commit_in_child("half-written");
    assert!(s.journal().exists(), "the child left a hot journal");
    let out = Command::new(shell)
        .arg(s.blob())
        .arg("PRAGMA integrity_check; SELECT count(*) FROM t;")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n4096\n");
    assert!(!s.journal().exists());
    assert!(
        fs::read(s.blob()).unwrap() == s.old,
        "rolled back to the old version"
    );
}

fn which_sqlite3() -> Result<PathBuf, ()> {
    let path = PathBuf::from("/usr/bin/sqlite3");
    if path.exists() {
        Ok(path)
    } else {
        Err(())
    }
}

/// A SQLite reader in a read transaction on the remote file: the commit waits for it
/// (new readers get SQLITE_BUSY meanwhile) and lands once it ends; the reader never
/// sees a torn file.
#[test]
fn a_sqlite_reader_makes_the_commit_wait_and_is_never_torn() {
    let s = Setup::new(4, &SPREAD);
    let reader = s.read_only();
    let snapshot = |c: &Connection| -> (i64, String) {
        let sql = "SELECT count(*), group_concat(hex(substr(v, 1, 8)), '') FROM t";
        c.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
    };
    reader.execute_batch("BEGIN").unwrap();
    let seen = snapshot(&reader);
    let (done_tx, done_rx) = mpsc::channel();
    thread::scope(|scope| {
        scope.spawn(|| {
            let b = LocalBackend::new(s.remote()).unwrap();
            done_tx.send(s.commit(&b)).unwrap();
        });
        // Wait until the commit holds PENDING: a new reader (another process: SQLite
        // shares one lock state between its connections in a process) is refused.
        loop {
            let probe = Command::new("/usr/bin/sqlite3")
                .args(["-cmd", ".timeout 0"])
                .arg(s.blob())
                .arg("SELECT count(*) FROM t;")
                .output()
                .expect("the sqlite3 shell");
            if String::from_utf8_lossy(&probe.stderr).contains("locked") {
                break;
            }
            assert!(probe.status.success(), "probe: {probe:?}");
            assert!(
                done_rx.try_recv().is_err(),
                "the commit went past a live reader"
            );
        }
        // The reader still sees its version, whole, and the commit has not landed.
        assert_eq!(snapshot(&reader), seen);
        assert_eq!(integrity(&reader), "ok");
        assert!(
            done_rx.try_recv().is_err(),
            "the commit went past a live reader"
        );
        reader.execute_batch("COMMIT").unwrap();
        done_rx.recv().unwrap().unwrap();
    });
    assert!(fs::read(s.blob()).unwrap() == s.new);
    assert_ne!(
        snapshot(&reader),
        seen,
        "the reader sees the new version next"
    );
}

/// A reader that stays longer than the commit is willing to wait: the commit fails
/// as transient (retried by the caller), and nothing changed.
#[test]
fn a_reader_that_stays_makes_the_commit_fail_as_transient_with_nothing_changed() {
    let s = Setup::new(4, &SPREAD);
    let reader = s.reader_in_a_transaction();
    let err = s.commit(&s.backend).unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Transient, "{err}");
    assert!(err.message.contains("busy"), "{err}");
    assert!(fs::read(s.blob()).unwrap() == s.old);
    assert!(!s.journal().exists());
    assert_eq!(s.backend.stat(BLOB).unwrap().unwrap().etag, s.etag);
    reader.execute_batch("COMMIT").unwrap();
    s.commit(&s.backend).unwrap();
    assert!(fs::read(s.blob()).unwrap() == s.new);
}

/// A journal SQLite left empty or zeroed (journal modes TRUNCATE, PERSIST) is not hot:
/// this backend leaves it alone and does not wait for the readers of the file.
#[test]
fn a_cold_journal_is_left_alone() {
    let s = Setup::new(4, &SPREAD);
    let reader = s.reader_in_a_transaction();
    for cold in [vec![], vec![0u8; 4096]] {
        fs::write(s.journal(), &cold).unwrap();
        assert_eq!(s.backend.stat(BLOB).unwrap().unwrap().etag, s.etag);
        assert_eq!(fs::read(s.journal()).unwrap(), cold, "left as it was");
    }
    reader.execute_batch("COMMIT").unwrap();
    fs::remove_file(s.journal()).unwrap();
}

/// Where a commit that rebuilds the blob (too many pages change to write them in
/// place) dies: after the rename over the blob (before its etag record), and after
/// the etag record (before its block list record).
const REBUILD_CRASH_STEPS: [&str; 2] = ["renamed", "installed"];

/// Rows in every chunk: more than half of the file changes, so the commit rebuilds it.
fn rows_everywhere() -> Vec<i64> {
    (1..=4096).step_by(8).collect()
}

/// The block list `managedblob verify` checks the blob against
/// ([`LocalBackend::recorded_blocks`]) is none, or one whose chunks hash to the blob's
/// bytes: a commit that died between its records must not leave the old version's
/// list beside the new content (verify would report rot that is not there).
fn assert_recorded_list_fits(s: &Setup, step: &str) {
    let b = LocalBackend::new(s.remote()).unwrap();
    let (stat, list) = b.recorded_blocks(BLOB).unwrap().unwrap();
    let bytes = fs::read(s.blob()).unwrap();
    assert_eq!(stat.size, bytes.len() as u64, "{step}");
    if list.is_empty() {
        return;
    }
    let covered: u64 = list.iter().map(|(_, n)| n).sum();
    assert_eq!(
        covered, stat.size,
        "{step}: the recorded list covers another size"
    );
    let mut at = 0;
    for (i, (id, n)) in list.iter().enumerate() {
        let chunk = &bytes[at..at + *n as usize];
        assert!(
            ChunkId::new(i as u32, chunk).as_bytes() == id.as_slice(),
            "{step}: chunk {i} does not match its recorded block id"
        );
        at += *n as usize;
    }
}

#[test]
fn a_crash_at_each_step_leaves_a_recorded_block_list_that_fits_the_blob_or_none() {
    for (step, _) in CRASH_STEPS {
        let s = Setup::crashed_at(step);
        assert_recorded_list_fits(&s, step);
    }
    for step in REBUILD_CRASH_STEPS {
        let s = Setup::new(4, &rows_everywhere());
        let inode = fs::metadata(s.blob()).unwrap().ino();
        s.commit_in_child(step);
        assert_ne!(
            fs::metadata(s.blob()).unwrap().ino(),
            inode,
            "{step}: rebuilt and renamed, not written in place"
        );
        assert!(
            fs::read(s.blob()).unwrap() == s.new,
            "{step}: the new version"
        );
        assert_recorded_list_fits(&s, step);
    }
}

/// A rollback killed after it restored the old content: the journal is still hot, so
/// the next accessor plays it back again, and the old version keeps its etag and its
/// block list (no whole download for a commit that never landed).
#[test]
fn a_rollback_killed_half_way_is_rolled_back_again_with_the_old_etag() {
    let s = Setup::crashed_at("half-written");
    // The child's commit first rolls back the hot journal, and dies there.
    s.commit_in_child("rollback-recorded");
    let fresh = LocalBackend::new(s.remote()).unwrap();
    let stat = fresh.stat(BLOB).unwrap().unwrap();
    assert!(!s.journal().exists(), "rolled back by the next accessor");
    assert_eq!(stat.etag, s.etag, "the old version keeps its etag");
    let listed = fresh.blocks().unwrap().block_list(BLOB).unwrap().unwrap();
    assert_eq!(listed.1.len(), s.ids.len(), "and its block list");
    assert!(fs::read(s.blob()).unwrap() == s.old);
    assert_recorded_list_fits(&s, "rollback-recorded");
    s.commit(&fresh).unwrap();
    assert!(fs::read(s.blob()).unwrap() == s.new, "the retry landed");
}
