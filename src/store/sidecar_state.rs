//! The sidecar as the store holds it: which remote version the cache is a copy of,
//! whether it holds commits the remote lacks, and which transfer or commit is in
//! flight. The fields are private; the store changes them only through the
//! transitions below, each of which names an event (a version taken in, a commit
//! kept local, a download begun), so the combinations that mean something are the
//! only ones that can be written. Saving and loading stay with the store
//! (`cache.rs`), under the cache's file lock.

use std::path::Path;

use crate::backend::{Etag, LeaseId};
use crate::error::Result;
use crate::sidecar::{self, InFlight, LeaseOwner, PendingCommit, Sidecar};

/// This process's token, recorded as the owner of local commits it makes.
pub(super) fn process_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| format!("{}-{:08x}", std::process::id(), fastrand::u32(..)))
}

/// The store's copy of the sidecar (`<db>-managedblob.json`).
#[derive(Debug)]
pub(crate) struct SidecarState(Sidecar);

impl SidecarState {
    /// A cache that corresponds to nothing yet; `has_content`: it holds bytes, kept
    /// as local changes (a cache seeded by hand, or one whose sidecar was foreign).
    pub fn unknown(remote: String, blob: String, has_content: bool) -> SidecarState {
        let mut fresh = Sidecar::new(remote, blob);
        fresh.dirty = has_content;
        SidecarState(fresh)
    }

    /// The sidecar read from disk, if it describes the cache of `remote`/`blob` at
    /// `cache_id` (a sidecar written before identities were recorded describes any).
    /// `Err` otherwise, with the remote the sidecar found names, if any (for the
    /// warning).
    pub fn loaded(
        found: Option<Sidecar>,
        remote: &str,
        blob: &str,
        cache_id: Option<&str>,
    ) -> std::result::Result<SidecarState, Option<String>> {
        match found {
            Some(s)
                if s.is_for(remote, blob)
                    && (s.cache_id.is_none() || s.cache_id.as_deref() == cache_id) =>
            {
                Ok(SidecarState(s))
            }
            other => Err(other.map(|s| s.remote)),
        }
    }

    /// Write it atomically to `path`, stamped with the cache file's identity.
    pub fn save(&mut self, path: &Path, cache_id: Option<String>) -> Result<()> {
        if !self.0.dirty {
            self.0.dirty_owner = None;
        }
        self.0.cache_id = cache_id;
        sidecar::store(path, &self.0)
    }

    // What it says.

    /// The remote version the cache was last equal to (before local commits).
    pub fn base(&self) -> Option<&Etag> {
        self.0.base.as_ref()
    }

    /// Whether the base is `etag`.
    pub fn is_at(&self, etag: &Etag) -> bool {
        self.0.base.as_ref() == Some(etag)
    }

    /// The cache holds commits the remote does not have yet.
    pub fn is_dirty(&self) -> bool {
        self.0.dirty
    }

    /// The transfer or commit in flight (none when settled).
    pub fn in_flight(&self) -> InFlight {
        self.0.in_flight
    }

    /// How many remote versions the cache has taken in.
    pub fn generation(&self) -> u64 {
        self.0.generation
    }

    /// A commit whose outcome is unknown (src/store/ambiguous.rs).
    pub fn pending_commit(&self) -> Option<&PendingCommit> {
        self.0.pending_commit.as_ref()
    }

    /// A background upload recorded as in flight (src/store/background.rs).
    pub fn uploading(&self) -> Option<&PendingCommit> {
        self.0.uploading.as_ref()
    }

    /// The lease this cache's writer recorded as holding.
    pub fn lease_owner(&self) -> Option<&LeaseOwner> {
        self.0.lease.as_ref()
    }

    /// Whether this process made every local commit since the base (so it knows
    /// which chunks they touched): always, when there are none.
    pub fn changes_are_ours(&self) -> bool {
        !self.0.dirty || self.0.dirty_owner.as_deref() == Some(process_token())
    }

    // Transitions.

    /// The cache is now a copy of version `etag`, nothing in flight (a download
    /// installed, or an upload of the whole cache landed).
    pub fn took_version(&mut self, etag: Etag) {
        self.0.base = Some(etag);
        self.0.dirty = false;
        self.0.in_flight = InFlight::None;
        self.0.generation += 1;
    }

    /// The remote took this cache's content as version `etag` (a commit, or a
    /// background upload): the base moves on; a background upload recorded as in
    /// flight is moot. Whether the cache is clean is the caller's to say.
    pub fn published(&mut self, etag: Etag) {
        self.0.base = Some(etag);
        self.0.uploading = None;
        self.0.generation += 1;
    }

    /// The cache's content is version `etag` although no transfer said so (a
    /// dirty cache found equal to the remote): clean, at `etag`.
    pub fn found_equal(&mut self, etag: Etag) {
        self.0.base = Some(etag);
        self.0.dirty = false;
    }

    /// The cache's local commits build on version `etag` (an interrupted
    /// background upload had landed; a lease adopted over an empty blob).
    pub fn rebase(&mut self, etag: Etag) {
        self.0.base = Some(etag);
    }

    /// A commit stayed local. `false` when the cache was dirty already (nothing to
    /// save).
    pub fn kept_local(&mut self) -> bool {
        if self.0.dirty {
            return false;
        }
        self.0.dirty = true;
        self.0.dirty_owner = Some(process_token().to_string());
        true
    }

    /// After an upload: whether commits made meanwhile are still to go.
    pub fn set_dirty(&mut self, dirty: bool) {
        self.0.dirty = dirty;
    }

    /// A transfer or commit begins (`Download`, `Commit`), or ends (`None`).
    pub fn set_in_flight(&mut self, in_flight: InFlight) {
        self.0.in_flight = in_flight;
    }

    /// A commit's upload landed but SQLite rolled the local commit back: the cache
    /// is behind the remote and corresponds to no version it can name.
    pub fn commit_undone(&mut self) {
        self.0.in_flight = InFlight::None;
        self.0.base = None;
    }

    /// Record a commit whose outcome is unknown, over the current base.
    pub fn record_pending(&mut self, blocks: Option<Vec<String>>, hash: Option<String>) {
        self.0.pending_commit = Some(PendingCommit {
            base: self.0.base.clone(),
            blocks,
            hash,
            chunk_size: None,
        });
    }

    /// The unknown commit was resolved.
    pub fn clear_pending(&mut self) {
        self.0.pending_commit = None;
    }

    /// A background upload of `blocks` (chunks of `chunk_size`) over the current
    /// base begins; `false` when there is no base to build on.
    pub fn begin_upload(&mut self, blocks: Vec<String>, chunk_size: u64) -> bool {
        let Some(base) = self.0.base.clone() else {
            return false;
        };
        self.0.uploading = Some(PendingCommit {
            base: Some(base),
            blocks: Some(blocks),
            hash: None,
            chunk_size: Some(chunk_size),
        });
        true
    }

    /// The background upload record goes (resolved, or never saved).
    pub fn clear_upload(&mut self) {
        self.0.uploading = None;
    }

    /// Record this process as holding lease `id`.
    pub fn own_lease(&mut self, id: LeaseId) {
        self.0.lease = Some(LeaseOwner::this_process(id));
    }

    /// Take the recorded lease owner out (it is used up, whatever happens).
    pub fn take_lease_owner(&mut self) -> Option<LeaseOwner> {
        self.0.lease.take()
    }

    /// Lease `id` was given back: its owner record goes (with the next save).
    pub fn forget_lease(&mut self, id: &LeaseId) {
        if self.0.lease.as_ref().is_some_and(|o| o.id == *id) {
            self.0.lease = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SidecarState {
        SidecarState::unknown("local:/r".into(), "a.db".into(), false)
    }

    #[test]
    fn a_version_taken_in_is_clean_and_settled() {
        let mut s = state();
        assert!(s.kept_local());
        s.set_in_flight(InFlight::Download);
        s.took_version(Etag("e1".into()));
        assert!(s.is_at(&Etag("e1".into())));
        assert!(!s.is_dirty());
        assert_eq!(s.in_flight(), InFlight::None);
        assert_eq!(s.generation(), 1);
    }

    #[test]
    fn local_commits_are_ours_until_saved_clean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db-managedblob.json");
        let mut s = state();
        assert!(s.changes_are_ours());
        assert!(s.kept_local());
        assert!(!s.kept_local(), "a second local commit changes nothing");
        assert!(s.changes_are_ours());
        s.save(&path, None).unwrap();
        let found = sidecar::load(&path).unwrap();
        let loaded = SidecarState::loaded(found, "local:/r", "a.db", None).unwrap();
        assert!(loaded.is_dirty() && loaded.changes_are_ours());
    }

    #[test]
    fn a_background_upload_needs_a_base_and_a_publish_ends_it() {
        let mut s = state();
        assert!(!s.begin_upload(vec!["00".into()], 65536));
        s.took_version(Etag("e1".into()));
        assert!(s.begin_upload(vec!["00".into()], 65536));
        assert_eq!(s.uploading().unwrap().base, Some(Etag("e1".into())));
        s.published(Etag("e2".into()));
        assert!(s.uploading().is_none());
        assert_eq!(s.generation(), 2);
    }

    #[test]
    fn a_sidecar_of_another_remote_or_cache_file_is_not_loaded() {
        let mut theirs = Sidecar::new("local:/other".into(), "a.db".into());
        assert!(SidecarState::loaded(Some(theirs.clone()), "local:/r", "a.db", None).is_err());
        theirs.remote = "local:/r".into();
        theirs.cache_id = Some("1:2".into());
        assert!(
            SidecarState::loaded(Some(theirs.clone()), "local:/r", "a.db", Some("3:4")).is_err()
        );
        assert!(SidecarState::loaded(Some(theirs), "local:/r", "a.db", Some("1:2")).is_ok());
        assert!(SidecarState::loaded(None, "local:/r", "a.db", None).is_err());
    }
}
