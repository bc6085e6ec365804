//! A world on the in-memory backend (`remote=memory:<name>`): caches in a temp dir and
//! one `MemoryBackend` the test drives directly, to inject faults, latency and lease
//! trouble. The database is blob `m.db`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use managedblob::internal::backend::memory::{MemoryBackend, Op};
use managedblob::internal::backend::BackendErrorKind;
use rusqlite::Connection;

use super::{column, init_logging, open};

/// Every request kind a faulty remote can fail (breaking a lease is an operator's
/// tool the VFS never calls).
pub const ALL_OPS: [Op; 10] = [
    Op::Stat,
    Op::Download,
    Op::Upload,
    Op::AcquireLease,
    Op::RenewLease,
    Op::ReleaseLease,
    Op::BlockList,
    Op::StageBlock,
    Op::CommitBlocks,
    Op::ReadRange,
];

/// Both transfer modes: whole-file uploads and downloads, and delta sync by blocks
/// (the memory backend has blocks, as Azure does).
pub const SYNC_MODES: [&str; 2] = ["full", "delta"];

pub struct MemWorld {
    pub dir: tempfile::TempDir,
    name: String,
    /// URI settings every cache of this world gets, before the caller's own.
    defaults: String,
    pub backend: Arc<MemoryBackend>,
}

impl MemWorld {
    /// A fresh memory remote whose name starts with `tag`.
    pub fn new(tag: &str) -> MemWorld {
        init_logging();
        managedblob::register().unwrap();
        let name = format!("{tag}-{}-{:x}", std::process::id(), fastrand::u64(..));
        MemWorld {
            dir: tempfile::tempdir().unwrap(),
            backend: MemoryBackend::named(&name),
            name,
            defaults: String::new(),
        }
    }

    /// The same, with `defaults` (e.g. `&retry_base_ms=1`) in every URI.
    pub fn with_defaults(tag: &str, defaults: &str) -> MemWorld {
        MemWorld {
            defaults: defaults.to_string(),
            ..MemWorld::new(tag)
        }
    }

    /// The URI of host `host`'s cache, with `extra` settings.
    pub fn uri(&self, host: &str, extra: &str) -> String {
        format!(
            "file:{}?vfs=managedblob&remote=memory:{}{}{extra}",
            self.cache(host).display(),
            self.name,
            self.defaults
        )
    }

    /// The cache file of host `host` (its directory is created).
    pub fn cache(&self, host: &str) -> PathBuf {
        let dir = self.dir.path().join(host);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("m.db")
    }

    pub fn open(&self, host: &str, extra: &str) -> Connection {
        open(&self.uri(host, extra))
    }

    /// Host `host`'s connection (with `extra` settings) after it created table `t(x)`
    /// holding the one row 1.
    pub fn one_row(&self, host: &str, extra: &str) -> Connection {
        let c = self.open(host, extra);
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        c
    }

    /// Host `h1` commits table `t` with one row; then the remote is unreachable (every
    /// stat fails as transient).
    pub fn one_row_then_offline(&self) {
        drop(self.one_row("h1", ""));
        self.backend
            .fail_next(Op::Stat, BackendErrorKind::Transient, 1000);
    }

    /// The bytes of host `host`'s cache file.
    pub fn cache_bytes(&self, host: &str) -> Vec<u8> {
        std::fs::read(self.cache(host)).unwrap()
    }

    /// The remote blob's bytes (empty when it does not exist).
    pub fn remote_bytes(&self) -> Vec<u8> {
        self.backend.get("m.db").unwrap_or_default()
    }

    /// The remote content opened as a database (a private copy).
    pub fn remote<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        let path = self
            .dir
            .path()
            .join(format!("remote-copy-{:x}.db", fastrand::u64(..)));
        std::fs::write(&path, self.remote_bytes()).unwrap();
        let c = Connection::open(&path).unwrap();
        let out = f(&c);
        drop(c);
        let _ = std::fs::remove_file(&path);
        out
    }

    /// The first column of the one row `sql` returns from the remote content.
    pub fn remote_query<T: rusqlite::types::FromSql>(&self, sql: &str) -> T {
        self.remote(|r| {
            r.query_row(sql, [], |row| row.get(0))
                .unwrap_or_else(|e| panic!("{sql} on the remote: {e}"))
        })
    }

    /// The ids in the remote's table `t`.
    pub fn remote_ids(&self) -> BTreeSet<i64> {
        self.remote(|r| column(r, "SELECT id FROM t"))
    }

    /// How many calls of each kind in [`ALL_OPS`] the backend has answered.
    pub fn calls(&self) -> Vec<usize> {
        ALL_OPS.iter().map(|o| self.backend.calls(*o)).collect()
    }

    /// How many calls of each kind in [`ALL_OPS`] came since `before` ([`Self::calls`]).
    pub fn calls_since(&self, before: &[usize]) -> Vec<usize> {
        self.calls()
            .iter()
            .zip(before)
            .map(|(n, b)| n - b)
            .collect()
    }
}
