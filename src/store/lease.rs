//! The remote lease as the store uses it: taken in one place
//! ([`Store::take_write_lease`]), kept only when the remote is still the cache's
//! base, kept warm for `lease_linger_ms` when a write ends (then given back by the
//! store's clock, with the mutex released over the network), and parked (never
//! forgotten) when a release fails.

use std::sync::Arc;
use std::time::Instant;

use super::clock::Tried;
use super::state::{Activity, AfterWrite, LeaseSlot, Release, State};
use super::Store;
use crate::backend::{BackendError, BackendErrorKind, Lease, LeaseId};
use crate::error::{Error, Result};
use crate::localfile::{LocalFile, LockLevel};
use crate::sidecar::LeaseOwner;

/// How long a write waits for an idle lease's release in flight before SQLITE_BUSY.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Store {
    /// The lease for a write: revive a parked one, wake a warm one, keep a live one,
    /// or take it. `Ok(true)` when the blob does not exist and the first upload
    /// creates it.
    pub(super) fn ensure_lease(&self, st: &mut State) -> Result<bool> {
        st.lease.observe();
        self.revive_parked_lease(st)?;
        st.lease.observe().wake();
        match st.lease.slot() {
            LeaseSlot::Live(_) => Ok(false),
            LeaseSlot::Warm { .. } => unreachable!("woken above"),
            // A release in flight takes one request: wait for its answer rather than
            // answer BUSY to a connection that may have no busy handler (the clock
            // sets it without the store's mutex), then take the lease anew.
            LeaseSlot::Releasing(release) => {
                let release = release.clone();
                if !release.wait_settled(RELEASE_WAIT) {
                    return Err(self.busy_releasing());
                }
                st.lease.observe();
                match st.lease.slot() {
                    LeaseSlot::Releasing(_) => Err(self.busy_releasing()),
                    _ => self.ensure_lease(st),
                }
            }
            LeaseSlot::Lost => Err(Error::Backend(BackendError::new(
                BackendErrorKind::LeaseLost,
                format!("the lease on blob '{}' was lost", self.config.blob),
            ))),
            LeaseSlot::None | LeaseSlot::Parked(_) => self.take_write_lease(st),
        }
    }

    /// Take the lease and keep it when the remote is still this cache's base.
    /// `Ok(true)` when there is no blob and the cache has never known one: the
    /// first upload creates it (If-None-Match:*). A blob that vanished after this
    /// cache was synced with it is an error, never a silent re-creation.
    pub(super) fn take_write_lease(&self, st: &mut State) -> Result<bool> {
        match self.acquire_lease(st)? {
            Some(lease) => {
                self.adopt_lease(st, lease)?;
                self.leave_line(st);
                Ok(false)
            }
            None if st.sidecar.base().is_none() => Ok(true),
            None => {
                self.force_check(st);
                Err(Error::Backend(BackendError::new(
                    BackendErrorKind::NotFound,
                    format!(
                        "remote blob '{}' was deleted; this cache holds version {}",
                        self.config.blob,
                        st.sidecar.base().map_or("?", |e| e.0.as_str())
                    ),
                )))
            }
        }
    }

    /// Acquire the lease. A blob that does not exist yet is first created empty with
    /// If-None-Match:* (a lease needs a blob; whoever creates it first, the empty
    /// blob is the same), so the writer that creates the database holds the lease
    /// too. `None` only when the blob vanished again in between.
    fn acquire_lease(&self, st: &mut State) -> Result<Option<Lease>> {
        let mut created_etag = None;
        let busy = |source: BackendError| Error::LeaseHeld {
            blob: self.config.blob.clone(),
            source,
        };
        let mut created = false;
        let mut reclaimed = false;
        self.wait_in_line(st)?;
        loop {
            match self.remote.acquire_lease(self.config.lease) {
                // The empty blob just created, still that version: its size is known.
                Ok(lease) if created_etag.as_ref() == Some(&lease.etag) => {
                    return Ok(Some(Lease {
                        size: Some(0),
                        ..lease
                    }))
                }
                Ok(lease) => return Ok(Some(lease)),
                Err(e) if e.kind == BackendErrorKind::LeaseHeld => {
                    if !reclaimed && self.reclaim_dead_writers_lease(st) {
                        reclaimed = true;
                        continue;
                    }
                    // The holder may only keep it warm: take a place in the waiter
                    // queue, which tells it a writer waits. It commits meanwhile, so
                    // look at the remote at the next try: a snapshot already current
                    // when the lease comes free adopts it at once, instead of giving
                    // it back for a refresh.
                    self.join_line(st);
                    self.force_check(st);
                    // Why the write waits, for the status report (SQLite says only
                    // "database is locked"); routine contention, so not a warning.
                    let refused = busy(e);
                    tracing::debug!(error = %refused, "write refused: the lease is held");
                    st.report.note(Activity::Lease, refused.to_string());
                    return Err(refused);
                }
                Err(e) if e.kind == BackendErrorKind::NotFound && created => return Ok(None),
                Err(e) if e.kind == BackendErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            match self.remote.create_empty() {
                Ok(stat) => created_etag = Some(stat.etag),
                Err(e) if e.kind == BackendErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            created = true;
        }
    }

    /// The lease is held: when the sidecar records it as held by a process of this
    /// host that is gone (a writer of this cache killed with its lease), take it back
    /// with its id: renew (proof it is still that lease), then release. `true` when
    /// it was released and an acquire may now succeed.
    fn reclaim_dead_writers_lease(&self, st: &mut State) -> bool {
        if !st.sidecar.lease_owner().is_some_and(LeaseOwner::is_dead) {
            return false;
        }
        // Used up, whatever happens: a stale record is never tried twice.
        let Some(owner) = st.sidecar.take_lease_owner() else {
            return false;
        };
        if let Err(e) = self.remote.renew_lease(&owner.id, self.config.lease) {
            tracing::debug!(blob = %self.config.blob, owner = ?owner, error = %e,
                "the lease recorded for a dead writer is not the one in force");
            return false;
        }
        match self.remote.release_lease(&owner.id) {
            Ok(()) => {
                tracing::info!(blob = %self.config.blob, owner = ?owner,
                    "took back the lease of a dead writer of this cache");
                true
            }
            Err(e) => {
                tracing::warn!(blob = %self.config.blob, error = %e,
                    "releasing a dead writer's lease failed; it is kept parked");
                st.lease.park(owner.id);
                false
            }
        }
    }

    /// Keep a lease just taken if the remote is still our base version (or empty,
    /// for a cache that has none); else give it back: the snapshot is stale.
    /// The lease's etag says whether it matches; only a cache with no base asks the
    /// size (a stat, when the acquire did not tell it).
    fn adopt_lease(&self, st: &mut State, lease: Lease) -> Result<()> {
        let matches = st.sidecar.is_at(&lease.etag);
        let adoptable_empty = st.sidecar.base().is_none() && self.leased_size(&lease)? == Some(0);
        if !(matches || adoptable_empty) {
            self.give_back(st, lease.id);
            self.force_check(st);
            return Err(self
                .moved_since_snapshot(" (use BEGIN IMMEDIATE for read-then-write transactions)"));
        }
        let record = self.remote.records_lease_owner();
        if record {
            st.sidecar.own_lease(lease.id.clone());
        }
        st.lease.hold(self.clock.hold(lease.id, self.config.lease));
        if adoptable_empty {
            st.sidecar.rebase(lease.etag);
        }
        if record || adoptable_empty {
            self.save(st)?;
        }
        Ok(())
    }

    /// The size of the version a lease starts from: told by the acquire, or asked
    /// (under the lease nobody else can move the blob, so a stat of another etag
    /// means the lease is not in force: no size).
    fn leased_size(&self, lease: &Lease) -> Result<Option<u64>> {
        if lease.size.is_some() {
            return Ok(lease.size);
        }
        Ok(self
            .remote
            .stat()?
            .filter(|stat| stat.etag == lease.etag)
            .map(|stat| stat.size))
    }

    pub(super) fn moved_since_snapshot(&self, advice: &str) -> Error {
        Error::Busy(format!(
            "remote blob '{}' moved since this snapshot was read; the next read takes the \
             new version{advice}",
            self.config.blob
        ))
    }

    /// A write transaction outside a batch ended: when it published, keep the lease
    /// warm for `lease_linger_ms` (the clock calls [`Store::release_if_idle`]
    /// then); else give it back at once: linger 0, a transaction that published
    /// nothing (rolled back, failed), a check pending (the remote may have moved: a
    /// failed publish, a commit that did not finish locally).
    pub(super) fn linger_or_release(&self, st: &mut State) {
        match st.lease.after_write() {
            AfterWrite::KeepWarm => self.keep_warm_or_release(st),
            AfterWrite::Release => self.release_lease(st),
        }
    }

    /// This process just published and needs the lease no more for now: keep it
    /// warm for `lease_linger_ms` where that is allowed (a linger, a turn not over,
    /// no check pending), else give it back.
    pub(super) fn keep_warm_or_release(&self, st: &mut State) {
        let linger = self.config.lease_linger;
        // Shorter when writers wait in line behind this turn.
        let keep = st.lease.turn_linger(linger);
        let now = Instant::now();
        if self.clock.take_waiter() {
            // Another host's writer waits: its turn now, and this process's next
            // write pauses long enough for it to take the lease.
            st.lease.yield_to_waiter(now, linger);
        } else if !linger.is_zero()
            && st.lease.may_keep_warm(now, linger)
            && !st.refresh.is_forced()
            && st.write.lease_unneeded()
            && self.renewed_after_snapshot(st)
            && st
                .lease
                .observe()
                .linger(now + keep, |at| self.clock.release_when_idle(at))
        {
            let started = st.lease.turn_started().unwrap_or(now);
            self.clock
                .watch_for_waiters(started + linger / 2, waiter_look_every(linger));
            return;
        }
        self.release_lease(st);
    }

    /// With `history` on, the publish took a snapshot under the lease; Azurite then
    /// refuses the lease on Put Block until it is renewed (Azure keeps it). One
    /// renewal makes it usable for the next write; `false` when that failed.
    fn renewed_after_snapshot(&self, st: &State) -> bool {
        if !self.config.history.is_on() {
            return true;
        }
        match st.lease.slot().live_id() {
            Some(id) => self.remote.renew_lease(id, self.config.lease).is_ok(),
            None => false,
        }
    }

    /// On the store's clock, when a warm lease's linger is over: give it back if no
    /// write took it meanwhile (it is `Live` then, or warm until later). Never
    /// waits: `MutexHeld` when another thread holds the store (the clock tries
    /// again when it lets go). The release runs with the mutex released, the slot
    /// `Releasing` meanwhile, so no write can take back a lease on its way out.
    pub(super) fn release_if_idle(&self) -> Tried {
        let Some(mut st) = self.try_lock_state() else {
            return Tried::MutexHeld;
        };
        let now = Instant::now();
        let waiter = self.clock.waiter_waits();
        let slot = st.lease.slot();
        if !(slot.is_warm() && st.write.lease_unneeded() && (waiter || slot.idle_at(now))) {
            return Tried::Done;
        }
        let behind = st.lease.has_waiters_behind();
        let LeaseSlot::Warm { held, .. } = st.lease.give_up() else {
            unreachable!("checked warm above");
        };
        if self.clock.take_waiter() || behind {
            tracing::debug!(blob = %self.config.blob, "giving the warm lease to a waiting writer");
            st.lease.yield_to_waiter(now, self.config.lease_linger);
        } else {
            tracing::debug!(blob = %self.config.blob, "releasing the lease after its linger");
        }
        let release = Release::new(held.stop());
        st.lease.releasing(release.clone());
        drop(st);
        let released = self.released(self.remote.release_lease_in_background(&release.id));
        release.settle(released);
        // Settled now if the mutex is free, else by whoever takes it next.
        if let Some(mut st) = self.try_lock_state() {
            if matches!(st.lease.slot(), LeaseSlot::Releasing(r) if Arc::ptr_eq(r, &release)) {
                st.lease.observe();
                if released {
                    self.forget_lease_owner(&mut st, &release.id);
                }
            }
        }
        Tried::Done
    }

    /// What a write answers while an idle lease's release is in flight.
    fn busy_releasing(&self) -> Error {
        Error::Busy(format!(
            "the lease on blob '{}' is being given back after its linger; retry",
            self.config.blob
        ))
    }

    /// The write is over: give the lease back (a lost one is simply dropped; one
    /// being released already is left to the clock).
    pub(super) fn release_lease(&self, st: &mut State) {
        let slot = st.lease.give_up();
        // A waiter seen in this turn gets the lease now.
        self.clock.take_waiter();
        match slot {
            LeaseSlot::None | LeaseSlot::Lost => {}
            LeaseSlot::Releasing(release) => st.lease.releasing(release),
            LeaseSlot::Live(held) | LeaseSlot::Warm { held, .. } if held.is_lost() => {}
            LeaseSlot::Live(held) | LeaseSlot::Warm { held, .. } => self.give_back(st, held.stop()),
            LeaseSlot::Parked(id) => self.give_back(st, id),
        }
    }

    /// Release a lease. When that fails the lease may still be ours: it is parked
    /// (kept, not renewed), never forgotten, or every writer, this process
    /// included, would wait for it to lapse.
    pub(super) fn give_back(&self, st: &mut State, id: LeaseId) {
        if self.released(self.remote.release_lease(&id)) {
            self.forget_lease_owner(st, &id);
        } else {
            st.lease.park(id);
        }
    }

    /// Whether a Release Lease's answer means the lease is no longer ours: released,
    /// or already gone (lapsed, broken, the blob deleted). A failure is logged: the
    /// lease may still be ours, and the caller parks it.
    fn released(&self, answer: crate::backend::BackendResult<()>) -> bool {
        match answer {
            Ok(()) => true,
            Err(e)
                if matches!(
                    e.kind,
                    BackendErrorKind::LeaseLost | BackendErrorKind::NotFound
                ) =>
            {
                true
            }
            Err(e) => {
                tracing::warn!(blob = %self.config.blob, error = %e,
                    "releasing the lease failed; it is kept parked until released or lapsed");
                false
            }
        }
    }

    /// The lease `id` was given back: drop its owner record. It goes to disk with
    /// the next save; a stale one is harmless: its renewal fails.
    fn forget_lease_owner(&self, st: &mut State, id: &LeaseId) {
        st.sidecar.forget_lease(id);
    }

    /// Make a parked lease live again, or drop it when it is gone. When the renewal
    /// fails transiently the lease may still be ours: it stays parked and the error
    /// fails the caller. A revived lease is only kept when the remote is still this
    /// cache's base (it may have been parked after seeing a moved remote).
    pub(super) fn revive_parked_lease(&self, st: &mut State) -> Result<()> {
        let LeaseSlot::Parked(id) = st.lease.slot() else {
            return Ok(());
        };
        let id = id.clone();
        match self.remote.renew_lease(&id, self.config.lease) {
            Ok(()) => {}
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(_) => {
                st.lease.clear();
                return Ok(());
            }
        }
        let current = self.remote.stat()?;
        let matches = match (&current, st.sidecar.base()) {
            (Some(stat), Some(base)) => stat.etag == *base,
            (Some(stat), None) => stat.size == 0,
            (None, _) => false,
        };
        if !matches {
            st.lease.clear();
            self.give_back(st, id);
            self.force_check(st);
            return Err(self.moved_since_snapshot(""));
        }
        st.lease.hold(self.clock.hold(id, self.config.lease));
        Ok(())
    }
}

/// How often a holder keeping the lease warm reads the waiter mark (after the first
/// half linger of its turn): a quarter of the linger, so a writer waiting elsewhere
/// gets the lease within about one linger. Never more often than every 50 ms.
fn waiter_look_every(linger: std::time::Duration) -> std::time::Duration {
    (linger / 4).max(std::time::Duration::from_millis(50))
}

impl Store {
    /// `PRAGMA managedblob_batch=begin` that waits for a lease held elsewhere as a
    /// write does: `busy_wait` is one call of the connection's busy handler (it
    /// sleeps as the busy_timeout says and answers `false` once that is spent). While
    /// it waits, this process takes a place in the waiter queue, so a holder that
    /// only keeps the lease warm gives it up within about a linger.
    pub fn batch_begin_waiting(
        &self,
        file: &mut dyn LocalFile,
        level: LockLevel,
        busy_wait: &mut dyn FnMut() -> bool,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            match self.batch_begin(file, level) {
                Err(e) if e.is_busy() => {
                    if !busy_wait() {
                        return Err(self.batch_wait_over(e, started.elapsed()));
                    }
                }
                other => return other,
            }
        }
    }

    /// Why a batch could not begin after `waited`: held elsewhere, and what that
    /// says of its holder (a warm lease is given up within about a linger once a
    /// writer waits; one held longer is in a write or a batch).
    fn batch_wait_over(&self, e: Error, waited: std::time::Duration) -> Error {
        let linger = self.config.lease_linger;
        let holder = if waited > linger + linger / 2 {
            format!(
                "it stayed held through {:.1} s of waiting, longer than a lease only kept \
                 warm after a commit is kept once a writer waits (about {} ms): its holder is \
                 in a write transaction or a batch, and it is free when that ends (within \
                 {} s if its holder died)",
                waited.as_secs_f64(),
                linger.as_millis(),
                self.config.lease.as_secs()
            )
        } else {
            format!(
                "its holder may only keep it warm after a commit: it gives it up within about \
                 {} ms once a writer waits, so a busy_timeout of a few seconds waits for it",
                linger.as_millis()
            )
        };
        Error::BatchWaited {
            what: format!(
                "managedblob_batch=begin waited {:.1} s for the lease on blob '{}': {holder}",
                waited.as_secs_f64(),
                self.config.blob
            ),
            source: Box::new(e),
        }
    }
}
