//! Deferred uploads (`flush_ms`): a commit outside a batch stays in the cache, keeps
//! the lease, and sets a deadline in the write state
//! ([`super::state::WriteState::AutoBatch`]); the store's clock hands it to this
//! module's thread when it passes, which uploads it together with every commit
//! made meanwhile.
//!
//! The thread has no timer of its own (the clock owns the deadline, so renewal
//! never waits behind an upload) and no SQLite connection. Like a pragma without a
//! lock, it holds a SHARED lock on the cache while it reads what to upload (so no
//! transaction is half-written into the file), through its own handle from the VFS
//! layer ([`CacheOpener`]): a second `std::fs::File` would not keep this process's
//! own writers out, and closing it would drop their POSIX locks. A busy lock is
//! retried shortly (the clock is asked again); a failed upload keeps the cache
//! dirty and the lease, is kept for the status report, and is retried with backoff.
//! The deadline is decided under the store's mutex, so a stale hand-over does
//! nothing. The upload itself usually runs with neither that lock nor the mutex
//! held, so the application's commits go on meanwhile (src/store/background.rs);
//! when it cannot (history kept, whole uploads, over 64 MiB changed, no live
//! lease), the thread uploads under both, as a flush does.

use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::state::{Activity, LeaseSlot, State};
use super::Store;
use crate::error::Error;
use crate::localfile::{LocalFile, LockFail, LockLevel};

/// Opens a second handle on the cache file, through SQLite's own VFS.
pub(crate) type CacheOpener =
    Arc<dyn Fn() -> std::io::Result<Box<dyn LocalFile>> + Send + Sync + 'static>;

/// How soon the flusher tries again when a writer holds the cache's lock (a file
/// lock, possibly another process's: nothing tells when it is let go).
const LOCK_RETRY: Duration = Duration::from_millis(5);

/// The flusher thread's handle: how it opens the cache. The thread ends when the
/// clock, which holds the only sender of its hand-overs, ends with the store.
pub(crate) struct Flusher {
    /// Opens the flusher's handle on the cache, given by the VFS layer.
    opener: Mutex<Option<CacheOpener>>,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher").finish_non_exhaustive()
    }
}

impl Flusher {
    /// Start the thread for `store` (which may still be under construction: the
    /// thread touches it only once handed a due deadline). Returns the handle and
    /// the sender the clock hands due deadlines to.
    pub(super) fn start(store: Weak<Store>) -> (Flusher, Sender<()>) {
        let (due, handed) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("managedblob-flush".into())
            .spawn(move || {
                let mut file: Option<Box<dyn LocalFile>> = None;
                for () in handed {
                    let Some(store) = store.upgrade() else {
                        return;
                    };
                    store.flush_deferred(&mut file);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the flusher thread; deferred \
                commits are uploaded by PRAGMA managedblob_flush and at close only");
        }
        let flusher = Flusher {
            opener: Mutex::new(None),
        };
        (flusher, due)
    }
}

impl Store {
    /// Give the flusher a way to open the cache (the first connection's VFS does).
    pub(crate) fn offer_cache_opener(&self, opener: impl FnOnce() -> CacheOpener) {
        if let Some(flusher) = &self.flusher {
            flusher.opener.lock().get_or_insert_with(opener);
        }
    }

    /// Tell the clock when the deferred commits are due.
    pub(super) fn schedule_flush(&self, st: &State) {
        if self.flusher.is_some() {
            self.clock.flush_at(st.write.flush_due());
        }
    }

    /// Ask the clock to hand the deferred commits over again in a moment (the
    /// cache's lock or the store was busy), if any are still pending.
    fn schedule_flush_soon(&self, st: &State) {
        if self.flusher.is_some() && st.write.flush_due().is_some() {
            self.clock.flush_at(Some(Instant::now() + LOCK_RETRY));
        }
    }

    /// The clock handed over a deadline: upload the deferred commits when due.
    fn flush_deferred(self: &Arc<Self>, file: &mut Option<Box<dyn LocalFile>>) {
        let due = self.lock_state_settled().write.flush_due();
        match due {
            None => return,
            Some(due) if due > Instant::now() => {
                return self.schedule_flush(&self.lock_state_settled());
            }
            Some(_) => {}
        }
        let file = match self.flusher_file(file) {
            Ok(file) => file,
            Err(e) => return self.deferred_flush_failed(&mut self.lock_state(), &e),
        };
        match file.lock(LockLevel::Shared) {
            Ok(()) => self.flusher_hold.reading(),
            Err(LockFail::Busy) => {
                // A writer is committing: look again in a moment.
                return self.schedule_flush_soon(&self.lock_state());
            }
            Err(LockFail::Io(code)) => {
                let e = self.lock_failed(code);
                return self.deferred_flush_failed(&mut self.lock_state(), &e);
            }
        }
        let background = {
            // Never wait under SHARED for another connection's network work under the
            // mutex: a COMMIT here waits out this read (`hold`), so it would wait on
            // the network too. Let go and look again in a moment. (No background
            // upload is in flight: this thread is the one that runs them.)
            let Ok(mut st) = self.lock_state_unless_network() else {
                let _ = file.unlock(LockLevel::None);
                self.flusher_hold.read_over();
                if self.flusher.is_some() {
                    self.clock.flush_at(Some(Instant::now() + LOCK_RETRY));
                }
                return;
            };
            let background = self.start_background_upload(&mut st, file.as_mut());
            if background.is_none() {
                // Network work under the lock: a COMMIT meeting it is BUSY.
                self.flusher_hold.read_over();
                self.flush_deferred_locked(&mut st, file.as_mut());
                self.schedule_flush(&st);
            }
            background
        };
        let _ = file.unlock(LockLevel::None);
        self.flusher_hold.read_over();
        if let Some(mut up) = background {
            let result = self.run_background_upload(&mut up, file.as_mut());
            if result.is_ok() {
                crate::crash::crash_point("background-upload-landed");
            }
            let mut st = self.lock_state();
            self.finish_background_upload(&mut st, up, result);
            self.schedule_flush(&st);
        }
    }

    /// Under the cache's SHARED lock and the mutex: upload, unless a flush, a batch
    /// or a close got there first.
    fn flush_deferred_locked(&self, st: &mut State, file: &mut dyn LocalFile) {
        if st.write.flush_due().is_none_or(|due| due > Instant::now()) {
            return;
        }
        let result = self.reload(st).and_then(|()| self.flush_locked(st, file));
        match result {
            Ok(()) if !st.sidecar.is_dirty() => self.end_deferral(st),
            Ok(()) => {
                // Still dirty: only read-only connections are left, which never
                // upload; the next writable open does (recovery), as after a batch.
                tracing::warn!(cache = %self.cache_path.display(),
                    "deferred commits wait for a writable connection to upload them");
                self.end_deferral(st);
            }
            Err(e) if e.is_busy() => self.deferred_flush_refused(st, &e),
            Err(e) => self.deferred_flush_failed(st, &e),
        }
    }

    /// The deferred commits are uploaded: the lease lingers as after a commit that
    /// uploaded (the next write needs no acquire), unless a write holds it.
    pub(super) fn end_deferral(&self, st: &mut State) {
        st.write.end_deferral();
        if st.write.lease_unneeded() {
            self.keep_warm_or_release(st);
        }
    }

    /// The upload was refused as a conflict: this process's lease lapsed (or was
    /// taken) and the remote may have moved. The lease is given up. When the remote
    /// did move, no retry can win: the deferral ends, the cache stays dirty, and the
    /// next check keeps it as a conflict copy. Otherwise (nobody wrote, or the stat
    /// failed) it is retried like any failure, taking the lease again.
    pub(super) fn deferred_flush_refused(&self, st: &mut State, e: &Error) {
        self.release_lease(st);
        let moved = match self.remote.stat() {
            Ok(now) => {
                // The remote may be this cache's own background upload, landed
                // although its reply was lost: then it is the base, not a conflict.
                if let Err(e) = self.resolve_background_upload(st, now.as_ref()) {
                    tracing::debug!(error = %e, "could not resolve a background upload yet");
                }
                now.map(|s| s.etag).as_ref() != st.sidecar.base()
            }
            Err(_) => false,
        };
        if moved {
            self.note_error(st, Activity::Write, e);
            self.end_deferral(st);
            self.force_check(st);
        } else {
            self.deferred_flush_failed(st, e);
        }
    }

    /// Keep the error for the status report and try again later; the cache stays
    /// dirty and the lease held (a lost one is dropped, so the retry takes it again
    /// if the remote is still this cache's base).
    pub(super) fn deferred_flush_failed(&self, st: &mut State, e: &Error) {
        self.note_error(st, Activity::Write, e);
        if matches!(st.lease.observe(), LeaseSlot::Lost) {
            self.release_lease(st);
        }
        let failures = st.write.flush_failures() + 1;
        let backoff = self.config.retry.delay(failures).max(self.config.flush);
        st.write.flush_failed(Instant::now() + backoff);
        self.schedule_flush(st);
    }

    /// The flusher's handle on the cache, opened on first use.
    fn flusher_file<'f>(
        &self,
        file: &'f mut Option<Box<dyn LocalFile>>,
    ) -> Result<&'f mut Box<dyn LocalFile>, Error> {
        if file.is_none() {
            let opener = self.flusher.as_ref().and_then(|f| f.opener.lock().clone());
            let opener = opener.ok_or_else(|| {
                Error::Local(
                    "the deferred upload has no handle on the cache (it waits for \
                     PRAGMA managedblob_flush or the close)"
                        .into(),
                )
            })?;
            *file = Some(opener().map_err(|e| {
                Error::local(format!("opening cache {}", self.cache_path.display()), e)
            })?);
        }
        Ok(file.as_mut().expect("opened above"))
    }
}
