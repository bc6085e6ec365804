//! `last_error` by kind: a later success of the same kind resolves an error, so
//! monitoring that alerts on it does not fire for a failure that is over.

use super::state::State;

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

#[cfg(test)]
mod last_error_tests {
    use super::*;
    use crate::sidecar::Sidecar;

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
