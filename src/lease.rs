//! A remote lease held by this process, kept alive by a background thread.
//!
//! The thread renews at a third of the lease duration, so two renewals can fail
//! before the lease runs out. When a renewal says the lease is gone, the `lost`
//! flag is raised; the next upload is refused by the backend anyway (it is fenced
//! by the lease id), so a lost lease can never turn into a blind overwrite.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backend::{BackendErrorKind, LeaseId};
use crate::remote::Remote;

#[derive(Debug)]
pub struct HeldLease {
    pub id: LeaseId,
    lost: Arc<AtomicBool>,
    stop: Option<Sender<()>>,
    renewer: Option<JoinHandle<()>>,
}

impl HeldLease {
    /// Start renewing `id` every `duration / 3` until dropped.
    pub fn start(remote: Arc<Remote>, id: LeaseId, duration: Duration) -> HeldLease {
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let every = duration / 3;
        let renewer = {
            let lost = lost.clone();
            let id = id.clone();
            std::thread::Builder::new()
                .name("managedblob-lease".into())
                .spawn(move || loop {
                    match stopped.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    match remote.renew_lease(&id, duration) {
                        Ok(()) => tracing::trace!(blob = remote.blob(), "lease renewed"),
                        Err(e) => {
                            tracing::warn!(blob = remote.blob(), error = %e, "lease renewal failed");
                            if e.kind == BackendErrorKind::LeaseLost {
                                lost.store(true, Ordering::SeqCst);
                                return;
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
