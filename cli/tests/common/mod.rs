//! Helpers for the end-to-end tests: the built `managedblob` binary and managed
//! databases written through the VFS, on top of the test harness the root crate's
//! tests share (tests/common/: Azurite, here as `common::azurite`).
#![allow(dead_code)]

pub use harness::azurite;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};

/// The built binary, with a clean environment for the settings it reads.
pub fn cli() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("managedblob").expect("built binary");
    for var in [
        "MANAGEDBLOB_REMOTE",
        "MANAGEDBLOB_BLOB",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_ACCOUNT",
        "RUST_LOG",
        "MANAGEDBLOB_LOG",
        "MANAGEDBLOB_LOG_FILE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Where a test's remote lives: a directory, or an Azurite container.
pub struct Remote {
    /// The `remote` setting (for Azurite: the container URL with a SAS).
    pub setting: String,
    /// Keeps the directory (local) alive.
    _dir: Option<tempfile::TempDir>,
    /// Keeps Azurite running.
    pub azurite: Option<Arc<azurite::Azurite>>,
    /// The Azurite container.
    pub container: String,
}

impl Remote {
    pub fn local() -> Remote {
        let dir = tempfile::tempdir().unwrap();
        Remote {
            setting: dir.path().to_str().unwrap().to_string(),
            _dir: Some(dir),
            azurite: None,
            container: String::new(),
        }
    }

    /// A fresh container on the shared Azurite; `None` (skip) when Azurite is missing
    /// and CI is not set.
    pub fn azurite() -> Option<Remote> {
        let az = azurite::shared()?;
        let container = azurite::random_container();
        let backend = az.backend_for(&container, Default::default());
        assert!(backend.create_container().unwrap());
        Some(Remote {
            setting: az.container_url_with_sas(&container),
            _dir: None,
            azurite: Some(az),
            container,
        })
    }

    /// The local remote's directory.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(&self.setting)
    }

    /// The `REMOTE/BLOB` shorthand for `blob` (on Azurite: the container URL, the
    /// blob, then the SAS).
    pub fn shorthand(&self, blob: &str) -> String {
        match self.setting.split_once('?') {
            Some((base, query)) => format!("{base}/{blob}?{query}"),
            None => format!("{}/{blob}", self.setting),
        }
    }

    /// A connection to `cache` through the VFS on this remote.
    pub fn open(&self, cache: &Path, blob: &str) -> Connection {
        // No linger: the CLI runs (and other test writers) find the lease free as
        // soon as a commit returns, as an operator would after the writer is done.
        self.open_with(cache, blob, "&lease_linger_ms=0")
    }

    /// [`Remote::open`] with extra URI parameters (`&lease_secs=60`).
    pub fn open_with(&self, cache: &Path, blob: &str, extra: &str) -> Connection {
        managedblob::register().unwrap();
        let uri = format!(
            "file:{}?vfs=managedblob&remote={}&blob={blob}{extra}",
            cache.display(),
            self.setting
                .replace('%', "%25")
                .replace('&', "%26")
                .replace('?', "%3F")
        );
        let conn = Connection::open_with_flags(
            uri,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap();
        conn.busy_timeout(std::time::Duration::ZERO).unwrap();
        conn
    }

    /// Write `rows` rows of about 1 KiB each into `blob` through a throwaway cache.
    pub fn seed(&self, blob: &str, rows: u32) {
        let dir = tempfile::tempdir().unwrap();
        let conn = self.open(&dir.path().join("seed.db"), blob);
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, body BLOB);
             PRAGMA managedblob_batch=begin;",
        )
        .unwrap();
        for _ in 0..rows {
            conn.execute("INSERT INTO t(body) VALUES (randomblob(1000))", [])
                .unwrap();
        }
        conn.execute_batch("PRAGMA managedblob_batch=end;").unwrap();
    }
}

/// Run a check `fn(&Remote)` as one test per remote: `local::<name>` and
/// `azurite::<name>` (skipped only where Azurite is missing and CI is not set).
#[macro_export]
macro_rules! on_each_remote {
    ($($check:ident),* $(,)?) => {
        mod local {
            $(#[test]
            fn $check() {
                super::$check(&$crate::common::Remote::local());
            })*
        }
        mod azurite {
            $(#[test]
            fn $check() {
                if let Some(remote) = $crate::common::Remote::azurite() {
                    super::$check(&remote);
                }
            })*
        }
    };
}

impl Remote {
    /// Seed `blob` with `rows` rows and open a cache of it (checking it sees them):
    /// the cache's directory (keep it alive), its path and the connection.
    pub fn seeded_cache(&self, blob: &str, rows: u32) -> (tempfile::TempDir, PathBuf, Connection) {
        self.seed(blob, rows);
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join(blob);
        let conn = self.open(&cache, blob);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, i64::from(rows));
        (dir, cache, conn)
    }

    /// `managedblob --json status` of this remote with `cache`, parsed.
    pub fn status_json(&self, cache: &Path) -> serde_json::Value {
        json(
            &cli()
                .args(["--json", "status", "--remote", &self.setting, "--cache"])
                .arg(cache)
                .output()
                .unwrap(),
        )
    }
}

/// Parse a command's stdout as JSON.
pub fn json(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Run `cmd` and parse its stdout as JSON.
pub fn json_of(cmd: &mut assert_cmd::Command) -> serde_json::Value {
    json(&cmd.output().unwrap())
}

/// A command's stdout as text.
pub fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A command's stderr as text.
pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writer processes for the kill tests: the test binary runs itself with the test
/// `child_process` selected and the job in the environment.
pub mod child {
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    use super::Remote;

    /// What the child does.
    #[derive(Clone, Copy)]
    pub enum Job {
        /// Take the lease in a batch, commit inside it, say READY, and wait to be killed.
        HoldLease,
        /// Commit large rows in a loop until killed (say READY after the first).
        CommitLoop,
    }

    /// Start a child on `remote`, `cache`, `blob`; returns once it says READY.
    pub fn spawn(job: Job, remote: &Remote, cache: &Path, blob: &str) -> Child {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                "MB_CHILD_JOB",
                match job {
                    Job::HoldLease => "hold-lease",
                    Job::CommitLoop => "commit-loop",
                },
            )
            .env("MB_CHILD_REMOTE", &remote.setting)
            .env("MB_CHILD_CACHE", cache)
            .env("MB_CHILD_BLOB", blob)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        for line in BufReader::new(out).lines() {
            if line.unwrap().contains("MB-CHILD-READY") {
                return child;
            }
        }
        panic!("the child exited before it was ready: {:?}", child.wait());
    }

    /// The child's side: does its job when the environment asks for one.
    pub fn run_if_asked() {
        let Ok(job) = std::env::var("MB_CHILD_JOB") else {
            return;
        };
        let remote = Remote {
            setting: std::env::var("MB_CHILD_REMOTE").unwrap(),
            _dir: None,
            azurite: None,
            container: String::new(),
        };
        let cache = std::path::PathBuf::from(std::env::var("MB_CHILD_CACHE").unwrap());
        let blob = std::env::var("MB_CHILD_BLOB").unwrap();
        let conn = remote.open_with(&cache, &blob, "&lease_secs=60");
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .unwrap();
        conn.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, body BLOB)")
            .unwrap();
        match job.as_str() {
            "hold-lease" => {
                conn.execute_batch(
                    "PRAGMA managedblob_batch=begin;
                     INSERT INTO t(body) VALUES (randomblob(5000));",
                )
                .unwrap();
                println!("MB-CHILD-READY");
                loop {
                    std::thread::park();
                }
            }
            _ => {
                for i in 0.. {
                    conn.execute("INSERT INTO t(body) VALUES (randomblob(150000))", [])
                        .unwrap();
                    if i == 0 {
                        println!("MB-CHILD-READY");
                    }
                }
            }
        }
    }
}
