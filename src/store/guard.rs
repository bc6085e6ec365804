//! The store's mutex, taken so that nobody queues behind the network.
//!
//! The holder of the mutex may call the remote (upload, lease, freshness stat, with
//! retries and their pauses). Another connection's lock call that needs the store
//! while the holder is in the network answers SQLITE_BUSY
//! ([`Store::lock_state_unless_network`]), so the connection's busy handler and
//! busy_timeout decide how long to wait; while the holder works locally it waits,
//! as it would for any short critical section, so an application with
//! busy_timeout=0 sees no BUSY when nothing is slow. `PRAGMA managedblob_status`
//! never takes the mutex: it reads the status fields published each time the mutex
//! is released ([`StateGuard`]'s drop).

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use super::state::State;
use super::Store;
use crate::backend::Etag;
use crate::error::{Error, Result};
use crate::sidecar::InFlight;

/// How long a waiter waits for the mutex before it looks again whether the holder
/// has gone into the network (a poll interval, not a timeout: it waits as long as
/// the holder works locally).
const RECHECK: Duration = Duration::from_millis(1);

/// The store's state, locked; publishes the status fields when released, then
/// tells the store's clock the mutex is free (it may be waiting to try it).
pub(super) struct StateGuard<'a> {
    store: &'a Store,
    /// Always `Some` until the drop, which unlocks before it wakes the clock.
    state: Option<MutexGuard<'a, State>>,
}

impl<'a> StateGuard<'a> {
    fn new(store: &'a Store, state: MutexGuard<'a, State>) -> StateGuard<'a> {
        StateGuard {
            store,
            state: Some(state),
        }
    }

    fn guard(&mut self) -> &mut MutexGuard<'a, State> {
        self.state.as_mut().expect("held until dropped")
    }
}

impl Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        self.state.as_ref().expect("held until dropped")
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard()
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            *self.store.published.lock() = Published::of(&state);
            drop(state);
        }
        self.store.clock.state_released();
    }
}

/// The status fields of the state as of the last release of the mutex.
#[derive(Clone, Debug)]
pub(super) struct Published {
    pub etag: Option<Etag>,
    pub dirty: bool,
    /// When commits deferred by `flush_ms` are due for upload.
    pub flush_due: Option<Instant>,
    pub lease_held: bool,
    pub batch_depth: u32,
    pub generation: u64,
    pub in_flight: InFlight,
    pub conflicts: Vec<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_ok_at: Option<String>,
}

impl Published {
    pub fn of(st: &State) -> Published {
        Published {
            etag: st.sidecar.base().cloned(),
            dirty: st.sidecar.is_dirty(),
            flush_due: st.write.flush_due(),
            lease_held: !st.lease.slot().is_none(),
            batch_depth: st.write.batch_depth(),
            generation: st.sidecar.generation(),
            in_flight: st.sidecar.in_flight(),
            conflicts: st.report.conflicts().to_vec(),
            last_error: st.report.last_error().map(|e| e.message.clone()),
            last_error_at: st.report.last_error().map(|e| e.at.iso8601()),
            last_ok_at: st.report.last_ok_at().map(|t| t.iso8601()),
        }
    }
}

impl Store {
    /// Take the mutex, waiting however long the holder takes: for the connection's
    /// own work that must not fail with BUSY (its commit, unlock, open and close,
    /// and the pragmas, which wait for the cache lock themselves).
    pub(super) fn lock_state(&self) -> StateGuard<'_> {
        StateGuard::new(self, self.state.lock())
    }

    /// Take the mutex if it is free: for the store's clock, which never waits for
    /// it (it tries again when the holder lets go).
    pub(super) fn try_lock_state(&self) -> Option<StateGuard<'_>> {
        self.state
            .try_lock()
            .map(|state| StateGuard::new(self, state))
    }

    /// Take the mutex once no background upload is in flight
    /// (src/store/background.rs): for whatever may publish, take a new version, or
    /// change the write state under that upload (flushes, batches, refreshes, open
    /// and close). A connection's own commit steps do not wait: they only keep
    /// their commits local meanwhile.
    pub(super) fn lock_state_settled(&self) -> StateGuard<'_> {
        let mut guard = self.lock_state();
        while guard.publishing.is_uploading() {
            self.upload_done.wait(guard.guard());
        }
        guard
    }

    /// Take the mutex for a lock call that may answer SQLITE_BUSY: wait while the
    /// holder works locally, `Err(Busy)` as soon as it is seen in the network.
    pub(super) fn lock_state_unless_network(&self) -> Result<StateGuard<'_>> {
        let mut state = self.state.try_lock();
        while state.is_none() {
            if self.remote.in_network() {
                return Err(Error::Busy(format!(
                    "another connection to cache {} is waiting on the remote ({})",
                    self.cache_path.display(),
                    self.remote.waiting_on().join(", ")
                )));
            }
            state = self.state.try_lock_for(RECHECK);
        }
        Ok(StateGuard::new(self, state.expect("locked")))
    }
}
