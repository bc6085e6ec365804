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
use std::time::Instant;

use super::manifest::Fetched;
use crate::backend::Etag;
use crate::delta::Manifest;
use crate::error::{Error, Result};
use crate::sidecar::Sidecar;

pub(crate) use super::last_error::{Activity, LastError};
pub(crate) use super::lease_slot::{LeaseSlot, Release};
pub(crate) use super::turn::WarmTurn;

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
