//! Bringing the cache and the remote together: the freshness check, crash
//! recovery, whole-file download into the cache, and uploads.
//!
//! Recovery rules (DESIGN.md), decided from the sidecar and one `stat`:
//! - a transfer was in flight (`in_flight` set): the cache is untrusted, take the
//!   remote whole (discarding a hot journal together with the old content);
//! - dirty and the remote is still our base: upload the local commits;
//! - dirty and the remote moved: keep the cache as `<db>.conflict-<utc>` (unless it
//!   equals the remote) and take the remote; never overwrite the remote;
//! - a hot journal otherwise: let SQLite roll it back first, look again next time.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Instant;

use super::delta_sync::Fetched;
use super::{State, Store};
use crate::backend::{BackendError, BackendErrorKind, BlobStat, Condition, LeaseId};
use crate::error::{Error, Result};
use crate::image;
use crate::localfile::{LocalFile, LockFail, LockLevel};
use crate::sidecar::InFlight;

const COPY_CHUNK: usize = 1 << 20;

impl Store {
    /// The freshness check and recovery, with the connection holding `held`
    /// (at least SHARED) on the cache.
    pub(super) fn sync(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        held: LockLevel,
    ) -> Result<()> {
        self.reload(st)?;
        let journal_hot = image::journal_is_hot(&self.journal_path);
        let in_flight = st.sidecar.in_flight;
        if journal_hot && in_flight == InFlight::None {
            // SQLite rolls this journal back once we return; decide after that.
            self.force_check(st);
            return Ok(());
        }
        let remote = self.remote.stat()?;
        st.last_check = Some(Instant::now());
        st.must_check = false;
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
            None if st.sidecar.base.is_some() => Err(Error::Backend(BackendError::new(
                BackendErrorKind::NotFound,
                format!(
                    "remote blob '{}' in {} does not exist any more, but this cache was synced \
                     with it; refusing to guess (restore the blob or move the cache away)",
                    self.config.blob, self.identity
                ),
            ))),
            // Nothing remote yet: the first commit (or a flush of a seeded cache) creates it.
            None => Ok(()),
            Some(stat) if st.sidecar.base.as_ref() == Some(&stat.etag) => {
                if st.sidecar.dirty && st.lease.is_none() && st.writable > 0 {
                    self.recover_upload(st, file, &stat)?;
                }
                Ok(())
            }
            Some(_) if st.lease.as_ref().is_some_and(|l| !l.is_parked()) => {
                Err(Error::Backend(BackendError::new(
                    BackendErrorKind::LeaseLost,
                    format!(
                        "remote blob '{}' changed while this process held its lease",
                        self.config.blob
                    ),
                )))
            }
            Some(stat) => {
                // The remote moved: a parked lease is of no use for this version;
                // give it back (or keep it parked when that fails).
                if let Some(parked) = st.lease.take() {
                    self.give_back(st, parked.id.clone());
                }
                self.replace(st, file, held, false, &stat)
            }
        }
    }

    /// Dirty cache, remote unchanged since its base: upload the local commits
    /// (after a crash inside a batch, or a failed flush). Busy lease: later.
    fn recover_upload(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        remote: &BlobStat,
    ) -> Result<()> {
        if let Err(why) = self.check_cache(file) {
            tracing::warn!(cache = %self.cache_path.display(), why,
                "dirty cache is not a valid database; keeping it aside and taking the remote");
            return self.replace(st, file, LockLevel::Shared, false, remote);
        }
        tracing::info!(cache = %self.cache_path.display(), "uploading local commits left by an earlier run");
        let result = self.flush_locked(st, file);
        if st.batch_depth == 0 && !st.writer {
            self.release_lease(st);
        }
        match result {
            Err(e) if e.is_busy() => {
                tracing::info!(cache = %self.cache_path.display(), error = %e,
                    "local commits wait for the lease or the next refresh");
                Ok(())
            }
            other => other,
        }
    }

    /// Upload the whole cache under `condition`. A `ConditionFailed` after a
    /// transient failure is checked against the remote content: the earlier attempt
    /// may have landed (an SDK retry), and then it is our upload, not a conflict.
    pub(super) fn upload(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        condition: &Condition,
        lease: Option<&LeaseId>,
    ) -> Result<BlobStat> {
        let stat = if self.delta_enabled() {
            self.upload_delta(st, file, condition, lease)?
        } else {
            self.upload_whole(file, condition, lease)?
        };
        self.remote
            .counters
            .versions_up
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The remote now holds what this cache holds: as good as a fresh check.
        st.last_check = Some(Instant::now());
        Ok(stat)
    }

    fn upload_whole(
        &self,
        file: &mut dyn LocalFile,
        condition: &Condition,
        lease: Option<&LeaseId>,
    ) -> Result<BlobStat> {
        let size = file
            .size()
            .map_err(|e| Error::local(format!("reading cache {}", self.cache_path.display()), e))?;
        match self.remote.upload(file, size, condition, lease) {
            Ok(stat) => Ok(stat),
            Err(e)
                if e.retried
                    && matches!(
                        e.error.kind,
                        BackendErrorKind::ConditionFailed | BackendErrorKind::AlreadyExists
                    ) =>
            {
                let stat = self
                    .remote
                    .download_to(&self.download_path)
                    .map_err(Error::Backend)?;
                let same = self.same_as_download(file)?;
                let _ = std::fs::remove_file(&self.download_path);
                if same {
                    tracing::info!(blob = %self.config.blob, "an upload retry found its first attempt had landed");
                    Ok(stat)
                } else {
                    Err(e.error.into())
                }
            }
            Err(e) => Err(e.error.into()),
        }
    }

    /// Take the remote version whole into the cache. Downloads to a side file first
    /// (the cache stays intact if the transfer fails), keeps local commits as a
    /// conflict copy, then writes the cache in place under an EXCLUSIVE lock.
    fn replace(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        held: LockLevel,
        discard_journal: bool,
        current: &BlobStat,
    ) -> Result<()> {
        // A download that could not be installed because the cache was busy is kept
        // for the retry, as long as the remote still has that version.
        let kept = st
            .pending_download
            .take()
            .filter(|f| f.stat == *current && self.download_path.exists());
        let fetched = match kept {
            Some(fetched) => fetched,
            None => self.fetch(st, file)?,
        };
        let result = self.install(st, file, held, discard_journal, &fetched);
        if matches!(&result, Err(e) if e.is_busy()) {
            st.pending_download = Some(fetched);
        } else {
            let _ = std::fs::remove_file(&self.download_path);
        }
        result
    }

    /// Bring the current remote version beside the cache: by chunks when the blob
    /// is ours and the cache is a known version, else whole.
    fn fetch(&self, st: &mut State, file: &mut dyn LocalFile) -> Result<Fetched> {
        if self.delta_enabled() && !st.sidecar.dirty {
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
        if st.sidecar.dirty {
            // Only whole downloads reach here (delta needs a clean cache).
            if self.same_as_download(file)? {
                st.sidecar.base = Some(stat.etag.clone());
                st.sidecar.dirty = false;
                return self.save(st);
            }
            self.keep_conflict_copy(st, file)?;
        }

        let upgraded = held < LockLevel::Exclusive;
        if upgraded {
            let upgrade = file
                .lock(LockLevel::Reserved)
                .and_then(|()| file.lock(LockLevel::Exclusive));
            if let Err(fail) = upgrade {
                let _ = file.unlock(held);
                self.force_check(st);
                return Err(match fail {
                    LockFail::Busy => Error::Busy(format!(
                        "cache {} is in use by another connection; its refresh waits",
                        self.cache_path.display()
                    )),
                    LockFail::Io(code) => Error::Local(format!(
                        "locking cache {} failed (SQLite code {code})",
                        self.cache_path.display()
                    )),
                });
            }
        }
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
        let mut old_header = [0u8; 100];
        let old_len = file
            .read_at(&mut old_header, 0)
            .map_err(|e| cache_err("reading", e))?;
        let old_counter = (old_len == 100 && &old_header[..16] == image::MAGIC)
            .then(|| image::change_counter(&old_header));

        st.sidecar.in_flight = InFlight::Download;
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
        for (start, len) in pieces {
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
        let offset = stat.size;
        file.truncate(offset)
            .map_err(|e| cache_err("truncating", e))?;
        file.sync().map_err(|e| cache_err("syncing", e))?;
        if discard_journal {
            match std::fs::remove_file(&self.journal_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::local("removing the stale journal", e)),
            }
        }
        st.sidecar.base = Some(stat.etag.clone());
        st.sidecar.dirty = false;
        st.sidecar.in_flight = InFlight::None;
        st.sidecar.generation += 1;
        st.written.clear();
        // The staleness clock starts when the new version is in, not when the
        // (possibly long) transfer began.
        st.last_check = Some(Instant::now());
        let manifest = fetched.manifest.clone().map(|m| (stat.etag.clone(), m));
        self.set_manifest(st, manifest);
        self.save(st)?;
        self.remote
            .counters
            .versions_down
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(cache = %self.cache_path.display(), bytes = offset, "cache refreshed from the remote");
        Ok(())
    }

    /// Whether the cache holds exactly the bytes of the downloaded copy.
    fn same_as_download(&self, file: &mut dyn LocalFile) -> Result<bool> {
        let mut src = File::open(&self.download_path)
            .map_err(|e| Error::local("opening the downloaded copy", e))?;
        let remote_len = src
            .metadata()
            .map_err(|e| Error::local("reading the downloaded copy", e))?
            .len();
        let local_len = file
            .size()
            .map_err(|e| Error::local("reading the cache", e))?;
        if remote_len != local_len {
            return Ok(false);
        }
        let mut a = vec![0u8; COPY_CHUNK];
        let mut b = vec![0u8; COPY_CHUNK];
        let mut offset = 0u64;
        loop {
            let n = read_full(&mut src, &mut a)
                .map_err(|e| Error::local("reading the downloaded copy", e))?;
            if n == 0 {
                return Ok(true);
            }
            let m = file
                .read_at(&mut b[..n], offset)
                .map_err(|e| Error::local("reading the cache", e))?;
            if m != n || a[..n] != b[..n] {
                return Ok(false);
            }
            offset += n as u64;
        }
    }

    /// Copy the cache to `<db>.conflict-<utc>` before it is replaced.
    fn keep_conflict_copy(&self, st: &mut State, file: &mut dyn LocalFile) -> Result<()> {
        let (path, mut out) = self.new_conflict_file()?;
        let mut buf = vec![0u8; COPY_CHUNK];
        let mut offset = 0u64;
        loop {
            let n = file
                .read_at(&mut buf, offset)
                .map_err(|e| Error::local("reading the cache", e))?;
            if n == 0 {
                break;
            }
            std::io::Write::write_all(&mut out, &buf[..n]).map_err(|e| {
                Error::local(format!("writing conflict copy {}", path.display()), e)
            })?;
            offset += n as u64;
        }
        out.sync_all()
            .map_err(|e| Error::local(format!("syncing conflict copy {}", path.display()), e))?;
        let shown = path.display().to_string();
        tracing::error!(cache = %self.cache_path.display(), copy = %shown,
            "CONFLICT: the remote moved while this cache held unuploaded commits; they were \
             kept in the conflict copy and the cache now follows the remote");
        st.last_error = Some(format!(
            "conflict: local commits that never reached the remote were kept in {shown}"
        ));
        st.conflicts.push(shown);
        Ok(())
    }

    /// Create `<db>.conflict-<utc>` (with `-2`, `-3`... when that name is taken: a
    /// conflict copy is never overwritten).
    fn new_conflict_file(&self) -> Result<(std::path::PathBuf, File)> {
        let stamp = crate::utc::Utc::now().compact();
        for n in 1..1000 {
            let mut name = self.cache_path.as_os_str().to_owned();
            name.push(format!(".conflict-{stamp}"));
            if n > 1 {
                name.push(format!("-{n}"));
            }
            let path = std::path::PathBuf::from(name);
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
            match created {
                Ok(file) => return Ok((path, file)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(Error::local(
                        format!("creating conflict copy {}", path.display()),
                        e,
                    ))
                }
            }
        }
        Err(Error::Local(format!(
            "too many conflict copies of {} this second",
            self.cache_path.display()
        )))
    }

    /// A cache file in WAL mode (an existing database used as a seed, or copied in by
    /// another tool) cannot be opened here (no shared memory under this VFS): switch
    /// its header to rollback-journal mode, as `PRAGMA journal_mode=DELETE` would,
    /// when no `-wal` file holds unmerged pages. Needs the cache to itself; when
    /// another connection has it, it is in use and so not in WAL mode anyway.
    pub(super) fn leave_wal_mode(&self, file: &mut dyn LocalFile) -> Result<()> {
        let mut header = [0u8; 20];
        let n = file
            .read_at(&mut header, 0)
            .map_err(|e| Error::local("reading the cache", e))?;
        if n < 20 || &header[..16] != image::MAGIC || !image::is_wal_header(&header) {
            return Ok(());
        }
        let mut wal = self.cache_path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = std::path::PathBuf::from(wal);
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            return Err(Error::NotADatabase(format!(
                "cache {} is in WAL mode and {} holds pages not yet checkpointed; run \
                 `sqlite3 {} 'PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE'` first",
                self.cache_path.display(),
                wal.display(),
                self.cache_path.display()
            )));
        }
        if file.lock(LockLevel::Reserved).is_err() || file.lock(LockLevel::Exclusive).is_err() {
            let _ = file.unlock(LockLevel::Shared);
            return Ok(());
        }
        let result = file
            .write_at(&[1, 1], 18)
            .and_then(|()| file.sync())
            .map_err(|e| Error::local("switching the cache out of WAL mode", e));
        let _ = file.unlock(LockLevel::Shared);
        tracing::info!(cache = %self.cache_path.display(), "cache switched from WAL to rollback-journal mode");
        result
    }

    /// Remove download side files left by processes of this cache that died.
    pub(super) fn remove_stale_downloads(&self) {
        let (Some(dir), Some(name)) = (self.cache_path.parent(), self.cache_path.file_name())
        else {
            return;
        };
        let mut prefix = name.to_os_string();
        prefix.push("-managedblob.download-");
        let prefix = prefix.to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = file_name.strip_prefix(&prefix) else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or("");
            let alive = !pid.is_empty() && std::path::Path::new("/proc").join(pid).exists();
            if !alive {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Why the cache is not a database that may be uploaded, if it is not.
    fn check_cache(&self, file: &mut dyn LocalFile) -> std::result::Result<(), String> {
        let size = file.size().map_err(|e| e.to_string())?;
        let mut header = [0u8; 100];
        let n = file.read_at(&mut header, 0).map_err(|e| e.to_string())?;
        image::check_database(&header[..n], size)
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
fn read_full(src: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match src.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_stamp_has_the_documented_shape() {
        let s = crate::utc::Utc::now().compact();
        assert_eq!(s.len(), 16, "{s}");
        assert!(
            s.starts_with("20") && s.ends_with('Z') && s.as_bytes()[8] == b'T',
            "{s}"
        );
    }
}
