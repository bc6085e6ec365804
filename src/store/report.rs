//! The report part of the store's state and the report it answers
//! (`PRAGMA managedblob_status`): `last_error` by kind, where a later success of the
//! same kind resolves an error, so monitoring that alerts on it does not fire for a
//! failure that is over; when anything last succeeded; the conflict copies kept.

use std::time::Instant;

use super::state::State;
use super::Store;
use crate::error::Error;
use crate::sidecar::InFlight;

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

/// What the status report keeps beyond the sidecar and the lease.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// The last error since the last success of its kind ([`Activity`]).
    last_error: Option<LastError>,
    /// When an operation last succeeded (any kind).
    last_ok_at: Option<crate::utc::Utc>,
    /// The conflict copies kept by this process.
    conflicts: Vec<String>,
}

impl Report {
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

    /// An error noted where the mutex was not held (a lazy read) becomes the last.
    pub fn keep(&mut self, error: LastError) {
        self.last_error = Some(error);
    }

    /// Local commits that lost a race were kept in the conflict copy `path`.
    pub fn conflict_kept(&mut self, path: String) {
        self.note(
            Activity::Report,
            format!("conflict: local commits that never reached the remote were kept in {path}"),
        );
        self.conflicts.push(path);
    }

    pub fn last_error(&self) -> Option<&LastError> {
        self.last_error.as_ref()
    }

    pub fn last_ok_at(&self) -> Option<crate::utc::Utc> {
        self.last_ok_at
    }

    pub fn conflicts(&self) -> &[String] {
        &self.conflicts
    }
}

/// The status report of `PRAGMA managedblob_status`.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub remote: String,
    pub blob: String,
    pub etag: Option<String>,
    pub dirty: bool,
    /// Milliseconds until deferred commits (`flush_ms`) are uploaded (0: due or
    /// being retried); absent when none wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_due_ms: Option<u64>,
    pub lease_held: bool,
    pub batch_depth: u32,
    pub generation: u64,
    pub in_flight: InFlight,
    /// The kinds of remote request this process is waiting on now, e.g. `["upload"]`.
    pub waiting_on: Vec<&'static str>,
    pub requests: crate::counters::CounterSnapshot,
    pub conflicts: Vec<String>,
    /// The last error since the last success of its kind: a failed check or
    /// download is resolved by a check that reaches the remote, a refused lease by a
    /// lease taken, a failed commit or upload by a version published (which resolves
    /// the other two as well). Reports no success resolves (a conflict copy, the
    /// outcome of a commit whose reply was lost) stay until the next error.
    pub last_error: Option<String>,
    /// When `last_error` happened (UTC, RFC 3339).
    pub last_error_at: Option<String>,
    /// When an operation last succeeded (UTC, RFC 3339).
    pub last_ok_at: Option<String>,
    /// `full` or `lazy`.
    pub fetch: &'static str,
    /// A lazy cache's chunks present and in all (absent in full mode, and while a
    /// lazy cache is being changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub residence: Option<super::lazy::Residence>,
}

impl Store {
    /// Remember an error of `activity` for the status report (until a success of
    /// its kind resolves it) and log it.
    pub(super) fn note_error(&self, st: &mut State, activity: Activity, err: &Error) {
        tracing::warn!(cache = %self.cache_path.display(), error = %err, "managedblob operation failed");
        st.report.note(activity, err.to_string());
    }

    /// `PRAGMA managedblob_status`: answers at once, also while another connection
    /// uploads (the state as of the last release of the mutex, and what the
    /// store is waiting on now).
    pub fn status(&self) -> Status {
        let mut p = self.published.lock().clone();
        if let Some((message, at)) = self.lazy_failure() {
            (p.last_error, p.last_error_at) = (Some(message), Some(at));
        }
        Status {
            remote: self.identity.clone(),
            blob: self.config.blob.clone(),
            etag: p.etag.map(|e| e.0),
            dirty: p.dirty,
            flush_due_ms: p
                .flush_due
                .map(|due| due.saturating_duration_since(Instant::now()).as_millis() as u64),
            lease_held: p.lease_held,
            batch_depth: p.batch_depth,
            generation: p.generation,
            in_flight: p.in_flight,
            waiting_on: self.remote.waiting_on(),
            requests: self.remote.snapshot(),
            conflicts: p.conflicts,
            last_error: p.last_error,
            last_error_at: p.last_error_at,
            last_ok_at: p.last_ok_at,
            fetch: self.config.fetch.name(),
            residence: self.residence(),
        }
    }
}

#[cfg(test)]
mod report_tests {
    use super::*;

    #[test]
    fn a_success_resolves_errors_of_its_kind_and_never_a_report() {
        let mut st = Report::default();
        st.note(Activity::Read, "connection refused".into());
        st.succeeded(Activity::Lease);
        assert!(
            st.last_error().is_some(),
            "a lease taken says nothing of reads"
        );
        st.succeeded(Activity::Read);
        assert!(st.last_error().is_none());
        assert!(st.last_ok_at().is_some());
        st.note(Activity::Lease, "held by another writer".into());
        st.succeeded(Activity::Write);
        assert!(
            st.last_error().is_none(),
            "a publish resolves a lease error"
        );
        st.note(Activity::Write, "upload failed".into());
        st.succeeded(Activity::Read);
        assert!(
            st.last_error().is_some(),
            "a read does not resolve a failed upload"
        );
        st.succeeded(Activity::Write);
        assert!(st.last_error().is_none());
        st.note(Activity::Report, "conflict copy kept".into());
        for a in [Activity::Read, Activity::Lease, Activity::Write] {
            st.succeeded(a);
        }
        assert!(
            st.last_error().is_some(),
            "a report stays until the next error"
        );
    }
}
