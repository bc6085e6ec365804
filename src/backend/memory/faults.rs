//! Fault injection of the memory backend: the operations faults are aimed at, the
//! knobs a test turns (injected errors, random transient failures, latency, a gate
//! that holds calls until the test opens it, an upload that lands but reports
//! failure), and the prologue every call runs first.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::MemoryBackend;
use crate::backend::checks::validate_blob_name;
use crate::backend::{BackendErrorKind, BackendResult};

/// A backend operation, to aim injected faults at and to count calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Stat,
    Download,
    Upload,
    AcquireLease,
    RenewLease,
    ReleaseLease,
    BreakLease,
    BlockList,
    StageBlock,
    CommitBlocks,
    ReadRange,
}

/// How many kinds of [`Op`] there are.
pub(super) const OP_COUNT: usize = 11;

/// The faults armed for one operation, and how often it was called.
#[derive(Default)]
pub(super) struct Fault {
    calls: usize,
    next_kind: Option<BackendErrorKind>,
    next_times: usize,
    rate: f64,
    gate: Option<Arc<GateState>>,
}

/// A gate on one operation ([`MemoryBackend::hold`]): a slow network made
/// deterministic. Every call of the operation waits at the gate, before any side
/// effect, until the test opens it (or drops it).
pub struct Gate(Arc<GateState>);

#[derive(Default)]
pub(super) struct GateState {
    /// (calls waiting at the gate now, open)
    inner: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Gate {
    /// Wait until a call is held at the gate; `false` if none came within `bound`
    /// (a safety net against a test that would hang, not a timing).
    pub fn wait_for_call(&self, bound: Duration) -> bool {
        let mut inner = self.0.inner.lock();
        let deadline = std::time::Instant::now() + bound;
        while inner.0 == 0 {
            if self.0.changed.wait_until(&mut inner, deadline).timed_out() {
                return inner.0 > 0;
            }
        }
        true
    }

    /// Let the held calls, and every later one, through.
    pub fn open(&self) {
        self.0.inner.lock().1 = true;
        self.0.changed.notify_all();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.open();
    }
}

impl GateState {
    fn pass(&self) {
        let mut inner = self.inner.lock();
        inner.0 += 1;
        self.changed.notify_all();
        while !inner.1 {
            self.changed.wait(&mut inner);
        }
        inner.0 -= 1;
    }
}

impl MemoryBackend {
    /// Make the next `times` calls of `op` fail with `kind`, changing nothing.
    pub fn fail_next(&self, op: Op, kind: BackendErrorKind, times: usize) {
        let mut state = self.state.lock();
        let fault = &mut state.faults[op as usize];
        fault.next_kind = Some(kind);
        fault.next_times = times;
    }

    /// Make each call of `op` fail with a transient error with probability `rate`.
    pub fn set_fail_rate(&self, op: Op, rate: f64) {
        self.state.lock().faults[op as usize].rate = rate;
    }

    /// Delay every call by `latency` (outside the lock, like a network round trip).
    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().latency = latency;
    }

    /// Hold every call of `op` at a gate until the returned [`Gate`] is opened or
    /// dropped.
    pub fn hold(&self, op: Op) -> Gate {
        let gate = Arc::new(GateState::default());
        self.state.lock().faults[op as usize].gate = Some(gate.clone());
        Gate(gate)
    }

    /// How many times `op` was called (including calls that failed).
    pub fn calls(&self, op: Op) -> usize {
        self.state.lock().faults[op as usize].calls
    }

    /// Let the next upload or block commit that would succeed be applied, then report
    /// a transient error, as when an SDK's first try landed but its reply was lost.
    /// A write that fails on its own merits does not use up this fault.
    pub fn land_then_fail_next_upload(&self) {
        self.state.lock().land_then_fail = true;
    }

    /// The common prologue of every operation: check the name, count the call, wait
    /// the latency and at a gate, then fail if a fault is due (before any side
    /// effect).
    pub(super) fn enter(&self, op: Op, blob: &str, what: &str) -> BackendResult<()> {
        validate_blob_name(blob)?;
        tracing::debug!(store = %self.name, blob, op = what, "memory backend call");
        let (latency, gate) = {
            let mut state = self.state.lock();
            let fault = &mut state.faults[op as usize];
            fault.calls += 1;
            let gate = fault.gate.clone();
            (state.latency, gate)
        };
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        if let Some(gate) = gate {
            gate.pass();
        }
        let mut state = self.state.lock();
        let fault = &mut state.faults[op as usize];
        if let (Some(kind), 1..) = (fault.next_kind, fault.next_times) {
            fault.next_times -= 1;
            return Err(self.error(kind, blob, what, "injected fault"));
        }
        if fault.rate > 0.0 && fastrand::f64() < fault.rate {
            return Err(self.error(
                BackendErrorKind::Transient,
                blob,
                what,
                "injected random fault",
            ));
        }
        Ok(())
    }
}
