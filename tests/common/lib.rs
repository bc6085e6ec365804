//! The one test harness, shared by the root crate's tests (as `common`), its benches
//! and examples, and the `managedblob` CLI's tests: worlds of caches and one remote
//! ([`World`], on a directory or an Azurite container), Azurite itself, child
//! processes, fault-injecting proxies, the backend conformance suite, and the helpers
//! of the tests that drive SQLite from outside (a shell, the loadable extension, log
//! capture).

#[cfg(feature = "azure")]
pub mod azurite;
pub mod child;
pub mod conformance;
pub mod counter;
pub mod delta;
pub mod handoff;
pub mod http_proxy;
pub mod leaks;
pub mod memworld;
mod process;
mod uri;
pub mod wait;
pub use process::{command_in, extension, missing, plain_rows, run, spawn_piped, with_log, Output};
pub use uri::uri_escape;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

/// Caches ("hosts") in a temp dir and one remote, removed at the end: a directory
/// (the local backend) or a fresh Azurite container (the `azure` backend).
pub struct World {
    pub dir: tempfile::TempDir,
    remote: Remote,
    #[cfg_attr(not(feature = "azure"), allow(dead_code))]
    copies: AtomicUsize,
}

enum Remote {
    Local,
    #[cfg(feature = "azure")]
    Azure(Box<Azure>),
}

#[cfg(feature = "azure")]
struct Azure {
    /// Keeps the shared Azurite running while this world lives.
    azurite: std::sync::Arc<azurite::Azurite>,
    /// The container URL with an account SAS: the `remote` setting as is.
    url: String,
    /// The same container for the test's own look (downloads, foreign writes).
    backend: managedblob::internal::backend::azure::AzureBackend,
}

/// The repository's root (the harness lives in tests/common/): where `target/` and
/// `loadable/` are.
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Log through the test harness when RUST_LOG is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

impl World {
    /// A world whose remote is a directory (the local backend).
    pub fn local() -> World {
        init_logging();
        managedblob::register().expect("register");
        World {
            dir: tempfile::tempdir().expect("tempdir"),
            remote: Remote::Local,
            copies: AtomicUsize::new(0),
        }
    }

    /// A local world where host h1 created database a.db with table `t(x)` holding
    /// one row; h1's connection stays open.
    pub fn with_one_row() -> (World, Connection) {
        let w = World::local();
        let c = w.one_row("h1", "a.db");
        (w, c)
    }

    /// Open database `name` on `host` and create table `t(x)` holding one row.
    pub fn one_row(&self, host: &str, name: &str) -> Connection {
        let c = self.open(host, name);
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        c
    }

    /// A local world whose remote directory (`remote`) exists from the start, and
    /// which installs no log subscriber: for the tests that drive SQLite from outside
    /// (a shell opens `remote=remote` relative to [`World::path`]`("")`) or capture the
    /// log themselves.
    pub fn with_remote_dir() -> World {
        managedblob::register().expect("register");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("remote")).unwrap();
        World {
            dir,
            remote: Remote::Local,
            copies: AtomicUsize::new(0),
        }
    }

    /// The path of `name` in the world's directory (beside the hosts and the remote).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// [`World::local`], the name the older tests use. No `Default`: a world makes a
    /// temp directory and registers the VFS, which a `default()` should not hide.
    #[allow(clippy::new_without_default)]
    pub fn new() -> World {
        World::local()
    }

    /// A world whose remote is a fresh container on the shared Azurite, named by its
    /// URL with an account SAS (so no environment variable is needed, in child
    /// processes either). `None` when Azurite is not installed (after saying so; a
    /// failure instead when CI is set).
    #[cfg(feature = "azure")]
    pub fn azurite() -> Option<World> {
        init_logging();
        let shared = azurite::shared()?;
        managedblob::register().expect("register");
        let backend = shared.fresh(Default::default());
        let url = shared.container_url_with_sas(backend.url().container());
        Some(World {
            dir: tempfile::tempdir().expect("tempdir"),
            remote: Remote::Azure(Box::new(Azure {
                azurite: shared,
                url,
                backend,
            })),
            copies: AtomicUsize::new(0),
        })
    }

    /// Run `f` with a backend on this world's remote (the test's own view of it).
    pub fn with_backend<T>(
        &self,
        f: impl FnOnce(&dyn managedblob::internal::backend::Backend) -> T,
    ) -> T {
        match &self.remote {
            Remote::Local => {
                let b = managedblob::internal::backend::local::LocalBackend::new(self.remote())
                    .unwrap();
                f(&b)
            }
            #[cfg(feature = "azure")]
            Remote::Azure(a) => f(&a.backend),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self.remote, Remote::Local)
    }

    /// "local" or "azurite", for messages.
    pub fn backend_name(&self) -> &'static str {
        match self.remote {
            Remote::Local => "local",
            #[cfg(feature = "azure")]
            Remote::Azure(_) => "azurite",
        }
    }

    /// The remote directory of a local world.
    pub fn remote(&self) -> PathBuf {
        assert!(
            self.is_local(),
            "World::remote() is the local backend's directory; use remote_copy, \
             put_remote or remote_exists"
        );
        let p = self.dir.path().join("remote");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// The `remote` setting, unescaped: the directory, or the container URL with its
    /// SAS.
    pub fn remote_value(&self) -> String {
        match &self.remote {
            Remote::Local => self.remote().display().to_string(),
            #[cfg(feature = "azure")]
            Remote::Azure(a) => a.url.clone(),
        }
    }

    /// A `remote` value of the same kind that names nothing (a missing directory, a
    /// container that was never created), and what the open error must say about it.
    pub fn missing_remote(&self) -> (String, &'static str) {
        match &self.remote {
            Remote::Local => (
                self.dir.path().join("no-such-dir").display().to_string(),
                "'remote'",
            ),
            #[cfg(feature = "azure")]
            Remote::Azure(a) => (
                a.azurite
                    .container_url_with_sas(&azurite::random_container()),
                "does not exist",
            ),
        }
    }

    /// The cache path of database `name` on host `host`.
    pub fn cache(&self, host: &str, name: &str) -> PathBuf {
        let p = self.dir.path().join(host);
        std::fs::create_dir_all(&p).unwrap();
        p.join(name)
    }

    pub fn uri(&self, host: &str, name: &str, extra: &str) -> String {
        uri_with_remote(&self.cache(host, name), &self.remote_value(), extra)
    }

    pub fn open(&self, host: &str, name: &str) -> Connection {
        open(&self.uri(host, name, ""))
    }

    pub fn open_with(&self, host: &str, name: &str, extra: &str) -> Connection {
        open(&self.uri(host, name, extra))
    }

    /// The blob file of a local world.
    pub fn remote_blob(&self, name: &str) -> PathBuf {
        self.remote().join(name)
    }

    /// A local file holding the current bytes of remote blob `blob` (a path that does
    /// not exist when the blob does not): the blob file itself on the local backend,
    /// a fresh download on Azure.
    pub fn remote_copy(&self, blob: &str) -> PathBuf {
        match &self.remote {
            Remote::Local => self.remote_blob(blob),
            #[cfg(feature = "azure")]
            Remote::Azure(a) => {
                use managedblob::internal::backend::{Backend, BackendErrorKind};
                let n = self
                    .copies
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let dir = self.dir.path().join(format!("remote-copy-{n}"));
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join(blob.replace('/', "_"));
                let mut bytes = Vec::new();
                match a.backend.download(blob, &mut bytes) {
                    Ok(_) => std::fs::write(&path, bytes).unwrap(),
                    Err(e) if e.kind == BackendErrorKind::NotFound => {}
                    Err(e) => panic!("downloading blob {blob}: {e}"),
                }
                path
            }
        }
    }

    /// The current bytes of remote blob `blob` (None when it does not exist).
    pub fn remote_bytes(&self, blob: &str) -> Option<Vec<u8>> {
        let path = self.remote_copy(blob);
        path.exists().then(|| std::fs::read(&path).unwrap())
    }

    /// Whether remote blob `blob` exists.
    pub fn remote_exists(&self, blob: &str) -> bool {
        match &self.remote {
            Remote::Local => self.remote_blob(blob).exists(),
            #[cfg(feature = "azure")]
            Remote::Azure(a) => {
                use managedblob::internal::backend::Backend;
                a.backend
                    .stat(blob)
                    .unwrap_or_else(|e| panic!("stat of blob {blob}: {e}"))
                    .is_some()
            }
        }
    }

    /// Write `bytes` as remote blob `blob` the way another tool would (a copy into
    /// the directory; an unconditional upload without a lease on Azure).
    pub fn put_remote(&self, blob: &str, bytes: &[u8]) {
        match &self.remote {
            Remote::Local => {
                let path = self.remote_blob(blob);
                let tmp = path.with_file_name(format!("put-{}.tmp", fastrand::u64(..)));
                std::fs::write(&tmp, bytes).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            }
            #[cfg(feature = "azure")]
            Remote::Azure(a) => {
                use managedblob::internal::backend::{Backend, Condition};
                let condition = match a.backend.stat(blob).unwrap() {
                    Some(stat) => Condition::Match(stat.etag),
                    None => Condition::Create,
                };
                a.backend
                    .upload(blob, &mut &bytes[..], bytes.len() as u64, &condition, None)
                    .unwrap_or_else(|e| panic!("foreign upload of blob {blob}: {e}"));
            }
        }
    }

    /// Open the current remote blob with plain SQLite (no VFS) and run `f`.
    pub fn read_remote<T>(&self, blob: &str, f: impl FnOnce(&Connection) -> T) -> T {
        let path = self.remote_copy(blob);
        assert!(path.exists(), "remote blob {blob} does not exist");
        read_remote(&path, f)
    }
}

/// The URI of cache `cache` on remote directory `remote`.
pub fn uri(cache: &Path, remote: &Path, extra: &str) -> String {
    uri_with_remote(cache, &remote.display().to_string(), extra)
}

/// The URI of cache `cache` with the `remote` setting `remote` (escaped here).
pub fn uri_with_remote(cache: &Path, remote: &str, extra: &str) -> String {
    format!(
        "file:{}?vfs=managedblob&remote={}{}",
        cache.display(),
        uri_escape(remote),
        extra
    )
}

/// The one way to run a check on each backend. For each named `fn name(f: &Fixture)`
/// of the calling module and each listed backend, a test `<backend>::name` that calls
/// it with a fresh fixture from `common::fixture::<kind>::<backend>()`; a backend
/// whose fixture is `None` (Azurite not installed, outside CI) skips after saying so.
///
/// - `backend_tests!(a, b)`: [`World`] tests on `local` and (with the `azure`
///   feature) `azurite`, the shorthand of `backend_tests!(world: [local, azurite] => [a, b])`.
/// - `backend_tests!(store: [memory, local] => [check_x, ...])`: raw backends with
///   their capabilities ([`conformance::Store`]).
#[macro_export]
macro_rules! backend_tests {
    ($kind:ident: [$($backend:ident),+ $(,)?] => $names:tt) => {
        $( $crate::backend_tests!(@module $kind $backend $names); )+
    };
    (@module $kind:ident azurite $names:tt) => {
        #[cfg(feature = "azure")]
        $crate::backend_tests!(@tests $kind azurite $names);
    };
    (@module $kind:ident $backend:ident $names:tt) => {
        $crate::backend_tests!(@tests $kind $backend $names);
    };
    (@tests $kind:ident $backend:ident [$($name:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[test]
                fn $name() {
                    let Some(fixture) = $crate::fixture::$kind::$backend() else {
                        return;
                    };
                    super::$name(&fixture);
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        $crate::backend_tests!(world: [local, azurite] => [$($name),*]);
    };
}

/// The fixtures [`backend_tests!`] hands to a check, by kind and backend.
pub mod fixture {
    /// A [`super::World`] (caches and one remote) per backend.
    pub mod world {
        use super::super::World;

        pub fn local() -> Option<World> {
            Some(World::local())
        }

        #[cfg(feature = "azure")]
        pub fn azurite() -> Option<World> {
            World::azurite()
        }
    }

    #[allow(unused_imports)]
    pub use super::conformance::store;
}

pub fn flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_URI
}

/// The error of opening `uri`, which must fail: at the open or, as some SQLite
/// versions defer it, at the first statement. `what` says what must not have worked.
pub fn open_error(uri: &str, what: &str) -> rusqlite::Error {
    match Connection::open_with_flags(uri, flags()) {
        Ok(c) => c
            .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .expect_err(what),
        Err(e) => e,
    }
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

fn count_of(s: &Value, kind: &str) -> u64 {
    s["requests"][kind].as_u64().unwrap_or(0)
}

/// Remote versions published, from a status, whatever the transfer mode:
/// `versions_up` when the status has it, else whole uploads (`upload`) plus delta
/// sync's block-list commits (`commit_blocks`).
pub fn uploads(s: &Value) -> u64 {
    match s["requests"]["versions_up"].as_u64() {
        Some(n) => n,
        None => count_of(s, "upload") + count_of(s, "commit_blocks"),
    }
}

/// Remote versions taken into the cache, from a status, whatever the transfer mode:
/// `versions_down` when the status has it, else [`fetch_requests`].
pub fn fetches(s: &Value) -> u64 {
    match s["requests"]["versions_down"].as_u64() {
        Some(n) => n,
        None => fetch_requests(s),
    }
}

/// How many times a remote version was fetched: a whole-file refresh is one
/// `download`; a delta refresh reads the block list once (`block_list`), then ranges
/// or (when most of it changed) the whole blob. So the larger of the two counts, exact
/// when one store does not mix the two kinds of refresh.
pub fn fetch_requests(s: &Value) -> u64 {
    count_of(s, "download").max(count_of(s, "block_list"))
}

pub fn pragma(c: &Connection, text: &str) -> rusqlite::Result<Option<String>> {
    let mut stmt = c.prepare(text)?;
    let mut rows = stmt.query([])?;
    match rows.next()? {
        Some(row) => Ok(Some(row.get(0)?)),
        None => Ok(None),
    }
}

/// Open a copy of a remote blob (see [`World::remote_copy`]) with plain SQLite (no
/// VFS) and run `f`.
pub fn read_remote<T>(path: &Path, f: impl FnOnce(&Connection) -> T) -> T {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    f(&c)
}

/// `PRAGMA integrity_check`: "ok" for an intact database.
pub fn integrity(c: &Connection) -> String {
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Whether `e` is SQLITE_BUSY.
pub fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

/// The first column of every row `sql` returns.
pub fn column<T: rusqlite::types::FromSql, C: FromIterator<T>>(c: &Connection, sql: &str) -> C {
    let mut stmt = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows = stmt
        .query_map([], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.map(|r| r.unwrap()).collect()
}

/// The sidecar of a cache, as JSON (None when it is missing or unreadable).
pub fn sidecar_of(cache: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(managedblob::internal::sidecar::path_for(cache)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The sidecar of a cache, as JSON; it must exist.
pub fn sidecar(cache: &Path) -> Value {
    sidecar_of(cache).unwrap_or_else(|| {
        panic!(
            "no readable sidecar {}",
            managedblob::internal::sidecar::path_for(cache).display()
        )
    })
}

/// The entries of `dir` whose names contain `needle` (none when `dir` is missing).
pub fn files_with(dir: &Path, needle: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(needle))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The transactions table of the soak and fault tests: `t(txn, i, n, ...)`, where
/// transaction `txn` wrote rows `i` = 0..`n`. Per txn: (rows present, smallest n,
/// largest n); a whole transaction has all three equal.
pub type Groups = std::collections::BTreeMap<i64, (i64, i64, i64)>;

/// [`Groups`] of table `t` in `c`.
pub fn txn_groups(c: &Connection) -> Groups {
    let mut stmt = c
        .prepare("SELECT txn, count(*), min(n), max(n) FROM t GROUP BY txn")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

/// The number of rows in `table`.
pub fn count(c: &Connection, table: &str) -> i64 {
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}
