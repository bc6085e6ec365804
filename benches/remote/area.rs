//! The databases the sections work on: SQLite helpers, and the areas (caches and a
//! remote) of each backend.

use super::*;

// SQLite helpers.

pub(super) fn flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_URI
}

pub(super) fn open(uri: &str) -> Connection {
    let c = Connection::open_with_flags(uri, flags()).unwrap_or_else(|e| panic!("open: {e}"));
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c
}

pub(super) fn status(c: &Connection) -> serde_json::Value {
    let text: String = c
        .query_row("PRAGMA managedblob_status", [], |r| r.get(0))
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Run a pragma that may or may not return a row.
pub(super) fn pragma(c: &Connection, text: &str) {
    let mut stmt = c.prepare(text).unwrap();
    let mut rows = stmt.query([]).unwrap();
    while rows.next().unwrap().is_some() {}
}

/// One transaction of `bytes / 1 KiB` rows of 1000 random bytes.
pub(super) fn build(c: &Connection, bytes: u64) {
    let rows = bytes / 1024;
    c.execute_batch(&format!(
        "PRAGMA cache_size = -65536;
         BEGIN;
         CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO t(b) SELECT randomblob({ROW}) FROM n;
         COMMIT;"
    ))
    .unwrap();
}

pub(super) fn one_row(c: &Connection) {
    c.execute(&format!("INSERT INTO t(b) VALUES (randomblob({ROW}))"), [])
        .unwrap();
}

pub(super) fn max_id(c: &Connection) -> i64 {
    c.query_row("SELECT max(id) FROM t", [], |r| r.get(0))
        .unwrap()
}

// Backends.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    Local,
    Azurite,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::Azurite => "Azurite",
        }
    }
}

/// One backend's workspace for one database size: the caches of the "hosts" and a
/// remote of its own (a directory, or a fresh Azurite container). Removed on drop.
pub(super) struct Area {
    pub(super) kind: Kind,
    pub(super) dir: tempfile::TempDir,
    /// The `remote` setting, unescaped.
    pub(super) remote: String,
    /// The same container, for the raw download.
    pub(super) azure: Option<AzureBackend>,
}

impl Area {
    pub(super) fn new(kind: Kind, azurite: Option<&azurite::Azurite>) -> Area {
        let dir = tempfile::tempdir().unwrap();
        match kind {
            Kind::Local => {
                let remote = dir.path().join("remote");
                std::fs::create_dir_all(&remote).unwrap();
                Area {
                    kind,
                    remote: remote.display().to_string(),
                    dir,
                    azure: None,
                }
            }
            Kind::Azurite => {
                let azurite = azurite.expect("Azurite is running");
                let backend = azurite.fresh(Default::default());
                let remote = azurite.container_url_with_sas(backend.url().container());
                Area {
                    kind,
                    dir,
                    remote,
                    azure: Some(backend),
                }
            }
        }
    }

    pub(super) fn cache(&self, host: &str, blob: &str) -> PathBuf {
        let dir = self.dir.path().join(host);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(blob)
    }

    pub(super) fn uri(&self, host: &str, blob: &str, extra: &str) -> String {
        format!(
            "file:{}?vfs=managedblob&remote={}{extra}",
            self.cache(host, blob).display(),
            uri_escape(&self.remote)
        )
    }

    /// Remove a host's cache of `blob` and everything managedblob keeps beside it.
    pub(super) fn wipe(&self, host: &str, blob: &str) {
        let cache = self.cache(host, blob);
        let with = |suffix: &str| {
            let mut s = cache.as_os_str().to_owned();
            s.push(suffix);
            PathBuf::from(s)
        };
        for p in [
            cache.clone(),
            managedblob::internal::sidecar::path_for(&cache),
            with("-managedblob.manifest"),
            with("-managedblob.resident"),
            with("-journal"),
        ] {
            let _ = std::fs::remove_file(p);
        }
    }

    /// The raw transfer of `blob` into `dest`: a plain file copy from the remote
    /// directory, or one whole-blob download with managedblob's Azure backend (the
    /// SDK's partitioned download) into a file. Returns the bytes moved, the time
    /// of the transfer alone, and the time of the transfer and an fsync of `dest`
    /// (what a cold open is held against: it must leave the cache durable).
    pub(super) fn raw_download(&self, blob: &str, dest: &Path) -> (u64, Duration, Duration) {
        let t = Instant::now();
        let (n, file) = match &self.azure {
            None => {
                let n = std::fs::copy(Path::new(&self.remote).join(blob), dest).unwrap();
                (
                    n,
                    std::fs::OpenOptions::new().write(true).open(dest).unwrap(),
                )
            }
            Some(backend) => {
                let file = std::fs::File::create(dest).unwrap();
                let mut sink = std::io::BufWriter::with_capacity(1 << 20, file);
                let stat = backend.download(blob, &mut sink).unwrap();
                (stat.size, sink.into_inner().unwrap())
            }
        };
        let transfer = t.elapsed();
        file.sync_all().unwrap();
        (n, transfer, t.elapsed())
    }
}
