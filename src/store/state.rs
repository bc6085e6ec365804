//! The store's state, with the two pieces the lock events move through as enums:
//! what this process is writing ([`WriteState`]) and what it holds of the remote
//! lease ([`LeaseSlot`]). Transitions are methods; an illegal one is reported as
//! [`Error::Misuse`] and changes nothing.
//!
//! ```text
//!            begin_txn                     batch_begin
//!   Idle ─────────────────▶ Writing ─────────────────────┐
//!    ▲  ◀───────────────── {create}                      ▼
//!    │       end_txn          ▲          batch_end    Batch{depth, create, writing}
//!    │                        └───────────────────── (outermost, writing)
//!    │     batch_begin / batch_end (outermost, not writing)  ▲ │ begin_txn / end_txn
//!    ├──────────────────────────────────────────────────────┘ └▶ (writing flips)
//!    │                        │ defer (a commit, flush_ms > 0)   ▲ batch_begin
//!    │  end_deferral          ▼                                   │
//!    └─────────────────── AutoBatch{deadline, create, writing, failures}
//!                           begin_txn / end_txn flip `writing`; upload_failed
//!                           moves the deadline; end_deferral while writing: Writing
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::clock::HeldLease;
use super::manifest::Fetched;
use crate::backend::{Etag, LeaseId};
use crate::delta::Manifest;
use crate::error::{Error, Result};
use crate::sidecar::Sidecar;

/// What this process is writing to the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteState {
    /// No write transaction, no batch.
    Idle,
    /// A write transaction outside a batch. `create`: the blob did not exist when it
    /// started, so its commit creates it (If-None-Match:*).
    Writing { create: bool },
    /// A batch, `depth` levels deep, holding the lease until its outermost end;
    /// `writing` while one of its write transactions runs.
    Batch {
        depth: u32,
        create: bool,
        writing: bool,
    },
    /// Commits outside a batch whose upload is deferred (`flush_ms`): the cache is
    /// dirty, the lease is held, and the flusher uploads them at `deadline` (a flush,
    /// a batch end or the last close does sooner). `failures`: uploads that failed
    /// since, for the backoff.
    AutoBatch {
        deadline: Instant,
        create: bool,
        writing: bool,
        failures: u32,
    },
}

impl WriteState {
    /// A write transaction starts (SHARED -> RESERVED, the lease taken).
    pub fn begin_txn(&mut self, create_blob: bool) -> Result<()> {
        *self = match *self {
            WriteState::Idle => WriteState::Writing {
                create: create_blob,
            },
            WriteState::Batch {
                depth,
                create,
                writing: false,
            } => WriteState::Batch {
                depth,
                create: create || create_blob,
                writing: true,
            },
            WriteState::AutoBatch {
                deadline,
                create,
                writing: false,
                failures,
            } => WriteState::AutoBatch {
                deadline,
                create: create || create_blob,
                writing: true,
                failures,
            },
            other => return Err(illegal("begin a write transaction", other)),
        };
        Ok(())
    }

    /// The write transaction ended (unlock below RESERVED). Harmless when none runs.
    pub fn end_txn(&mut self) {
        *self = match *self {
            WriteState::Writing { .. } => WriteState::Idle,
            WriteState::Batch { depth, create, .. } => WriteState::Batch {
                depth,
                create,
                writing: false,
            },
            WriteState::AutoBatch {
                deadline,
                create,
                failures,
                ..
            } => WriteState::AutoBatch {
                deadline,
                create,
                writing: false,
                failures,
            },
            WriteState::Idle => WriteState::Idle,
        };
    }

    /// `managedblob_batch=begin`: open a batch or nest one level deeper.
    pub fn batch_begin(&mut self, create_blob: bool) {
        *self = match *self {
            WriteState::Idle => WriteState::Batch {
                depth: 1,
                create: create_blob,
                writing: false,
            },
            WriteState::Writing { create } => WriteState::Batch {
                depth: 1,
                create,
                writing: true,
            },
            // An explicit batch takes over the deferred commits: its end uploads them.
            WriteState::AutoBatch {
                create, writing, ..
            } => WriteState::Batch {
                depth: 1,
                create,
                writing,
            },
            WriteState::Batch {
                depth,
                create,
                writing,
            } => WriteState::Batch {
                depth: depth + 1,
                create,
                writing,
            },
        };
    }

    /// `managedblob_batch=end`: one level less. `Ok(true)` when that closed the
    /// outermost batch (its commits are to be uploaded now).
    pub fn batch_end(&mut self) -> Result<bool> {
        let (closed, next) = match *self {
            WriteState::Batch {
                depth: 1,
                create,
                writing,
            } => (
                true,
                if writing {
                    WriteState::Writing { create }
                } else {
                    WriteState::Idle
                },
            ),
            WriteState::Batch {
                depth,
                create,
                writing,
            } => (
                false,
                WriteState::Batch {
                    depth: depth - 1,
                    create,
                    writing,
                },
            ),
            _ => {
                return Err(Error::Misuse(
                    "managedblob_batch=end without a matching managedblob_batch=begin".into(),
                ))
            }
        };
        *self = next;
        Ok(closed)
    }

    /// The last connection closed: whatever batch was open ends with it.
    pub fn close_batch(&mut self) -> u32 {
        let depth = self.batch_depth();
        *self = WriteState::Idle;
        depth
    }

    /// The blob was created (or found to exist): later commits use If-Match.
    pub fn blob_exists(&mut self) {
        match self {
            WriteState::Writing { create }
            | WriteState::Batch { create, .. }
            | WriteState::AutoBatch { create, .. } => *create = false,
            WriteState::Idle => {}
        }
    }

    pub fn batch_depth(&self) -> u32 {
        match self {
            WriteState::Batch { depth, .. } => *depth,
            _ => 0,
        }
    }

    /// A write transaction of this process is running.
    pub fn in_txn(&self) -> bool {
        matches!(
            self,
            WriteState::Writing { .. }
                | WriteState::Batch { writing: true, .. }
                | WriteState::AutoBatch { writing: true, .. }
        )
    }

    /// Whether the next upload creates the blob rather than replacing a version.
    pub fn creates_blob(&self) -> bool {
        matches!(
            self,
            WriteState::Writing { create: true }
                | WriteState::Batch { create: true, .. }
                | WriteState::AutoBatch { create: true, .. }
        )
    }

    /// Nothing of this process needs the lease any more.
    pub fn lease_unneeded(&self) -> bool {
        *self == WriteState::Idle
    }

    /// A commit outside a batch stayed local (`flush_ms`): upload it by `deadline`.
    /// A deferral already pending keeps its deadline (its commits go together).
    pub fn defer(&mut self, deadline: Instant) {
        if let WriteState::Writing { create } = *self {
            *self = WriteState::AutoBatch {
                deadline,
                create,
                writing: true,
                failures: 0,
            };
        }
    }

    /// When the deferred commits are due for upload, if any are pending.
    pub fn flush_due(&self) -> Option<Instant> {
        match self {
            WriteState::AutoBatch { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// Deferred uploads that failed in a row.
    pub fn flush_failures(&self) -> u32 {
        match self {
            WriteState::AutoBatch { failures, .. } => *failures,
            _ => 0,
        }
    }

    /// The cache was uploaded: the deferral is over (a running transaction goes on).
    pub fn end_deferral(&mut self) {
        if let WriteState::AutoBatch {
            create, writing, ..
        } = *self
        {
            *self = if writing {
                WriteState::Writing { create }
            } else {
                WriteState::Idle
            };
        }
    }

    /// Commits came while the deferred ones were uploaded: upload those at `due`.
    pub fn defer_again(&mut self, due: Instant) {
        if let WriteState::AutoBatch {
            deadline, failures, ..
        } = self
        {
            *deadline = due;
            *failures = 0;
        }
    }

    /// A deferred upload failed: try again at `retry_at`.
    pub fn upload_failed(&mut self, retry_at: Instant) {
        if let WriteState::AutoBatch {
            deadline, failures, ..
        } = self
        {
            *deadline = retry_at;
            *failures += 1;
        }
    }
}

fn illegal(what: &str, state: WriteState) -> Error {
    tracing::error!(?state, "illegal write-state transition: {what}");
    Error::Misuse(format!("internal: cannot {what} in write state {state:?}"))
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
}

impl Release {
    pub fn new(id: LeaseId) -> Arc<Release> {
        Arc::new(Release {
            id,
            outcome: Mutex::new(None),
        })
    }

    /// The release's answer came.
    pub fn settle(&self, released: bool) {
        *self.outcome.lock() = Some(released);
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

/// Everything the store's mutex protects.
#[derive(Debug)]
pub(crate) struct State {
    pub sidecar: Sidecar,
    pub lease: LeaseSlot,
    pub write: WriteState,
    pub last_check: Option<Instant>,
    /// Check the remote at the next SHARED lock whatever the staleness clock says.
    pub must_check: bool,
    pub connections: usize,
    /// How many of them may write (not opened with mode=ro): only then does this
    /// process upload local commits left behind by a crash.
    pub writable: usize,
    /// The last error since the last success of its kind ([`Activity`]).
    pub last_error: Option<LastError>,
    /// When an operation last succeeded (any kind).
    pub last_ok_at: Option<crate::utc::Utc>,
    pub conflicts: Vec<String>,
    /// A downloaded version waiting beside the cache for an EXCLUSIVE lock.
    pub pending_download: Option<Fetched>,
    /// The base version's chunk list, when known.
    pub manifest: Option<(Etag, Manifest)>,
    /// 64 KiB granules of the cache written by commits since the base.
    pub written: BTreeSet<u64>,
    /// The backend was told the sizes of the base's chunks (it learns them from its
    /// own stages and lists too), so a commit needs no request for the blob's size.
    pub sizes_taught: bool,
    /// The change-counter bytes (header offsets 24..28 and 92..96) of the remote's
    /// first chunk as this process last published it: a hint that lets a commit keep
    /// that chunk when nothing else in it changed ([`crate::backend::Blocks::counter_may_lag`]).
    /// Only used after the hash check confirms it, so a stale hint costs one staged
    /// chunk, never a wrong version.
    pub remote_counter: Option<[u8; 8]>,
    /// The current write transaction published a version: its lease is the one the
    /// remote's newest version was written under, worth keeping warm.
    pub published_in_write: bool,
    /// How long this process has kept the lease warm without a break.
    pub warm_turn: WarmTurn,
    /// A background upload is in flight with the mutex released
    /// (src/store/background.rs): whatever else would publish or take a new version
    /// waits for it ([`crate::store::Store`]'s `lock_state_settled`) or is BUSY.
    pub uploading: bool,
    /// Commits this process kept local (batches, `flush_ms`): a background upload
    /// compares it before and after to tell whether commits came meanwhile.
    pub local_commits: u64,
    /// When this process last announced it waits for the lease (rate-limited).
    pub announced_at: Option<Instant>,
}

impl State {
    pub fn new(sidecar: Sidecar) -> State {
        State {
            sidecar,
            lease: LeaseSlot::None,
            write: WriteState::Idle,
            last_check: None,
            must_check: true,
            connections: 0,
            writable: 0,
            last_error: None,
            last_ok_at: None,
            conflicts: Vec::new(),
            pending_download: None,
            manifest: None,
            written: BTreeSet::new(),
            sizes_taught: false,
            remote_counter: None,
            published_in_write: false,
            warm_turn: WarmTurn::default(),
            uploading: false,
            local_commits: 0,
            announced_at: None,
        }
    }
}

/// What an error in `last_error` came from: a later success of the same kind
/// resolves it, so monitoring that alerts on `last_error` does not fire for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activity {
    /// Freshness checks and downloads: resolved by a check that reaches the remote.
    Read,
    /// Taking the lease: resolved by a lease taken (or a version published).
    Lease,
    /// Commits, flushes, batch ends, background uploads: resolved by a version
    /// published, which also resolves `Read` and `Lease` (the remote answered, the
    /// lease was ours).
    Write,
    /// A report no success resolves (a conflict copy kept, the outcome of a commit
    /// whose reply was lost, a version not kept in history, a commit whose local half
    /// failed): kept until the next error.
    Report,
}

/// An error kept for the status report.
#[derive(Clone, Debug)]
pub(crate) struct LastError {
    pub activity: Activity,
    pub message: String,
    pub at: crate::utc::Utc,
}

impl State {
    /// Keep `message` as the last error, of `activity`.
    pub fn note(&mut self, activity: Activity, message: String) {
        self.last_error = Some(LastError {
            activity,
            message,
            at: crate::utc::Utc::now(),
        });
    }

    /// An operation of `activity` succeeded: an error it resolves goes.
    pub fn succeeded(&mut self, activity: Activity) {
        self.last_ok_at = Some(crate::utc::Utc::now());
        let resolved = self.last_error.as_ref().is_some_and(|e| {
            matches!(
                (activity, e.activity),
                (Activity::Read, Activity::Read)
                    | (Activity::Lease, Activity::Lease)
                    | (
                        Activity::Write,
                        Activity::Read | Activity::Lease | Activity::Write
                    )
            )
        });
        if resolved {
            self.last_error = None;
        }
    }
}

/// Fairness of the warm lease: a process that commits more often than once per
/// linger would keep the lease forever and starve other hosts' writers (they only
/// poll, through their busy handlers). After [`WarmTurn::LIMIT`] lingers of keeping
/// it without a break, the next commit gives it back and this process's next write
/// waits out a short pause before taking it again (a delay, not SQLITE_BUSY), so a
/// writer waiting elsewhere gets its turn.
#[derive(Debug, Default)]
pub(crate) struct WarmTurn {
    /// When the lease was first kept warm since it was last given back.
    since: Option<Instant>,
    /// Until when this process's next write waits before taking the lease.
    yield_until: Option<Instant>,
}

impl WarmTurn {
    /// The longest run of warm keeps, in lingers (10 s at the default linger).
    pub const LIMIT: u32 = 10;
    /// The pause after a turn: at most this, and at most one linger. Other writers'
    /// busy handlers retry every 100 ms at most, so they see the lease free.
    pub const MAX_PAUSE: Duration = Duration::from_millis(250);

    /// May the lease be kept warm after a commit at `now`? `false` ends the turn.
    pub fn may_keep(&mut self, now: Instant, linger: Duration) -> bool {
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) >= linger * Self::LIMIT {
            self.since = None;
            self.yield_until = Some(now + linger.min(Self::MAX_PAUSE));
            return false;
        }
        true
    }

    /// Another host's writer waits (its mark changed): this commit gives the lease
    /// back and the next write of this process pauses, as at the end of a turn.
    pub fn yield_to_waiter(&mut self, now: Instant, linger: Duration) {
        self.since = None;
        self.yield_until = Some(now + linger.min(Self::MAX_PAUSE));
    }

    /// When the current turn started (the first warm keep since the last release).
    pub fn started(&self) -> Option<Instant> {
        self.since
    }

    /// The lease was given back: the next warm keep starts a new turn.
    pub fn released(&mut self) {
        self.since = None;
    }

    /// How long a write starting at `now` waits before taking the lease.
    pub fn pause_left(&self, now: Instant) -> Option<Duration> {
        self.yield_until
            .filter(|t| *t > now)
            .map(|t| t.duration_since(now))
    }
}

#[cfg(test)]
mod turn_tests {
    use super::*;

    #[test]
    fn a_long_warm_turn_ends_with_a_pause() {
        let linger = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut turn = WarmTurn::default();
        assert!(turn.may_keep(t0, linger));
        assert_eq!(turn.pause_left(t0), None);
        assert!(turn.may_keep(t0 + linger * 9, linger));
        // The limit: this commit gives the lease back, the next write pauses.
        let end = t0 + linger * 10;
        assert!(!turn.may_keep(end, linger));
        turn.released();
        assert_eq!(turn.pause_left(end), Some(linger));
        assert_eq!(turn.pause_left(end + linger / 2), Some(linger / 2));
        assert_eq!(turn.pause_left(end + linger), None);
        // Then a new turn.
        assert!(turn.may_keep(end + linger, linger));
        assert!(turn.may_keep(end + linger * 10, linger));
        assert!(!turn.may_keep(end + linger * 11, linger));
    }

    #[test]
    fn the_pause_is_short_for_a_long_linger() {
        let linger = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut turn = WarmTurn::default();
        assert!(turn.may_keep(t0, linger));
        assert!(!turn.may_keep(t0 + linger * 10, linger));
        assert_eq!(turn.pause_left(t0 + linger * 10), Some(WarmTurn::MAX_PAUSE));
    }

    #[test]
    fn a_release_starts_a_new_turn() {
        let linger = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut turn = WarmTurn::default();
        assert!(turn.may_keep(t0, linger));
        turn.released();
        assert!(turn.may_keep(t0 + linger * 15, linger));
        assert!(turn.may_keep(t0 + linger * 24, linger));
    }
}

#[cfg(test)]
mod tests {
    use super::WriteState::{self, *};

    #[test]
    fn a_transaction_inside_a_batch_keeps_the_batch() {
        let mut w = Idle;
        w.batch_begin(false);
        w.begin_txn(false).unwrap();
        assert!(w.in_txn() && w.batch_depth() > 0);
        w.end_txn();
        assert_eq!(
            w,
            Batch {
                depth: 1,
                create: false,
                writing: false
            }
        );
        assert!(w.batch_end().unwrap());
        assert_eq!(w, Idle);
    }

    #[test]
    fn a_batch_begun_by_a_writer_ends_back_in_its_transaction() {
        let mut w = Writing { create: true };
        w.batch_begin(false);
        w.batch_begin(false);
        assert_eq!(w.batch_depth(), 2);
        assert!(!w.batch_end().unwrap());
        assert!(w.batch_end().unwrap());
        assert_eq!(w, Writing { create: true });
    }

    #[test]
    fn illegal_transitions_are_reported_and_change_nothing() {
        let mut w = Writing { create: false };
        assert!(w.begin_txn(false).is_err());
        assert_eq!(w, Writing { create: false });
        let mut idle = WriteState::Idle;
        assert!(idle.batch_end().is_err());
        assert_eq!(idle, Idle);
    }

    #[test]
    fn a_deferred_commit_keeps_its_deadline_until_uploaded() {
        let t0 = std::time::Instant::now();
        let later = t0 + std::time::Duration::from_secs(1);
        let mut w = Idle;
        w.begin_txn(false).unwrap();
        w.defer(t0);
        w.end_txn();
        assert_eq!(w.flush_due(), Some(t0));
        assert!(!w.lease_unneeded() && !w.in_txn() && w.batch_depth() == 0);
        w.begin_txn(false).unwrap();
        w.defer(later);
        assert_eq!(w.flush_due(), Some(t0), "a second commit joins the first");
        w.upload_failed(later);
        assert_eq!((w.flush_due(), w.flush_failures()), (Some(later), 1));
        w.end_deferral();
        assert_eq!(w, Writing { create: false });
        w.end_txn();
        assert_eq!(w, Idle);
    }

    #[test]
    fn an_explicit_batch_takes_over_deferred_commits() {
        let mut w = Idle;
        w.begin_txn(true).unwrap();
        w.defer(std::time::Instant::now());
        w.end_txn();
        w.batch_begin(false);
        assert_eq!(
            w,
            Batch {
                depth: 1,
                create: true,
                writing: false
            }
        );
        assert_eq!(w.flush_due(), None);
        assert!(w.batch_end().unwrap());
        assert_eq!(w, Idle);
    }

    #[test]
    fn creating_is_forgotten_once_the_blob_exists() {
        let mut w = Idle;
        w.begin_txn(true).unwrap();
        assert!(w.creates_blob());
        w.blob_exists();
        assert!(!w.creates_blob());
    }
}

#[cfg(test)]
mod last_error_tests {
    use super::*;

    #[test]
    fn a_success_resolves_errors_of_its_kind_and_never_a_report() {
        let mut st = State::new(Sidecar::new("local:/r".into(), "b".into()));
        st.note(Activity::Read, "connection refused".into());
        st.succeeded(Activity::Lease);
        assert!(
            st.last_error.is_some(),
            "a lease taken says nothing of reads"
        );
        st.succeeded(Activity::Read);
        assert!(st.last_error.is_none());
        assert!(st.last_ok_at.is_some());
        st.note(Activity::Lease, "held by another writer".into());
        st.succeeded(Activity::Write);
        assert!(st.last_error.is_none(), "a publish resolves a lease error");
        st.note(Activity::Write, "upload failed".into());
        st.succeeded(Activity::Read);
        assert!(
            st.last_error.is_some(),
            "a read does not resolve a failed upload"
        );
        st.succeeded(Activity::Write);
        assert!(st.last_error.is_none());
        st.note(Activity::Report, "conflict copy kept".into());
        for a in [Activity::Read, Activity::Lease, Activity::Write] {
            st.succeeded(a);
        }
        assert!(
            st.last_error.is_some(),
            "a report stays until the next error"
        );
    }
}
