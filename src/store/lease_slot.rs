//! The lease part of the store's state ([`LeaseState`]): what this process holds of
//! the remote lease ([`LeaseSlot`]), an idle release in flight ([`Release`]), its
//! turn keeping the lease warm ([`WarmTurn`]), what the end of the write does with
//! it ([`AfterWrite`]), and its place among other hosts' waiting writers ([`Line`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::clock::HeldLease;
use super::line::Line;
use super::turn::WarmTurn;
use crate::backend::LeaseId;

/// Everything the store keeps about the remote lease.
#[derive(Debug, Default)]
pub(crate) struct LeaseState {
    slot: LeaseSlot,
    /// How long this process has kept the lease warm without a break.
    turn: WarmTurn,
    after_write: AfterWrite,
    /// This process's place in the waiter queue, while it waits for the lease.
    line: Line,
}

/// What the end of the current write transaction does with the lease.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum AfterWrite {
    /// Nothing was published: give the lease back.
    #[default]
    Release,
    /// The write published a version: its lease is the one the remote's newest
    /// version was written under, worth keeping warm for the next write.
    KeepWarm,
}

impl LeaseState {
    pub fn slot(&self) -> &LeaseSlot {
        &self.slot
    }

    /// The slot, with a lost lease or a settled release seen ([`LeaseSlot::observe`]).
    pub fn observe(&mut self) -> &mut LeaseSlot {
        self.slot.observe()
    }

    /// The lease is taken (or revived): held and renewed.
    pub fn hold(&mut self, held: HeldLease) {
        self.slot = LeaseSlot::Live(held);
    }

    /// A release failed: the lease may still be ours, kept unrenewed.
    pub fn park(&mut self, id: LeaseId) {
        self.slot = LeaseSlot::Parked(id);
    }

    /// The lease is gone, or no longer this process's to give back.
    pub fn clear(&mut self) {
        self.slot = LeaseSlot::None;
    }

    /// The clock gives an idle warm lease back with the mutex released.
    pub fn releasing(&mut self, release: Arc<Release>) {
        self.slot = LeaseSlot::Releasing(release);
    }

    /// The slot, emptied.
    pub fn take(&mut self) -> LeaseSlot {
        std::mem::take(&mut self.slot)
    }

    /// The lease is being given back: the slot, emptied, and the warm turn over.
    pub fn give_up(&mut self) -> LeaseSlot {
        self.turn.released();
        self.take()
    }

    /// A write transaction starts: it has published nothing yet.
    pub fn write_began(&mut self) {
        self.after_write = AfterWrite::Release;
    }

    /// This process published a version under the lease.
    pub fn published(&mut self) {
        self.after_write = AfterWrite::KeepWarm;
    }

    /// What the write that ends does with the lease (the next one starts afresh).
    pub fn after_write(&mut self) -> AfterWrite {
        std::mem::take(&mut self.after_write)
    }

    /// How long a write starting at `now` waits before taking the lease
    /// ([`WarmTurn::pause_left`]).
    pub fn pause_left(&self, now: Instant) -> Option<Duration> {
        self.turn.pause_left(now)
    }

    /// May the lease be kept warm after a commit at `now` ([`WarmTurn::may_keep`]).
    pub fn may_keep_warm(&mut self, now: Instant, linger: Duration) -> bool {
        self.turn.may_keep(now, linger)
    }

    /// Another host's writer waits ([`WarmTurn::yield_to_waiter`]).
    pub fn yield_to_waiter(&mut self, now: Instant, linger: Duration) {
        self.turn.yield_to_waiter(now, linger);
        self.line.gave_way(now);
    }

    /// This process took the lease from the line with writers behind it
    /// ([`WarmTurn::waiters_behind`]).
    pub fn waiters_behind(&mut self) {
        self.turn.waiters_behind();
    }

    /// Whether writers wait behind this turn.
    pub fn has_waiters_behind(&self) -> bool {
        self.turn.has_waiters_behind()
    }

    /// How long to keep the lease warm after a write ([`WarmTurn::linger`]).
    pub fn turn_linger(&self, linger: Duration) -> Duration {
        self.turn.linger(linger)
    }

    /// When the current warm turn started.
    pub fn turn_started(&self) -> Option<Instant> {
        self.turn.started()
    }

    /// This process's place among the writers waiting for the lease.
    pub fn line(&mut self) -> &mut Line {
        &mut self.line
    }
}

/// What this process holds of the remote lease.
#[derive(Debug, Default)]
pub(crate) enum LeaseSlot {
    /// No lease.
    #[default]
    None,
    /// Held and renewed in the background, for a write transaction or a batch.
    Live(HeldLease),
    /// Held and renewed after a write transaction ended (`lease_linger_ms`), so that
    /// the next one needs neither an acquire nor a freshness check: nobody else can
    /// publish meanwhile. Released in the background once idle at `until`, at close,
    /// or when a check must look at the remote.
    Warm { held: HeldLease, until: Instant },
    /// Held but not renewed, because its release failed: it lapses by itself within
    /// `lease_secs` unless this process's next writer renews it. Never forgotten, or
    /// every writer, this process included, would wait for it to lapse.
    Parked(LeaseId),
    /// A renewal found it gone (expired, broken, taken): the next upload would be
    /// refused by the backend anyway, so this is never a blind overwrite.
    Lost,
    /// An idle warm lease being given back by the store's clock, with the store's
    /// mutex released over the network: no write may take it again meanwhile (they
    /// answer SQLITE_BUSY). Settles into `None`, or `Parked` when the release
    /// failed, at the next [`LeaseSlot::observe`].
    Releasing(Arc<Release>),
}

/// A release in flight, and its outcome once known.
#[derive(Debug)]
pub(crate) struct Release {
    pub id: LeaseId,
    /// `Some(true)`: released (or already gone); `Some(false)`: the release failed
    /// and the lease may still be ours.
    outcome: Mutex<Option<bool>>,
    /// Signalled when `outcome` is set: a write that found the release in flight
    /// waits for it ([`Release::wait_settled`]).
    settled: parking_lot::Condvar,
}

impl Release {
    pub fn new(id: LeaseId) -> Arc<Release> {
        Arc::new(Release {
            id,
            outcome: Mutex::new(None),
            settled: parking_lot::Condvar::new(),
        })
    }

    /// The release's answer came.
    pub fn settle(&self, released: bool) {
        *self.outcome.lock() = Some(released);
        self.settled.notify_all();
    }

    /// Wait up to `within` for the answer; whether it came. The clock sets it
    /// without any lock of the store, so a caller may wait holding the store's mutex.
    pub fn wait_settled(&self, within: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        let mut outcome = self.outcome.lock();
        while outcome.is_none() {
            if self.settled.wait_until(&mut outcome, deadline).timed_out() {
                break;
            }
        }
        outcome.is_some()
    }
}

impl LeaseSlot {
    /// Turn a lease whose renewal found it gone into [`LeaseSlot::Lost`] (a live one:
    /// its write must fail) or [`LeaseSlot::None`] (a warm one: no write used it).
    /// A release that has come back settles: `None`, or `Parked` when it failed.
    pub fn observe(&mut self) -> &mut Self {
        match self {
            LeaseSlot::Live(l) if l.is_lost() => *self = LeaseSlot::Lost,
            LeaseSlot::Warm { held, .. } if held.is_lost() => *self = LeaseSlot::None,
            LeaseSlot::Releasing(r) => {
                let outcome = *r.outcome.lock();
                match outcome {
                    Some(true) => *self = LeaseSlot::None,
                    Some(false) => *self = LeaseSlot::Parked(r.id.clone()),
                    None => {}
                }
            }
            _ => {}
        }
        self
    }

    /// This process holds a lease a batch can join (not one being given back).
    pub fn is_held(&self) -> bool {
        !matches!(self, LeaseSlot::None | LeaseSlot::Releasing(_))
    }

    /// The id to fence uploads with, while the lease is held and renewed.
    pub fn live_id(&self) -> Option<&LeaseId> {
        match self {
            LeaseSlot::Live(l) | LeaseSlot::Warm { held: l, .. } => Some(&l.id),
            _ => None,
        }
    }

    /// Held and renewed (or held and lost, which only an upload will tell for sure):
    /// this process is the writer, nobody else can move the remote.
    pub fn is_writing_here(&self) -> bool {
        matches!(
            self,
            LeaseSlot::Live(_) | LeaseSlot::Warm { .. } | LeaseSlot::Lost
        )
    }

    pub fn is_none(&self) -> bool {
        matches!(self, LeaseSlot::None)
    }

    pub fn is_live(&self) -> bool {
        matches!(self, LeaseSlot::Live(l) | LeaseSlot::Warm { held: l, .. } if !l.is_lost())
    }

    pub fn is_warm(&self) -> bool {
        matches!(self, LeaseSlot::Warm { .. })
    }

    /// A write takes the lingering lease back: `Warm` becomes `Live`.
    pub fn wake(&mut self) {
        if let LeaseSlot::Warm { .. } = self {
            if let LeaseSlot::Warm { held, .. } = std::mem::take(self) {
                *self = LeaseSlot::Live(held);
            }
        }
    }

    /// Keep a live lease warm until `until`, when `arm` (the store's clock, asked
    /// to look at it then) agrees; `false` (nothing changed) when the slot is not a
    /// live lease or nobody would look.
    pub fn linger(&mut self, until: Instant, arm: impl FnOnce(Instant) -> bool) -> bool {
        let armed = match self {
            LeaseSlot::Live(held) | LeaseSlot::Warm { held, .. } => !held.is_lost() && arm(until),
            _ => false,
        };
        if armed {
            if let LeaseSlot::Live(held) | LeaseSlot::Warm { held, .. } = std::mem::take(self) {
                *self = LeaseSlot::Warm { held, until };
            }
        }
        armed
    }

    /// A warm lease whose linger is over at `now` (a later write moves `until`).
    pub fn idle_at(&self, now: Instant) -> bool {
        matches!(self, LeaseSlot::Warm { until, .. } if now >= *until)
    }
}
