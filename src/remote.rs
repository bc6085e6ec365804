//! One blob in one backend, as the state machine uses it: every call retried on
//! transient errors with bounded exponential backoff, and counted. Calls made for
//! the store (under its mutex) are also tracked while in progress, so other
//! connections can tell "the mutex holder is in the network" ([`Remote::in_network`])
//! and answer SQLITE_BUSY instead of queueing behind it.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{
    Backend, BackendError, BackendResult, BlobStat, BlockId, BlockList, Blocks, Condition, Etag,
    Lease, LeaseId, RangeStaging, SourceRange, StagedFromRange, WaiterQueue,
};
use crate::config::RetryPolicy;
use crate::counters::{Counters, Request};
/// Kept here for the store's call sites; the helper lives in [`crate::fsutil`].
pub(crate) use crate::fsutil::create_private;

/// What an upload reads: a file's bytes by offset, so that every retry reads from
/// the first byte again. The store's cache file is one (src/localfile.rs implements
/// this for every `LocalFile`); the remote needs nothing else of it.
pub trait UploadSource {
    /// Read up to `buf.len()` bytes at `offset`; returns how many were read (fewer
    /// only at the end of the file).
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

/// Reads the first `len` bytes of an [`UploadSource`] front to back (the body of
/// an upload).
pub struct SourceReader<'a, F: ?Sized> {
    file: &'a mut F,
    pos: u64,
    len: u64,
}

impl<'a, F: UploadSource + ?Sized> SourceReader<'a, F> {
    pub fn new(file: &'a mut F, len: u64) -> Self {
        SourceReader { file, pos: 0, len }
    }
}

impl<F: UploadSource + ?Sized> Read for SourceReader<'_, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len - self.pos;
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(left as usize);
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "cache file shrank while it was being uploaded",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[derive(Debug)]
pub struct Remote {
    backend: Arc<dyn Backend>,
    blob: String,
    retry: RetryPolicy,
    pub counters: Arc<Counters>,
    /// Calls of the store in progress (retry pauses included), per request kind;
    /// background lease renewals are not among them.
    active: [AtomicU32; Request::ALL.len()],
}

/// Counts one call as in progress while alive.
struct InProgress<'a>(&'a AtomicU32);

impl<'a> InProgress<'a> {
    fn enter(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        InProgress(count)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts bytes flowing through a reader or writer.
struct Counted<T> {
    inner: T,
    bytes: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Remote {
    pub fn new(backend: Arc<dyn Backend>, blob: String, retry: RetryPolicy) -> Self {
        Remote {
            backend,
            blob,
            retry,
            counters: Arc::new(Counters::default()),
            active: Default::default(),
        }
    }

    /// Whether a call of the store is in progress (waiting on the network, or
    /// pausing before a retry).
    pub fn in_network(&self) -> bool {
        self.active.iter().any(|n| n.load(Ordering::SeqCst) > 0)
    }

    /// The kinds of request the store is waiting on now (e.g. `["upload"]`).
    pub fn waiting_on(&self) -> Vec<&'static str> {
        Request::ALL
            .iter()
            .filter(|r| self.active[**r as usize].load(Ordering::SeqCst) > 0)
            .map(|r| r.name())
            .collect()
    }

    /// The backend itself, for capabilities called without retries (history).
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    pub fn blob(&self) -> &str {
        &self.blob
    }

    pub fn identity(&self) -> String {
        self.backend.identity()
    }

    /// Run `op` for the store, counted as in progress ([`Remote::in_network`]).
    fn call<T>(
        &self,
        request: Request,
        op: impl FnMut(u32) -> BackendResult<T>,
    ) -> BackendResult<T> {
        let _in_progress = InProgress::enter(&self.active[request as usize]);
        self.attempts(request, op)
    }

    /// Run `op` until it succeeds, fails for good, or the attempts run out.
    fn attempts<T>(
        &self,
        request: Request,
        mut op: impl FnMut(u32) -> BackendResult<T>,
    ) -> BackendResult<T> {
        let mut attempt = 1;
        let started = std::time::Instant::now();
        loop {
            self.counters.count(request);
            let result = op(attempt);
            let pause = self.retry.delay(attempt);
            let in_budget = started.elapsed() + pause < self.retry.total;
            match result {
                Err(e) if e.is_transient() && attempt < self.retry.attempts && in_budget => {
                    tracing::debug!(blob = %self.blob, request = request.name(), attempt, ?pause, error = %e, "retrying");
                    self.counters
                        .retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(pause);
                    attempt += 1;
                }
                Err(e) if e.is_transient() => {
                    return Err(BackendError::new(
                        e.kind,
                        format!(
                            "{} (gave up after {attempt} attempts in {} ms)",
                            e.message,
                            started.elapsed().as_millis()
                        ),
                    ))
                }
                other => return other,
            }
        }
    }

    pub fn stat(&self) -> BackendResult<Option<BlobStat>> {
        self.call(Request::Stat, |_| self.backend.stat(&self.blob))
    }

    /// Download the whole blob into a new private file at `dest`.
    pub fn download_to(&self, dest: &Path) -> BackendResult<BlobStat> {
        self.call(Request::Download, |_| {
            let file = create_private(dest).map_err(|e| {
                BackendError::new(
                    crate::backend::BackendErrorKind::Permanent,
                    format!("creating download file {}: {e}", dest.display()),
                )
            })?;
            let mut sink = Counted {
                inner: io::BufWriter::with_capacity(1 << 20, file),
                bytes: 0,
            };
            let result = self.backend.download(&self.blob, &mut sink);
            self.counters
                .bytes_down
                .fetch_add(sink.bytes, std::sync::atomic::Ordering::Relaxed);
            let stat = result?;
            // The io kind goes along, so that a full disk reaches SQLite as SQLITE_FULL.
            let file = sink.inner.into_inner().map_err(|e| {
                BackendError::new(
                    crate::backend::BackendErrorKind::Permanent,
                    format!("writing download file {}: {e}", dest.display()),
                )
                .with_io(e.error().kind())
            })?;
            file.sync_all().map_err(|e| {
                BackendError::new(
                    crate::backend::BackendErrorKind::Permanent,
                    format!("syncing download file {}: {e}", dest.display()),
                )
                .with_io(e.kind())
            })?;
            Ok(stat)
        })
    }

    /// Download the whole blob into `sink`, calling `restart` before every attempt
    /// (a retry starts over from the first byte).
    pub fn download_into<W: Write>(
        &self,
        sink: &mut W,
        mut restart: impl FnMut(&mut W) -> io::Result<()>,
    ) -> BackendResult<BlobStat> {
        self.call(Request::Download, |_| {
            restart(sink).map_err(|e| {
                BackendError::new(
                    crate::backend::BackendErrorKind::Permanent,
                    format!("preparing the download's destination: {e}"),
                )
                .with_io(e.kind())
            })?;
            let mut counted = Counted {
                inner: &mut *sink,
                bytes: 0,
            };
            let result = self.backend.download(&self.blob, &mut counted);
            self.counters
                .bytes_down
                .fetch_add(counted.bytes, std::sync::atomic::Ordering::Relaxed);
            result
        })
    }

    /// Upload the first `len` bytes of `file` under `condition` and `lease`. The
    /// error says whether an earlier attempt failed transiently: then a
    /// `ConditionFailed` may mean that attempt landed after all.
    pub fn upload<F: UploadSource + ?Sized>(
        &self,
        file: &mut F,
        len: u64,
        condition: &Condition,
        lease: Option<&LeaseId>,
    ) -> Result<BlobStat, UploadError> {
        let mut attempts = 0;
        self.call(Request::Upload, |attempt| {
            attempts = attempt;
            let mut body = Counted {
                inner: SourceReader::new(&mut *file, len),
                bytes: 0,
            };
            let result = self
                .backend
                .upload(&self.blob, &mut body, len, condition, lease);
            self.counters
                .bytes_up
                .fetch_add(body.bytes, std::sync::atomic::Ordering::Relaxed);
            result
        })
        .map_err(|error| UploadError {
            error,
            retried: attempts > 1,
        })
    }

    /// Create the blob empty, only if it does not exist (If-None-Match:*).
    pub fn create_empty(&self) -> BackendResult<BlobStat> {
        self.call(Request::Upload, |_| {
            self.backend.upload(
                &self.blob,
                &mut std::io::empty(),
                0,
                &Condition::Create,
                None,
            )
        })
    }

    /// Whether the store can do delta sync.
    /// The counters, with the HTTP requests per kind: the backend's own count where
    /// it speaks HTTP, else one request per call.
    pub fn snapshot(&self) -> crate::counters::CounterSnapshot {
        let mut snapshot = self.counters.snapshot();
        let http = match self.backend.http_requests() {
            Some(counts) => counts,
            None => Request::ALL
                .iter()
                .map(|r| (r.name(), self.counters.get(*r)))
                .collect(),
        };
        snapshot.set_http(http);
        snapshot
    }

    /// [`crate::backend::Backend::sweep_leftovers`] for this blob (not a counted
    /// request: the local backend's is a directory listing).
    pub fn sweep_leftovers(&self, held: Option<&LeaseId>) -> BackendResult<u64> {
        self.backend.sweep_leftovers(&self.blob, held)
    }

    /// The store must record the lease it holds (see
    /// [`crate::backend::Backend::leases_name_their_owner`]).
    pub fn records_lease_owner(&self) -> bool {
        !self.backend.leases_name_their_owner()
    }

    pub fn has_blocks(&self) -> bool {
        self.backend.blocks().is_some()
    }

    fn blocks(&self) -> BackendResult<&dyn Blocks> {
        self.backend.blocks().ok_or_else(|| {
            BackendError::new(
                crate::backend::BackendErrorKind::Invalid,
                format!("{} has no block operations", self.backend.identity()),
            )
        })
    }

    pub fn block_list(&self) -> BackendResult<Option<(BlobStat, BlockList)>> {
        let blocks = self.blocks()?;
        self.call(Request::BlockList, |_| blocks.block_list(&self.blob))
    }

    /// Stage one chunk (counted as a chunk and its bytes up).
    pub fn stage_block(
        &self,
        id: &[u8],
        data: &[u8],
        lease: Option<&LeaseId>,
    ) -> BackendResult<()> {
        let blocks = self.blocks()?;
        self.call(Request::StageBlock, |_| {
            self.counters
                .bytes_up
                .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            blocks.stage_block(&self.blob, id, data.to_vec(), lease)
        })?;
        self.counters
            .chunks_up
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Whether [`Remote::stage_from_range`] may save the upload (not when the store
    /// cannot, or this blob has no blocks).
    pub fn may_stage_from_range(&self) -> bool {
        self.blocks()
            .is_ok_and(|b| b.range_staging() != RangeStaging::Unsupported)
    }

    /// Stage block `id` from `len` bytes at `offset` of version `etag` of the blob,
    /// the bytes copied by the store (Put Block From URL; a copy for the local and
    /// memory stores). `Ok(false)` when the store cannot: nothing changed, stage the
    /// bytes instead. Counted as a staged block with no bytes up.
    pub fn stage_from_range(
        &self,
        id: &[u8],
        offset: u64,
        len: u64,
        etag: &Etag,
        lease: Option<&LeaseId>,
    ) -> BackendResult<bool> {
        let blocks = self.blocks()?;
        let source = SourceRange { offset, len, etag };
        let staged = self.call(Request::StageBlock, |_| {
            blocks.stage_from_range(&self.blob, id, source, lease)
        })?;
        if staged == StagedFromRange::Staged {
            self.counters.chunks_up.fetch_add(1, Ordering::Relaxed);
        }
        Ok(staged == StagedFromRange::Staged)
    }

    /// Commit a block list; the error says whether an earlier attempt failed
    /// transiently (it may have landed).
    pub fn commit_blocks(
        &self,
        ids: &[BlockId],
        condition: &Condition,
        lease: Option<&LeaseId>,
    ) -> Result<BlobStat, UploadError> {
        let blocks = self.blocks().map_err(|error| UploadError {
            error,
            retried: false,
        })?;
        let mut attempts = 0;
        self.call(Request::CommitBlocks, |attempt| {
            attempts = attempt;
            self.counters.bytes_up.fetch_add(
                (ids.len() * (crate::backend::BLOCK_ID_LEN * 4 / 3 + 20)) as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            blocks.commit_blocks(&self.blob, ids, condition, lease)
        })
        .map_err(|error| UploadError {
            error,
            retried: attempts > 1,
        })
    }

    /// Read one chunk of version `etag` (counted as a chunk and its bytes down).
    pub fn read_range(&self, offset: u64, len: u64, etag: &Etag) -> BackendResult<Vec<u8>> {
        let blocks = self.blocks()?;
        let data = self.call(Request::ReadRange, |_| {
            blocks.read_range(&self.blob, offset, len, etag)
        })?;
        self.count_chunk_down(&data);
        Ok(data)
    }

    /// A chunk came down: counted as one, with its bytes.
    fn count_chunk_down(&self, data: &[u8]) {
        self.counters
            .bytes_down
            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.counters
            .chunks_down
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Read `len` bytes at `offset` of the kept version that was version `etag`
    /// (`None`: none kept, or no history here). Counted as a ranged read.
    pub fn read_kept_range(
        &self,
        offset: u64,
        len: u64,
        etag: &Etag,
    ) -> BackendResult<Option<Vec<u8>>> {
        let Some(history) = self.backend.history() else {
            return Ok(None);
        };
        let data = self.call(Request::ReadRange, |_| {
            history.read_kept_range(&self.blob, etag, offset, len)
        })?;
        if let Some(data) = &data {
            self.count_chunk_down(data);
        }
        Ok(data)
    }

    pub fn acquire_lease(&self, duration: Duration) -> BackendResult<Lease> {
        self.call(Request::AcquireLease, |_| {
            self.backend.acquire_lease(&self.blob, duration)
        })
    }

    pub fn renew_lease(&self, lease: &LeaseId, duration: Duration) -> BackendResult<()> {
        self.call(Request::RenewLease, |_| {
            self.backend.renew_lease(&self.blob, lease, duration)
        })
    }

    /// [`Remote::renew_lease`] for the store's clock, which never holds the
    /// store's mutex: not counted as the store being in the network.
    pub fn renew_lease_in_background(
        &self,
        lease: &LeaseId,
        duration: Duration,
    ) -> BackendResult<()> {
        self.attempts(Request::RenewLease, |_| {
            self.backend.renew_lease(&self.blob, lease, duration)
        })
    }

    pub fn release_lease(&self, lease: &LeaseId) -> BackendResult<()> {
        self.call(Request::ReleaseLease, |_| {
            self.backend.release_lease(&self.blob, lease)
        })
    }

    /// The waiter queue, for a writer waiting for the lease.
    pub fn waiter_queue(&self) -> BackendResult<Option<WaiterQueue>> {
        self.call(Request::Waiter, |_| self.backend.waiter_queue(&self.blob))
    }

    /// Replace the waiter queue if it is still at `expected`; its new version.
    pub fn replace_waiter_queue(
        &self,
        text: &str,
        expected: Option<&str>,
    ) -> BackendResult<Option<String>> {
        self.call(Request::Waiter, |_| {
            self.backend
                .replace_waiter_queue(&self.blob, text, expected)
        })
    }

    /// The waiter mark (the waiter queue's version), for the store's clock (not counted as the store being in
    /// the network).
    pub fn waiter_mark_in_background(&self) -> BackendResult<Option<String>> {
        self.attempts(Request::Waiter, |_| self.backend.waiter_mark(&self.blob))
    }

    /// [`Remote::release_lease`] for the store's clock, which releases an idle
    /// lease with the store's mutex released: not counted as the store being in
    /// the network (a lock call that finds the mutex held by local work waits).
    pub fn release_lease_in_background(&self, lease: &LeaseId) -> BackendResult<()> {
        self.attempts(Request::ReleaseLease, |_| {
            self.backend.release_lease(&self.blob, lease)
        })
    }
}

/// A failed upload.
#[derive(Debug)]
pub struct UploadError {
    pub error: BackendError,
    /// An earlier attempt failed transiently (and may have landed).
    pub retried: bool,
}
