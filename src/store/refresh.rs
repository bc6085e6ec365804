//! Bringing the cache up to the remote: the freshness check (one `stat`) and the
//! decisions it leads to, then fetch (by chunks or whole, into a side file) and
//! install (written into the cache under an EXCLUSIVE lock, with the sidecar marking
//! the transfer in flight so an interrupted install is resynced, never trusted). A
//! cold cache skips the side file: the download goes straight in (src/store/fetch.rs).
//!
//! Decided from the sidecar and the `stat` (docs/ARCHITECTURE.md, "Recovery"):
//! - a transfer was in flight (`in_flight` set): the cache is untrusted, take the
//!   remote whole (discarding a hot journal together with the old content);
//! - dirty and the remote is still our base: upload the local commits;
//! - dirty and the remote moved: keep the cache as `<db>.conflict-<utc>` (unless it
//!   equals the remote) and take the remote; never overwrite the remote;
//! - a hot journal otherwise: let SQLite roll it back first, look again next time.

use std::fs::File;
use std::io::Read;
use std::time::Instant;

use super::manifest::Fetched;
use super::state::{Activity, LeaseSlot, State};
use super::Store;
use crate::backend::{BackendError, BackendErrorKind, BlobStat};
use crate::delta::Manifest;
use crate::error::{Error, Result};
use crate::image;
use crate::localfile::{LocalFile, LockFail, LockLevel};
use crate::sidecar::InFlight;

pub(super) const COPY_CHUNK: usize = 1 << 20;

impl Store {
    /// The freshness check and recovery, with the connection holding `held`
    /// (at least SHARED) on the cache: what the first open, a SHARED lock once the
    /// staleness bound passed (or a check was forced), `PRAGMA managedblob_refresh`
    /// and a batch's begin run.
    pub(super) fn refresh_locked(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        held: LockLevel,
    ) -> Result<()> {
        if st.publishing.is_uploading() {
            return Err(self.busy_uploading());
        }
        self.reload(st)?;
        let journal_hot = image::journal_is_hot(&self.journal_path);
        let in_flight = st.sidecar.in_flight();
        if journal_hot && in_flight == InFlight::None {
            // SQLite rolls this journal back once we return; decide after that. A
            // lazy cache needs its base's chunk list for the rollback's reads and
            // writes (kept beside the sidecar; else the remote's, if still the base).
            self.force_check(st);
            if let Err(e) = self.lazy_track_base(st, true) {
                tracing::debug!(error = %e, "no chunk list for a hot journal's rollback yet");
            }
            if !self.lazy_base_unknown() || st.sidecar.is_dirty() {
                return Ok(());
            }
            // A lazy cache with no chunk list for its base: a crash right after a
            // commit's upload (the list beside the sidecar names the new version,
            // the sidecar still the old one). The rollback could neither read nor
            // write; the remote holds that commit (or later), the cache nothing else.
            // Take the remote and discard the journal, trusting no residency: every
            // chunk is checked by its hash before it is served.
            if let Some(stat) = self.remote.stat()? {
                tracing::warn!(cache = %self.cache_path.display(),
                    "a lazy cache crashed between a commit's upload and its end; taking the remote");
                self.lazy_forget_residency();
                return self.replace(st, file, held, true, &stat);
            }
            return Ok(());
        }
        let remote = self.remote.stat()?;
        if st.sidecar.uploading().is_some() {
            self.resolve_background_upload(st, remote.as_ref())?;
        }
        if st.sidecar.pending_commit().is_some() {
            // Before anything else: the remote may hold a commit we could not confirm.
            let outcome = self.resolve_ambiguous(st, remote.as_ref())?;
            st.report.note(Activity::Report, outcome);
            return self.refresh_locked(st, file, held);
        }
        st.refresh.checked(Instant::now());
        if in_flight != InFlight::None {
            tracing::warn!(cache = %self.cache_path.display(), ?in_flight,
                "a transfer was interrupted; resyncing the cache from the remote");
            return match remote {
                Some(stat) => self.replace(st, file, held, journal_hot, &stat),
                None => Err(Error::Local(format!(
                    "cache {} was interrupted mid-transfer and remote blob '{}' does not exist; \
                     nothing to resync from",
                    self.cache_path.display(),
                    self.config.blob
                ))),
            };
        }
        match remote {
            None if st.sidecar.base().is_some() => Err(Error::Backend(BackendError::new(
                BackendErrorKind::NotFound,
                format!(
                    "remote blob '{}' in {} does not exist any more, but this cache was synced \
                     with it; refusing to guess (restore the blob or move the cache away)",
                    self.config.blob, self.identity
                ),
            ))),
            // Nothing remote yet: the first commit (or a flush of a seeded cache) creates it.
            None => self.lazy_track_base(st, true),
            Some(stat) if st.sidecar.is_at(&stat.etag) => {
                if st.sidecar.is_dirty()
                    && st.lease.slot().is_none()
                    && st.connections.any_writable()
                {
                    self.recover_upload(st, file, &stat)?;
                }
                self.complete_lazy_leftover(st, file)?;
                self.lazy_track_base(st, true)
            }
            Some(_) if st.lease.slot().is_writing_here() => Err(Error::Backend(BackendError::new(
                BackendErrorKind::LeaseLost,
                format!(
                    "remote blob '{}' changed while this process held its lease",
                    self.config.blob
                ),
            ))),
            Some(stat) => {
                // The remote moved: a parked lease is of no use for this version;
                // give it back (or keep it parked when that fails).
                if let LeaseSlot::Parked(id) = st.lease.slot() {
                    let id = id.clone();
                    st.lease.clear();
                    self.give_back(st, id);
                }
                self.replace(st, file, held, false, &stat)
            }
        }
    }

    /// Take the remote version whole into the cache. A cold cache (nothing in it worth
    /// keeping) takes the download straight in, each byte written once. Otherwise
    /// the download goes to a side file first (the cache stays intact if the transfer
    /// fails), local commits are kept as a conflict copy, then the cache is written
    /// in place under an EXCLUSIVE lock.
    pub(super) fn replace(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        held: LockLevel,
        discard_journal: bool,
        current: &BlobStat,
    ) -> Result<()> {
        if self.install_lazily(st, file, held, discard_journal)? {
            let _ = std::fs::remove_file(&self.download_path);
            return Ok(());
        }
        // A download that could not be installed because the cache was busy is kept
        // for the retry, as long as the remote still has that version.
        let kept = st
            .refresh
            .take_download()
            .filter(|f| f.stat == *current && self.download_path.exists());
        if kept.is_none()
            && self.cache_is_cold(st, file)?
            && self.download_into_cache(st, file, held, discard_journal)?
        {
            // A side file kept for an older version is of no use now.
            let _ = std::fs::remove_file(&self.download_path);
            return Ok(());
        }
        let fetched = match kept {
            Some(fetched) => fetched,
            None => self.fetch(st, file)?,
        };
        let result = self.install(st, file, held, discard_journal, &fetched);
        if matches!(&result, Err(e) if e.is_busy()) {
            st.refresh.keep_download(fetched);
        } else {
            let _ = std::fs::remove_file(&self.download_path);
        }
        result
    }

    /// Bring the current remote version beside the cache: by chunks when the blob
    /// is ours and the cache is a known version, else whole.
    fn fetch(&self, st: &mut State, file: &mut dyn LocalFile) -> Result<Fetched> {
        if self.delta_enabled() && !st.sidecar.is_dirty() {
            if let Some(fetched) = self.fetch_delta(st, file)? {
                return Ok(fetched);
            }
        }
        let stat = self.remote.download_to(&self.download_path)?;
        Ok(Fetched {
            stat,
            chunks: None,
            manifest: None,
        })
    }

    fn install(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        held: LockLevel,
        discard_journal: bool,
        fetched: &Fetched,
    ) -> Result<()> {
        let stat = &fetched.stat;
        let chunk0_fetched = match &fetched.chunks {
            None => true,
            Some((_, indexes)) => indexes.first() == Some(&0),
        };
        if chunk0_fetched {
            let mut header = [0u8; 100];
            let got = read_prefix(&self.download_path, &mut header)
                .map_err(|e| Error::local("reading the downloaded copy", e))?;
            image::check_database(&header[..got.min(stat.size as usize)], stat.size).map_err(
                |why| {
                    Error::NotADatabase(format!(
                        "remote blob '{}' in {} is not a SQLite database: {why}; the cache was \
                         left as it is",
                        self.config.blob, self.identity
                    ))
                },
            )?;
        }
        if st.sidecar.is_dirty() {
            // Only whole downloads reach here (delta needs a clean cache).
            if self.same_as_download(file)? {
                st.sidecar.found_equal(stat.etag.clone());
                return self.save(st);
            }
            self.keep_conflict_copy(st, file)?;
        }

        let upgraded = self.lock_exclusive_to_install(st, file, held)?;
        let result = self.write_into_cache(st, file, discard_journal, fetched);
        if upgraded {
            let _ = file.unlock(held);
        }
        result
    }

    fn write_into_cache(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        discard_journal: bool,
        fetched: &Fetched,
    ) -> Result<()> {
        let stat = &fetched.stat;
        let cache_err = |what: &str, e: std::io::Error| {
            Error::local(format!("{what} cache {}", self.cache_path.display()), e)
        };
        let old_counter = self.cache_change_counter(file)?;

        st.sidecar.set_in_flight(InFlight::Download);
        self.save(st)?;

        let src = File::open(&self.download_path)
            .map_err(|e| Error::local("opening the downloaded copy", e))?;
        // The pieces to copy: the whole image, or the fetched chunks at their offsets.
        let pieces: Vec<(u64, u64)> = match &fetched.chunks {
            None => vec![(0, stat.size)],
            Some((chunk, indexes)) => indexes
                .iter()
                .map(|&i| (i * chunk, (*chunk).min(stat.size - i * chunk)))
                .collect(),
        };
        let mut buf = vec![0u8; COPY_CHUNK];
        for &(start, len) in &pieces {
            let mut offset = start;
            while offset < start + len {
                let want = (COPY_CHUNK as u64).min(start + len - offset) as usize;
                let n = read_full_at(&src, &mut buf[..want], offset)
                    .map_err(|e| Error::local("reading the downloaded copy", e))?;
                if n != want {
                    return Err(Error::Local(format!(
                        "downloaded copy of '{}' ends at {}, expected {} bytes",
                        self.config.blob,
                        offset + n as u64,
                        stat.size
                    )));
                }
                if offset == 0 {
                    image::adapt_header(&mut buf[..n], old_counter);
                }
                file.write_at(&buf[..n], offset)
                    .map_err(|e| cache_err("writing", e))?;
                offset += n as u64;
            }
        }
        if !pieces.iter().any(|&(start, _)| start == 0) {
            self.move_counter_past(file, old_counter)?;
        }
        file.truncate(stat.size)
            .map_err(|e| cache_err("truncating", e))?;
        file.sync().map_err(|e| cache_err("syncing", e))?;
        if discard_journal {
            self.remove_journal()?;
        }
        self.took_version(st, stat, fetched.manifest.clone())
    }

    /// The cache holds version `stat` whole and synced: record it as the base and
    /// clear the in-flight marker.
    pub(super) fn took_version(
        &self,
        st: &mut State,
        stat: &BlobStat,
        manifest: Option<Manifest>,
    ) -> Result<()> {
        st.sidecar.took_version(stat.etag.clone());
        st.publishing.took_version();
        st.publishing.knew_base(&stat.etag, stat.size);
        // The staleness clock starts when the new version is in, not when the
        // (possibly long) transfer began.
        st.refresh.restart_staleness(Instant::now());
        let listed = manifest.is_some();
        self.set_manifest(st, manifest.map(|m| (stat.etag.clone(), m)));
        if !listed {
            // No chunk list of ours (another tool's blob): a lazy cache took it whole.
            self.lazy_holds_whole();
        }
        self.save(st)?;
        self.remote
            .counters
            .versions_down
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(cache = %self.cache_path.display(), bytes = stat.size, "cache refreshed from the remote");
        Ok(())
    }

    /// EXCLUSIVE for an install: another connection reading the cache makes it
    /// SQLITE_BUSY (and the next SHARED lock checks again). `Ok(true)` when taken
    /// here (the caller goes back to `held` after).
    pub(super) fn lock_exclusive_to_install(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        held: LockLevel,
    ) -> Result<bool> {
        self.lock_exclusive(file, held).map_err(|fail| {
            self.force_check(st);
            match fail {
                LockFail::Busy => Error::Busy(format!(
                    "cache {} is in use by another connection; its refresh waits",
                    self.cache_path.display()
                )),
                LockFail::Io(code) => self.lock_failed(code),
            }
        })
    }

    /// Take EXCLUSIVE on the cache from `held` (at least SHARED). Returns whether it
    /// was taken here (the caller goes back to `held` after); on failure the
    /// connection is back at `held`.
    pub(super) fn lock_exclusive(
        &self,
        file: &mut dyn LocalFile,
        held: LockLevel,
    ) -> std::result::Result<bool, LockFail> {
        if held >= LockLevel::Exclusive {
            return Ok(false);
        }
        let upgrade = file
            .lock(LockLevel::Reserved)
            .and_then(|()| file.lock(LockLevel::Exclusive));
        if let Err(fail) = upgrade {
            let _ = file.unlock(held);
            return Err(fail);
        }
        Ok(true)
    }

    /// The change counter of the database the cache holds (none when it holds no
    /// database header): a new version's header must move past it.
    pub(super) fn cache_change_counter(&self, file: &mut dyn LocalFile) -> Result<Option<u32>> {
        let mut header = [0u8; 100];
        let len = file
            .read_at(&mut header, 0)
            .map_err(|e| Error::local(format!("reading cache {}", self.cache_path.display()), e))?;
        Ok((len == 100 && &header[..16] == image::MAGIC).then(|| image::change_counter(&header)))
    }

    /// Bump the change counter of the header the cache kept (a delta install that
    /// did not touch the first chunk): the new version's pages are in, and every
    /// connection's page cache must notice, which SQLite decides by that counter
    /// alone. The remote's first chunk may carry an older counter than its pages
    /// (src/store/stage.rs, `kept_first_chunk`), so the cache keeps its own.
    pub(super) fn move_counter_past(
        &self,
        file: &mut dyn LocalFile,
        old_counter: Option<u32>,
    ) -> Result<()> {
        let mut header = [0u8; 100];
        let cache_err = |what: &str, e: std::io::Error| {
            Error::local(format!("{what} cache {}", self.cache_path.display()), e)
        };
        let len = file
            .read_at(&mut header, 0)
            .map_err(|e| cache_err("reading", e))?;
        if len == header.len() && image::adapt_header(&mut header, old_counter) {
            file.write_at(&header, 0)
                .map_err(|e| cache_err("writing", e))?;
        }
        Ok(())
    }

    /// Remove a journal that belongs to content the cache no longer holds.
    pub(super) fn remove_journal(&self) -> Result<()> {
        match std::fs::remove_file(&self.journal_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::local("removing the stale journal", e)),
        }
    }
}

fn read_prefix(path: &std::path::Path, buf: &mut [u8]) -> std::io::Result<usize> {
    read_full(&mut File::open(path)?, buf)
}

/// Read at `offset` until `buf` is full or the end of the file.
fn read_full_at(src: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match src.read_at(&mut buf[done..], offset + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// Read until `buf` is full or the end of the input.
pub(super) fn read_full(src: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match src.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}
