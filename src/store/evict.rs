//! The bounded lazy cache (`cache_max`, docs/ARCHITECTURE.md "Eviction"): when the
//! chunks present pass the bound, the least recently used clean chunks that no open
//! read transaction of this process touched are dropped (record first, then the
//! hole), down to [`LOW_WATER`] of the bound.
//!
//! Recency is counted in read transactions, not time: each SHARED lock of a lazy
//! connection takes the next epoch, and a chunk remembers the epoch that last
//! touched it. A chunk touched at or after the oldest open transaction's epoch may
//! be under it and stays.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};

use super::lazy::LazyCache;
use super::Store;
use crate::error::{Error, Result};
use crate::sys::RangeLock;

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

/// Where every process with the lazy cache open holds its read lock (past any byte
/// the record has).
const SHARERS_BYTE: u64 = 1 << 40;

/// This process alone has the cache open: its read lock turned into a write lock,
/// turned back on drop.
struct Alone<'a>(&'a File);

impl<'a> Alone<'a> {
    fn try_take(lazy: &'a LazyCache) -> Option<Alone<'a>> {
        let file = lazy.sharers.get()?;
        crate::sys::try_lock_range(file, SHARERS_BYTE, 1, RangeLock::Write)
            .ok()
            .filter(|taken| *taken)
            .map(|_| Alone(file))
    }
}

impl Drop for Alone<'_> {
    fn drop(&mut self) {
        let _ = crate::sys::try_lock_range(self.0, SHARERS_BYTE, 1, RangeLock::Read);
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

    /// After a fetch: when the chunks present pass `cache_max`, drop the least
    /// recently used clean ones no open read transaction touched. Skipped (until the
    /// next fetch) while another connection of this process is inside a read.
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
        // Another process sharing the cache may be reading a chunk this would drop:
        // drop chunks only while no other process has the cache open.
        let Some(_alone) = Alone::try_take(lazy) else {
            return Ok(());
        };
        let hole_maker = self.hole_maker(lazy)?;
        // Record first (durably), then the holes: a crash between costs re-fetches.
        base.record
            .mark_absent(&drop)
            .map_err(|e| Error::local("writing the residency record", e))?;
        for &i in &drop {
            let (offset, len) = base.manifest.chunk_range(i);
            if let Err(e) = crate::sys::punch_hole(hole_maker, offset, len) {
                tracing::warn!(cache = %self.cache_path.display(), error = %e,
                    "could not give a dropped chunk's space back");
                break;
            }
        }
        lazy.evicted.fetch_add(drop.len() as u64, Ordering::Relaxed);
        tracing::debug!(cache = %self.cache_path.display(), chunks = drop.len(), "dropped least recently used chunks");
        Ok(())
    }

    /// Say that this process has the lazy cache open (an open-file-description read
    /// lock on the record, held for the store's life): another process drops chunks
    /// only while it is alone. Waits out another process's eviction (local work).
    pub(super) fn join_sharers(&self, lazy: &LazyCache) -> Result<()> {
        if lazy.sharers.get().is_some() {
            return Ok(());
        }
        let path = crate::residency::path_for(&self.cache_path);
        let file = crate::fsutil::open_private(&path, crate::fsutil::IfExists::Keep)
            .map_err(|e| Error::local("opening the residency record", e))?;
        let started = std::time::Instant::now();
        loop {
            let taken = crate::sys::try_lock_range(&file, SHARERS_BYTE, 1, RangeLock::Read)
                .map_err(|e| Error::local("locking the residency record", e))?;
            if taken {
                break;
            }
            if started.elapsed() > std::time::Duration::from_secs(10) {
                return Err(Error::Busy(format!(
                    "lazy cache {}: another process has been dropping chunks for 10 s",
                    self.cache_path.display()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let _ = lazy.sharers.set(file);
        Ok(())
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

    /// The descriptor holes are punched through: the cache file opened once and
    /// kept until the store goes (closing a descriptor of the cache would drop this
    /// process's POSIX locks on it, SQLite's included; the store goes only after its
    /// last connection closed).
    fn hole_maker<'a>(&self, lazy: &'a LazyCache) -> Result<&'a File> {
        if let Some(f) = lazy.hole_maker.get() {
            return Ok(f);
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.cache_path)
            .map_err(|e| Error::local("opening the cache to drop chunks", e))?;
        Ok(lazy.hole_maker.get_or_init(|| f))
    }
}
