//! Remote blob stores behind one synchronous trait.
//!
//! A backend stores whole blobs addressed by name and answers with etags. The VFS
//! above it relies on four promises, which every implementation must keep and the
//! conformance suite in `tests/common/conformance/` (run by `tests/backend_memory.rs`,
//! `tests/backend_local.rs` and `tests/backend_azurite.rs`) checks:
//!
//! 1. An etag names one version: every successful upload yields an etag never seen
//!    before for that blob, even for two same-size uploads in the same millisecond.
//! 2. Uploads are atomic: a reader sees the old content or the new, never a mix.
//! 3. Uploads are conditional ([`Condition`]) and fenced by the lease: a write that
//!    does not hold the current lease, or whose condition no longer holds, changes
//!    nothing and fails with [`BackendErrorKind::ConditionFailed`],
//!    [`BackendErrorKind::AlreadyExists`] or [`BackendErrorKind::LeaseHeld`] /
//!    [`BackendErrorKind::LeaseLost`].
//! 4. Only [`BackendErrorKind::Transient`] errors are worth retrying.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "azure")]
pub mod azure;
mod checks;
pub mod history;
pub mod inspect;
pub mod local;
/// The in-memory reference store with fault injection: a test double, compiled only
/// for tests (the `testing` feature, which the test harness turns on).
#[cfg(any(test, feature = "testing"))]
pub mod memory;

/// Defined with the public error type, which lifts them, so that every layer may
/// name them (here is where backends and their callers always found them).
pub use crate::error::{BackendError, BackendErrorKind, BackendResult};
pub use checks::validate_blob_name;
pub use history::{History, VersionInfo};

/// An opaque version tag for one blob version (Azure's ETag; a token for `local`).
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Etag(pub String);

impl fmt::Debug for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `stat` knows about the current version of a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobStat {
    pub etag: Etag,
    pub size: u64,
}

/// The waiter queue beside a blob as read ([`Backend::waiter_queue`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaiterQueue {
    /// What the store wrote (its format is the store's).
    pub text: String,
    /// Changes with every replace; what the next replace names.
    pub version: String,
}

/// The precondition of an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The blob must not exist (If-None-Match: *). Fails with `AlreadyExists`.
    Create,
    /// The blob's current etag must be this one (If-Match). Fails with `ConditionFailed`
    /// (or `NotFound` when the blob is gone).
    Match(Etag),
}

/// When a write may land: its precondition, fenced by the lease when one is held
/// (object_store's `PutOptions`, for our two rules).
#[derive(Clone, Copy, Debug)]
pub struct Terms<'a> {
    pub condition: &'a Condition,
    /// The current lease, when one is held (a write without it on a leased blob is
    /// refused with `LeaseHeld`).
    pub lease: Option<&'a LeaseId>,
}

/// What a whole-blob write carries: `len` bytes read from `source`.
pub struct Body<'a> {
    pub source: &'a mut dyn Read,
    pub len: u64,
}

/// One block to stage: its id and its bytes.
pub struct Block<'a> {
    pub id: &'a [u8],
    pub data: Vec<u8>,
}

/// The id of a lease this process holds on a blob. Never logged in full.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct LeaseId(pub String);

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.0.chars().take(8).collect();
        write!(f, "LeaseId({shown}..)")
    }
}

/// A lease just acquired, with the version of the blob at that moment: its etag
/// always (Azure's Acquire Lease reply carries it), its size where the store knows it
/// without another request (the local and memory stores; Azure's reply has none).
#[derive(Clone, Debug)]
pub struct Lease {
    pub id: LeaseId,
    pub etag: Etag,
    pub size: Option<u64>,
}

impl Lease {
    /// A lease on the version `stat`, size known.
    pub fn on(id: LeaseId, stat: BlobStat) -> Lease {
        Lease {
            id,
            etag: stat.etag,
            size: Some(stat.size),
        }
    }
}

/// One remote store of blobs. Calls are synchronous and may block on the network.
pub trait Backend: Send + Sync + fmt::Debug {
    /// A stable, secret-free identity of the store (for example `local:/srv/remote`),
    /// recorded in the sidecar so a cache is never mistaken for another remote's.
    fn identity(&self) -> String;

    /// The current version of `blob`, or `None` when it does not exist.
    fn stat(&self, blob: &str) -> BackendResult<Option<BlobStat>>;

    /// Write the whole current content of `blob` into `sink`; returns the version
    /// written (consistent with the bytes, even when an upload races).
    fn download(&self, blob: &str, sink: &mut dyn Write) -> BackendResult<BlobStat>;

    /// Replace `blob` with `len` bytes read from `source`, atomically, when
    /// `condition` holds and the write is allowed by the lease state
    /// (`lease` must be the current lease when one is held). The positional form
    /// of [`Backend::put_blob`].
    fn upload(
        &self,
        blob: &str,
        source: &mut dyn Read,
        len: u64,
        condition: &Condition,
        lease: Option<&LeaseId>,
    ) -> BackendResult<BlobStat> {
        self.put_blob(blob, Body { source, len }, Terms { condition, lease })
    }

    /// Replace `blob` with `body`, atomically, on `terms` (what each backend
    /// implements; callers usually use [`Backend::upload`]).
    fn put_blob(&self, blob: &str, body: Body<'_>, terms: Terms<'_>) -> BackendResult<BlobStat>;

    /// Take the lease on an existing blob for `duration`, with the etag of the version
    /// it starts from (and its size when known without another request: callers that
    /// need it and get `None` ask [`Backend::stat`]). `LeaseHeld` when another owner
    /// holds it, `NotFound` when the blob does not exist.
    fn acquire_lease(&self, blob: &str, duration: Duration) -> BackendResult<Lease>;

    /// Extend a lease we hold. `LeaseLost` when it is no longer ours.
    fn renew_lease(&self, blob: &str, lease: &LeaseId, duration: Duration) -> BackendResult<()>;

    /// Give a lease back. Releasing a lease that is already gone is not an error.
    fn release_lease(&self, blob: &str, lease: &LeaseId) -> BackendResult<()>;

    /// End whatever lease is held on `blob`, whoever holds it (an operator's tool).
    fn break_lease(&self, blob: &str) -> BackendResult<()>;

    /// The block capability, for delta sync; `None` when the store has none (then
    /// every transfer is whole-file).
    fn blocks(&self) -> Option<&dyn Blocks> {
        None
    }

    /// Whether a lease names its owner, so that a lease left by a dead process can
    /// be reclaimed by the backend itself (the local backend). When not (Azure), the
    /// store records the lease it holds in the sidecar, so that a restart of the
    /// same cache on the same host can take it back.
    fn leases_name_their_owner(&self) -> bool {
        true
    }

    /// HTTP requests sent so far, by kind, where the store speaks HTTP (Azure bills
    /// and throttles per request); `None` when a backend call is the request (the
    /// local and memory backends).
    fn http_requests(&self) -> Option<Vec<(&'static str, u64)>> {
        None
    }

    /// Remove what killed writers left beside `blob` (upload temps, staged blocks),
    /// proved abandoned by the lease: `held` is ours (taken after they were made),
    /// or, with `None`, the backend takes the lease itself and skips a blob leased by
    /// a live writer. Returns the bytes removed. Stores with nothing to sweep (Azure
    /// discards uncommitted blocks itself) keep the default.
    fn sweep_leftovers(&self, _blob: &str, _held: Option<&LeaseId>) -> BackendResult<u64> {
        Ok(0)
    }

    /// The waiter queue beside `blob` (fair turns between hosts' writers): the
    /// writers waiting for its lease, oldest first, as text the store writes, with
    /// the version a replace names. `None` when no writer ever waited (or the backend
    /// keeps no queue: every waiter then races for each release).
    fn waiter_queue(&self, _blob: &str) -> BackendResult<Option<WaiterQueue>> {
        Ok(None)
    }

    /// Replace the waiter queue of `blob` with `text` if it is still at version
    /// `expected` (`None`: there is none yet), without a lease. Returns the new
    /// version; `ConditionFailed` or `AlreadyExists` when another writer changed it
    /// first. Backends without a queue keep the default (`Ok(None)`, nothing kept).
    fn replace_waiter_queue(
        &self,
        _blob: &str,
        _text: &str,
        _expected: Option<&str>,
    ) -> BackendResult<Option<String>> {
        Ok(None)
    }

    /// The waiter queue's version alone, read cheaply by a holder keeping the lease
    /// warm: it changes with every replace, so a new version means a writer waits.
    /// `None` when there is no queue.
    fn waiter_mark(&self, _blob: &str) -> BackendResult<Option<String>> {
        Ok(None)
    }

    /// The history capability (earlier versions kept by the store); `None` when the
    /// store keeps none.
    fn history(&self) -> Option<&dyn History> {
        None
    }
}

/// A block id: [`BLOCK_ID_LEN`] raw bytes (Azure wants every id of a blob to have
/// the same length; the SDK base64-encodes them on the wire).
pub type BlockId = Vec<u8>;

/// A committed block list: (id, size) in blob order.
pub type BlockList = Vec<(BlockId, u64)>;

/// Block ids are delta sync's vocabulary first (src/delta.rs, at the bottom of the
/// crate); the contract names them here too.
pub use crate::delta::{BLOCK_ID_LEN, MAX_BLOCKS};

/// A block id (or any bytes) in lower-case hex, for messages, file names and
/// records. A commit hexes every block id of the blob, so this is on its hot path.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Whether a store can stage a block from a range of a blob's committed version
/// itself ([`Blocks::stage_from_range`]), without the bytes passing through us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeStaging {
    /// It can (the local and memory stores copy the range).
    Supported,
    /// It cannot: every call answers [`StagedFromRange::Unsupported`] at once, and
    /// the caller fetches the range and stages the bytes.
    Unsupported,
    /// Not known before the first call answers (Azure: the service says whether it
    /// implements Put Block From URL; Azurite does not). Try it; the answer is kept.
    Unknown,
}

/// What [`Blocks::stage_from_range`] did.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StagedFromRange {
    /// The block is staged, as [`Blocks::stage`] with those bytes would have.
    Staged,
    /// The store cannot stage from a range (object_store's `NotImplemented`):
    /// nothing was staged or changed. Fetch the range and stage it.
    Unsupported,
}

/// A range of a blob's current version, pinned to it: what
/// [`Blocks::stage_from_range`] copies.
#[derive(Clone, Copy, Debug)]
pub struct SourceRange<'a> {
    pub offset: u64,
    pub len: u64,
    /// The version the range must be read from (the store checks it when it copies).
    pub etag: &'a Etag,
}

/// Block-blob operations: stage pieces, commit a list of them atomically, read the
/// committed list, read ranges. The committed list of a blob, concatenated, is the
/// blob's content.
pub trait Blocks: Send + Sync {
    /// The committed block list (id, size) of `blob` with the version it belongs to;
    /// `None` when the blob does not exist. A blob written whole by another tool may
    /// have an empty list (or foreign ids): the caller falls back to a whole download.
    fn block_list(&self, blob: &str) -> BackendResult<Option<(BlobStat, BlockList)>>;

    /// Stage one block; invisible until a commit names it. `lease` as for uploads.
    /// The positional form of [`Blocks::stage`].
    fn stage_block(
        &self,
        blob: &str,
        id: &[u8],
        data: Vec<u8>,
        lease: Option<&LeaseId>,
    ) -> BackendResult<()> {
        self.stage(blob, Block { id, data }, lease)
    }

    /// Stage `block` (what each backend implements).
    fn stage(&self, blob: &str, block: Block<'_>, lease: Option<&LeaseId>) -> BackendResult<()>;

    /// Make `ids` (staged or already committed blocks, in order) the blob's content,
    /// atomically, under `condition` and `lease` exactly like [`Backend::upload`].
    /// The positional form of [`Blocks::commit`].
    fn commit_blocks(
        &self,
        blob: &str,
        ids: &[BlockId],
        condition: &Condition,
        lease: Option<&LeaseId>,
    ) -> BackendResult<BlobStat> {
        self.commit(blob, ids, Terms { condition, lease })
    }

    /// Commit `ids` as the blob's content on `terms` (what each backend implements).
    fn commit(&self, blob: &str, ids: &[BlockId], terms: Terms<'_>) -> BackendResult<BlobStat>;

    /// Sizes of committed blocks the caller knows (the chunk list a cache keeps beside
    /// it), so that a commit naming blocks this process never staged nor listed needs
    /// no request to learn the blob's size. Stores that need no help keep the default.
    fn learn_sizes(&self, _blob: &str, _blocks: &[(BlockId, u64)]) {}

    /// `len` bytes at `offset` of the version `etag`; `ConditionFailed` when the blob
    /// is no longer that version.
    fn read_range(&self, blob: &str, offset: u64, len: u64, etag: &Etag) -> BackendResult<Vec<u8>>;

    /// Whether [`Blocks::stage_from_range`] can work here, as far as the store knows
    /// without a request. Stores that cannot keep the default.
    fn range_staging(&self) -> RangeStaging {
        RangeStaging::Unsupported
    }

    /// Stage block `id` of `blob` from `source`, a range of the blob's current
    /// version, without the bytes passing through this process (a lazy cache
    /// completes a chunk it never fetched this way). `ConditionFailed` when the blob
    /// is no longer version `source.etag`, `NotFound` when it is gone, `Invalid` when
    /// the range is not inside it; `lease` as for [`Blocks::stage`]. Answers
    /// [`StagedFromRange::Unsupported`], having changed nothing, where the store
    /// cannot (the default).
    fn stage_from_range(
        &self,
        _blob: &str,
        _id: &[u8],
        _source: SourceRange<'_>,
        _lease: Option<&LeaseId>,
    ) -> BackendResult<StagedFromRange> {
        Ok(StagedFromRange::Unsupported)
    }

    /// Whether a commit may keep the base's first block when the only bytes of it
    /// that changed are SQLite's file change counter and its "version-valid-for" copy
    /// (header offsets 24 and 92), which SQLite bumps on every commit. That saves one
    /// staged block per small commit where readers take the blob whole (Azure): the
    /// blob stays a valid SQLite file, and each cache moves its own counter when it
    /// installs a version. Not where SQLite readers open the blob file in place (the
    /// local backend): their page caches notice a new version only by that counter.
    fn counter_may_lag(&self) -> bool {
        false
    }
}

/// Build the backend a `remote` setting names (the store and the `managedblob` CLI
/// both connect through here).
pub fn connect(spec: &crate::config::RemoteSpec) -> crate::error::Result<Arc<dyn Backend>> {
    use crate::config::RemoteSpec;
    use crate::error::Error;
    match spec {
        RemoteSpec::Local(dir) => local::LocalBackend::new(dir.clone())
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
            .map_err(|source| Error::Setting {
                what: "setting 'remote' names an unusable directory".into(),
                source,
            }),
        #[cfg(any(test, feature = "testing"))]
        RemoteSpec::Memory(name) => Ok(memory::MemoryBackend::named(name) as Arc<dyn Backend>),
        #[cfg(feature = "azure")]
        RemoteSpec::Azure(url) => crate::backend::azure::AzureBackend::connect(url)
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
            .map_err(|source| Error::Setting {
                what: "setting 'remote' names an unusable Azure container".into(),
                source,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_id_debug_hides_most_of_the_token() {
        let id = LeaseId("0123456789abcdef0123".into());
        let shown = format!("{id:?}");
        assert!(!shown.contains("89abcdef0123"), "{shown}");
    }
}
