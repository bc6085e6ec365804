//! Recovery and housekeeping around the cache: uploading local commits an earlier
//! run left, keeping a conflict copy when they lost a race, switching a WAL-mode
//! file to rollback mode, removing side files of dead processes, and the checks
//! that keep garbage from ever reaching the remote.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;

use super::refresh::{read_full, COPY_CHUNK};
use super::state::State;
use super::Store;
use crate::backend::BlobStat;
use crate::error::{Error, Result};
use crate::image;
use crate::localfile::{LocalFile, LockLevel};

impl Store {
    /// Dirty cache, remote unchanged since its base: upload the local commits
    /// (after a crash inside a batch, or a failed flush). Busy lease: later.
    pub(super) fn recover_upload(
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
        if st.write.lease_unneeded() {
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

    /// Whether the cache holds exactly the bytes of the downloaded copy, the change
    /// counter aside: a remote's first chunk may carry an older counter than the
    /// cache that published it (src/store/stage.rs, `kept_first_chunk`).
    pub(super) fn same_as_download(&self, file: &mut dyn LocalFile) -> Result<bool> {
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
            if offset == 0 {
                image::ignore_change_counter(&a[..n], &mut b[..m]);
            }
            if m != n || a[..n] != b[..n] {
                return Ok(false);
            }
            offset += n as u64;
        }
    }

    /// Copy the cache to `<db>.conflict-<utc>` before it is replaced.
    pub(super) fn keep_conflict_copy(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
    ) -> Result<()> {
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
        st.report.conflict_kept(shown);
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

    /// At open: remove what killed processes left, with the CLI's sweep
    /// (src/leftovers.rs): beside the cache, download side files of dead pids and
    /// sidecar or manifest temps nobody has open; in the remote, upload temps and
    /// staged blocks, proved abandoned by taking the blob's lease (skipped while a
    /// live writer holds it). Best effort: a failure is only logged.
    pub(super) fn sweep_leftovers_at_open(&self) {
        match crate::leftovers::sweep_cache(&self.cache_path, false) {
            Ok(report) if !report.found.is_empty() => {
                tracing::info!(cache = %self.cache_path.display(), files = report.found.len(),
                    bytes = report.bytes(), "removed what killed processes left beside the cache")
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "sweeping the cache directory failed"),
        }
        if let Err(e) = self.remote.sweep_leftovers(None) {
            tracing::debug!(error = %e, "sweeping the remote's leftovers failed");
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
