//! The bounded lazy cache (`cache_max`, docs/ARCHITECTURE.md "Eviction"): when the
//! chunks present pass the bound, the least recently used clean chunks that no open
//! read transaction of this process touched are dropped, down to [`LOW_WATER`] of
//! the bound, in two steps that let several processes share the cache:
//!
//! 1. **Mark** (while this process may be reading): under a read lock on SQLite's
//!    shared range of the cache (no writer, no install meanwhile) and the record's
//!    marking lock (evicting processes take turns), re-read the record, mark the
//!    chosen chunks absent, fsync, move the header's epoch. A transaction that
//!    begins after this sees the header moved and reads the states again: it
//!    fetches those chunks (or finds their bytes intact) instead of trusting them.
//!    Transactions open now, in any process, may still read them: their bytes stay.
//! 2. **Punch** (once no read transaction is open in any process): a write lock on
//!    the shared range, tried only (SQLite's EXCLUSIVE: it conflicts with every
//!    connection's SHARED, this process's too), proves that no transaction begun
//!    before the mark is still open and that no fetch is writing; the chunks the
//!    record still says are absent lose their space; the lock goes at once.
//!
//! Recency is counted in read transactions, not time: each SHARED lock of a lazy
//! connection takes the next epoch, and a chunk remembers the epoch that last
//! touched it. A chunk touched at or after the oldest open transaction's epoch may
//! be under it and is not marked. Recency is this process's: a chunk only another
//! process uses may be marked, and that process finds it again (intact until
//! punched, else fetched).

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};

use super::lazy::LazyBase;
use super::lazy::LazyCache;
use super::Store;
use crate::error::{Error, Result};
use crate::image::{SHARED_FIRST, SHARED_SIZE};
use crate::sys::{try_lock_range, RangeLock};

/// Eviction stops at this share of `cache_max` (so that it does not run at every
/// fetch once the cache is full).
pub(super) const LOW_WATER: f64 = 0.9;

/// Read transactions of this process and the epochs they began at.
#[derive(Debug, Default)]
pub(super) struct Epochs {
    /// The epoch the next SHARED lock takes.
    next: AtomicU64,
    /// Epochs of the read transactions open now (one entry each; a few at most, so
    /// a vector, which keeps its capacity: no allocation per transaction).
    open: parking_lot::Mutex<Vec<u64>>,
}

impl Epochs {
    fn begin(&self) -> u64 {
        let epoch = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.open.lock().push(epoch);
        epoch
    }

    fn end(&self, epoch: u64) {
        let mut open = self.open.lock();
        if let Some(at) = open.iter().position(|&e| e == epoch) {
            open.swap_remove(at);
        }
    }

    /// The epoch now (what a touch records).
    pub(super) fn now(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Chunks last touched before this epoch are under no open read transaction.
    fn oldest_open(&self) -> u64 {
        self.open.lock().iter().copied().min().unwrap_or(u64::MAX)
    }
}

/// Where evicting processes take turns on the record (past any byte it has): an
/// open-file-description write lock while one picks and marks chunks.
const MARKING_BYTE: u64 = 1 << 40;

/// Held while this process marks chunks: a read lock on SQLite's shared range of
/// the cache (no connection anywhere holds EXCLUSIVE: no write, no install) and the
/// record's marking lock. Both are open-file-description locks, tried only; both go
/// on drop.
struct Marking<'a> {
    cache: &'a File,
    record: &'a File,
}

impl<'a> Marking<'a> {
    fn try_take(cache: &'a File, record: &'a File) -> Result<Option<Marking<'a>>> {
        let lock_err = |e| Error::local("locking the lazy cache to drop chunks", e);
        if !try_lock_range(cache, SHARED_FIRST, SHARED_SIZE, RangeLock::Read).map_err(lock_err)? {
            return Ok(None);
        }
        match try_lock_range(record, MARKING_BYTE, 1, RangeLock::Write) {
            Ok(true) => Ok(Some(Marking { cache, record })),
            other => {
                let _ = try_lock_range(cache, SHARED_FIRST, SHARED_SIZE, RangeLock::Unlock);
                other.map(|_| None).map_err(lock_err)
            }
        }
    }
}

impl Drop for Marking<'_> {
    fn drop(&mut self) {
        let _ = try_lock_range(self.record, MARKING_BYTE, 1, RangeLock::Unlock);
        let _ = try_lock_range(self.cache, SHARED_FIRST, SHARED_SIZE, RangeLock::Unlock);
    }
}

/// Per chunk: the epoch that last touched it.
#[derive(Debug, Default)]
pub(super) struct Stamps(Vec<AtomicU64>);

impl Stamps {
    pub(super) fn new(count: u64, epoch: u64) -> Stamps {
        Stamps((0..count).map(|_| AtomicU64::new(epoch)).collect())
    }

    /// Chunk `index` was read or written at `epoch` (a load first: most touches
    /// find it current and write nothing).
    pub(super) fn touch(&self, index: u64, epoch: u64) {
        if let Some(s) = self.0.get(index as usize) {
            if s.load(Ordering::Relaxed) != epoch {
                s.store(epoch, Ordering::Relaxed);
            }
        }
    }

    fn get(&self, index: u64) -> u64 {
        self.0
            .get(index as usize)
            .map_or(0, |s| s.load(Ordering::Relaxed))
    }
}

impl Store {
    /// A lazy connection took SHARED: its read transaction's epoch.
    pub fn lazy_begin_read(&self) -> Option<u64> {
        Some(self.lazy.as_ref()?.epochs.begin())
    }

    /// The read transaction begun at `epoch` ended (the connection is at NONE):
    /// the chunks it kept may go now, when the cache is over its bound.
    pub fn lazy_end_read(&self, epoch: u64) {
        if let Some(lazy) = &self.lazy {
            lazy.epochs.end(epoch);
            if let Err(e) = self.evict_if_over(lazy) {
                tracing::warn!(cache = %self.cache_path.display(), error = %e,
                    "could not drop chunks to stay under cache_max");
            }
        }
    }

    /// After a fetch, and when a read transaction ends: when the chunks present
    /// pass `cache_max`, mark the least recently used clean ones no open read
    /// transaction of this process touched; then give back the space of the chunks
    /// marked so far, if no read transaction is open in any process. Skipped (until
    /// the next time) while another connection of this process is inside a read,
    /// or another process holds what a step needs.
    pub(super) fn evict_if_over(&self, lazy: &LazyCache) -> Result<()> {
        let Some(max) = self.config.cache_max else {
            return Ok(());
        };
        let Some(mut guard) = lazy.base.try_write() else {
            return Ok(());
        };
        let Some(base) = guard.base_mut() else {
            return Ok(());
        };
        let chunk = base.manifest.chunk_size.max(1);
        if base.record.present_count() * chunk > max {
            self.mark_least_recent(lazy, base, max)?;
        }
        if !lazy.unpunched.lock().is_empty() {
            self.punch_marked(lazy, base)?;
        }
        Ok(())
    }

    /// Step 1: mark chunks absent, down to [`LOW_WATER`] of `max`.
    fn mark_least_recent(&self, lazy: &LazyCache, base: &mut LazyBase, max: u64) -> Result<()> {
        let (cache, record) = (self.hole_maker(lazy)?, self.marker(lazy)?);
        let Some(_marking) = Marking::try_take(cache, record)? else {
            return Ok(());
        };
        // Other processes may have fetched, dirtied or dropped chunks since this one
        // last looked: decide on the record as it is now.
        base.record
            .reload()
            .map_err(|e| Error::local("reading the residency record", e))?;
        if base.record.etag() != base.etag.0 {
            // Another process took a version in: the next SHARED lock tracks it.
            return Ok(());
        }
        let chunk = base.manifest.chunk_size.max(1);
        let present = base.record.present_count();
        if present * chunk <= max {
            return Ok(());
        }
        let keep = ((max as f64 * LOW_WATER) as u64 / chunk).max(1);
        let oldest_open = lazy.epochs.oldest_open();
        let mut candidates: Vec<(u64, u64)> = (1..base.record.chunk_count())
            .filter(|&i| base.record.is_clean(i) && base.stamps.get(i) < oldest_open)
            .map(|i| (base.stamps.get(i), i))
            .collect();
        candidates.sort_unstable();
        let drop: Vec<u64> = candidates
            .into_iter()
            .take(present.saturating_sub(keep) as usize)
            .map(|(_, i)| i)
            .collect();
        if drop.is_empty() {
            return Ok(());
        }
        // Durably absent, and the epoch moved, before any hole.
        base.record
            .mark_absent(&drop)
            .map_err(|e| Error::local("writing the residency record", e))?;
        lazy.evicted.fetch_add(drop.len() as u64, Ordering::Relaxed);
        lazy.unpunched.lock().extend_from_slice(&drop);
        tracing::debug!(cache = %self.cache_path.display(), chunks = drop.len(), "marked least recently used chunks absent");
        Ok(())
    }

    /// Step 2: no read transaction open anywhere (SQLite's EXCLUSIVE on the shared
    /// range, tried): punch the marked chunks the record still says are absent (one
    /// fetched again since keeps its bytes).
    fn punch_marked(&self, lazy: &LazyCache, base: &LazyBase) -> Result<()> {
        let cache = self.hole_maker(lazy)?;
        let taken = try_lock_range(cache, SHARED_FIRST, SHARED_SIZE, RangeLock::Write)
            .map_err(|e| Error::local("locking the lazy cache to drop chunks", e))?;
        if !taken {
            return Ok(());
        }
        let marked = std::mem::take(&mut *lazy.unpunched.lock());
        // Another process may have taken a new base since (its chunks laid out
        // otherwise): then this one's indexes name nothing on disk, and nothing is
        // punched (the space stays until those bytes are written again).
        let result = base
            .record
            .layout_on_disk_is_mine()
            .and_then(|mine| match mine {
                true => base.record.absent_on_disk(&marked),
                false => Ok(Vec::new()),
            });
        let mut punched = 0;
        if let Ok(absent) = &result {
            for &i in absent {
                let (offset, len) = base.manifest.chunk_range(i);
                if let Err(e) = crate::sys::punch_hole(cache, offset, len) {
                    tracing::warn!(cache = %self.cache_path.display(), error = %e,
                        "could not give a dropped chunk's space back");
                    break;
                }
                punched += 1;
            }
        }
        let _ = try_lock_range(cache, SHARED_FIRST, SHARED_SIZE, RangeLock::Unlock);
        tracing::debug!(cache = %self.cache_path.display(), punched, "gave dropped chunks' space back");
        result
            .map(|_| ())
            .map_err(|e| Error::local("reading the residency record", e))
    }

    /// The record opened once more, for the marking lock, kept until the store goes.
    fn marker<'a>(&self, lazy: &'a LazyCache) -> Result<&'a File> {
        if let Some(f) = lazy.marker.get() {
            return Ok(f);
        }
        let path = crate::residency::path_for(&self.cache_path);
        let f = crate::fsutil::open_private(&path, crate::fsutil::IfExists::Keep)
            .map_err(|e| Error::local("opening the residency record", e))?;
        Ok(lazy.marker.get_or_init(|| f))
    }

    /// With `cache_max`, once per store: whether the cache's file system can give
    /// dropped chunks' space back; a warning at open when it cannot (the cache then
    /// grows to the database's size).
    pub(super) fn check_holes(&self, lazy: &LazyCache, record: &crate::residency::Residency) {
        if self.config.cache_max.is_none() || lazy.holes.get().is_some() {
            return;
        }
        let supported = record.holes_supported();
        if !supported {
            tracing::warn!(cache = %self.cache_path.display(),
                "cache_max is set but this file system cannot punch holes: dropped chunks \
                 keep their disk space, and the cache grows to the database's size");
        }
        let _ = lazy.holes.set(supported);
    }

    /// The descriptor holes are punched through, and eviction's locks on the cache
    /// taken on (open-file-description locks: they conflict with SQLite's POSIX
    /// locks, this process's too): the cache file opened once and kept until the
    /// store goes (closing a descriptor of the cache would drop this process's
    /// POSIX locks on it, SQLite's included; the store goes only after its last
    /// connection closed).
    fn hole_maker<'a>(&self, lazy: &'a LazyCache) -> Result<&'a File> {
        if let Some(f) = lazy.hole_maker.get() {
            return Ok(f);
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.cache_path)
            .map_err(|e| Error::local("opening the cache to drop chunks", e))?;
        Ok(lazy.hole_maker.get_or_init(|| f))
    }
}
