//! Fault injection of the memory backend: the operations faults are aimed at, the
//! knobs a test turns (injected errors, random transient failures, latency, an
//! upload that lands but reports failure), and the prologue every call runs first.

use std::time::Duration;

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
#[derive(Default, Clone, Copy)]
pub(super) struct Fault {
    calls: usize,
    next_kind: Option<BackendErrorKind>,
    next_times: usize,
    rate: f64,
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
    /// the latency, then fail if a fault is due (before any side effect).
    pub(super) fn enter(&self, op: Op, blob: &str, what: &str) -> BackendResult<()> {
        validate_blob_name(blob)?;
        tracing::debug!(store = %self.name, blob, op = what, "memory backend call");
        let latency = {
            let mut state = self.state.lock();
            state.faults[op as usize].calls += 1;
            state.latency
        };
        if !latency.is_zero() {
            std::thread::sleep(latency);
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
