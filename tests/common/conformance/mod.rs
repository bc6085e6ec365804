//! One backend conformance suite, run against every store: memory and local
//! (tests/backend_memory.rs, tests/backend_local.rs) and Azurite
//! (tests/backend_azurite.rs). Each of those files is one [`suite!`] call plus the
//! checks only its store can make; where stores differ in shape the checks read
//! the store's [`Caps`].

use std::fmt::Debug;
use std::ops::Deref;
use std::time::Duration;

use managedblob::internal::backend::{
    Backend, BackendErrorKind, BackendResult, BlobStat, Condition, Etag, Lease, LeaseId,
};

pub mod backend;
pub mod blocks;
pub mod stage_range;

/// A lease duration every store accepts.
pub const LONG: Duration = Duration::from_secs(30);

pub fn upload(
    b: &dyn Backend,
    blob: &str,
    data: &[u8],
    condition: &Condition,
    lease: Option<&LeaseId>,
) -> BackendResult<BlobStat> {
    b.upload(blob, &mut &data[..], data.len() as u64, condition, lease)
}

/// Upload `data` over the version `etag` under `lease`, which must succeed.
pub fn upload_leased(
    b: &dyn Backend,
    blob: &str,
    data: &[u8],
    etag: Etag,
    lease: &LeaseId,
) -> BlobStat {
    upload(b, blob, data, &Condition::Match(etag), Some(lease)).expect("leased upload")
}

pub fn create(b: &dyn Backend, blob: &str, data: &[u8]) -> BlobStat {
    upload(b, blob, data, &Condition::Create, None).expect("create upload")
}

pub fn download(b: &dyn Backend, blob: &str) -> (Vec<u8>, BlobStat) {
    let mut bytes = Vec::new();
    let stat = b.download(blob, &mut bytes).expect("download");
    (bytes, stat)
}

pub fn current(b: &dyn Backend, blob: &str) -> BlobStat {
    b.stat(blob).expect("stat").expect("blob exists")
}

/// A lease starts from the version `stat`: its etag, and its size where the store
/// tells it with the acquire (Azure's reply has no size).
#[track_caller]
pub fn assert_lease_on(lease: &Lease, stat: &BlobStat) {
    assert_eq!(lease.etag, stat.etag, "{lease:?} on {stat:?}");
    if let Some(size) = lease.size {
        assert_eq!(size, stat.size, "{lease:?} on {stat:?}");
    }
}

#[track_caller]
pub fn kind_of<T: Debug>(result: BackendResult<T>) -> BackendErrorKind {
    result.expect_err("expected an error").kind
}

/// `writers` threads race to write with the same condition, `rounds` times, each
/// its own bytes `[round, t, round, t]`: exactly one wins each round (the others get
/// ConditionFailed), `check(bytes, stat)` sees what it wrote, and the next round
/// races on the winner's etag.
pub fn one_winner_per_round(
    mut stat: BlobStat,
    rounds: u8,
    writers: u8,
    write: impl Fn(&[u8], &Condition) -> BackendResult<BlobStat> + Sync,
    check: impl Fn(&[u8], &BlobStat),
) {
    for round in 0..rounds {
        let winners = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for t in 0..writers {
                let (winners, cond) = (&winners, Condition::Match(stat.etag.clone()));
                let write = &write;
                s.spawn(move || {
                    let data = [round, t, round, t];
                    match write(&data, &cond) {
                        Ok(won) => winners.lock().unwrap().push((data, won)),
                        Err(e) => assert_eq!(e.kind, BackendErrorKind::ConditionFailed, "{e}"),
                    }
                });
            }
        });
        let winners = winners.into_inner().unwrap();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let (data, won) = winners.into_iter().next().unwrap();
        check(&data, &won);
        stat = won;
    }
}

/// What a store can do, and the shape of its identifiers.
#[derive(Clone, Debug)]
pub struct Caps {
    /// An etag of the store's shape that no blob has.
    pub fake_etag: &'static str,
    /// A lease id of the store's shape that is not the holder's.
    pub wrong_lease: &'static str,
    /// The shortest lease the store grants: a shorter request is rounded up.
    pub min_lease: Duration,
    /// Whether the store has the block capability (delta sync).
    pub blocks: bool,
    /// Whether the store itself rejects a block id of the wrong length as `Invalid`
    /// (the azure backend leaves ids to the service).
    pub checks_block_ids: bool,
    /// Whether the store stages a block from a range of the blob itself (Azurite
    /// lacks Put Block From URL).
    pub stages_from_range: bool,
}

/// A fresh, empty store and its capabilities; derefs to the backend.
pub struct Store {
    backend: Box<dyn Backend>,
    pub caps: Caps,
    /// What must live as long as the store (its directory, the Azurite it uses).
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl Deref for Store {
    type Target = dyn Backend;
    fn deref(&self) -> &(dyn Backend + 'static) {
        &*self.backend
    }
}

/// The stores [`suite!`] runs on (`common::fixture::store::<name>`).
pub mod store {
    use super::*;

    pub fn memory() -> Option<Store> {
        Some(Store {
            backend: Box::new(managedblob::internal::backend::memory::MemoryBackend::new()),
            caps: Caps {
                fake_etag: "whatever",
                wrong_lease: "00000000000000000000000000000000",
                min_lease: Duration::ZERO,
                blocks: true,
                checks_block_ids: true,
                stages_from_range: true,
            },
            _keep: Box::new(()),
        })
    }

    pub fn local() -> Option<Store> {
        let dir = tempfile::tempdir().unwrap();
        let backend = managedblob::internal::backend::local::LocalBackend::new(dir.path()).unwrap();
        Some(Store {
            backend: Box::new(backend),
            caps: memory()?.caps,
            _keep: Box::new(dir),
        })
    }

    /// A fresh container on the shared Azurite (None when Azurite is missing).
    #[cfg(feature = "azure")]
    pub fn azurite() -> Option<Store> {
        let azurite = super::super::azurite::shared()?;
        let backend = azurite.fresh(Default::default());
        Some(Store {
            backend: Box::new(backend),
            caps: Caps {
                fake_etag: "\"0x8DEADBEEF\"",
                // Azure lease ids are GUIDs.
                wrong_lease: "00000000-0000-0000-0000-000000000000",
                min_lease: Duration::from_secs(15),
                blocks: true,
                checks_block_ids: false,
                stages_from_range: false,
            },
            _keep: Box::new(azurite),
        })
    }
}

/// Every conformance check, as tests `<store>::<check>` for each store named
/// (`common::conformance::suite!(memory)`).
#[macro_export]
macro_rules! suite {
    ($($store:ident),+ $(,)?) => {
        mod conformance {
            use $crate::conformance::backend::*;
            use $crate::conformance::blocks::*;
            use $crate::conformance::stage_range::*;

            $crate::backend_tests!(store: [$($store),+] => [
                check_missing_blob,
                check_create_then_create_again,
                check_stale_match_fails_and_changes_nothing,
                check_every_upload_gets_a_new_etag,
                check_download_matches_stat,
                check_short_source_changes_nothing,
                check_lease_lifecycle,
                check_lease_expiry,
                check_invalid_names_rejected_everywhere,
                check_concurrent_matches_have_one_winner,
                check_waiter_queue_replaces_conditionally,
                check_blocks_commit_list_and_read,
                check_blocks_create_and_missing,
                check_blocks_respect_the_lease,
                check_blocks_staged_wins_over_committed,
                check_blocks_concurrent_commits_have_one_winner,
                check_block_names_and_ids_are_checked,
                check_blocks_stage_from_range,
            ]);
        }
    };
}
pub use crate::suite;
