//! Taking a version into a lazy cache (docs/ARCHITECTURE.md, "Lazy open" and
//! "Refresh"): tracking the base a check found current, installing a new one (its
//! block list and first chunk; the chunks it changed go absent), and completing a
//! lazy cache a full store opens.

use super::lazy::{Known, LazyBase, LazyCache};
use super::state::State;
use super::Store;
use crate::backend::BlobStat;
use crate::delta::Manifest;
use crate::error::{Error, Result};
use crate::image;
use crate::localfile::{LocalFile, LockLevel};
use crate::residency::{self, Residency};
use crate::sidecar::InFlight;

impl Store {
    /// Track the sidecar's base, under the store's mutex (a check found the remote
    /// at the base, or could not reach it and the cache is served offline): load
    /// its chunk list (kept beside the sidecar; else, when `online`, the remote's)
    /// and the record describing it. The remote has no blob: nothing to fetch.
    pub(super) fn lazy_track_base(&self, st: &mut State, online: bool) -> Result<()> {
        let Some(lazy) = &self.lazy else {
            return Ok(());
        };
        let Some(etag) = st.sidecar.base().cloned() else {
            if online {
                *lazy.base.write() = Known::Local;
            }
            return Ok(());
        };
        if lazy.base.read().base().is_some_and(|b| b.etag == etag) {
            return Ok(());
        }
        let manifest = match self.manifest_for_base(st) {
            Some(m) => m,
            None if online => match self.remote.block_list()? {
                Some((stat, list)) if stat.etag == etag => {
                    match Manifest::from_block_list(&list).filter(|m| m.len == stat.size) {
                        Some(m) => {
                            // Kept beside the sidecar again: an offline open needs it.
                            self.keep_base_manifest(st, &etag, &m);
                            m
                        }
                        None => {
                            // Another tool's blob at our base: a lazy install takes
                            // such a blob whole, so the cache holds all of it.
                            *lazy.base.write() = Known::Local;
                            return Ok(());
                        }
                    }
                }
                // The remote moved or is gone: the next check installs it.
                _ => return Ok(()),
            },
            None => return Ok(()),
        };
        let record = Residency::open(&self.cache_path, &etag.0, &manifest)
            .map_err(|e| Error::local("opening the residency record", e))?;
        self.check_holes(lazy, &record);
        *lazy.base.write() = Known::Base(Box::new(LazyBase::new(
            etag,
            manifest,
            record,
            lazy.epochs.now(),
        )));
        Ok(())
    }

    /// A lazy cache took its base whole (a blob with no chunk list of ours):
    /// nothing to fetch until the first upload gives it a list. Under EXCLUSIVE on
    /// the cache (an install), so no read holds the lazy lock's read side.
    pub(super) fn lazy_holds_whole(&self) {
        if let Some(lazy) = &self.lazy {
            *lazy.base.write() = Known::Local;
        }
    }

    /// Whether this is a lazy cache whose base's chunk list is not loaded.
    pub(super) fn lazy_base_unknown(&self) -> bool {
        self.lazy
            .as_ref()
            .is_some_and(|l| matches!(*l.base.read(), Known::Unknown))
    }

    /// Void the residency record's header (the base is unknown, so no `Residency`
    /// of this process uses it): a header that fails its checksum describes nothing,
    /// so the next base has nothing present and a miss hashes the cache's own bytes
    /// before it fetches. Zeroed in place, never shortened or removed: other
    /// processes lock that file and map its header page (a load past a shortened
    /// file's end would raise SIGBUS in them).
    pub(super) fn lazy_forget_residency(&self) {
        use std::os::unix::fs::FileExt;
        let path = residency::path_for(&self.cache_path);
        let zeros = vec![0u8; residency::HEADER_LEN as usize];
        let emptied = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.write_all_at(&zeros, 0).and_then(|()| f.sync_all()));
        if let Err(e) = emptied {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(record = %path.display(), error = %e,
                    "could not empty the residency record");
            }
        }
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
        if st.sidecar.is_dirty() || !self.delta_enabled() {
            return Ok(false);
        }
        let Some((stat, manifest)) = self.listed_manifest()? else {
            tracing::warn!(cache = %self.cache_path.display(), blob = %self.config.blob,
                "the remote blob has no chunk list of ours (another tool wrote it): fetching it whole");
            return Ok(false);
        };
        let upgraded = self.lock_exclusive_to_install(st, file, held)?;
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
        // After an interrupted transfer or commit the record may name chunks whose
        // bytes never became durable: trust none (a miss re-checks the cache's bytes).
        let trusted = st.sidecar.in_flight() == InFlight::None && st.sidecar.base().is_some();
        let old = self
            .manifest_for_base(st)
            .zip(st.sidecar.base().cloned())
            .filter(|_| trusted);
        // The first chunk before anything changes: SQLite reads the header at once,
        // and a remote that moved on meanwhile leaves the cache as it was.
        let first = match manifest.ids.is_empty() {
            true => None,
            false => Some(self.first_chunk(&manifest, stat, old_counter)?),
        };
        st.sidecar.set_in_flight(InFlight::Download);
        self.save(st)?;
        let mut guard = lazy.base.write();
        let mut record = match std::mem::take(&mut *guard) {
            Known::Base(b) => b.record,
            _ => Residency::open(&self.cache_path, &stat.etag.0, &manifest)
                .map_err(|e| Error::local("opening the residency record", e))?,
        };
        self.check_holes(lazy, &record);
        let keep_all = trusted && record.etag() == stat.etag.0;
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
        let base = LazyBase::new(
            stat.etag.clone(),
            manifest.clone(),
            record,
            lazy.epochs.now(),
        );
        if let Some(data) = &first {
            file.write_at(data, 0)
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
        *guard = Known::Base(Box::new(base));
        drop(guard);
        tracing::info!(cache = %self.cache_path.display(), chunks = manifest.ids.len(),
            "took the remote's version lazily (its chunk list and first chunk)");
        self.took_version(st, stat, Some(manifest))
    }

    /// The first chunk of version `stat` (checked against its block id, and a
    /// SQLite header), its change counter moved past the cache's `old_counter`. A
    /// remote that moved on meanwhile: SQLITE_BUSY, and the retry takes the newer one.
    fn first_chunk(
        &self,
        manifest: &Manifest,
        stat: &BlobStat,
        old_counter: Option<u32>,
    ) -> Result<Vec<u8>> {
        let (mut got, moved) = self.fetch_pinned(manifest, &stat.etag, &[0])?;
        let Some((_, mut data)) = got.pop().filter(|_| moved.is_empty()) else {
            return Err(Error::Busy(format!(
                "remote blob '{}' changed while its first chunk was being fetched; the \
                 retry takes the new version",
                self.config.blob
            )));
        };
        image::check_database(&data[..data.len().min(100)], stat.size).map_err(|why| {
            Error::NotADatabase(format!(
                "remote blob '{}' in {} is not a SQLite database: {why}; the cache was left \
                 as it is",
                self.config.blob, self.identity
            ))
        })?;
        image::adapt_header(&mut data, old_counter);
        Ok(data)
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
        let Some(etag) = st.sidecar.base().cloned() else {
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
        let base = LazyBase::new(etag, manifest, record, 0);
        let missing: Vec<u64> = (0..base.record.chunk_count())
            .filter(|&i| !base.record.is_present(i))
            .collect();
        tracing::info!(cache = %self.cache_path.display(), chunks = missing.len(),
            "completing a lazy cache opened with fetch=full");
        self.bring_in(&lazy, &base, file, &missing)?;
        std::fs::remove_file(&path).map_err(|e| Error::local("removing the residency record", e))
    }
}
