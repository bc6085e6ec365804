//! Security: every file managedblob creates (the cache, its journal, the sidecar,
//! the delta-sync manifest, download side files, conflict copies, and in a directory
//! remote the blob and its lease, etag, mutex and block-list files) is private to its
//! owner (mode 0600, whatever the umask lets through), and no secret is written to
//! disk or to the log.
//!
//! The Azure half: `azure_no_credential_reaches_disk_status_or_trace_log` (a SAS in
//! the URL and an account key in a connection string, through the VFS on Azurite:
//! nothing on disk, in `managedblob_status`, in the output or the trace log), with
//! `no_secret_reaches_the_trace_log` and `sas_token_in_the_url_works_and_stays_secret`
//! in tests/azure.rs (the backend's requests and errors, the source SAS of Put Block
//! From URL included), and the expired-SAS and
//! wrong-key rows of tests/hostile.rs (errors). Bearer tokens (Entra ID) are not
//! covered: Azurite does not issue them.

use common::child::{self, Proc};
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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
    let side = managedblob::internal::sidecar::path_for(&w.cache("h1", "a.db"));
    let mut s = managedblob::internal::sidecar::load(&side)
        .unwrap()
        .unwrap();
    s.dirty = true;
    managedblob::internal::sidecar::store(&side, &s).unwrap();
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
    let (w, _c) = World::with_one_row();
    let text = std::fs::read_to_string(managedblob::internal::sidecar::path_for(
        &w.cache("h1", "a.db"),
    ))
    .unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let child = Proc::spawn(
        "secret_open",
        "secret_open",
        "",
        &[
            ("MB_DIR", dir.path().display().to_string()),
            ("RUST_LOG", "trace".to_string()),
        ],
    );
    let (out, err) = child.finish(Duration::from_secs(60));
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

/// Child role `secret_open`: open a remote URL with a signature, say the error.
fn secret_open(_: &str) {
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

/// Azure (Azurite): a VFS workload with both kinds of credential — an account SAS in
/// the remote URL (cache `h1`) and an account key in `AZURE_STORAGE_CONNECTION_STRING`
/// (cache `h2`, bare container URL) — writing, batching, refreshing, in `sync=delta`
/// and `sync=full`, at `RUST_LOG=trace` in a child process. No secret (the SAS
/// signature as written or decoded, the account key, a `sig=` or `AccountKey=`) may
/// appear in any file under the caches' directory (caches, journals, sidecars,
/// manifests), in `managedblob_status`, in the output or in the log. The backend's
/// own requests at trace level are covered by `no_secret_reaches_the_trace_log` in
/// tests/azure.rs.
#[cfg(feature = "azure")]
#[test]
fn azure_no_credential_reaches_disk_status_or_trace_log() {
    let Some(w) = World::azurite() else { return };
    let Some(azurite) = common::azurite::shared() else {
        return;
    };
    let sas_url = w.remote_value();
    let (bare_url, sas) = sas_url.split_once('?').unwrap();
    let sig = sas.rsplit("sig=").next().unwrap().to_string();
    let decoded_sig: String = url::form_urlencoded::parse(format!("s={sig}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    let child = Proc::spawn_without(
        "azure_workload",
        "azure_workload",
        "",
        &[
            ("MB_DIR", w.dir.path().display().to_string()),
            ("MB_SAS_URL", sas_url.clone()),
            ("MB_BARE_URL", bare_url.to_string()),
            (
                "AZURE_STORAGE_CONNECTION_STRING",
                azurite.connection_string(),
            ),
            ("RUST_LOG", "trace".to_string()),
        ],
        &["AZURE_STORAGE_KEY"],
    );
    let (out, err) = child.finish(Duration::from_secs(300));
    if let Some(path) = std::env::var_os("MANAGEDBLOB_TEST_LOG_DUMP") {
        std::fs::write(path, &err).unwrap();
    }
    let tail = |s: &str| s[s.len().saturating_sub(4000)..].to_string();
    assert!(out.contains("MB:DONE"), "{}", tail(&out));
    assert!(
        err.contains("TRACE") && err.contains("azure request"),
        "the child logged nothing at trace level, so the check would be vacuous"
    );
    let secrets = [
        sig.as_str(),
        decoded_sig.as_str(),
        common::azurite::DEV_KEY,
        "SharedKey devstoreaccount1:",
    ];
    // The SDK's trace lines show request URLs with `sig=REDACTED`: only a value
    // other than that is a leak.
    for (what, text) in [("output", &out), ("trace log", &err)] {
        for key in ["sig=", "AccountKey="] {
            assert!(!shows_a_value(text, key), "the {what} shows a {key}<value>");
        }
    }
    let files = files_with_modes(w.dir.path());
    let kinds: Vec<String> = names(&files);
    for want in ["a.db ", "-managedblob.json", "-managedblob.manifest"] {
        assert!(
            kinds.iter().any(|k| k.contains(want)),
            "no {want} file was made: {kinds:?}"
        );
    }
    for secret in secrets {
        assert!(
            !out.contains(secret),
            "the output (statuses) shows {secret}"
        );
        assert!(!err.contains(secret), "the trace log shows {secret}");
        for (path, _) in &files {
            let bytes = std::fs::read(path).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "{} holds {secret}",
                path.display()
            );
        }
    }
    for (path, mode) in &files {
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
        for key in ["sig=", "AccountKey="] {
            assert!(!text.contains(key), "{} holds {key}", path.display());
        }
    }
    println!(
        "checked {} files ({}), {} bytes of trace log, {} bytes of output",
        files.len(),
        kinds.join(", "),
        err.len(),
        out.len()
    );
}

/// Whether `text` holds `key` followed by anything but `REDACTED`.
#[cfg(feature = "azure")]
fn shows_a_value(text: &str, key: &str) -> bool {
    text.match_indices(key)
        .any(|(at, _)| !text[at + key.len()..].starts_with("REDACTED"))
}

/// Child role `azure_workload`: the workload above, its statuses printed.
#[cfg(feature = "azure")]
fn azure_workload(_: &str) {
    let dir = PathBuf::from(std::env::var("MB_DIR").unwrap());
    let sas_url = std::env::var("MB_SAS_URL").unwrap();
    let bare_url = std::env::var("MB_BARE_URL").unwrap();
    let cache = |host: &str| {
        let d = dir.join(host);
        std::fs::create_dir_all(&d).unwrap();
        d.join("a.db")
    };
    let show = |c: &Connection| {
        let s: String = c
            .query_row("PRAGMA managedblob_status", [], |r| r.get(0))
            .unwrap();
        println!("status {s}");
    };
    // h1: the SAS in the URL; delta sync, a batch, then whole-file transfers.
    let h1 = open(&uri_with_remote(&cache("h1"), &sas_url, ""));
    h1.execute_batch(
        "CREATE TABLE t(x);
         WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < 300)
         INSERT INTO t SELECT randomblob(3000) FROM s;",
    )
    .unwrap();
    pragma(&h1, "PRAGMA managedblob_batch=begin").unwrap();
    h1.execute("INSERT INTO t VALUES ('in a batch')", [])
        .unwrap();
    pragma(&h1, "PRAGMA managedblob_batch=end").unwrap();
    show(&h1);
    drop(h1);
    let h1 = open(&uri_with_remote(&cache("h1"), &sas_url, "&sync=full"));
    h1.execute("INSERT INTO t VALUES ('full')", []).unwrap();
    show(&h1);
    drop(h1);
    // h2: the account key from AZURE_STORAGE_CONNECTION_STRING, bare URL.
    let h2 = open(&uri_with_remote(&cache("h2"), &bare_url, ""));
    assert_eq!(count(&h2, "t"), 302);
    h2.execute("UPDATE t SET x = randomblob(3000) WHERE rowid % 7 = 0", [])
        .unwrap();
    show(&h2);
    drop(h2);
    // h1 takes h2's version (a delta refresh).
    let h1 = open(&uri_with_remote(&cache("h1"), &sas_url, "&staleness_ms=0"));
    assert_eq!(count(&h1, "t"), 302);
    show(&h1);
    println!("\nMB:DONE");
}

/// Entry point of every child process; returns at once in a normal test run.
#[test]
fn child_main() {
    child::child_main(&[
        ("secret_open", secret_open),
        #[cfg(feature = "azure")]
        ("azure_workload", azure_workload),
    ]);
}
