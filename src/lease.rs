//! A remote lease held by this process, kept alive by a background thread.
//!
//! The thread renews at a third of the lease duration, so two renewals can fail
//! before the lease runs out. When a renewal says the lease is gone, the `lost`
//! flag is raised; the next upload is refused by the backend anyway (it is fenced
//! by the lease id), so a lost lease can never turn into a blind overwrite.
//!
//! The same thread is the timer of a lingering lease ([`HeldLease::release_when_idle`]):
//! at the deadline it calls the store back, which releases the lease under its own
//! mutex only if no write took it meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::{BackendErrorKind, LeaseId};
use crate::remote::Remote;

/// A deadline and what to call then (the store's idle check).
struct IdleCheck {
    at: Instant,
    then: Box<dyn FnOnce() + Send>,
}

#[derive(Debug)]
pub struct HeldLease {
    pub id: LeaseId,
    lost: Arc<AtomicBool>,
    /// Deadlines for the renewer; dropping it stops the renewer.
    stop: Option<Sender<IdleCheck>>,
    renewer: Option<JoinHandle<()>>,
}

impl HeldLease {
    /// Start renewing `id` every `duration / 3` until dropped.
    pub fn start(remote: Arc<Remote>, id: LeaseId, duration: Duration) -> HeldLease {
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, checks) = mpsc::channel::<IdleCheck>();
        let every = duration / 3;
        let renewer = {
            let lost = lost.clone();
            let id = id.clone();
            std::thread::Builder::new()
                .name("managedblob-lease".into())
                .spawn(move || {
                    let mut renew_at = Instant::now() + every;
                    let mut idle: Option<IdleCheck> = None;
                    loop {
                        let wake = idle.as_ref().map_or(renew_at, |c| c.at.min(renew_at));
                        match checks.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                            // A later deadline replaces the earlier one.
                            Ok(check) => {
                                idle = Some(check);
                                continue;
                            }
                            Err(RecvTimeoutError::Disconnected) => return,
                            Err(RecvTimeoutError::Timeout) => {}
                        }
                        let now = Instant::now();
                        if let Some(check) = idle.take_if(|c| now >= c.at) {
                            // May release the lease and stop this thread: the next
                            // receive then finds the channel closed.
                            (check.then)();
                            continue;
                        }
                        if now < renew_at {
                            continue;
                        }
                        renew_at = now + every;
                        match remote.renew_lease_in_background(&id, duration) {
                            Ok(()) => tracing::trace!(blob = remote.blob(), "lease renewed"),
                            Err(e) => {
                                tracing::warn!(blob = remote.blob(), error = %e, "lease renewal failed");
                                if e.kind == BackendErrorKind::LeaseLost {
                                    lost.store(true, Ordering::SeqCst);
                                    return;
                                }
                            }
                        }
                    }
                })
                .ok()
        };
        HeldLease {
            id,
            lost,
            stop: Some(stop),
            renewer,
        }
    }

    /// Call `then` on the renewer thread at `at` (replacing an earlier deadline),
    /// while the lease is renewed. `false` when the renewer is gone (the lease was
    /// lost, or its thread could not start): nobody would call.
    pub fn release_when_idle(&self, at: Instant, then: impl FnOnce() + Send + 'static) -> bool {
        let running = self.renewer.as_ref().is_some_and(|r| !r.is_finished());
        let check = IdleCheck {
            at,
            then: Box::new(then),
        };
        running && self.stop.as_ref().is_some_and(|s| s.send(check).is_ok())
    }

    /// Whether a renewal found the lease gone.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stop renewing, without releasing and without waiting for the renewer: a
    /// renewal in flight (with its retries) must not stall the caller, who may hold
    /// the store's mutex. A renewal that lands after a release fails harmlessly.
    pub fn stop(mut self) -> LeaseId {
        self.halt();
        self.id.clone()
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        drop(self.renewer.take());
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    //! The renewer on the memory backend, with leases of a fraction of a second (the
    //! backend takes any duration; the setting's 15 s floor is the store's).

    use super::*;
    use crate::backend::memory::{MemoryBackend, Op};
    use crate::config::RetryPolicy;
    use std::time::Instant;

    /// Renewed every 300 ms: a renewal must be more than 600 ms late to lose it.
    const LEASE: Duration = Duration::from_millis(900);

    fn leased() -> (Arc<MemoryBackend>, HeldLease) {
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
        let held = HeldLease::start(remote, lease.id, LEASE);
        (backend, held)
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
        let (backend, held) = leased();
        let start = Instant::now();
        until("three renewals", || backend.calls(Op::RenewLease) >= 3);
        // Three renewals at a third each: the lease outlived its first expiry.
        assert!(start.elapsed() >= LEASE);
        assert!(backend.lease_holder_exists("b"));
        assert!(!held.is_lost());
    }

    #[test]
    fn a_lease_found_gone_is_lost_and_renewal_ends() {
        let (backend, held) = leased();
        backend.expire_lease("b");
        until("the loss is seen", || held.is_lost());
        let renewer = held.renewer.as_ref().unwrap();
        until("the renewer ends", || renewer.is_finished());
    }

    #[test]
    fn a_transient_renewal_failure_is_not_a_loss() {
        let (backend, held) = leased();
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
    fn the_idle_check_runs_at_the_latest_deadline_and_renewal_goes_on() {
        let (backend, held) = leased();
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let first = calls.clone();
        let later = calls.clone();
        let now = Instant::now();
        assert!(
            held.release_when_idle(now + Duration::from_secs(3600), move || {
                first.fetch_add(100, Ordering::SeqCst);
            })
        );
        assert!(held.release_when_idle(now, move || {
            later.fetch_add(1, Ordering::SeqCst);
        }));
        until("the idle check", || calls.load(Ordering::SeqCst) > 0);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "only the latest deadline counts"
        );
        until("a renewal after it", || backend.calls(Op::RenewLease) >= 1);
        assert!(!held.is_lost());
    }

    #[test]
    fn stop_ends_renewal_and_keeps_the_lease_for_its_release() {
        let (backend, held) = leased();
        until("one renewal", || backend.calls(Op::RenewLease) >= 1);
        let id = held.stop();
        assert!(backend.lease_holder_exists("b"), "stop does not release");
        // Without renewals the lease lapses by itself.
        until("the lease lapses", || !backend.lease_holder_exists("b"));
        assert!(!id.0.is_empty());
    }
}
