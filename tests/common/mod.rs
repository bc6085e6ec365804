//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

/// A remote directory and a place for caches ("hosts"), removed at the end.
pub struct World {
    pub dir: tempfile::TempDir,
}

/// Log through the test harness when RUST_LOG is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

impl World {
    pub fn new() -> World {
        init_logging();
        managedblob::register().expect("register");
        World {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn remote(&self) -> PathBuf {
        let p = self.dir.path().join("remote");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// The cache path of database `name` on host `host`.
    pub fn cache(&self, host: &str, name: &str) -> PathBuf {
        let p = self.dir.path().join(host);
        std::fs::create_dir_all(&p).unwrap();
        p.join(name)
    }

    pub fn uri(&self, host: &str, name: &str, extra: &str) -> String {
        uri(&self.cache(host, name), &self.remote(), extra)
    }

    pub fn open(&self, host: &str, name: &str) -> Connection {
        open(&self.uri(host, name, ""))
    }

    pub fn open_with(&self, host: &str, name: &str, extra: &str) -> Connection {
        open(&self.uri(host, name, extra))
    }

    pub fn remote_blob(&self, name: &str) -> PathBuf {
        self.remote().join(name)
    }
}

pub fn uri(cache: &Path, remote: &Path, extra: &str) -> String {
    format!(
        "file:{}?vfs=managedblob&remote={}{}",
        cache.display(),
        remote.display(),
        extra
    )
}

pub fn flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_URI
}

pub fn open(uri: &str) -> Connection {
    let c = Connection::open_with_flags(uri, flags()).unwrap_or_else(|e| panic!("open {uri}: {e}"));
    c
}

/// `PRAGMA managedblob_status` as JSON.
pub fn status(c: &Connection) -> Value {
    let text: String = c
        .query_row("PRAGMA managedblob_status", [], |r| r.get(0))
        .expect("status");
    serde_json::from_str(&text).expect("status is JSON")
}

pub fn requests(c: &Connection, kind: &str) -> u64 {
    status(c)["requests"][kind].as_u64().unwrap()
}

pub fn pragma(c: &Connection, text: &str) -> rusqlite::Result<Option<String>> {
    let mut stmt = c.prepare(text)?;
    let mut rows = stmt.query([])?;
    match rows.next()? {
        Some(row) => Ok(Some(row.get(0)?)),
        None => Ok(None),
    }
}

/// Open the remote blob with plain SQLite (no VFS) and run `f`.
pub fn read_remote<T>(path: &Path, f: impl FnOnce(&Connection) -> T) -> T {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    f(&c)
}
