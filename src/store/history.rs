//! Keeping published versions (the `history` setting): right after a publish, the
//! store asks the backend to keep the version just published and to drop what the
//! retention no longer keeps. The commit is already published when this runs, so a
//! failure here never fails it: it is logged and reported in `last_error`.

use std::time::SystemTime;

use super::state::{Activity, State};
use super::Store;
use crate::backend::LeaseId;

impl Store {
    /// Keep the version just published, then apply the retention (when `history`
    /// is on and the backend keeps versions).
    pub(super) fn keep_version(&self, st: &mut State, lease: Option<&LeaseId>) {
        let policy = self.config.history;
        if !policy.is_on() {
            return;
        }
        let backend = self.remote.backend();
        let Some(history) = backend.history() else {
            return;
        };
        let blob = &self.config.blob;
        let kept = history
            .snapshot(blob, lease)
            .and_then(|_| history.prune(blob, policy, SystemTime::now()));
        if let Err(e) = kept {
            tracing::warn!(blob = %blob, error = %e,
                "the commit is published but its version was not kept in history");
            st.report.note(
                Activity::Report,
                format!("the commit is published but its version was not kept in history: {e}"),
            );
        }
    }
}
