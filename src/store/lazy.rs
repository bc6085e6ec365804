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

use super::state::{Activity, LastError, State};
use super::Store;
use crate::backend::{BackendErrorKind, BlobStat, Etag};
use crate::delta::{ChunkId, Manifest};
use crate::error::{Error, Result};
use crate::image;
use crate::localfile::{LocalFile, LockFail, LockLevel};
use crate::residency::{self, Residency};
use crate::sidecar::InFlight;

/// The most chunk bytes one round of fetches holds in memory.
const BATCH_BYTES: u64 = 64 << 20;

/// The lazy part of a store (`fetch=lazy` only).
#[derive(Debug, Default)]
pub(crate) struct LazyCache {
    /// The base version the cache is a sparse copy of.
    base: RwLock<Known>,
    /// A pinned read found the remote moved on: the next SHARED lock checks it.
    moved: AtomicBool,
    /// The last failed read, for the status report until the next SHARED lock takes
    /// it into `last_error` (a read holds no store mutex to note it there).
    failed: parking_lot::Mutex<Option<LastError>>,
}

/// What the lazy part knows of the cache's base.
#[derive(Debug, Default)]
enum Known {
    /// Not yet loaded (before the first check, or another process installed a
    /// version since): a read that would need it fails rather than read a hole.
    #[default]
    Unknown,
    /// The remote has no blob: the cache is all local (nothing to fetch).
    NoBlob,
    Base(LazyBase),
}

impl Known {
    fn base(&self) -> Option<&LazyBase> {
        match self {
            Known::Base(b) => Some(b),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct LazyBase {
    etag: Etag,
    manifest: Manifest,
    record: Residency,
}

impl LazyBase {
    /// The chunks holding bytes `offset .. offset + len` (clipped to the version).
    fn chunks_of(&self, offset: u64, len: u64) -> Range<u64> {
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
}

impl Store {
    /// Before SQLite reads (or writes) `len` bytes at `offset` of the cache: make the
    /// chunks under them present. Costs one atomic load per chunk when they are.
    pub fn ensure_present(&self, file: &mut dyn LocalFile, offset: u64, len: u64) -> Result<()> {
        let Some(lazy) = &self.lazy else {
            return Ok(());
        };
        let guard = lazy.base.read();
        let base = match &*guard {
            Known::Base(base) => base,
            Known::NoBlob => return Ok(()),
            Known::Unknown => {
                return Err(Error::Local(format!(
                    "lazy cache {}: its chunk list is not known yet (the remote could not be \
                     reached since it opened); reads of chunks it lacks wait for the next check",
                    self.cache_path.display()
                )))
            }
        };
        let range = base.chunks_of(offset, len);
        if range.clone().all(|i| base.record.is_present(i)) {
            return Ok(());
        }
        // Another process sharing the cache may have fetched them.
        base.record
            .look_again(range.clone())
            .map_err(|e| Error::local("reading the residency record", e))?;
        let missing: Vec<u64> = range.filter(|&i| !base.record.is_present(i)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.bring_in(lazy, base, file, &missing)
    }

    /// Make `missing` present, at most [`BATCH_BYTES`] of chunks in memory at once.
    fn bring_in(
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
    /// are fetched in parallel, pinned to the base.
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
        let mut buf = vec![0u8; base.manifest.chunk_size as usize];
        for &i in missing {
            let (offset, len) = base.manifest.chunk_range(i);
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
        let fetched = self.fetch_chunks(lazy, base, &absent)?;
        for (i, mut data) in fetched {
            let (offset, _) = base.manifest.chunk_range(i);
            if offset == 0 {
                // The first chunk keeps the cache's change counter moving forward.
                let old = self.cache_change_counter(file)?;
                image::adapt_header(&mut data, old);
            }
            file.write_at(&data, offset)
                .map_err(|e| cache_err("writing", e))?;
            held.push(i);
        }
        if held.len() > missing.len() - absent.len() {
            // Durable before marked present.
            file.sync().map_err(|e| cache_err("syncing", e))?;
        }
        base.record
            .mark_present(&held)
            .map_err(|e| Error::local("writing the residency record", e))
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
        let unchanged = |(stat, m): &(BlobStat, Manifest)| {
            let same = m.chunk_size == base.manifest.chunk_size
                && moved
                    .iter()
                    .all(|&i| m.ids.get(i as usize) == base.manifest.ids.get(i as usize));
            same.then(|| stat.etag.clone())
        };
        let Some(etag) = newer.as_ref().and_then(unchanged) else {
            return Err(self.snapshot_gone());
        };
        let (again, still_moved) = self.fetch_pinned(&base.manifest, &etag, &moved)?;
        if !still_moved.is_empty() {
            return Err(self.snapshot_gone());
        }
        got.extend(again);
        Ok(got)
    }

    /// Ranged reads of `wanted` chunks of `manifest` pinned to `etag`, on up to
    /// `transfer_workers` threads: the chunks read, and those the remote answered
    /// "moved on" for.
    #[allow(clippy::type_complexity)]
    fn fetch_pinned(
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
            st.last_error = Some(failed);
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
    /// away (a new base, dropped chunks). Skipped while another connection of this
    /// process reads: it looked when it took SHARED, and nothing can change since.
    pub fn lazy_on_shared(&self) -> Result<()> {
        let Some(lazy) = &self.lazy else {
            return Ok(());
        };
        if let Some(mut guard) = lazy.base.try_write() {
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
        }
        Ok(())
    }

    /// Track the sidecar's base, under the store's mutex (a check found the remote
    /// at the base, or could not reach it and the cache is served offline): load
    /// its chunk list (kept beside the sidecar; else, when `online`, the remote's)
    /// and the record describing it. The remote has no blob: nothing to fetch.
    pub(super) fn lazy_track_base(&self, st: &mut State, online: bool) -> Result<()> {
        let Some(lazy) = &self.lazy else {
            return Ok(());
        };
        let Some(etag) = st.sidecar.base.clone() else {
            if online {
                *lazy.base.write() = Known::NoBlob;
            }
            return Ok(());
        };
        if lazy.base.read().base().is_some_and(|b| b.etag == etag) {
            return Ok(());
        }
        let manifest = match self.manifest_for_base(st) {
            Some(m) => m,
            None if online => match self.listed_manifest()? {
                Some((stat, m)) if stat.etag == etag => m,
                // The remote moved or is not ours: the next check installs it.
                _ => return Ok(()),
            },
            None => return Ok(()),
        };
        let record = Residency::open(&self.cache_path, &etag.0, &manifest)
            .map_err(|e| Error::local("opening the residency record", e))?;
        *lazy.base.write() = Known::Base(LazyBase {
            etag,
            manifest,
            record,
        });
        Ok(())
    }

    /// The remote's block list as a manifest, when the blob is ours.
    fn listed_manifest(&self) -> Result<Option<(BlobStat, Manifest)>> {
        Ok(self.remote.block_list()?.and_then(|(stat, list)| {
            Manifest::from_block_list(&list)
                .filter(|m| m.len == stat.size)
                .map(|m| (stat, m))
        }))
    }

    /// Take the remote's current version lazily: its block list, the cache file at
    /// its length (sparse), its first chunk; the chunks that changed since the base
    /// go absent. `Ok(false)` when it cannot be taken lazily (not a lazy store, a
    /// blob without our block list, local commits to keep): the caller fetches.
    pub(super) fn install_lazily(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        held: LockLevel,
        discard_journal: bool,
    ) -> Result<bool> {
        let Some(lazy) = &self.lazy else {
            return Ok(false);
        };
        if st.sidecar.dirty || !self.delta_enabled() {
            return Ok(false);
        }
        let Some((stat, manifest)) = self.listed_manifest()? else {
            tracing::warn!(cache = %self.cache_path.display(), blob = %self.config.blob,
                "the remote blob has no chunk list of ours (another tool wrote it): fetching it whole");
            return Ok(false);
        };
        let upgraded = match self.lock_exclusive(file, held) {
            Ok(upgraded) => upgraded,
            Err(fail) => {
                self.force_check(st);
                return Err(match fail {
                    LockFail::Busy => Error::Busy(format!(
                        "cache {} is in use by another connection; its refresh waits",
                        self.cache_path.display()
                    )),
                    LockFail::Io(code) => self.lock_failed(code),
                });
            }
        };
        let result = self.install_lazily_locked(st, file, lazy, &stat, manifest, discard_journal);
        if upgraded {
            let _ = file.unlock(held);
        }
        result.map(|()| true)
    }

    fn install_lazily_locked(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        lazy: &LazyCache,
        stat: &BlobStat,
        manifest: Manifest,
        discard_journal: bool,
    ) -> Result<()> {
        let cache_err = |what: &str, e: std::io::Error| {
            Error::local(format!("{what} cache {}", self.cache_path.display()), e)
        };
        let old_counter = self.cache_change_counter(file)?;
        let old = self.manifest_for_base(st).zip(st.sidecar.base.clone());
        st.sidecar.in_flight = InFlight::Download;
        self.save(st)?;
        let mut guard = lazy.base.write();
        let mut record = match std::mem::take(&mut *guard) {
            Known::Base(b) => b.record,
            _ => Residency::open(&self.cache_path, &stat.etag.0, &manifest)
                .map_err(|e| Error::local("opening the residency record", e))?,
        };
        let keep_all = record.etag() == stat.etag.0;
        let old_ids = old
            .filter(|(_, etag)| record.etag() == etag.0)
            .map(|(m, _)| m);
        let unchanged = |i: u64| {
            keep_all
                || old_ids.as_ref().is_some_and(|o| {
                    o.chunk_size == manifest.chunk_size
                        && o.ids.get(i as usize) == manifest.ids.get(i as usize)
                })
        };
        record
            .adopt(&stat.etag.0, &manifest, &unchanged)
            .map_err(|e| Error::local("writing the residency record", e))?;
        file.truncate(manifest.len)
            .map_err(|e| cache_err("sizing", e))?;
        let base = LazyBase {
            etag: stat.etag.clone(),
            manifest: manifest.clone(),
            record,
        };
        if base.manifest.ids.is_empty() {
            // An empty database: nothing to fetch.
        } else if base.record.is_present(0) {
            self.move_counter_past(file, old_counter)?;
        } else {
            let mut first = self.fetch_chunks(lazy, &base, &[0])?;
            let (_, mut data) = first.pop().expect("one chunk asked, one fetched");
            image::check_database(&data[..data.len().min(100)], stat.size).map_err(|why| {
                Error::NotADatabase(format!(
                    "remote blob '{}' in {} is not a SQLite database: {why}; the cache was \
                     left as it is",
                    self.config.blob, self.identity
                ))
            })?;
            image::adapt_header(&mut data, old_counter);
            file.write_at(&data, 0)
                .map_err(|e| cache_err("writing", e))?;
        }
        file.sync().map_err(|e| cache_err("syncing", e))?;
        if !base.manifest.ids.is_empty() {
            base.record
                .mark_present(&[0])
                .map_err(|e| Error::local("writing the residency record", e))?;
        }
        if discard_journal {
            self.remove_journal()?;
        }
        *guard = Known::Base(base);
        drop(guard);
        tracing::info!(cache = %self.cache_path.display(), chunks = manifest.ids.len(),
            "took the remote's version lazily (its chunk list and first chunk)");
        self.took_version(st, stat, Some(manifest))
    }

    /// A full store whose cache was lazy and is not completed yet: it must not be
    /// served (it has holes).
    pub(super) fn holds_lazy_leftover(&self) -> bool {
        self.lazy.is_none() && residency::path_for(&self.cache_path).exists()
    }

    /// A full store opening a cache that was lazy: fetch every chunk it lacks, so
    /// that SQLite never reads a hole, then drop the record.
    pub(super) fn complete_lazy_leftover(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
    ) -> Result<()> {
        let path = residency::path_for(&self.cache_path);
        if self.lazy.is_some() || !path.exists() {
            return Ok(());
        }
        let Some(etag) = st.sidecar.base.clone() else {
            let _ = std::fs::remove_file(&path);
            return Ok(());
        };
        let Some(manifest) = self.manifest_for_base(st) else {
            return Err(Error::Local(format!(
                "cache {} was a lazy cache (fetch=lazy) and its chunk list is lost; open it \
                 with fetch=lazy, or move it away to download the database whole",
                self.cache_path.display()
            )));
        };
        let record = Residency::open(&self.cache_path, &etag.0, &manifest)
            .map_err(|e| Error::local("opening the residency record", e))?;
        let lazy = LazyCache::default();
        let base = LazyBase {
            etag,
            manifest,
            record,
        };
        let missing: Vec<u64> = (0..base.record.chunk_count())
            .filter(|&i| !base.record.is_present(i))
            .collect();
        tracing::info!(cache = %self.cache_path.display(), chunks = missing.len(),
            "completing a lazy cache opened with fetch=full");
        self.bring_in(&lazy, &base, file, &missing)?;
        std::fs::remove_file(&path).map_err(|e| Error::local("removing the residency record", e))
    }

    /// The lazy part's figures for the status report (`None` in full mode).
    pub(super) fn residence(&self) -> Option<Residence> {
        let lazy = self.lazy.as_ref()?;
        let guard = lazy.base.try_read()?;
        Some(guard.base().map_or(Residence::default(), |b| Residence {
            chunks_present: b.record.present_count(),
            chunks_total: b.record.chunk_count(),
        }))
    }
}
