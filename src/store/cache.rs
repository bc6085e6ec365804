//! The cache side of the store: the sidecar (re-read before every decision, saved
//! after every change) and the SHARED lock a pragma takes when its connection holds
//! none.

use std::time::{Duration, Instant};

use super::sidecar_state::SidecarState;
use super::state::{Activity, State};
use super::Store;
use crate::error::{Error, Result};
use crate::localfile::{LocalFile, LockFail, LockLevel};
use crate::sidecar::{self, InFlight};

/// How long a pragma waits for a SHARED lock on the cache before giving up.
const PRAGMA_LOCK_WAIT: Duration = Duration::from_secs(10);

impl Store {
    /// Run `f` holding at least SHARED on the cache: the connection's own lock when
    /// it has one, else a SHARED lock taken (waiting) before the store's mutex.
    pub(super) fn with_lock<T>(
        &self,
        file: &mut dyn LocalFile,
        level: LockLevel,
        activity: Activity,
        f: impl FnOnce(&mut State, &mut dyn LocalFile) -> Result<T>,
    ) -> Result<T> {
        let took = level == LockLevel::None;
        if took {
            self.wait_for_shared(file)?;
        }
        let result = {
            let mut st = self.lock_state_settled();
            let r = f(&mut st, file);
            match &r {
                // A write's success is a version published (`record_version`); a
                // flush with nothing to upload resolves nothing.
                Ok(_) if activity != Activity::Write => st.report.succeeded(activity),
                Ok(_) => {}
                Err(e) => self.note_error(&mut st, activity, e),
            }
            r
        };
        if took {
            let _ = file.unlock(LockLevel::None);
        }
        result
    }

    fn wait_for_shared(&self, file: &mut dyn LocalFile) -> Result<()> {
        let deadline = Instant::now() + PRAGMA_LOCK_WAIT;
        loop {
            match file.lock(LockLevel::Shared) {
                Ok(()) => return Ok(()),
                Err(LockFail::Busy) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(LockFail::Busy) => {
                    return Err(Error::Busy(format!(
                        "cache {} stayed locked by a writer for {PRAGMA_LOCK_WAIT:?}",
                        self.cache_path.display()
                    )))
                }
                Err(LockFail::Io(code)) => return Err(self.lock_failed(code)),
            }
        }
    }

    /// A file lock on the cache failed with an I/O error (not contention).
    pub(super) fn lock_failed(&self, code: i32) -> Error {
        Error::Local(format!(
            "locking cache {} failed (SQLite code {code})",
            self.cache_path.display()
        ))
    }

    /// Re-read the sidecar (another process may have changed it). A missing or
    /// foreign sidecar means the cache corresponds to nothing we know: it is kept
    /// as local changes when it has content.
    pub(super) fn reload(&self, st: &mut State) -> Result<()> {
        if st.sidecar.in_flight() == InFlight::Commit {
            // Between a commit's upload and COMMIT_PHASETWO the state in memory is
            // ahead of the file (saved at phase two), and this connection holds the
            // cache's EXCLUSIVE lock, so no other process can have changed it.
            return Ok(());
        }
        let cache_id = sidecar::file_identity(&self.cache_path);
        let found = sidecar::load(&self.sidecar_path)?;
        match SidecarState::loaded(
            found,
            &self.identity,
            &self.config.blob,
            cache_id.as_deref(),
        ) {
            Ok(loaded) => st.sidecar = loaded,
            Err(found) => {
                if let Some(other) = found {
                    tracing::warn!(cache = %self.cache_path.display(), %other,
                        "sidecar belongs to another remote or to a cache file that was \
                         replaced; treating the cache as unknown");
                }
                let size = std::fs::metadata(&self.cache_path).map_or(0, |m| m.len());
                st.sidecar = SidecarState::unknown(
                    self.identity.clone(),
                    self.config.blob.clone(),
                    size > 0,
                );
            }
        }
        Ok(())
    }

    /// Write the sidecar (atomically), with the cache file's identity.
    pub(super) fn save(&self, st: &mut State) -> Result<()> {
        let cache_id = sidecar::file_identity(&self.cache_path);
        st.sidecar.save(&self.sidecar_path, cache_id)?;
        if !st.sidecar.is_dirty() {
            self.lazy_clean_dirty();
        }
        Ok(())
    }

    /// A commit stayed local (inside a batch): the cache is ahead of the remote, and
    /// this process knows which chunks it wrote.
    pub(super) fn mark_dirty(&self, st: &mut State) -> Result<()> {
        if !st.sidecar.kept_local() {
            return Ok(());
        }
        self.save(st)
    }
}
