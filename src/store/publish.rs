//! The one path that publishes the cache as a new remote version: it picks the
//! condition (If-None-Match:* for a blob this write creates, else If-Match the
//! cache's base), uploads by chunks or whole, and, when a retried request is
//! refused by its own condition, checks whether the first attempt had landed.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::state::State;
use super::Store;
use crate::backend::{BackendErrorKind, BlobStat, BlockId, Condition, LeaseId};
use crate::error::{Error, Result};
use crate::localfile::LocalFile;
use crate::remote::UploadError;

/// What an upload tried to make the blob, to recognise it if it landed.
enum Attempt<'a> {
    /// This block list (delta sync).
    Blocks(&'a [BlockId]),
    /// The cache's bytes, uploaded whole.
    Whole,
}

impl Store {
    /// Upload the cache as the next version and record it as the base. `create`:
    /// the blob does not exist yet (or never did for this cache). The caller saves
    /// the sidecar.
    pub(super) fn publish(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        create: bool,
    ) -> Result<BlobStat> {
        let condition = match (&st.sidecar.base, create) {
            (Some(etag), false) => Condition::Match(etag.clone()),
            _ => Condition::Create,
        };
        let lease = st.lease.live_id().cloned();
        let stat = if self.delta_enabled() {
            self.publish_chunks(st, file, &condition, lease.as_ref())
        } else {
            self.publish_whole(file, &condition, lease.as_ref())
        }
        .map_err(|e| match e {
            Error::Backend(b) if b.kind == BackendErrorKind::AlreadyExists => Error::Busy(format!(
                "another writer created blob '{}' first; retry the transaction",
                self.config.blob
            )),
            other => other,
        })?;
        self.remote
            .counters
            .versions_up
            .fetch_add(1, Ordering::Relaxed);
        // The remote now holds what this cache holds: as good as a fresh check.
        st.last_check = Some(Instant::now());
        st.write.blob_exists();
        st.sidecar.base = Some(stat.etag.clone());
        st.sidecar.dirty = false;
        st.sidecar.generation += 1;
        self.keep_version(st, lease.as_ref());
        Ok(stat)
    }

    /// Upload local commits that are not in the remote yet (a batch's end, a flush,
    /// a close, recovery after a crash), taking the lease when none is held.
    pub(super) fn flush_locked(&self, st: &mut State, file: &mut dyn LocalFile) -> Result<()> {
        if !st.sidecar.dirty || st.writable == 0 {
            return Ok(());
        }
        let create = self.ensure_lease(st)? || st.write.creates_blob();
        self.publish(st, file, create)?;
        self.save(st)
    }

    /// Stage the changed chunks, then commit the whole block list.
    fn publish_chunks(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        condition: &Condition,
        lease: Option<&LeaseId>,
    ) -> Result<BlobStat> {
        let manifest = self.stage_chunks(st, file, lease)?;
        let raw: Vec<BlockId> = manifest
            .ids
            .iter()
            .map(|id| id.as_bytes().to_vec())
            .collect();
        let committed = self.remote.commit_blocks(&raw, condition, lease);
        let stat = self.landed_or(committed, file, Attempt::Blocks(&raw))?;
        self.set_manifest(st, Some((stat.etag.clone(), manifest)));
        st.written.clear();
        Ok(stat)
    }

    fn publish_whole(
        &self,
        file: &mut dyn LocalFile,
        condition: &Condition,
        lease: Option<&LeaseId>,
    ) -> Result<BlobStat> {
        let size = file
            .size()
            .map_err(|e| Error::local(format!("reading cache {}", self.cache_path.display()), e))?;
        let uploaded = self.remote.upload(file, size, condition, lease);
        self.landed_or(uploaded, file, Attempt::Whole)
    }

    /// The result of an upload, with one second look: a retried request refused by
    /// its own condition may be refused because its first attempt landed (the reply
    /// was lost). Then the remote holds exactly what we sent, and it is our version,
    /// not a conflict.
    fn landed_or(
        &self,
        result: std::result::Result<BlobStat, UploadError>,
        file: &mut dyn LocalFile,
        attempt: Attempt<'_>,
    ) -> Result<BlobStat> {
        let e = match result {
            Ok(stat) => return Ok(stat),
            Err(e) => e,
        };
        let own_condition = matches!(
            e.error.kind,
            BackendErrorKind::ConditionFailed | BackendErrorKind::AlreadyExists
        );
        if !(e.retried && own_condition) {
            return Err(e.error.into());
        }
        let landed = match attempt {
            Attempt::Blocks(raw) => match self.remote.block_list()? {
                Some((stat, list)) if list.iter().map(|(id, _)| id).eq(raw.iter()) => Some(stat),
                _ => None,
            },
            Attempt::Whole => {
                let stat = self.remote.download_to(&self.download_path)?;
                let same = self.same_as_download(file);
                let _ = std::fs::remove_file(&self.download_path);
                same?.then_some(stat)
            }
        };
        match landed {
            Some(stat) => {
                tracing::info!(blob = %self.config.blob,
                    "an upload retry found its first attempt had landed");
                Ok(stat)
            }
            None => Err(e.error.into()),
        }
    }
}
