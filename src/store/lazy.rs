//! Lazy fetch (`fetch=lazy`, docs/ARCHITECTURE.md "Lazy fetch"): the cache holds
//! the chunks reads needed. A read of an absent chunk fetches it (pinned to the base
//! version, checked against its block id, made durable, then marked present in the
//! residency record); a new version costs its block list and its first chunk.
//!
//! The lazy part has its own lock (`LazyCache::base`), never the store's mutex: a
//! read that fetches holds SHARED on the cache (so no install or commit rewrites the
//! cache under it) and the lazy lock's read side; an install holds EXCLUSIVE on the
//! cache and the write side, which no read can then hold.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

use super::evict::{Epochs, Stamps};
use super::lazy_write::{gaps, Written};
use super::state::{Activity, LastError, State};
use super::Store;
use crate::backend::{BackendErrorKind, Etag};
use crate::delta::{ChunkId, Manifest};
use crate::error::{Error, Result};
use crate::image;
use crate::localfile::LocalFile;
use crate::residency::Residency;

/// The most chunk bytes one round of fetches holds in memory.
const BATCH_BYTES: u64 = 64 << 20;
/// The largest readahead window, in bytes and in chunks.
const READAHEAD_BYTES: u64 = 8 << 20;
const READAHEAD_CHUNKS: u64 = 32;

/// One connection's sequential-read detector, by chunks (the kernel's readahead):
/// a miss on the chunk right after the last window doubles the window (1, 2, 4 ...
/// up to the cap), a miss elsewhere starts again at one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Readahead {
    /// The chunk a sequential reader misses next.
    next: u64,
    window: u64,
}

impl Readahead {
    /// A read of chunks `..end` missed chunk `first`: fetch up to this chunk.
    fn plan(&mut self, first: u64, end: u64, max: u64) -> u64 {
        self.window = if self.window > 0 && first == self.next {
            (self.window * 2).min(max)
        } else {
            1
        };
        let upto = end.max(first + self.window);
        self.next = upto;
        upto
    }
}

/// The lazy part of a store (`fetch=lazy` only).
#[derive(Debug, Default)]
pub(crate) struct LazyCache {
    /// The base version the cache is a sparse copy of.
    pub(super) base: RwLock<Known>,
    /// A pinned read found the remote moved on: the next SHARED lock checks it.
    moved: AtomicBool,
    /// Read transactions open in this process (src/store/evict.rs).
    pub(super) epochs: Epochs,
    /// The cache file opened to punch holes through, kept until the store goes.
    pub(super) hole_maker: std::sync::OnceLock<std::fs::File>,
    /// Chunks dropped to stay under `cache_max`.
    pub(super) evicted: std::sync::atomic::AtomicU64,
    /// Rounds of fetches that went to the network (each one round trip, in sequence).
    pub(super) rounds: std::sync::atomic::AtomicU64,
    /// `ensure_present` calls that found every chunk they cover present (the read
    /// path's one relaxed increment).
    hits: std::sync::atomic::AtomicU64,
    /// `ensure_present` calls that found a chunk absent and brought it in.
    misses: std::sync::atomic::AtomicU64,
    /// Chunks fetched from the remote by this process (reads, commit points, opens).
    pub(super) fetched: std::sync::atomic::AtomicU64,
    /// Chunks were marked dirty since the record was last synced.
    pub(super) unsynced_dirty: AtomicBool,
    /// With `cache_max`: whether the file system punches holes (checked at open).
    pub(super) holes: std::sync::OnceLock<bool>,
    /// The record opened once more, for the lock evicting processes take turns
    /// by while they mark chunks absent (src/store/evict.rs).
    pub(super) marker: std::sync::OnceLock<std::fs::File>,
    /// Chunks this process marked absent whose space is not given back yet: their
    /// holes are punched once no read transaction is open in any process.
    pub(super) unpunched: parking_lot::Mutex<Vec<u64>>,
    /// The last failed read, for the status report until the next SHARED lock takes
    /// it into `last_error` (a read holds no store mutex to note it there).
    failed: parking_lot::Mutex<Option<LastError>>,
}

/// What the lazy part knows of the cache's base.
#[derive(Debug, Default)]
pub(super) enum Known {
    /// Not yet loaded (before the first check, or another process installed a
    /// version since): a read that would need it fails rather than read a hole.
    #[default]
    Unknown,
    /// Nothing to fetch: the remote has no blob (the cache is all local), or its
    /// blob has no chunk list of ours (another tool wrote it) and the cache took it
    /// whole. The first upload gives it a chunk list.
    Local,
    Base(Box<LazyBase>),
}

impl Known {
    pub(super) fn base(&self) -> Option<&LazyBase> {
        match self {
            Known::Base(b) => Some(b),
            _ => None,
        }
    }

    pub(super) fn base_mut(&mut self) -> Option<&mut LazyBase> {
        match self {
            Known::Base(b) => Some(b),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(super) struct LazyBase {
    pub(super) etag: Etag,
    pub(super) manifest: Manifest,
    pub(super) record: Residency,
    /// The read transaction that last touched each chunk (eviction's recency).
    pub(super) stamps: Stamps,
    /// What this process wrote into partial chunks (src/store/lazy_write.rs).
    pub(super) written: parking_lot::Mutex<Written>,
}

impl LazyBase {
    pub(super) fn new(etag: Etag, manifest: Manifest, record: Residency, epoch: u64) -> LazyBase {
        LazyBase {
            etag,
            stamps: Stamps::new(manifest.ids.len() as u64, epoch),
            manifest,
            record,
            written: parking_lot::Mutex::new(Written::default()),
        }
    }
}

impl LazyBase {
    /// The chunks holding bytes `offset .. offset + len` (clipped to the version).
    pub(super) fn chunks_of(&self, offset: u64, len: u64) -> Range<u64> {
        let size = self.manifest.chunk_size.max(1);
        let count = self.manifest.ids.len() as u64;
        let start = (offset / size).min(count);
        let end = (offset + len.max(1)).div_ceil(size).min(count);
        start..end
    }
}

/// What a lazy cache reports in the status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Residence {
    /// Chunks of the base version the cache holds.
    pub chunks_present: u64,
    /// Chunks the base version has.
    pub chunks_total: u64,
    /// Bytes of one chunk.
    pub chunk_size: u64,
    /// Bytes of the chunks the cache holds (the last chunk may be short).
    pub resident_bytes: u64,
    /// Reads (and writes) by this process whose chunks were all present.
    pub cache_hits: u64,
    /// Reads (and writes) by this process that found a chunk absent and brought it
    /// in (from the remote, or from the cache's own bytes when they matched).
    pub cache_misses: u64,
    /// Chunks this process fetched from the remote.
    pub chunks_fetched: u64,
    /// Chunks dropped by this process to stay under `cache_max`.
    pub chunks_evicted: u64,
    /// Rounds of fetches this process made (a round fetches its chunks in parallel:
    /// one round trip in sequence each).
    pub fetch_rounds: u64,
    /// With `cache_max`: whether the file system gives dropped chunks' space back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holes: Option<bool>,
}

impl Store {
    /// Before SQLite reads (or writes) `len` bytes at `offset` of the cache: make the
    /// chunks under them present. Costs one atomic load per chunk when they are.
    /// `ahead`: the connection's sequential-read detector; a run of misses on
    /// consecutive chunks fetches a growing window past the read.
    pub fn ensure_present(
        &self,
        file: &mut dyn LocalFile,
        offset: u64,
        len: u64,
        ahead: &mut Readahead,
    ) -> Result<()> {
        let Some(lazy) = &self.lazy else {
            return Ok(());
        };
        let guard = lazy.base.read();
        let base = match &*guard {
            Known::Base(base) => base,
            Known::Local => return Ok(()),
            // A read wholly past the cache file's end needs no chunk: it is a short
            // read whatever the base. SQLite reads the header so at every open,
            // before any lock: a cold cache whose first check met a moving remote
            // (SQLITE_BUSY, checked again at the first SHARED lock) is still empty.
            Known::Unknown if file.size().is_ok_and(|size| offset >= size) => return Ok(()),
            Known::Unknown => {
                return Err(
                    self.chunk_list_unknown("reads of chunks it lacks wait for the next check")
                )
            }
        };
        let range = base.chunks_of(offset, len);
        let epoch = lazy.epochs.now();
        for i in range.clone() {
            base.stamps.touch(i, epoch);
        }
        if range.clone().all(|i| base.record.is_present(i)) {
            lazy.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // Another process sharing the cache may have fetched them.
        base.record
            .look_again(range.clone())
            .map_err(|e| Error::local("reading the residency record", e))?;
        let mut missing: Vec<u64> = range
            .clone()
            .filter(|&i| !base.record.is_present(i))
            .collect();
        let Some(&first) = missing.first() else {
            lazy.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        lazy.misses.fetch_add(1, Ordering::Relaxed);
        let max = (READAHEAD_BYTES / base.manifest.chunk_size.max(1)).clamp(1, READAHEAD_CHUNKS);
        let upto = ahead
            .plan(first, range.end, max)
            .min(base.record.chunk_count());
        if upto > range.end {
            base.record
                .look_again(range.end..upto)
                .map_err(|e| Error::local("reading the residency record", e))?;
            missing.extend((range.end..upto).filter(|&i| !base.record.is_present(i)));
        }
        self.bring_in(lazy, base, file, &missing)?;
        drop(guard);
        self.evict_if_over(lazy)
    }

    /// A lazy cache needs its base's chunk list for what `then` says and has none
    /// (the remote could not be reached since it opened).
    pub(super) fn chunk_list_unknown(&self, then: &str) -> Error {
        Error::Local(format!(
            "lazy cache {}: its chunk list is not known yet (the remote could not be \
             reached since it opened); {then}",
            self.cache_path.display()
        ))
    }

    /// Make `missing` present, at most [`BATCH_BYTES`] of chunks in memory at once.
    pub(super) fn bring_in(
        &self,
        lazy: &LazyCache,
        base: &LazyBase,
        file: &mut dyn LocalFile,
        missing: &[u64],
    ) -> Result<()> {
        let per_batch = (BATCH_BYTES / base.manifest.chunk_size.max(1)).max(1) as usize;
        for batch in missing.chunks(per_batch) {
            self.bring_in_batch(lazy, base, file, batch)?;
        }
        Ok(())
    }

    /// Make `missing` present: the cache may hold them already (a whole cache opened
    /// lazily, a record lost in a crash), which its bytes' hash tells; the others
    /// are fetched in parallel, pinned to the base. A partial chunk takes the
    /// fetched bytes only around what this process wrote into it, and is dirty.
    fn bring_in_batch(
        &self,
        lazy: &LazyCache,
        base: &LazyBase,
        file: &mut dyn LocalFile,
        missing: &[u64],
    ) -> Result<()> {
        let cache_err = |what: &str, e: std::io::Error| {
            Error::local(format!("{what} cache {}", self.cache_path.display()), e)
        };
        let mut held = Vec::new();
        let mut absent = Vec::new();
        let mut completed = Vec::new();
        let partial: Vec<(u64, Vec<Range<u64>>)> = {
            let written = base.written.lock();
            missing
                .iter()
                .filter_map(|&i| written.of(i).map(|w| (i, w.to_vec())))
                .collect()
        };
        let written_into = |i: u64| partial.iter().find(|(p, _)| *p == i).map(|(_, w)| w);
        let mut buf = vec![0u8; base.manifest.chunk_size as usize];
        for &i in missing {
            let (offset, len) = base.manifest.chunk_range(i);
            if let Some(w) = written_into(i) {
                match gaps(offset..offset + len, w).is_empty() {
                    true => completed.push(i),
                    false => absent.push(i),
                }
                continue;
            }
            let n = file
                .read_at(&mut buf[..len as usize], offset)
                .map_err(|e| cache_err("reading", e))?;
            let intact = n == len as usize
                && ChunkId::new(i as u32, &buf[..len as usize]) == base.manifest.ids[i as usize];
            if intact {
                held.push(i);
            } else {
                absent.push(i);
            }
        }
        if !absent.is_empty() {
            lazy.rounds.fetch_add(1, Ordering::Relaxed);
        }
        let fetched = self.fetch_chunks(lazy, base, &absent)?;
        for (i, mut data) in fetched {
            let (offset, _) = base.manifest.chunk_range(i);
            if offset == 0 {
                // The first chunk keeps the cache's change counter moving forward.
                let old = self.cache_change_counter(file)?;
                image::adapt_header(&mut data, old);
            }
            match written_into(i) {
                None => {
                    file.write_at(&data, offset)
                        .map_err(|e| cache_err("writing", e))?;
                    held.push(i);
                }
                Some(w) => {
                    // Never past the file's end: a transaction that wrote into the
                    // chunk may have cut the file since (SQLite truncates before the
                    // commit point); what lies past it is not the database.
                    let eof = file.size().map_err(|e| cache_err("reading", e))?;
                    let end = (offset + data.len() as u64).min(eof.max(offset));
                    for gap in gaps(offset..end, w) {
                        let part =
                            &data[(gap.start - offset) as usize..(gap.end - offset) as usize];
                        file.write_at(part, gap.start)
                            .map_err(|e| cache_err("writing", e))?;
                    }
                    completed.push(i);
                }
            }
        }
        if !absent.is_empty() {
            // Durable before marked present.
            file.sync().map_err(|e| cache_err("syncing", e))?;
        }
        let record_err = |e| Error::local("writing the residency record", e);
        base.record.mark_present(&held).map_err(record_err)?;
        for &i in &completed {
            base.record.mark_dirty(i..i + 1).map_err(record_err)?;
            base.written.lock().remove(i);
        }
        Ok(())
    }

    /// Fetch chunks of the base in parallel, each checked against its block id. A
    /// pinned read answered "the version moved" is tried once more against the new
    /// version for chunks whose block id is the same there (same bytes); otherwise
    /// the read ends with a retryable error and the next SHARED lock takes the new
    /// version.
    fn fetch_chunks(
        &self,
        lazy: &LazyCache,
        base: &LazyBase,
        wanted: &[u64],
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let (mut got, moved) = self.fetch_pinned(&base.manifest, &base.etag, wanted)?;
        if moved.is_empty() {
            return Ok(got);
        }
        lazy.moved.store(true, Ordering::SeqCst);
        self.fresh_until.store(0, Ordering::SeqCst);
        let newer = self.remote.block_list()?.and_then(|(stat, list)| {
            Manifest::from_block_list(&list)
                .filter(|m| m.len == stat.size)
                .map(|m| (stat, m))
        });
        // Chunks the newer version has unchanged (same block id: same bytes) come
        // from it; the others only from history.
        let (same, mut changed): (Vec<u64>, Vec<u64>) = match &newer {
            Some((_, m)) if m.chunk_size == base.manifest.chunk_size => moved
                .iter()
                .partition(|&&i| m.ids.get(i as usize) == base.manifest.ids.get(i as usize)),
            _ => (Vec::new(), moved),
        };
        if let (Some((stat, _)), false) = (&newer, same.is_empty()) {
            let (again, still_moved) = self.fetch_pinned(&base.manifest, &stat.etag, &same)?;
            got.extend(again);
            changed.extend(still_moved);
        }
        // Changed in the newer version: the bytes of the base are only in history.
        for i in changed {
            match self.kept_chunk(base, i)? {
                Some(data) => got.push((i, data)),
                None => return Err(self.snapshot_gone()),
            }
        }
        Ok(got)
    }

    /// Chunk `i` of the base from the versions `history` keeps, when it keeps it.
    fn kept_chunk(&self, base: &LazyBase, i: u64) -> Result<Option<Vec<u8>>> {
        if !self.config.history.is_on() {
            return Ok(None);
        }
        let (offset, len) = base.manifest.chunk_range(i);
        let Some(data) = self.remote.read_kept_range(offset, len, &base.etag)? else {
            return Ok(None);
        };
        self.check_chunk(&base.manifest, i, &data)?;
        if let Some(lazy) = &self.lazy {
            lazy.fetched.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(data))
    }

    /// Ranged reads of `wanted` chunks of `manifest` pinned to `etag`, on up to
    /// `transfer_workers` threads: the chunks read, and those the remote answered
    /// "moved on" for.
    #[allow(clippy::type_complexity)]
    pub(super) fn fetch_pinned(
        &self,
        manifest: &Manifest,
        etag: &Etag,
        wanted: &[u64],
    ) -> Result<(Vec<(u64, Vec<u8>)>, Vec<u64>)> {
        let queue = std::sync::Mutex::new(wanted.iter().copied());
        let workers = super::stage::transfer_workers(manifest.chunk_size).min(wanted.len());
        let results = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut out = Vec::new();
                        loop {
                            let next = queue.lock().expect("queue lock").next();
                            let Some(i) = next else { return out };
                            let (offset, len) = manifest.chunk_range(i);
                            let read = self.remote.read_range(offset, len, etag);
                            out.push((i, read));
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("fetch worker panicked"))
                .collect::<Vec<_>>()
        });
        let mut got = Vec::new();
        let mut moved = Vec::new();
        if let Some(lazy) = &self.lazy {
            let read = results.iter().filter(|(_, r)| r.is_ok()).count();
            lazy.fetched.fetch_add(read as u64, Ordering::Relaxed);
        }
        for (i, read) in results {
            match read {
                Ok(data) => {
                    self.check_chunk(manifest, i, &data)?;
                    got.push((i, data));
                }
                Err(e) if e.kind == BackendErrorKind::ConditionFailed => moved.push(i),
                Err(e) => return Err(e.into()),
            }
        }
        Ok((got, moved))
    }

    /// A fetched chunk must be the one the block list names (length and hash).
    fn check_chunk(&self, manifest: &Manifest, index: u64, data: &[u8]) -> Result<()> {
        let expected = manifest.ids[index as usize];
        if data.len() as u64 == manifest.chunk_range(index).1
            && ChunkId::new(index as u32, data) == expected
        {
            return Ok(());
        }
        Err(Error::Local(format!(
            "chunk {index} of remote blob '{}' does not match its block id; it was not used",
            self.config.blob
        )))
    }

    fn snapshot_gone(&self) -> Error {
        Error::Busy(format!(
            "remote blob '{}' moved on while this read transaction ran, and the chunk it \
             needs changed in the new version; retry the transaction (it reads the new \
             version)",
            self.config.blob
        ))
    }

    /// A lazy read failed: keep it for the status report (and the log).
    pub fn note_read_failure(&self, err: &Error) {
        if let Some(lazy) = &self.lazy {
            tracing::warn!(cache = %self.cache_path.display(), error = %err, "a lazy read failed");
            *lazy.failed.lock() = Some(LastError {
                activity: Activity::Read,
                message: err.to_string(),
                at: crate::utc::Utc::now(),
            });
        }
    }

    /// At a SHARED lock, under the store's mutex: whether a pinned read found the
    /// remote moved since the last check; a failed read becomes `last_error`.
    pub(super) fn lazy_saw_move(&self, st: &mut State) -> bool {
        let Some(lazy) = &self.lazy else {
            return false;
        };
        if let Some(failed) = lazy.failed.lock().take() {
            st.report.keep(failed);
        }
        lazy.moved.swap(false, Ordering::SeqCst)
    }

    /// A failed lazy read not yet taken into `last_error`: (message, when).
    pub(super) fn lazy_failure(&self) -> Option<(String, String)> {
        let lazy = self.lazy.as_ref()?;
        let failed = lazy.failed.lock();
        failed.as_ref().map(|f| (f.message.clone(), f.at.iso8601()))
    }

    /// At a SHARED lock: another process sharing the cache may have taken presence
    /// away (a new base, dropped chunks), which moves the record's header. The look
    /// is a compare in memory under the read side; only a header that moved takes
    /// the write side (waiting, if another connection of this process is fetching,
    /// for its fetch: a stale copy of the states must never be trusted, since an
    /// evicting process punches the chunks it marked once no read transaction is
    /// open anywhere, this one's next included).
    pub fn lazy_on_shared(&self) -> Result<()> {
        let Some(lazy) = &self.lazy else {
            return Ok(());
        };
        let moved = match &*lazy.base.read() {
            Known::Base(base) => !base.record.header_unchanged(),
            _ => false,
        };
        if !moved {
            return Ok(());
        }
        let mut guard = lazy.base.write();
        if let Known::Base(base) = &mut *guard {
            base.record
                .reload_if_moved()
                .map_err(|e| Error::local("reading the residency record", e))?;
            if base.record.etag() != base.etag.0 {
                // Another process installed a version: the check this SHARED lock
                // makes next tracks it.
                *guard = Known::Unknown;
                lazy.moved.store(true, Ordering::SeqCst);
                self.fresh_until.store(0, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// The store recorded `manifest` as the base's chunk list (a publish, or a
    /// version taken in): the record follows. Chunks keep their presence where the
    /// layout is the same (a publish uploads from the cache, so what it holds is
    /// the new version's); chunks past the old end are the cache's own, present.
    /// `None` (the list is not known): reads of absent chunks wait for the next check.
    pub(super) fn lazy_rebase(&self, manifest: Option<&(Etag, Manifest)>) {
        let Some(lazy) = &self.lazy else {
            return;
        };
        // A reader in the network holds the read side (never during a commit: that
        // holds EXCLUSIVE on the cache). Then the next SHARED lock looks again.
        let Some(mut guard) = lazy.base.try_write() else {
            lazy.moved.store(true, Ordering::SeqCst);
            self.fresh_until.store(0, Ordering::SeqCst);
            return;
        };
        let rebased = match (std::mem::take(&mut *guard), manifest) {
            (Known::Base(b), Some((etag, _))) if b.etag == *etag => Ok(Known::Base(b)),
            (Known::Base(mut b), Some((etag, m))) => {
                let old_count = b.record.chunk_count();
                b.record
                    .adopt(&etag.0, m, &|_| true)
                    .and_then(|()| {
                        let grown: Vec<u64> = (old_count..m.ids.len() as u64).collect();
                        b.record.mark_present(&grown)
                    })
                    .map(|()| {
                        Known::Base(Box::new(LazyBase::new(
                            etag.clone(),
                            m.clone(),
                            b.record,
                            lazy.epochs.now(),
                        )))
                    })
            }
            (_, _) => Ok(Known::Unknown),
        };
        *guard = rebased.unwrap_or_else(|e| {
            tracing::warn!(cache = %self.cache_path.display(), error = %e,
                "could not update the residency record; the next check reloads it");
            Known::Unknown
        });
        if matches!(*guard, Known::Unknown) {
            lazy.moved.store(true, Ordering::SeqCst);
            self.fresh_until.store(0, Ordering::SeqCst);
        }
    }

    /// The lazy part's figures for the status report (`None` in full mode). The
    /// counters are this process's whatever the base; the chunk figures are zero
    /// while no chunk list is known (or the cache took another tool's blob whole).
    pub(super) fn residence(&self) -> Option<Residence> {
        let lazy = self.lazy.as_ref()?;
        let guard = lazy.base.try_read()?;
        let counters = Residence {
            chunks_evicted: lazy.evicted.load(Ordering::Relaxed),
            fetch_rounds: lazy.rounds.load(Ordering::Relaxed),
            cache_hits: lazy.hits.load(Ordering::Relaxed),
            cache_misses: lazy.misses.load(Ordering::Relaxed),
            chunks_fetched: lazy.fetched.load(Ordering::Relaxed),
            holes: lazy.holes.get().copied(),
            ..Residence::default()
        };
        Some(guard.base().map_or(counters, |b| {
            let count = b.record.chunk_count().min(b.manifest.ids.len() as u64);
            Residence {
                chunks_present: b.record.present_count(),
                chunks_total: b.record.chunk_count(),
                chunk_size: b.manifest.chunk_size,
                resident_bytes: (0..count)
                    .filter(|&i| b.record.is_present(i))
                    .map(|i| b.manifest.chunk_range(i).1)
                    .sum(),
                ..counters
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::Readahead;

    #[test]
    fn a_sequential_reader_gets_a_growing_window_and_a_jump_starts_over() {
        let mut ahead = Readahead::default();
        assert_eq!(ahead.plan(10, 11, 8), 11, "a first miss: the chunk read");
        assert_eq!(ahead.plan(11, 12, 8), 13, "the next chunk: two");
        assert_eq!(ahead.plan(13, 14, 8), 17, "four");
        assert_eq!(ahead.plan(17, 18, 8), 25, "eight");
        assert_eq!(ahead.plan(25, 26, 8), 33, "capped at eight");
        assert_eq!(ahead.plan(3, 4, 8), 4, "a jump: one again");
        assert_eq!(
            ahead.plan(4, 9, 8),
            9,
            "a read wider than the window takes its span"
        );
    }
}
