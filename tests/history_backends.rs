//! The history capability of each backend (memory, local, Azurite), driven directly:
//! retention by count and by age, an unknown version, the current blob never
//! deleted; on Azurite, retention counts its snapshots (no listing per commit) and
//! stays right when another process takes or deletes snapshots; and on the local
//! backend, kills during snapshots and prunes leave every listed version restorable.

use std::time::{Duration, SystemTime};

use common::child::{self, Proc};
use common::World;
use managedblob::internal::backend::local::LocalBackend;
use managedblob::internal::backend::memory::MemoryBackend;
use managedblob::internal::backend::{
    Backend, BackendErrorKind, BlockId, Condition, History, LeaseId, VersionInfo,
};
use managedblob::internal::config::HistoryPolicy;
use managedblob::internal::delta::ChunkId;

/// The piece size of the test blobs (one managedblob chunk).
const PIECE: usize = 64 * 1024;

/// A piece whose bytes follow from its first 8 (its seed), so any piece can be
/// checked on its own.
fn piece(seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(PIECE).collect();
    data[..8].copy_from_slice(&seed.to_be_bytes());
    data
}

/// Whether `bytes` is whole pieces, each consistent with its seed.
fn pieces_consistent(bytes: &[u8]) -> bool {
    bytes.len() % PIECE == 0
        && bytes.chunks(PIECE).all(|p| {
            let seed = u64::from_be_bytes(p[..8].try_into().unwrap());
            piece(seed) == p
        })
}

/// Publish `seeds` as the blob's content in block-list form (only changed pieces
/// are new blocks), as delta sync does.
fn publish_pieces(b: &dyn Backend, blob: &str, seeds: &[u64], lease: Option<&LeaseId>) {
    let blocks = b.blocks().expect("blocks");
    let mut ids: Vec<BlockId> = Vec::new();
    for (i, seed) in seeds.iter().enumerate() {
        let data = piece(*seed);
        let id = ChunkId::new(i as u32, &data).as_bytes().to_vec();
        blocks.stage_block(blob, &id, data, lease).unwrap();
        ids.push(id);
    }
    let condition = match b.stat(blob).unwrap() {
        Some(stat) => Condition::Match(stat.etag),
        None => Condition::Create,
    };
    blocks.commit_blocks(blob, &ids, &condition, lease).unwrap();
}

fn history(b: &dyn Backend) -> &dyn History {
    b.history().expect("this backend keeps versions")
}

fn restore(b: &dyn Backend, blob: &str, v: &VersionInfo) -> Vec<u8> {
    let mut out = Vec::new();
    history(b).download_version(blob, &v.id, &mut out).unwrap();
    out
}

/// Three versions; retention by age drops those older than the age (never the
/// newest); by count keeps the newest n; an unknown id is NotFound.
fn retention_on(b: &dyn Backend) {
    let blob = "ret.db";
    let h = history(b);
    let mut published = Vec::new();
    for round in 0..3u64 {
        let seeds = [1, 2, 100 + round];
        publish_pieces(b, blob, &seeds, None);
        h.snapshot(blob, None).unwrap();
        published.push(b.get_all(blob));
    }
    let kept = h.versions(blob).unwrap();
    assert_eq!(kept.len(), 3);
    for (v, want) in kept.iter().zip(&published) {
        assert_eq!(&restore(b, blob, v), want);
        assert_eq!(v.size, want.len() as u64);
    }
    // The two pieces every version shares are unique to none.
    assert!(
        kept.iter().all(|v| v.unique_bytes <= PIECE as u64),
        "{kept:?}"
    );

    let missing = h.download_version(blob, "1999-01-01T00:00:00.0000000Z", &mut Vec::new());
    assert_eq!(missing.unwrap_err().kind, BackendErrorKind::NotFound);

    let day = HistoryPolicy::MaxAge(Duration::from_secs(86_400));
    assert!(h.prune(blob, day, SystemTime::now()).unwrap().is_empty());
    assert_eq!(
        h.prune(blob, HistoryPolicy::Keep(2), SystemTime::now())
            .unwrap()
            .len(),
        1
    );
    let later = SystemTime::now() + Duration::from_secs(3 * 86_400);
    assert_eq!(h.prune(blob, day, later).unwrap().len(), 1);
    let left = h.versions(blob).unwrap();
    assert_eq!(left.len(), 1, "the newest is kept whatever its age");
    assert_eq!(restore(b, blob, &left[0]), published[2]);
    assert_eq!(
        b.get_all(blob),
        published[2],
        "the blob itself is untouched"
    );
}

/// The whole current content of a blob.
trait GetAll {
    fn get_all(&self, blob: &str) -> Vec<u8>;
}

impl GetAll for dyn Backend + '_ {
    fn get_all(&self, blob: &str) -> Vec<u8> {
        let mut out = Vec::new();
        self.download(blob, &mut out).unwrap();
        out
    }
}

#[test]
fn memory_retention_by_count_and_age() {
    retention_on(&MemoryBackend::new());
}

#[test]
fn local_retention_by_count_and_age() {
    let dir = tempfile::tempdir().unwrap();
    retention_on(&LocalBackend::new(dir.path()).unwrap());
}

#[cfg(feature = "azure")]
#[test]
fn azurite_retention_by_count_and_age() {
    if let Some(world) = World::azurite() {
        world.with_backend(retention_on);
    }
}

#[test]
fn local_snapshots_store_only_changed_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::new(dir.path()).unwrap();
    let seeds: Vec<u64> = (0..16).collect();
    publish_pieces(&b, "s.db", &seeds, None);
    b.snapshot("s.db", None).unwrap();
    let mut changed = seeds.clone();
    changed[7] = 1000;
    publish_pieces(&b, "s.db", &changed, None);
    b.snapshot("s.db", None).unwrap();
    // The same version twice is kept once.
    b.snapshot("s.db", None).unwrap();
    let chunks = dir.path().join(".s.db.mb-versions/chunks");
    assert_eq!(std::fs::read_dir(chunks).unwrap().count(), 17);
    let kept = b.versions("s.db").unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[1].unique_bytes, PIECE as u64);
}

/// The child: publish and snapshot versions, pruning to the newest 4, until killed.
fn history_writer(_uri: &str) {
    let dir = child::env("MB_REMOTE_DIR");
    let b = LocalBackend::new(&dir).unwrap();
    let mut rng = fastrand::Rng::new();
    let mut seeds: Vec<u64> = (0..12).map(|_| rng.u64(..)).collect();
    loop {
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..seeds.len());
            seeds[at] = rng.u64(..);
        }
        publish_pieces(&b, "k.db", &seeds, None);
        b.snapshot("k.db", None).unwrap();
        b.prune("k.db", HistoryPolicy::Keep(4), SystemTime::now())
            .unwrap();
        child::say("kept");
    }
}

/// The child: one-row autocommits through the VFS with `history=4` in its URI,
/// saying the row count after each acknowledged commit, until killed.
fn vfs_writer(uri: &str) {
    let c = common::open(uri);
    c.execute_batch("CREATE TABLE IF NOT EXISTS t(x BLOB)")
        .unwrap();
    loop {
        c.execute("INSERT INTO t VALUES (randomblob(3000))", [])
            .unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        child::say(&format!("kept {n}"));
    }
}

/// The child ("another host" on Azure): its own backend on the remote `uri`; takes
/// `MB_SNAPSHOTS` snapshots of `n.db`, deletes version `MB_DELETE` when given, says
/// `done`.
fn other_host(uri: &str) {
    let spec = managedblob::internal::config::parse_remote(uri).unwrap();
    let b = managedblob::internal::backend::connect(&spec).unwrap();
    let h = history(b.as_ref());
    for _ in 0..child::env_num::<u32>("MB_SNAPSHOTS") {
        h.snapshot("n.db", None).unwrap();
    }
    if let Ok(id) = std::env::var("MB_DELETE") {
        h.delete_version("n.db", &id).unwrap();
    }
    child::say("done");
}

#[test]
fn child_main() {
    child::child_main(&[
        ("history_writer", history_writer),
        ("vfs_writer", vfs_writer),
        ("other_host", other_host),
    ]);
}

/// HTTP requests `b` sent so far.
#[cfg(feature = "azure")]
fn http_total(b: &dyn Backend) -> u64 {
    b.http_requests().unwrap().iter().map(|(_, n)| n).sum()
}

/// Azure retention counts the snapshots this process took instead of listing them
/// at every commit: after the first prune, a commit's history costs the snapshot
/// plus one delete per version dropped. Another process's snapshots make it
/// under-count (it drops later, never one the retention keeps); a delete that finds
/// its snapshot gone makes it list again and prune to the exact count.
#[cfg(feature = "azure")]
#[test]
fn azurite_retention_counts_instead_of_listing() {
    let Some(world) = World::azurite() else {
        return;
    };
    let keep = HistoryPolicy::Keep(3);
    world.with_backend(|b| {
        let h = history(b);
        let ids = |b: &dyn Backend| -> Vec<String> {
            let kept = history(b).listing("n.db").unwrap();
            kept.into_iter().map(|v| v.id).collect()
        };
        let mut taken = Vec::new();
        for round in 0..6u64 {
            publish_pieces(b, "n.db", &[1, 200 + round], None);
            let before = http_total(b);
            taken.push(h.snapshot("n.db", None).unwrap());
            let dropped = h.prune("n.db", keep, SystemTime::now()).unwrap();
            let requests = http_total(b) - before;
            if round == 0 {
                assert_eq!(
                    requests, 3,
                    "the first: whether versioning is on, the snapshot, one listing"
                );
            } else {
                assert_eq!(
                    requests,
                    1 + dropped.len() as u64,
                    "round {round}: the snapshot and its deletes, no listing"
                );
            }
            let over = usize::from(taken.len() > 3);
            assert_eq!(
                dropped.len(),
                over,
                "round {round}: one dropped once over 3"
            );
        }
        assert_eq!(ids(b), taken[3..], "the newest 3, by count alone");

        // Another host takes two snapshots: this record misses them.
        let mut other = Proc::spawn(
            "other-1",
            "other_host",
            &world.remote_value(),
            &[("MB_SNAPSHOTS", "2".into())],
        );
        other.expect("done", Duration::from_secs(60));
        other.wait_success(Duration::from_secs(30));
        let store = ids(b);
        assert_eq!(store.len(), 5);
        taken.push(h.snapshot("n.db", None).unwrap());
        let dropped = h.prune("n.db", keep, SystemTime::now()).unwrap();
        let after = ids(b);
        let newest: Vec<String> = store[3..].iter().chain(&taken[6..]).cloned().collect();
        assert!(
            newest.iter().all(|id| after.contains(id))
                && !dropped.iter().any(|id| newest.contains(id)),
            "a stale record dropped {dropped:?}; the newest 3 are {newest:?}; left {after:?}"
        );

        // The listing above refreshed the record; the other host deletes the
        // oldest, then this process's next prune finds it gone and lists again.
        let oldest = after[0].clone();
        let mut other = Proc::spawn(
            "other-2",
            "other_host",
            &world.remote_value(),
            &[("MB_SNAPSHOTS", "0".into()), ("MB_DELETE", oldest.clone())],
        );
        other.expect("done", Duration::from_secs(60));
        other.wait_success(Duration::from_secs(30));
        taken.push(h.snapshot("n.db", None).unwrap());
        let dropped = h.prune("n.db", keep, SystemTime::now()).unwrap();
        assert!(
            !dropped.contains(&oldest),
            "{oldest} was deleted by the other host"
        );
        let left = ids(b);
        assert_eq!(left.len(), 3, "exact again after the relisting: {left:?}");
        assert_eq!(left.last(), taken.last(), "the newest is kept");
    });
}

/// HTTP requests of `kind` `b` sent so far.
#[cfg(feature = "azure")]
fn http_of(b: &dyn Backend, kind: &str) -> u64 {
    let counts = b.http_requests().unwrap();
    counts.iter().find(|(k, _)| *k == kind).unwrap().1
}

/// One SDK call on a snapshot of `blob` in `world`'s container, through its SAS
/// URL, behind the backend's back.
#[cfg(feature = "azure")]
fn on_snapshot<T: Send + 'static>(
    world: &World,
    blob: &str,
    id: &str,
    call: impl FnOnce(
            azure_storage_blob::BlobClient,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
        + Send
        + 'static,
) -> T {
    let remote = world.remote_value();
    let (container, sas) = remote.split_once('?').unwrap();
    let url = azure_core::http::Url::parse(&format!("{container}/{blob}?{sas}")).unwrap();
    let client = azure_storage_blob::BlobClient::new(url, None, None)
        .unwrap()
        .with_snapshot(id)
        .unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(call(client))
}

/// `read_kept_range` on Azure finds the snapshot by the ETag the blob had when it
/// was taken: Azurite (3.35) gives a snapshot the base blob's ETag, checked here
/// with a Get Blob Properties of the snapshot. The first read of a version this
/// process's record does not map lists the snapshots once; every later read is one
/// ranged Get Blob. An ETag no snapshot has, or a range past the end, is `None`; a
/// snapshot deleted behind the record's back is found gone (one Get), listed again,
/// and `None`.
#[cfg(feature = "azure")]
#[test]
fn azurite_reads_a_kept_range_by_the_etag_it_had() {
    use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders;
    use managedblob::internal::backend::Etag;
    let Some(world) = World::azurite() else {
        return;
    };
    let blob = "k.db";
    world.with_backend(|b| {
        let h = history(b);
        publish_pieces(b, blob, &[1, 2, 3], None);
        let v1 = b.stat(blob).unwrap().unwrap();
        let s1 = h.snapshot(blob, None).unwrap();
        let snapshot_etag = on_snapshot(&world, blob, &s1, |c| {
            Box::pin(async move { c.get_properties(None).await.unwrap().etag().unwrap() })
        });
        assert_eq!(
            snapshot_etag.map(|e| e.to_string()).as_deref(),
            Some(v1.etag.0.as_str()),
            "a snapshot keeps the base blob's ETag as of when it was taken"
        );
        publish_pieces(b, blob, &[1, 2, 4], None);
        let v2 = b.stat(blob).unwrap().unwrap();
        assert_ne!(v1.etag, v2.etag);
        h.snapshot(blob, None).unwrap();
        publish_pieces(b, blob, &[5, 6, 7], None);

        let piece_len = PIECE as u64;
        let (total, gets, lists) = (
            http_total(b),
            http_of(b, "get_blob"),
            http_of(b, "list_blobs"),
        );
        let read = h.read_kept_range(blob, &v1.etag, 2 * piece_len, piece_len);
        let read = read.unwrap().expect("v1 is kept");
        assert!(read == piece(3), "v1's third piece");
        assert_eq!(
            http_of(b, "list_blobs") - lists,
            1,
            "the first read lists once"
        );
        assert_eq!(http_of(b, "get_blob") - gets, 1);
        assert_eq!(http_total(b) - total, 2, "a listing and a ranged Get");

        let (total, gets) = (http_total(b), http_of(b, "get_blob"));
        let read = h.read_kept_range(blob, &v1.etag, 10, 100).unwrap();
        assert_eq!(read.as_deref(), Some(&piece(1)[10..110]));
        let read = h
            .read_kept_range(blob, &v2.etag, 2 * piece_len, piece_len)
            .unwrap();
        assert!(read.expect("v2 is kept") == piece(4), "v2's third piece");
        assert_eq!(http_of(b, "get_blob") - gets, 2);
        assert_eq!(
            http_total(b) - total,
            2,
            "one ranged Get per read, no listing"
        );

        let unknown = Etag("\"0x8DEADBEEF\"".into());
        assert_eq!(h.read_kept_range(blob, &unknown, 0, 10).unwrap(), None);
        let past_end = h.read_kept_range(blob, &v1.etag, 3 * piece_len - 5, 10);
        assert_eq!(past_end.unwrap(), None, "a range past the version's end");

        // Another host's retention deletes the snapshot the record maps v1 to.
        on_snapshot(&world, blob, &s1, |c| {
            Box::pin(async move { c.delete(None).await.unwrap() })
        });
        let total = http_total(b);
        assert_eq!(h.read_kept_range(blob, &v1.etag, 0, 10).unwrap(), None);
        assert_eq!(
            http_total(b) - total,
            2,
            "a Get found it gone, a listing agreed"
        );
        let read = h.read_kept_range(blob, &v2.etag, 0, 10).unwrap();
        assert_eq!(read.as_deref(), Some(&piece(1)[..10]), "v2 still kept");
    });
}

/// `PRAGMA integrity_check` and the rows of `t` in a plain copy of `bytes`.
fn check_and_count(bytes: &[u8]) -> (String, i64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    std::fs::write(&path, bytes).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let check = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let rows = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    (check, rows)
}

#[test]
fn local_kills_of_a_vfs_writer_leave_every_listed_version_restorable() {
    let world = World::local();
    let uri = world.uri("h1", "w.db", "&history=4");
    let mut rng = fastrand::Rng::with_seed(11);
    for round in 0..5 {
        let mut proc = Proc::spawn(&format!("vfs{round}"), "vfs_writer", &uri, &[]);
        let mut acknowledged = 0;
        for _ in 0..rng.usize(1..8) {
            let said = proc.expect("kept", Duration::from_secs(60));
            acknowledged = said.trim_start_matches("kept ").trim().parse().unwrap();
        }
        std::thread::sleep(Duration::from_micros(rng.u64(0..20_000)));
        proc.signal(libc::SIGKILL);
        let b = LocalBackend::new(world.remote()).unwrap();
        let kept = b.versions("w.db").unwrap();
        assert!(
            !kept.is_empty() && kept.len() <= 5,
            "round {round}: {kept:?}"
        );
        let mut newest_rows = 0;
        for v in &kept {
            let (check, rows) = check_and_count(&restore(&b, "w.db", v));
            assert_eq!(check, "ok", "round {round}: version {}", v.id);
            newest_rows = rows;
        }
        assert!(
            newest_rows >= acknowledged,
            "round {round}: acknowledged {acknowledged} rows, newest version has {newest_rows}"
        );
    }
}

#[test]
fn local_kills_during_snapshots_and_prunes_leave_every_listed_version_restorable() {
    let dir = tempfile::tempdir().unwrap();
    let vars = [("MB_REMOTE_DIR", dir.path().to_str().unwrap().to_string())];
    let mut rng = fastrand::Rng::with_seed(7);
    let mut checked = 0;
    for round in 0..6 {
        let mut proc = Proc::spawn(&format!("writer{round}"), "history_writer", "", &vars);
        for _ in 0..rng.usize(1..6) {
            proc.expect("kept", Duration::from_secs(60));
        }
        // Somewhere inside the next snapshot or prune.
        std::thread::sleep(Duration::from_micros(rng.u64(0..20_000)));
        proc.signal(libc::SIGKILL);
        let b = LocalBackend::new(dir.path()).unwrap();
        for v in b.versions("k.db").unwrap() {
            let bytes = restore(&b, "k.db", &v);
            assert!(pieces_consistent(&bytes), "round {round}: version {}", v.id);
            assert_eq!(bytes.len() as u64, v.size);
            checked += 1;
        }
    }
    assert!(checked > 0);
}
