//! The store's clock keeps a lease alive whatever holds the store (issue 23): a
//! commit started within the linger of a warm lease, whose upload takes longer than
//! the lease, keeps its lease and succeeds. Before the clock, the linger's idle
//! check ran on the renewer thread and waited for the store's mutex, which the
//! commit's upload held: renewal stopped and the lease lapsed under the upload
//! (SQLITE_BUSY, "this writer's lease lapsed ... LeaseNotPresentWithBlobOperation").
//!
//! Every scenario runs on the memory backend (the block-list commit held at a gate)
//! and on Azurite (the Put Block List held by a loopback proxy), with the shortest
//! lease (15 s) and the default linger, holding the upload 18 s. The scenarios of one
//! backend run side by side, so each backend's test takes about one hold.

use common::memworld::MemWorld;
use common::*;

use std::thread;
use std::time::{Duration, Instant};

use managedblob::internal::backend::memory::Op;
use rusqlite::Connection;

/// The shortest lease the setting allows: the upload below outlasts it.
const LEASE: &str = "&lease_secs=15";
/// How long the upload's commit request is held: past the lease.
const HOLD: Duration = Duration::from_secs(18);
/// The bound of any wait for something that must happen.
const BOUND: Duration = Duration::from_secs(120);

/// Where the remote is, and how a block-list commit is held.
enum Rig {
    Memory(MemWorld),
    #[cfg(feature = "azure")]
    Azurite(azure_rig::AzureRig),
}

/// A commit being held, and the renewals seen meanwhile.
struct Held {
    reached: Box<dyn Fn() -> bool + Send>,
    renewals: Box<dyn Fn() -> u64 + Send>,
    /// Lets the held commit go (the proxy lets it go by itself after [`HOLD`]).
    release: Box<dyn FnOnce() + Send>,
}

impl Rig {
    fn uri(&self, host: &str, extra: &str) -> String {
        match self {
            Rig::Memory(m) => m.uri(host, &format!("{LEASE}{extra}")),
            #[cfg(feature = "azure")]
            Rig::Azurite(a) => a.uri(host, &format!("{LEASE}{extra}")),
        }
    }

    /// From now on, hold every block-list commit for [`HOLD`].
    fn hold_commits(&self) -> Held {
        match self {
            Rig::Memory(m) => {
                let backend = m.backend.clone();
                let before = backend.calls(Op::CommitBlocks);
                let gate = m.backend.hold(Op::CommitBlocks);
                let renewals = m.backend.clone();
                Held {
                    reached: Box::new(move || backend.calls(Op::CommitBlocks) > before),
                    renewals: Box::new(move || renewals.calls(Op::RenewLease) as u64),
                    release: Box::new(move || drop(gate)),
                }
            }
            #[cfg(feature = "azure")]
            Rig::Azurite(a) => a.hold_commits(HOLD),
        }
    }
}

/// Hold the next block-list commit for [`HOLD`] while `work` runs on a connection
/// of host `h1`; `work`'s result must be a success. Checks the lease was renewed
/// while the commit was held.
fn held_commit_succeeds(
    rig: &Rig,
    what: &str,
    c: Connection,
    work: impl FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static,
) -> Connection {
    let held = rig.hold_commits();
    let worker = thread::spawn(move || {
        let r = work(&c);
        (c, r)
    });
    let start = Instant::now();
    while !(held.reached)() {
        assert!(
            start.elapsed() < BOUND,
            "{what}: the commit never reached the remote"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let renewals_before = (held.renewals)();
    let reached_at = Instant::now();
    thread::sleep(HOLD);
    let renewed = (held.renewals)() - renewals_before;
    (held.release)();
    let (c, result) = worker.join().unwrap();
    if let Err(e) = result {
        panic!(
            "{what}: failed after its upload was held {:?} (past the lease): {e}; status {}",
            reached_at.elapsed(),
            status(&c)
        );
    }
    assert!(
        renewed >= 2,
        "{what}: the lease was renewed {renewed} times while the upload was held"
    );
    c
}

/// Table `t` with one row, committed by an autocommit: the lease is warm, its
/// linger's end due in a second.
fn warm(rig: &Rig, extra: &str) -> Connection {
    let c = open(&rig.uri("h1", extra));
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB); INSERT INTO t(b) VALUES (x'00');",
    )
    .unwrap();
    assert_eq!(status(&c)["lease_held"], true, "{}", status(&c));
    c
}

const INSERT_200: &str =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) \
     INSERT INTO t(b) SELECT randomblob(2000) FROM n;";

/// Another host reads the remote: every row is there.
fn remote_rows(rig: &Rig, host: &str) -> i64 {
    let c = open(&rig.uri(host, ""));
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

fn a_commit(rig: &Rig, extra: &str, host: &str) {
    let c = warm(rig, extra);
    held_commit_succeeds(rig, "a commit", c, |c| {
        c.execute_batch(&format!("BEGIN; {INSERT_200} COMMIT;"))
    });
    assert_eq!(remote_rows(rig, host), 201);
}

fn a_batch_end(rig: &Rig) {
    let c = warm(rig, "");
    c.execute_batch(&format!("PRAGMA managedblob_batch=begin; {INSERT_200}"))
        .unwrap();
    held_commit_succeeds(rig, "a batch end", c, |c| {
        pragma(c, "PRAGMA managedblob_batch=end").map(drop)
    });
    assert_eq!(remote_rows(rig, "h2"), 201);
}

fn a_background_upload(rig: &Rig) {
    let c = warm(rig, "&flush_ms=50");
    let settled = |c: &Connection| {
        let start = Instant::now();
        while status(c)["dirty"] == true {
            assert!(start.elapsed() < BOUND, "never uploaded: {}", status(c));
            thread::sleep(Duration::from_millis(20));
        }
    };
    settled(&c);
    let c = held_commit_succeeds(rig, "a background upload", c, |c| {
        c.execute_batch(&format!("BEGIN; {INSERT_200} COMMIT;"))
    });
    settled(&c);
    let s = status(&c);
    assert!(
        s["last_error"].is_null(),
        "the background upload failed: {s}"
    );
    assert_eq!(remote_rows(rig, "h2"), 201);
}

/// Every scenario side by side, each on its own remote.
fn every_scenario(rig: impl Fn() -> Rig + Sync) {
    thread::scope(|s| {
        s.spawn(|| a_commit(&rig(), "", "h2"));
        s.spawn(|| a_commit(&rig(), "&history=3", "h2"));
        s.spawn(|| a_batch_end(&rig()));
        s.spawn(|| a_background_upload(&rig()));
    });
}

#[test]
fn memory_uploads_longer_than_the_lease_keep_it() {
    every_scenario(|| Rig::Memory(MemWorld::new("clock")));
}

#[cfg(feature = "azure")]
#[test]
fn azurite_uploads_longer_than_the_lease_keep_it() {
    let Some(az) = common::azurite::shared() else {
        return;
    };
    every_scenario(|| Rig::Azurite(azure_rig::AzureRig::new(&az)));
}

/// An idle warm lease is given back with the store's mutex released: while the
/// release is in the network, reads go on (busy_timeout=0 sees no BUSY; with
/// `staleness_ms=0` every read takes the store's mutex for its freshness check), and
/// a write waits for its answer (up to 2 s, then BUSY: here the release is held
/// longer) instead of taking back a lease on its way out.
#[test]
fn releasing_an_idle_lease_holds_nothing_over_the_network() {
    let m = MemWorld::new("releasing");
    let c = m.open("h1", "&lease_linger_ms=100&staleness_ms=0");
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let gate = m.backend.hold(Op::ReleaseLease);
    let start = Instant::now();
    while m.backend.calls(Op::ReleaseLease) == 0 {
        assert!(start.elapsed() < BOUND, "the linger never ended");
        thread::sleep(Duration::from_millis(5));
    }
    // The release is held in the network.
    c.busy_timeout(Duration::ZERO).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("a read during the release: {e}; {}", status(&c)));
    assert_eq!(n, 1);
    let s = status(&c);
    assert_eq!(s["lease_held"], true, "on its way out: {s}");
    let e = c.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
    assert!(is_busy(&e), "a write during the release: {e}");
    drop(gate);
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(m.remote_query::<i64>("SELECT count(*) FROM t"), 2);
    assert!(status(&c)["last_error"].is_null(), "{}", status(&c));
}

/// A write that finds the idle lease's release in the network waits for its answer
/// and takes the lease anew: a connection without a busy handler (the `sqlite3`
/// shell) sees no BUSY for a release that takes one request. Before, it got SQLITE_BUSY
/// (the last local full run, at load 9, failed deferred_flush's lone-connection test so).
#[test]
fn a_write_waits_out_a_release_in_flight() {
    let m = MemWorld::new("release-wait");
    let c = m.open("h1", "&lease_linger_ms=100&staleness_ms=0");
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let gate = m.backend.hold(Op::ReleaseLease);
    let start = Instant::now();
    while m.backend.calls(Op::ReleaseLease) == 0 {
        assert!(start.elapsed() < BOUND, "the linger never ended");
        thread::sleep(Duration::from_millis(5));
    }
    c.busy_timeout(Duration::ZERO).unwrap();
    let opener = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        drop(gate);
    });
    c.execute("INSERT INTO t VALUES (2)", [])
        .unwrap_or_else(|e| panic!("a write during the release: {e}; {}", status(&c)));
    opener.join().unwrap();
    assert_eq!(m.remote_query::<i64>("SELECT count(*) FROM t"), 2);
    assert!(
        m.backend.calls(Op::ReleaseLease) >= 1,
        "the release went through"
    );
}

#[cfg(feature = "azure")]
mod azure_rig {
    use super::*;
    use common::azurite::{self, Azurite};
    use common::http_proxy::{Fate, HttpProxy};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A container on Azurite reached through a proxy that can hold requests.
    pub struct AzureRig {
        proxy: Arc<HttpProxy>,
        remote: String,
        dir: tempfile::TempDir,
    }

    impl AzureRig {
        pub fn new(az: &Azurite) -> AzureRig {
            init_logging();
            managedblob::register().unwrap();
            let (_, proxy, remote) = azurite::container_behind_proxy(az);
            AzureRig {
                proxy: Arc::new(proxy),
                remote,
                dir: tempfile::tempdir().unwrap(),
            }
        }

        pub fn uri(&self, host: &str, extra: &str) -> String {
            let cache = self.dir.path().join(host).join("a.db");
            std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
            uri_with_remote(&cache, &self.remote, extra)
        }

        /// Hold each Put Block List for `hold` before it is forwarded; count lease
        /// renewals.
        pub fn hold_commits(&self, hold: Duration) -> Held {
            let reached = Arc::new(AtomicU64::new(0));
            let renewals = Arc::new(AtomicU64::new(0));
            let (r, n) = (reached.clone(), renewals.clone());
            self.proxy.set_rule(move |req| {
                if req.is_lease("renew") {
                    n.fetch_add(1, Ordering::SeqCst);
                }
                if req.method == "PUT" && req.query_has("comp=blocklist") {
                    r.fetch_add(1, Ordering::SeqCst);
                    return Fate::Slow(hold);
                }
                Fate::Forward
            });
            let proxy = self.proxy.clone();
            Held {
                reached: Box::new(move || reached.load(Ordering::SeqCst) > 0),
                renewals: Box::new(move || renewals.load(Ordering::SeqCst)),
                // The proxy forwards it after `hold`; later commits pass at once.
                release: Box::new(move || proxy.pass_all()),
            }
        }
    }
}
