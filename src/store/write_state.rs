//! What this process is writing ([`WriteState`]), its transitions as methods (an
//! illegal one is reported as [`Error::Misuse`] and changes nothing), and the one
//! decision SQLITE_FCNTL_SYNC makes from it ([`WriteState::commit_action`]).
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
//!                           begin_txn / end_txn flip `writing`; flush_failed
//!                           moves the deadline; end_deferral while writing: Writing
//! ```

use std::time::Instant;

use crate::error::{Error, Result};

/// What SQLITE_FCNTL_SYNC asks of the remote; decided in one place,
/// [`WriteState::commit_action`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CommitAction {
    /// Not a commit of this process's write transaction (a rollback's sync, or a
    /// hot-journal rollback by a connection that never took the lease).
    Nothing,
    /// A commit inside a batch: it stays local, the batch's end uploads it.
    MarkDirty,
    /// A commit outside a batch: upload it now (COMMIT means uploaded).
    Publish,
    /// A commit outside a batch with `flush_ms` > 0: it stays local, keeps the lease,
    /// and is uploaded with the commits that follow it within `flush_ms`.
    Defer,
}

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

    /// The one place that decides whether a commit point publishes. `counter_moved`:
    /// the file change counter differs from the transaction's start (a commit, not
    /// the sync after a rollback). `deferred`: `flush_ms` is set, so a commit outside
    /// a batch starts (or joins) an automatic batch.
    pub fn commit_action(&self, counter_moved: bool, deferred: bool) -> CommitAction {
        match self {
            _ if !counter_moved || !self.in_txn() => CommitAction::Nothing,
            WriteState::Batch { .. } | WriteState::AutoBatch { .. } => CommitAction::MarkDirty,
            WriteState::Writing { .. } if deferred => CommitAction::Defer,
            _ => CommitAction::Publish,
        }
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
    pub fn flush_failed(&mut self, retry_at: Instant) {
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

#[cfg(test)]
mod tests {
    use super::CommitAction;
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
        w.flush_failed(later);
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

    #[test]
    fn only_a_commit_of_our_write_transaction_publishes() {
        let writing = Writing { create: false };
        let batch = Batch {
            depth: 1,
            create: false,
            writing: true,
        };
        let batch_idle = Batch {
            depth: 1,
            create: false,
            writing: false,
        };
        assert_eq!(writing.commit_action(true, false), CommitAction::Publish);
        assert_eq!(writing.commit_action(false, false), CommitAction::Nothing);
        assert_eq!(batch.commit_action(true, false), CommitAction::MarkDirty);
        assert_eq!(batch_idle.commit_action(true, false), CommitAction::Nothing);
        assert_eq!(Idle.commit_action(true, false), CommitAction::Nothing);
    }

    #[test]
    fn with_flush_ms_a_commit_defers_and_later_ones_join_it() {
        let writing = Writing { create: false };
        let auto = |writing| AutoBatch {
            deadline: std::time::Instant::now(),
            create: false,
            writing,
            failures: 0,
        };
        let batch = Batch {
            depth: 1,
            create: false,
            writing: true,
        };
        assert_eq!(writing.commit_action(true, true), CommitAction::Defer);
        assert_eq!(writing.commit_action(false, true), CommitAction::Nothing);
        assert_eq!(
            auto(true).commit_action(true, true),
            CommitAction::MarkDirty
        );
        assert_eq!(auto(false).commit_action(true, true), CommitAction::Nothing);
        assert_eq!(batch.commit_action(true, true), CommitAction::MarkDirty);
    }
}
