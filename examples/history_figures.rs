//! The version-history figures of docs/BENCHMARKS.md (issue 13, item 7):
//!
//! 1. a 64 MiB database, then N one-row autocommits with `history=N`: commit time
//!    with history on against off, and the storage the versions use (local: the
//!    chunk store beside the blob; Azurite: the snapshot count); on Azurite also
//!    `history=N/10`, where from the N/10-th commit on each commit drops a snapshot;
//! 2. restore of a large version (`download_version`) against a raw download of the
//!    same bytes (skipped with a size of 0).
//!
//! `cargo run --release --features azure --example history_figures -- [commits] [restore MiB]`
//! (defaults 1000 and 512; Azurite from `AZURITE_BLOB` or target/azurite).

use std::path::Path;
use std::time::{Duration, Instant};

use managedblob::internal::backend::local::LocalBackend;
use managedblob::internal::backend::{Backend, BlockId, Condition};
use managedblob::internal::delta::{chunk_size_for, ChunkId};
use rusqlite::{Connection, OpenFlags};

#[cfg(feature = "azure")]
use common::azurite;

fn open(cache: &Path, remote: &str, extra: &str) -> Connection {
    managedblob::register().unwrap();
    let uri = format!(
        "file:{}?vfs=managedblob&remote={}&blob=big.db{extra}",
        cache.display(),
        remote
            .replace('%', "%25")
            .replace('&', "%26")
            .replace('?', "%3F")
    );
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap()
}

/// What one-row autocommits cost on average: time, HTTP requests (as
/// `PRAGMA managedblob_status` counts them: `requests.http.total`) and bytes up.
struct PerCommit {
    time: Duration,
    requests: f64,
    bytes_up: f64,
}

impl PerCommit {
    fn show(&self) -> String {
        format!(
            "{:.2} ms, {:.2} requests, {:.0} bytes up",
            self.time.as_secs_f64() * 1e3,
            self.requests,
            self.bytes_up
        )
    }
}

/// `requests.http.total` and `requests.bytes_up` of the connection's database.
fn counted(c: &Connection) -> (f64, f64) {
    let s: String = c
        .query_row("PRAGMA managedblob_status", [], |r| r.get(0))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    let n = |x: &serde_json::Value| x.as_f64().unwrap_or(0.0);
    (
        n(&v["requests"]["http"]["total"]),
        n(&v["requests"]["bytes_up"]),
    )
}

/// A 64 MiB database in one batch, then `commits` one-row autocommits; returns what
/// one commit costs on average.
fn commits(remote: &str, history: &str, commits: u32) -> PerCommit {
    let dir = tempfile::tempdir().unwrap();
    let c = open(
        &dir.path().join("big.db"),
        remote,
        &format!("&history={history}"),
    );
    c.execute_batch(
        "PRAGMA managedblob_batch=begin;
         CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, body BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 16000)
         INSERT INTO t(body) SELECT randomblob(4000) FROM n;
         PRAGMA managedblob_batch=end;",
    )
    .unwrap();
    let (requests, bytes_up) = counted(&c);
    let started = Instant::now();
    for _ in 0..commits {
        c.execute("INSERT INTO t(body) VALUES (randomblob(100))", [])
            .unwrap();
    }
    let time = started.elapsed() / commits;
    let (requests_after, bytes_up_after) = counted(&c);
    PerCommit {
        time,
        requests: (requests_after - requests) / f64::from(commits),
        bytes_up: (bytes_up_after - bytes_up) / f64::from(commits),
    }
}

fn dir_bytes(dir: &Path) -> (u64, usize) {
    let mut total = (0, 0);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                let (b, n) = dir_bytes(&e.path());
                total = (total.0 + b, total.1 + n);
            } else {
                total = (total.0 + meta.len(), total.1 + 1);
            }
        }
    }
    total
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// A blob of `size` random bytes in block-list form, then one snapshot; the time of a
/// raw download and of a restore of that version (both into a file).
fn restore_against_download(b: &dyn Backend, size: u64) -> (Duration, Duration) {
    let blocks = b.blocks().unwrap();
    let chunk = chunk_size_for(size);
    let mut ids: Vec<BlockId> = Vec::new();
    let mut rng = fastrand::Rng::with_seed(1);
    let mut offset = 0;
    while offset < size {
        let len = chunk.min(size - offset);
        let data: Vec<u8> = std::iter::repeat_with(|| rng.u8(..))
            .take(len as usize)
            .collect();
        let id = ChunkId::new(ids.len() as u32, &data).as_bytes().to_vec();
        blocks.stage_block("r.db", &id, data, None).unwrap();
        ids.push(id);
        offset += len;
    }
    blocks
        .commit_blocks("r.db", &ids, &Condition::Create, None)
        .unwrap();
    let h = b.history().unwrap();
    let id = h.snapshot("r.db", None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let time = |f: &dyn Fn(&mut std::fs::File)| {
        let mut file = std::fs::File::create(dir.path().join("out")).unwrap();
        let started = Instant::now();
        f(&mut file);
        file.sync_all().unwrap();
        started.elapsed()
    };
    let raw = time(&|f| {
        b.download("r.db", f).unwrap();
    });
    let restore = time(&|f| {
        h.download_version("r.db", &id, f).unwrap();
    });
    (raw, restore)
}

/// Print one restore figure: the raw download and restore times of [`restore_against_download`].
fn print_restore(label: &str, restore_mib: u64, (raw, restore): (Duration, Duration)) {
    println!(
        "{label}: {restore_mib} MiB version: raw download {:.2} s, restore {:.2} s ({:.2}x)",
        raw.as_secs_f64(),
        restore.as_secs_f64(),
        restore.as_secs_f64() / raw.as_secs_f64()
    );
}

/// A fresh, empty Azurite container: its backend, and its URL with an account SAS.
#[cfg(feature = "azure")]
fn azurite_container(
    az: &azurite::Azurite,
) -> (managedblob::internal::backend::azure::AzureBackend, String) {
    let container = azurite::random_container();
    let backend = az.backend_for(&container, Default::default());
    backend.create_container().unwrap();
    (backend, az.container_url_with_sas(&container))
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let n = args.first().copied().unwrap_or(1000) as u32;
    let restore_mib = args.get(1).copied().unwrap_or(512);

    let off_dir = tempfile::tempdir().unwrap();
    let off = commits(off_dir.path().to_str().unwrap(), "off", n);
    let on_dir = tempfile::tempdir().unwrap();
    let on = commits(on_dir.path().to_str().unwrap(), &n.to_string(), n);
    let blob = std::fs::metadata(on_dir.path().join("big.db"))
        .unwrap()
        .len();
    let (kept, files) = dir_bytes(&on_dir.path().join(".big.db.mb-versions"));
    let versions = LocalBackend::new(on_dir.path()).unwrap();
    let listed = managedblob::internal::backend::History::versions(&versions, "big.db").unwrap();
    println!(
        "local: {n} one-row commits on a {} database, per commit: history off {}; on {}; \
         {} versions kept in {} ({files} files), {} per version beyond the first",
        mib(blob),
        off.show(),
        on.show(),
        listed.len(),
        mib(kept),
        mib(kept.saturating_sub(blob) / u64::from(n.max(1))),
    );

    if restore_mib > 0 {
        let restore_dir = tempfile::tempdir().unwrap();
        let local = LocalBackend::new(restore_dir.path()).unwrap();
        let timed = restore_against_download(&local, restore_mib << 20);
        print_restore("local", restore_mib, timed);
    }

    #[cfg(feature = "azure")]
    if let Some(az) = azurite::shared() {
        let (_, url) = azurite_container(&az);
        let off = commits(&url, "off", n);
        let (backend2, url2) = azurite_container(&az);
        let on = commits(&url2, &n.to_string(), n);
        let h = backend2.history().unwrap();
        println!(
            "azurite: {n} one-row commits on a 64 MiB database, per commit: history off {}; \
             on {}; {} snapshots kept",
            off.show(),
            on.show(),
            h.listing("big.db").unwrap().len()
        );
        let keep = (n / 10).max(1);
        let (backend3, url3) = azurite_container(&az);
        let pruning = commits(&url3, &keep.to_string(), n);
        println!(
            "azurite: {n} one-row commits with history={keep} (each commit from the \
             {keep}th on drops a snapshot), per commit: {}; {} snapshots kept",
            pruning.show(),
            backend3.history().unwrap().listing("big.db").unwrap().len()
        );
        if restore_mib > 0 {
            let timed = restore_against_download(&backend2, restore_mib << 20);
            print_restore("azurite", restore_mib, timed);
        }
    }
}
