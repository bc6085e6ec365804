//! An in-memory reference backend with fault injection, for tests.
//!
//! It keeps exactly the promises of [`Backend`] (and the lease rules of the `local`
//! backend) so the VFS can be driven through failures a real store produces only
//! rarely: injected errors, random transient failures, latency, a lease that expires
//! under a paused writer, a foreign write, or an upload that lands although its
//! reply was lost.
//!
//! It has the block capability too ([`Blocks`]), modelled on Azure block blobs: each
//! blob keeps its committed block list (a whole upload, like Put Blob, leaves it
//! empty), blocks are staged per blob until a commit names them (a commit, or a whole
//! upload, discards every staged block), and a commit takes for each id the staged
//! block if there is one, else the committed one.
//!
//! Tests reach one instance from both the test and the VFS (which opens the remote
//! from a URI such as `remote=memory:<name>`) through [`MemoryBackend::named`].

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

mod faults;
mod versions;

use self::faults::{Fault, OP_COUNT};
pub use self::faults::{Gate, Op};

use super::checks::{
    check_block_id, check_condition, check_range, check_version, check_write_lease, read_exactly,
    Refusal,
};
use super::{
    hex, Backend, BackendError, BackendErrorKind, BackendResult, BlobStat, BlockId, Blocks,
    Condition, Etag, Lease, LeaseId,
};
use super::{Block, Body, RangeStaging, SourceRange, StagedFromRange, Terms, WaiterQueue};

/// Blobs held in memory, with knobs to make the store misbehave.
pub struct MemoryBackend {
    name: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    blobs: HashMap<String, StoredBlob>,
    /// Blocks staged per blob (the blob need not exist yet), until a commit.
    staged: HashMap<String, HashMap<BlockId, Arc<Vec<u8>>>>,
    leases: HashMap<String, HeldLease>,
    /// Source of etags: one counter for the whole store, so an etag is never reused,
    /// not even by a blob deleted and recreated.
    versions: u64,
    faults: [Fault; OP_COUNT],
    latency: Duration,
    land_then_fail: bool,
    /// The waiter queue per blob: its version (from `versions`) and text.
    waiters: HashMap<String, (u64, String)>,
}

struct StoredBlob {
    /// Shared so a download can copy outside the lock while uploads replace it.
    data: Arc<Vec<u8>>,
    etag: Etag,
    /// The committed block list; empty for a blob written whole.
    blocks: Vec<(BlockId, u64)>,
}

struct HeldLease {
    token: String,
    expires: Instant,
}

impl HeldLease {
    fn is_live(&self) -> bool {
        Instant::now() < self.expires
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// A fresh store with a unique name, not reachable through [`MemoryBackend::named`].
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self::with_name(format!("anonymous-{n}"))
    }

    /// A fresh anonymous store, ready to share between threads.
    pub fn new_anonymous() -> Arc<Self> {
        Arc::new(Self::new())
    }

    /// The process-wide store called `name`, created on first use, so a test and the
    /// VFS (opened with `remote=memory:<name>`) see the same blobs.
    pub fn named(name: &str) -> Arc<Self> {
        static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<MemoryBackend>>>> = OnceLock::new();
        REGISTRY
            .get_or_init(Default::default)
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Self::with_name(name.to_owned())))
            .clone()
    }

    fn with_name(name: String) -> Self {
        MemoryBackend {
            name,
            state: Mutex::new(State::default()),
        }
    }

    /// A foreign write: replace `blob` with `bytes` under a new etag, ignoring any lease
    /// (like a Put Blob: the committed block list is empty afterwards).
    pub fn put(&self, blob: &str, bytes: &[u8]) {
        self.state.lock().store(blob, bytes.to_vec(), Vec::new());
    }

    /// The ids of the blocks staged for `blob` and not yet committed or discarded.
    pub fn staged_blocks(&self, blob: &str) -> Vec<BlockId> {
        let state = self.state.lock();
        let mut ids: Vec<BlockId> = state
            .staged
            .get(blob)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The current content of `blob`, if it exists.
    pub fn get(&self, blob: &str) -> Option<Vec<u8>> {
        let state = self.state.lock();
        state.blobs.get(blob).map(|b| b.data.as_ref().clone())
    }

    /// Whether an unexpired lease is held on `blob`.
    pub fn lease_holder_exists(&self, blob: &str) -> bool {
        self.state.lock().live_lease(blob).is_some()
    }

    /// End the current lease on `blob` by expiry, as if its holder paused too long.
    pub fn expire_lease(&self, blob: &str) {
        if let Some(lease) = self.state.lock().leases.get_mut(blob) {
            lease.expires = Instant::now();
        }
    }

    fn error(&self, kind: BackendErrorKind, blob: &str, op: &str, why: &str) -> BackendError {
        let subject = format_args!("memory remote {}/{blob}", self.name);
        BackendError::failed(kind, subject, op, why)
    }

    /// A refusal of a shared check ([`super::checks`]) as this store's error.
    fn refused(&self, blob: &str, op: &str, refusal: Refusal) -> BackendError {
        self.error(refusal.kind, blob, op, &refusal.why)
    }

    /// Whether a write carrying `lease` may proceed (same rules as `local`).
    fn check_write_lease(
        &self,
        state: &State,
        blob: &str,
        lease: Option<&LeaseId>,
        op: &str,
    ) -> BackendResult<()> {
        let held = state.live_lease(blob).map(|l| l.token.as_str());
        check_write_lease(lease, held, || "another owner".into())
            .map_err(|r| self.refused(blob, op, r))
    }

    fn check_condition(
        &self,
        state: &State,
        blob: &str,
        condition: &Condition,
        op: &str,
    ) -> BackendResult<()> {
        let current = state.blobs.get(blob).map(|b| &b.etag);
        check_condition(condition, current).map_err(|r| self.refused(blob, op, r))
    }
}

impl State {
    fn live_lease(&self, blob: &str) -> Option<&HeldLease> {
        self.leases.get(blob).filter(|l| l.is_live())
    }

    /// Replace a blob's content (with its committed block list) under a fresh etag,
    /// discarding the blocks staged for it.
    fn store(&mut self, blob: &str, data: Vec<u8>, blocks: Vec<(BlockId, u64)>) -> BlobStat {
        self.versions += 1;
        let stat = BlobStat {
            etag: Etag(format!("m-{}", self.versions)),
            size: data.len() as u64,
        };
        let stored = StoredBlob {
            data: Arc::new(data),
            etag: stat.etag.clone(),
            blocks,
        };
        self.blobs.insert(blob.to_owned(), stored);
        self.staged.remove(blob);
        stat
    }

    fn stat(&self, blob: &str) -> Option<BlobStat> {
        self.blobs.get(blob).map(|b| BlobStat {
            etag: b.etag.clone(),
            size: b.data.len() as u64,
        })
    }
}

impl Backend for MemoryBackend {
    fn identity(&self) -> String {
        format!("memory:{}", self.name)
    }

    fn stat(&self, blob: &str) -> BackendResult<Option<BlobStat>> {
        self.enter(Op::Stat, blob, "stat")?;
        Ok(self.state.lock().stat(blob))
    }

    fn download(&self, blob: &str, sink: &mut dyn Write) -> BackendResult<BlobStat> {
        self.enter(Op::Download, blob, "download")?;
        let (data, stat) = {
            let state = self.state.lock();
            let stored = state
                .blobs
                .get(blob)
                .ok_or_else(|| self.refused(blob, "download", Refusal::missing()))?;
            (stored.data.clone(), state.stat(blob).expect("just found"))
        };
        sink.write_all(&data).map_err(|e| {
            self.error(
                BackendErrorKind::Permanent,
                blob,
                "download",
                &format!("writing to the sink failed: {e}"),
            )
        })?;
        Ok(stat)
    }

    fn put_blob(&self, blob: &str, body: Body<'_>, terms: Terms<'_>) -> BackendResult<BlobStat> {
        let (Body { source, len }, Terms { condition, lease }) = (body, terms);
        self.enter(Op::Upload, blob, "upload")?;
        let data = read_exactly(source, len).map_err(|r| self.refused(blob, "upload", r))?;
        let mut state = self.state.lock();
        self.check_write_lease(&state, blob, lease, "upload")?;
        self.check_condition(&state, blob, condition, "upload")?;
        let stat = state.store(blob, data, Vec::new());
        if std::mem::take(&mut state.land_then_fail) {
            return Err(self.error(
                BackendErrorKind::Transient,
                blob,
                "upload",
                "injected fault: the upload landed but its reply was lost",
            ));
        }
        Ok(stat)
    }

    fn acquire_lease(&self, blob: &str, duration: Duration) -> BackendResult<Lease> {
        const OP: &str = "acquire lease";
        self.enter(Op::AcquireLease, blob, OP)?;
        let mut state = self.state.lock();
        let stat = state
            .stat(blob)
            .ok_or_else(|| self.refused(blob, OP, Refusal::missing()))?;
        if state.live_lease(blob).is_some() {
            return Err(self.refused(blob, OP, Refusal::lease_held("another owner")));
        }
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let lease = HeldLease {
            token: token.clone(),
            expires: expiry_after(duration),
        };
        state.leases.insert(blob.to_owned(), lease);
        Ok(Lease::on(LeaseId(token), stat))
    }

    fn renew_lease(&self, blob: &str, lease: &LeaseId, duration: Duration) -> BackendResult<()> {
        const OP: &str = "renew lease";
        self.enter(Op::RenewLease, blob, OP)?;
        let mut state = self.state.lock();
        let exists = state.blobs.contains_key(blob);
        match state.leases.get_mut(blob) {
            Some(held) if exists && held.token == lease.0 && held.is_live() => {
                held.expires = expiry_after(duration);
                Ok(())
            }
            _ => Err(self.refused(blob, OP, Refusal::lease_lost())),
        }
    }

    fn release_lease(&self, blob: &str, lease: &LeaseId) -> BackendResult<()> {
        self.enter(Op::ReleaseLease, blob, "release lease")?;
        let mut state = self.state.lock();
        if state.leases.get(blob).is_some_and(|l| l.token == lease.0) {
            state.leases.remove(blob);
        }
        Ok(())
    }

    fn break_lease(&self, blob: &str) -> BackendResult<()> {
        self.enter(Op::BreakLease, blob, "break lease")?;
        self.state.lock().leases.remove(blob);
        Ok(())
    }

    fn blocks(&self) -> Option<&dyn Blocks> {
        Some(self)
    }

    fn waiter_queue(&self, blob: &str) -> BackendResult<Option<WaiterQueue>> {
        crate::backend::checks::validate_blob_name(blob)?;
        let state = self.state.lock();
        Ok(state.waiters.get(blob).map(|(version, text)| WaiterQueue {
            text: text.clone(),
            version: version.to_string(),
        }))
    }

    fn replace_waiter_queue(
        &self,
        blob: &str,
        text: &str,
        expected: Option<&str>,
    ) -> BackendResult<Option<String>> {
        crate::backend::checks::validate_blob_name(blob)?;
        let mut state = self.state.lock();
        let current = state.waiters.get(blob).map(|(v, _)| v.to_string());
        if current.as_deref() != expected {
            let kind = match expected {
                None => BackendErrorKind::AlreadyExists,
                Some(_) => BackendErrorKind::ConditionFailed,
            };
            return Err(BackendError::new(
                kind,
                "the waiter queue changed meanwhile",
            ));
        }
        state.versions += 1;
        let version = state.versions;
        state
            .waiters
            .insert(blob.to_owned(), (version, text.to_owned()));
        Ok(Some(version.to_string()))
    }

    fn waiter_mark(&self, blob: &str) -> BackendResult<Option<String>> {
        crate::backend::checks::validate_blob_name(blob)?;
        Ok(self
            .state
            .lock()
            .waiters
            .get(blob)
            .map(|(v, _)| v.to_string()))
    }

    fn history(&self) -> Option<&dyn super::History> {
        Some(self)
    }
}

impl Blocks for MemoryBackend {
    /// Readers take the blob whole (a download, ranged reads into their own cache).
    fn counter_may_lag(&self) -> bool {
        true
    }

    fn block_list(&self, blob: &str) -> BackendResult<Option<(BlobStat, Vec<(BlockId, u64)>)>> {
        self.enter(Op::BlockList, blob, "get block list")?;
        let state = self.state.lock();
        Ok(state.blobs.get(blob).map(|stored| {
            let stat = state.stat(blob).expect("just found");
            (stat, stored.blocks.clone())
        }))
    }

    fn stage(&self, blob: &str, block: Block<'_>, lease: Option<&LeaseId>) -> BackendResult<()> {
        let Block { id, data } = block;
        const OP: &str = "stage block";
        self.enter(Op::StageBlock, blob, OP)?;
        check_block_id(id).map_err(|r| self.refused(blob, OP, r))?;
        let mut state = self.state.lock();
        self.check_write_lease(&state, blob, lease, OP)?;
        state
            .staged
            .entry(blob.to_owned())
            .or_default()
            .insert(id.to_vec(), Arc::new(data));
        Ok(())
    }

    fn commit(&self, blob: &str, ids: &[BlockId], terms: Terms<'_>) -> BackendResult<BlobStat> {
        let Terms { condition, lease } = terms;
        const OP: &str = "commit block list";
        self.enter(Op::CommitBlocks, blob, OP)?;
        let mut state = self.state.lock();
        self.check_write_lease(&state, blob, lease, OP)?;
        self.check_condition(&state, blob, condition, OP)?;
        let staged = state.staged.get(blob);
        let current = state.blobs.get(blob);
        let mut data = Vec::new();
        let mut blocks = Vec::with_capacity(ids.len());
        for id in ids {
            // The latest version of the id: staged first, else committed.
            let bytes: &[u8] = if let Some(block) = staged.and_then(|s| s.get(id)) {
                block
            } else if let Some(range) = current.and_then(|c| committed_range(&c.blocks, id)) {
                &current.expect("found in it").data[range]
            } else {
                return Err(self.error(
                    BackendErrorKind::Permanent,
                    blob,
                    OP,
                    &format!(
                        "block {} is neither staged nor committed (invalid block list)",
                        hex(id)
                    ),
                ));
            };
            data.extend_from_slice(bytes);
            blocks.push((id.clone(), bytes.len() as u64));
        }
        let stat = state.store(blob, data, blocks);
        if std::mem::take(&mut state.land_then_fail) {
            return Err(self.error(
                BackendErrorKind::Transient,
                blob,
                OP,
                "injected fault: the commit landed but its reply was lost",
            ));
        }
        Ok(stat)
    }

    fn read_range(&self, blob: &str, offset: u64, len: u64, etag: &Etag) -> BackendResult<Vec<u8>> {
        const OP: &str = "read range";
        self.enter(Op::ReadRange, blob, OP)?;
        let refused = |r| self.refused(blob, OP, r);
        let data = {
            let state = self.state.lock();
            let stored = state
                .blobs
                .get(blob)
                .ok_or_else(|| refused(Refusal::missing()))?;
            check_version(etag, &stored.etag).map_err(refused)?;
            stored.data.clone()
        };
        let n = check_range(offset, len, data.len() as u64).map_err(refused)?;
        let start = offset as usize;
        Ok(data[start..start + n].to_vec())
    }

    fn range_staging(&self) -> RangeStaging {
        RangeStaging::Supported
    }

    /// A copy of the range, read pinned to its version, then staged (each step
    /// passes its own fault gate, as the calls it stands for would).
    fn stage_from_range(
        &self,
        blob: &str,
        id: &[u8],
        source: SourceRange<'_>,
        lease: Option<&LeaseId>,
    ) -> BackendResult<StagedFromRange> {
        let data = self.read_range(blob, source.offset, source.len, source.etag)?;
        self.stage(blob, Block { id, data }, lease)?;
        Ok(StagedFromRange::Staged)
    }
}

/// The byte range of the first committed block `id` in a blob with list `blocks`.
fn committed_range(blocks: &[(BlockId, u64)], id: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut offset = 0usize;
    for (committed, size) in blocks {
        let end = offset + *size as usize;
        if committed == id {
            return Some(offset..end);
        }
        offset = end;
    }
    None
}

/// `duration` from now, saturating at a far future for absurd durations.
fn expiry_after(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_stores_are_shared_and_anonymous_ones_are_not() {
        let a = MemoryBackend::named("memory-unit-shared");
        a.put("x.db", b"hello");
        let b = MemoryBackend::named("memory-unit-shared");
        assert_eq!(b.get("x.db").as_deref(), Some(&b"hello"[..]));
        assert_eq!(b.identity(), "memory:memory-unit-shared");
        assert_ne!(
            MemoryBackend::new().identity(),
            MemoryBackend::new().identity()
        );
    }

    #[test]
    fn put_moves_the_etag_but_keeps_the_lease() {
        let m = MemoryBackend::new();
        m.put("x.db", b"1");
        let lease = m.acquire_lease("x.db", Duration::from_secs(30)).unwrap();
        m.put("x.db", b"1");
        assert_ne!(m.stat("x.db").unwrap().unwrap().etag, lease.etag);
        assert!(m.lease_holder_exists("x.db"));
        m.expire_lease("x.db");
        assert!(!m.lease_holder_exists("x.db"));
    }

    #[test]
    fn fail_rate_one_always_fails_transiently() {
        let m = MemoryBackend::new();
        m.set_fail_rate(Op::Stat, 1.0);
        for _ in 0..5 {
            assert!(m.stat("x.db").unwrap_err().is_transient());
        }
        m.set_fail_rate(Op::Stat, 0.0);
        assert_eq!(m.stat("x.db").unwrap(), None);
        assert_eq!(m.calls(Op::Stat), 6);
    }
}
