//! Security: every file managedblob creates (the cache, its journal, the sidecar,
//! the delta-sync manifest, download side files, conflict copies, and in a directory
//! remote the blob and its lease, etag, mutex and block-list files) is private to its
//! owner (mode 0600, whatever the umask lets through), and no secret is written to
//! disk or to the log.
//!
//! The Azure half (account keys, SAS tokens and bearer tokens never on disk, in
//! errors, in `managedblob_status` or in the log) is pending the Azure backend.

mod common;
use common::*;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rusqlite::Connection;

const SECRET: &str = "SECRETSIG";

/// Every regular file under `dir` with its permission bits.
fn files_with_modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                out.push((e.path(), meta.permissions().mode() & 0o777));
            }
        }
    }
    out.sort();
    out
}

fn names(files: &[(PathBuf, u32)]) -> Vec<String> {
    files
        .iter()
        .map(|(p, m)| format!("{} {m:o}", p.file_name().unwrap().to_string_lossy()))
        .collect()
}

/// Run a workload that makes every kind of file appear, then check their modes.
#[test]
fn every_file_managedblob_creates_is_private() {
    // The usual umask: without managedblob's care, SQLite creates 0644 files.
    // SAFETY: umask has no preconditions; this binary's other test creates no files.
    unsafe { libc::umask(0o022) };
    let w = World::new();

    // A cache with a persistent journal (SQLite gives journals the database's mode).
    let a = w.open("h1", "a.db");
    assert_eq!(
        pragma(&a, "PRAGMA journal_mode=PERSIST")
            .unwrap()
            .as_deref(),
        Some("persist")
    );
    a.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let journal = w.dir.path().join("h1/a.db-journal");
    let journal_mode = std::fs::metadata(&journal)
        .expect("PERSIST keeps the journal")
        .permissions()
        .mode()
        & 0o777;

    // A batch holds the lease: the remote's lease file exists meanwhile.
    pragma(&a, "PRAGMA managedblob_batch=begin").unwrap();
    a.execute("INSERT INTO t VALUES (2)", []).unwrap();
    let during_batch = files_with_modes(&w.remote());
    assert!(
        during_batch
            .iter()
            .any(|(p, _)| p.to_string_lossy().ends_with(".a.db.mb-lease")),
        "the lease file exists during a batch: {:?}",
        names(&during_batch)
    );
    pragma(&a, "PRAGMA managedblob_batch=end").unwrap();

    // A blob in a nested directory of the remote.
    let n = w.open_with("h1", "n.db", "&blob=dir/sub/n.db");
    n.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(n);

    // A download side file kept while the cache is busy: h2 has a reader inside a
    // transaction while another connection must take a new version.
    let r1 = w.open_with("h2", "a.db", "&staleness_ms=0");
    let r2 = w.open_with("h2", "a.db", "&staleness_ms=0");
    r1.execute_batch("BEGIN; SELECT count(*) FROM t;").unwrap();
    a.execute("INSERT INTO t VALUES (3)", []).unwrap();
    r2.busy_timeout(Duration::ZERO).unwrap();
    let busy = r2.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0));
    assert!(busy.is_err(), "the refresh waits for the reader: {busy:?}");
    let pending: Vec<_> = files_with_modes(&w.dir.path().join("h2"))
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains("-managedblob.download-"))
        .collect();
    assert_eq!(
        pending.len(),
        1,
        "the downloaded version waits beside the cache"
    );
    let download_mode = pending[0].1;
    r1.execute_batch("COMMIT").unwrap();
    drop((r1, r2));

    // A conflict copy: local commits that lost the race against another host.
    {
        let p = Connection::open(w.cache("h1", "a.db")).unwrap();
        p.execute("INSERT INTO t VALUES (100)", []).unwrap();
    }
    drop(a);
    let side = managedblob::sidecar::path_for(&w.cache("h1", "a.db"));
    let mut s = managedblob::sidecar::load(&side).unwrap().unwrap();
    s.dirty = true;
    managedblob::sidecar::store(&side, &s).unwrap();
    w.open("h3", "a.db")
        .execute("INSERT INTO t VALUES (4)", [])
        .unwrap();
    let a = w.open("h1", "a.db");
    assert_eq!(status(&a)["conflicts"].as_array().unwrap().len(), 1);
    drop(a);

    let all = files_with_modes(w.dir.path());
    println!("files and modes:");
    for (p, m) in &all {
        println!(
            "  {m:o} {}",
            p.strip_prefix(w.dir.path()).unwrap().display()
        );
    }
    let kinds = [
        ("h1/a.db", "cache"),
        ("h1/a.db-managedblob.json", "sidecar"),
        ("h1/a.db.conflict-", "conflict copy"),
        ("remote/a.db", "remote blob"),
        ("remote/.a.db.mb-etag", "remote etag file"),
        ("remote/.a.db.mb-mutex", "remote mutex (lock) file"),
        ("remote/.a.db.mb-blocks", "remote block list (delta sync)"),
        (
            "h1/n.db-managedblob.manifest",
            "cache manifest (delta sync)",
        ),
        ("remote/dir/sub/n.db", "nested remote blob"),
    ];
    for (path, what) in kinds {
        assert!(
            all.iter().any(|(p, _)| p
                .strip_prefix(w.dir.path())
                .unwrap()
                .to_string_lossy()
                .starts_with(path)),
            "the workload made no {what} ({path})"
        );
    }
    let public: Vec<_> = all
        .iter()
        .chain(during_batch.iter())
        .filter(|(_, m)| m & 0o077 != 0)
        .collect();
    assert!(
        public.is_empty(),
        "files readable or writable by others: {public:?}"
    );
    assert_eq!(
        download_mode & 0o077,
        0,
        "download side file {download_mode:o}"
    );
    assert_eq!(journal_mode & 0o077, 0, "journal {journal_mode:o}");
}

/// What the sidecar records: identities and versions, nothing else.
#[test]
fn the_sidecar_holds_no_secret_fields() {
    let w = World::new();
    let c = w.open("h1", "a.db");
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let text =
        std::fs::read_to_string(managedblob::sidecar::path_for(&w.cache("h1", "a.db"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "base",
            "blob",
            "cache_id",
            "dirty",
            "dirty_owner",
            "format",
            "generation",
            "in_flight",
            "remote",
        ]
    );
    assert_eq!(
        v["remote"],
        format!("local:{}", w.remote().canonicalize().unwrap().display())
    );
}

/// A remote URL carrying a SAS-style signature: whatever this build does with it
/// (refuse it without the `azure` feature, or fail to reach the service), the
/// signature appears in no error message, no log line (at trace level) and no file.
#[test]
fn a_signature_in_the_remote_url_is_never_echoed_logged_or_stored() {
    if std::env::var("MB_CHILD_ROLE").as_deref() == Ok("secret_open") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "secret_open_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MB_CHILD_ROLE", "secret_open")
        .env("MB_DIR", dir.path())
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{out}\n{err}");
    let line = out
        .lines()
        .find_map(|l| l.split_once("MB:ERROR ").map(|(_, e)| e.to_string()))
        .unwrap_or_else(|| panic!("no result\n{out}\n{err}"));
    println!("error: {line}");
    assert!(line.contains("managedblob"), "{line}");
    assert!(
        !line.contains(SECRET),
        "the error echoes the signature: {line}"
    );
    assert!(!err.contains(SECRET), "the log shows the signature");
    assert!(!out.contains(SECRET), "the output shows the signature");
    for (path, _) in files_with_modes(dir.path()) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET),
            "{} holds the signature",
            path.display()
        );
    }
}

#[test]
fn secret_open_child() {
    if std::env::var("MB_CHILD_ROLE").as_deref() != Ok("secret_open") {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    managedblob::register().unwrap();
    let dir = PathBuf::from(std::env::var("MB_DIR").unwrap());
    // Port 9 (discard) on loopback refuses at once where nothing listens.
    let uri = format!(
        "file:{}?vfs=managedblob&remote=http%3A%2F%2F127.0.0.1%3A9%2Fdevstoreaccount1%2Fc%3Fsv%3D2022-11-02%26sig%3D{SECRET}&retry_attempts=2&retry_base_ms=1",
        dir.join("a.db").display()
    );
    let result = Connection::open_with_flags(&uri, flags()).and_then(|c| {
        c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })?;
        let status: String = c.query_row("PRAGMA managedblob_status", [], |r| r.get(0))?;
        println!("status {status}");
        c.execute_batch("CREATE TABLE t(x)")
    });
    match result {
        Ok(()) => println!("\nMB:ERROR managedblob: none (opened)"),
        Err(e) => println!("\nMB:ERROR {e}"),
    }
}
