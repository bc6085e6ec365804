//! One owner of time per store: a single worker thread (`managedblob-clock`)
//! drives every timer of a [`Store`]: the lease's renewal, the end of a warm
//! lease's linger, the look at the waiter mark while the lease is kept warm (fair
//! turns between hosts), and the `flush_ms` deadline and its retries. (The sweep after a
//! commit is not a timer: it runs in the commit, under the lease the commit holds;
//! on the clock it would race the lease's release when `lease_linger_ms=0`.)
//!
//! The worker never waits for the store's mutex. Renewal needs nothing but the
//! lease id and the remote, so a commit that holds the mutex over a long upload
//! cannot starve its own lease (before, the idle check ran on the renewer thread
//! and waited for the mutex: the lease lapsed under the upload). Work that needs
//! the store's state is tried (`try_lock`; when the mutex is held, the guard's
//! release wakes the worker to try again) or handed over (the deferred upload goes
//! to the flusher thread). The worker's own mutex ([`Timers`]) is held only to read
//! and set deadlines, never over the network nor while taking another lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::Store;
use crate::backend::{BackendErrorKind, LeaseId};
use crate::remote::Remote;

/// The store's clock: the handle the store keeps; dropping it stops the worker.
#[derive(Debug)]
pub(crate) struct Clock {
    shared: Arc<Shared>,
    /// The worker could not be started: no lease can be kept warm (every write
    /// releases at its end) and renewal does not run.
    running: bool,
}

#[derive(Debug, Default)]
struct Shared {
    timers: Mutex<Timers>,
    changed: Condvar,
    /// The worker tried the store's mutex and found it held: the next release of
    /// the mutex ([`Clock::state_released`]) wakes it. An atomic, so that the
    /// guard's drop pays one load when nobody waits; only the worker writes it.
    wants_state: AtomicBool,
    /// Another host's writer announced it waits for the lease this store keeps warm.
    waiter_seen: AtomicBool,
}

/// Every deadline of the store, under the clock's own mutex.
#[derive(Debug, Default)]
struct Timers {
    renewal: Option<Renewal>,
    /// When a warm lease's linger ends (the store decides, under its mutex, whether
    /// it is still idle then).
    release_at: Option<Instant>,
    /// When deferred commits are due (`flush_ms`): handed to the flusher thread.
    flush_at: Option<Instant>,
    /// While the lease is kept warm: when to read the waiter mark next.
    waiters: Option<WaiterWatch>,
    /// The mark this process last left as a waiter: the baseline of its next turn.
    announced: Option<Mark>,
    /// The store's mutex was released since the worker last found it held.
    state_freed: bool,
    stop: bool,
}

/// A waiter mark, the waiter queue's version, as read (`None`: no writer ever
/// waited).
type Mark = Option<String>;

/// What a turn compares the waiter mark with.
#[derive(Clone, Debug)]
enum Baseline {
    /// Not looked at yet: the first look sets it.
    NotYet,
    /// The mark at the first look of this turn, or the one this process left itself
    /// while it waited, so that a writer that waited in an earlier turn, or this
    /// process's own announcement, is not taken for a writer waiting now.
    Seen(Mark),
}

/// Looking for other hosts' writers while this store keeps the lease warm: the
/// turn's baseline, and when to read the mark again.
#[derive(Debug)]
struct WaiterWatch {
    next: Instant,
    every: Duration,
    baseline: Baseline,
}

/// The lease being renewed.
#[derive(Debug)]
struct Renewal {
    id: LeaseId,
    duration: Duration,
    next: Instant,
    lost: Arc<AtomicBool>,
}

/// A remote lease this process holds, renewed by the store's clock every
/// `duration / 3` (two renewals can fail before it runs out) until dropped or
/// stopped. When a renewal says the lease is gone, [`HeldLease::is_lost`] turns
/// true; the next upload is refused by the backend anyway (it is fenced by the
/// lease id), so a lost lease never becomes a blind overwrite.
#[derive(Debug)]
pub(crate) struct HeldLease {
    pub id: LeaseId,
    lost: Arc<AtomicBool>,
    clock: Weak<Shared>,
}

impl HeldLease {
    /// Whether a renewal found the lease gone.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stop renewing, without releasing: the caller releases it (or parks it). Takes
    /// only the clock's own mutex, never held over the network.
    pub fn stop(self) -> LeaseId {
        self.id.clone()
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if let Some(shared) = self.clock.upgrade() {
            let mut t = shared.timers.lock();
            if t.renews(&self.lost) {
                t.renewal = None;
                t.release_at = None;
                t.waiters = None;
                shared.waiter_seen.store(false, Ordering::SeqCst);
            }
        }
    }
}

/// What came due in one turn of the worker.
#[derive(Default)]
struct Due {
    renew: Option<(LeaseId, Duration, Arc<AtomicBool>)>,
    release: bool,
    flush: bool,
    /// Read the waiter mark, to compare with this baseline.
    look_for_waiters: Option<Baseline>,
}

impl Timers {
    /// Whether the lease being renewed is the one whose loss `lost` reports.
    fn renews(&self, lost: &Arc<AtomicBool>) -> bool {
        self.renewal
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(&r.lost, lost))
    }

    /// The earliest deadline; a release waiting for the store's mutex
    /// (`wants_state`) counts only once the mutex was released.
    fn next(&self, wants_state: bool) -> Option<Instant> {
        let release = self
            .release_at
            .filter(|_| self.state_freed_or_unwanted(wants_state));
        [
            self.renewal.as_ref().map(|r| r.next),
            release,
            self.flush_at,
            self.waiters.as_ref().map(|w| w.next),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn state_freed_or_unwanted(&self, wants_state: bool) -> bool {
        self.state_freed || !wants_state
    }

    fn take_due(&mut self, now: Instant, wants_state: bool) -> Due {
        let mut due = Due::default();
        if let Some(r) = self.renewal.as_mut().filter(|r| r.next <= now) {
            r.next = now + r.duration / 3;
            due.renew = Some((r.id.clone(), r.duration, r.lost.clone()));
        }
        if self.release_at.is_some_and(|at| at <= now) && self.state_freed_or_unwanted(wants_state)
        {
            self.state_freed = false;
            due.release = true;
        }
        if self.flush_at.is_some_and(|at| at <= now) {
            self.flush_at = None;
            due.flush = true;
        }
        if self.renewal.is_none() {
            self.waiters = None;
        }
        if let Some(w) = self.waiters.as_mut().filter(|w| w.next <= now) {
            w.next = now + w.every;
            due.look_for_waiters = Some(w.baseline.clone());
        }
        due
    }
}

impl Clock {
    /// Start the worker for `store` (which may still be under construction: the
    /// worker touches it only when a deadline the store set comes due). `flusher`:
    /// where due deferred commits are handed (`flush_ms` > 0 only).
    pub(super) fn start(
        remote: Arc<Remote>,
        store: Weak<Store>,
        flusher: Option<Sender<()>>,
    ) -> Clock {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("managedblob-clock".into())
            .spawn(move || run(&theirs, &remote, &store, flusher.as_ref()));
        if let Err(e) = &spawned {
            tracing::error!(error = %e, "could not start the store's clock thread; leases \
                are not renewed nor kept warm, and deferred commits wait for \
                PRAGMA managedblob_flush or the close");
        }
        Clock {
            shared,
            running: spawned.is_ok(),
        }
    }

    /// Renew `id` every `duration / 3` from now on, until the returned handle is
    /// dropped or stopped (one lease at a time: a new one replaces the old).
    pub(super) fn hold(&self, id: LeaseId, duration: Duration) -> HeldLease {
        // Without a worker (it could not start) the lease is used unrenewed, as
        // the renewer thread's failure to start left it before.
        let lost = Arc::new(AtomicBool::new(false));
        let mut t = self.shared.timers.lock();
        t.renewal = Some(Renewal {
            id: id.clone(),
            duration,
            next: Instant::now() + duration / 3,
            lost: lost.clone(),
        });
        t.release_at = None;
        t.waiters = None;
        drop(t);
        self.shared.waiter_seen.store(false, Ordering::SeqCst);
        self.shared.changed.notify_one();
        HeldLease {
            id,
            lost,
            clock: Arc::downgrade(&self.shared),
        }
    }

    /// Ask the store whether its warm lease is idle at `at` (a later deadline
    /// replaces an earlier one). `false` when nobody would ask: no worker.
    pub(super) fn release_when_idle(&self, at: Instant) -> bool {
        if !self.running {
            return false;
        }
        self.shared.timers.lock().release_at = Some(at);
        self.shared.changed.notify_one();
        true
    }

    /// While the lease is kept warm, read the waiter mark from `first` on, every
    /// `every` (once armed, later calls change nothing until the lease goes). A
    /// process that waited for this lease itself starts looking after `every`: other
    /// writers likely waited beside it, and they should not wait out a free half
    /// linger each.
    pub(super) fn watch_for_waiters(&self, first: Instant, every: Duration) {
        let mut t = self.shared.timers.lock();
        if t.waiters.is_none() && t.renewal.is_some() {
            let (baseline, next) = match t.announced.take() {
                Some(mark) => (Baseline::Seen(mark), first.min(Instant::now() + every)),
                None => (Baseline::NotYet, first),
            };
            t.waiters = Some(WaiterWatch {
                next,
                every,
                baseline,
            });
            drop(t);
            self.shared.changed.notify_one();
        }
    }

    /// This process replaced the waiter queue (joining or leaving it), making
    /// `mark`: if it holds the lease next, that mark is its own, not another
    /// waiter's.
    pub(super) fn announced(&self, mark: Mark) {
        self.shared.timers.lock().announced = Some(mark);
    }

    /// Whether another host's writer waits for the lease this store holds (seen
    /// by the clock); taking it clears it.
    pub(super) fn take_waiter(&self) -> bool {
        self.shared.waiter_seen.swap(false, Ordering::SeqCst)
    }

    /// Whether another host's writer waits, without clearing it.
    pub(super) fn waiter_waits(&self) -> bool {
        self.shared.waiter_seen.load(Ordering::SeqCst)
    }

    /// Hand deferred commits to the flusher at `due` (or never, for `None`).
    pub(super) fn flush_at(&self, due: Option<Instant>) {
        self.shared.timers.lock().flush_at = due;
        self.shared.changed.notify_one();
    }

    /// The store's mutex was just released: wake the worker if it waits for it.
    pub(super) fn state_released(&self) {
        if self.shared.wants_state.load(Ordering::SeqCst) {
            self.shared.timers.lock().state_freed = true;
            self.shared.changed.notify_one();
        }
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        self.shared.timers.lock().stop = true;
        self.shared.changed.notify_one();
    }
}

/// What the store answers when the worker tries an idle release.
pub(super) enum Tried {
    Done,
    /// The store's mutex was held: try again once it is released.
    MutexHeld,
}

/// The worker: sleep until the earliest deadline, then do what came due, each
/// piece without holding the clock's mutex.
fn run(shared: &Shared, remote: &Remote, store: &Weak<Store>, flusher: Option<&Sender<()>>) {
    loop {
        let due = {
            let mut t = shared.timers.lock();
            loop {
                if t.stop {
                    return;
                }
                let now = Instant::now();
                // Written only by this thread (`release_if_idle`), so it is current.
                let wants_state = shared.wants_state.load(Ordering::SeqCst);
                match t.next(wants_state) {
                    Some(at) if at <= now => break t.take_due(now, wants_state),
                    Some(at) => {
                        shared.changed.wait_until(&mut t, at);
                    }
                    None => shared.changed.wait(&mut t),
                }
            }
        };
        if let Some((id, duration, lost)) = due.renew {
            renew(shared, remote, &id, duration, &lost);
        }
        if due.flush {
            if let Some(flusher) = flusher {
                // The flusher ends only with the store, as this thread does.
                let _ = flusher.send(());
            }
        }
        if let Some(baseline) = due.look_for_waiters {
            look_for_waiters(shared, remote, baseline);
        }
        if due.release {
            release_if_idle(shared, store);
        }
    }
}

/// Read the waiter mark with no lock held. The first look of a turn sets its
/// baseline; a mark that moved since says another host's writer waits: the store
/// is asked at once to give a warm lease back (a write in progress gives it back
/// at its end instead of keeping it warm).
fn look_for_waiters(shared: &Shared, remote: &Remote, baseline: Baseline) {
    let mark = match remote.waiter_mark_in_background() {
        Ok(mark) => mark,
        Err(e) => {
            tracing::debug!(blob = remote.blob(), error = %e, "reading the waiter mark failed");
            return;
        }
    };
    let mut t = shared.timers.lock();
    let Some(watch) = t.waiters.as_mut() else {
        return;
    };
    match baseline {
        Baseline::NotYet => watch.baseline = Baseline::Seen(mark),
        Baseline::Seen(seen) if seen == mark => {}
        Baseline::Seen(_) => {
            tracing::debug!(
                blob = remote.blob(),
                "another host's writer waits: giving the lease up"
            );
            t.waiters = None;
            t.release_at = Some(Instant::now());
            shared.waiter_seen.store(true, Ordering::SeqCst);
        }
    }
}

/// One renewal, with no lock held. A lease found gone is marked lost and no longer
/// renewed (unless another lease replaced it meanwhile).
fn renew(
    shared: &Shared,
    remote: &Remote,
    id: &LeaseId,
    duration: Duration,
    lost: &Arc<AtomicBool>,
) {
    match remote.renew_lease_in_background(id, duration) {
        Ok(()) => tracing::trace!(blob = remote.blob(), "lease renewed"),
        Err(e) => {
            tracing::warn!(blob = remote.blob(), error = %e, "lease renewal failed");
            if e.kind == BackendErrorKind::LeaseLost {
                lost.store(true, Ordering::SeqCst);
                let mut t = shared.timers.lock();
                if t.renews(lost) {
                    t.renewal = None;
                }
            }
        }
    }
}

/// The linger is over: let the store release its warm lease if it is idle. When
/// the store's mutex is held (a commit uploading, say), the worker does not wait:
/// the release is tried again when the mutex is next released.
fn release_if_idle(shared: &Shared, store: &Weak<Store>) {
    let Some(store) = store.upgrade() else {
        return;
    };
    // Raised before trying, so that a release of the mutex right after a failed
    // try is not missed.
    {
        let mut t = shared.timers.lock();
        t.state_freed = false;
        shared.wants_state.store(true, Ordering::SeqCst);
    }
    match store.release_if_idle() {
        Tried::Done => {
            shared.wants_state.store(false, Ordering::SeqCst);
            let mut t = shared.timers.lock();
            t.state_freed = false;
            if t.release_at.is_some_and(|at| at <= Instant::now()) {
                t.release_at = None;
            }
        }
        Tried::MutexHeld => {
            tracing::trace!("the linger is over but the store is busy: tried again at its release");
        }
    }
}

#[cfg(test)]
mod tests {
    //! The clock's renewal on the memory backend, with leases of a fraction of a
    //! second (the backend takes any duration; the setting's 15 s floor is the
    //! store's).

    use super::*;
    use crate::backend::memory::{MemoryBackend, Op};
    use crate::config::RetryPolicy;

    /// Renewed every 300 ms: a renewal must be more than 600 ms late to lose it.
    const LEASE: Duration = Duration::from_millis(900);

    fn leased() -> (Arc<MemoryBackend>, Clock, HeldLease) {
        let backend = MemoryBackend::new_anonymous();
        backend.put("b", b"x");
        let retry = RetryPolicy {
            attempts: 1,
            base: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            total: Duration::from_secs(1),
        };
        let remote = Arc::new(Remote::new(backend.clone(), "b".into(), retry));
        let lease = remote.acquire_lease(LEASE).unwrap();
        let clock = Clock::start(remote, Weak::new(), None);
        let held = clock.hold(lease.id, LEASE);
        (backend, clock, held)
    }

    /// Wait until `done` holds; fail after a minute (a condition, not a timing).
    fn until(what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(60), "never: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn renewals_keep_the_lease_past_its_duration() {
        let (backend, _clock, held) = leased();
        let start = Instant::now();
        until("three renewals", || backend.calls(Op::RenewLease) >= 3);
        // Three renewals at a third each: the lease outlived its first expiry.
        assert!(start.elapsed() >= LEASE);
        assert!(backend.lease_holder_exists("b"));
        assert!(!held.is_lost());
    }

    #[test]
    fn a_lease_found_gone_is_lost_and_renewal_ends() {
        let (backend, clock, held) = leased();
        backend.expire_lease("b");
        until("the loss is seen", || held.is_lost());
        until("renewal ends", || {
            clock.shared.timers.lock().renewal.is_none()
        });
        let calls = backend.calls(Op::RenewLease);
        std::thread::sleep(LEASE);
        assert_eq!(
            backend.calls(Op::RenewLease),
            calls,
            "no renewal after the loss"
        );
    }

    #[test]
    fn a_transient_renewal_failure_is_not_a_loss() {
        let (backend, _clock, held) = leased();
        backend.fail_next(Op::RenewLease, BackendErrorKind::Transient, 1);
        until("a renewal after the failure", || {
            backend.calls(Op::RenewLease) >= 3
        });
        assert!(!held.is_lost());
        assert!(
            backend.lease_holder_exists("b"),
            "renewed after the failure"
        );
    }

    #[test]
    fn renewal_goes_on_while_a_renewal_is_slow_elsewhere_and_ends_with_the_handle() {
        let (backend, clock, held) = leased();
        until("one renewal", || backend.calls(Op::RenewLease) >= 1);
        let id = held.stop();
        assert!(clock.shared.timers.lock().renewal.is_none());
        assert!(backend.lease_holder_exists("b"), "stop does not release");
        // Without renewals the lease lapses by itself.
        until("the lease lapses", || !backend.lease_holder_exists("b"));
        assert!(!id.0.is_empty());
    }

    #[test]
    fn a_new_lease_replaces_the_old_and_the_old_handle_leaves_it_alone() {
        let (backend, clock, old) = leased();
        let id = old.id.clone();
        let new = clock.hold(id, LEASE);
        drop(old);
        assert!(
            clock.shared.timers.lock().renewal.is_some(),
            "dropping the replaced handle keeps the new renewal"
        );
        let calls = backend.calls(Op::RenewLease);
        until("renewals go on", || {
            backend.calls(Op::RenewLease) >= calls + 2
        });
        assert!(!new.is_lost());
    }
}
