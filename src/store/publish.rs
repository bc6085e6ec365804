//! The one path that publishes the cache as a new remote version: it picks the
//! condition (If-None-Match:* for a blob this write creates, else If-Match the
//! cache's base), uploads by chunks or whole, and, when a retried request is
//! refused by its own condition, checks whether the first attempt had landed.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::stage::COUNTER_BYTES;
use super::state::{Activity, State};
use super::Store;
use crate::backend::{BackendError, BackendErrorKind, BlobStat, BlockId, Condition, Etag, LeaseId};
use crate::delta::Manifest;
use crate::error::{Error, Result};
use crate::localfile::LocalFile;
use crate::remote::UploadError;

/// A failed publish: the error, and whether it may have landed anyway.
pub(super) struct Failure {
    error: Error,
    /// What the publish tried, when it may be in the remote although it failed:
    /// `Some(None)` a whole upload, `Some(Some(list))` a block list.
    ambiguous: Option<Option<Vec<BlockId>>>,
}

impl Failure {
    /// The error alone (a flush's commits stay in the dirty cache, whatever the
    /// outcome: nothing to record).
    pub(super) fn into_error(self) -> Error {
        self.error
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            error,
            ambiguous: None,
        }
    }
}

/// What an upload tried to make the blob, to recognise it if it landed.
pub(super) enum Attempt<'a> {
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
        let condition = match (st.sidecar.base(), create) {
            (Some(etag), false) => Condition::Match(etag.clone()),
            _ => Condition::Create,
        };
        let lease = st.lease.slot().live_id().cloned();
        let stat = if self.delta_enabled() {
            self.publish_chunks(st, file, &condition, lease.as_ref())
        } else {
            self.publish_whole(file, &condition, lease.as_ref())
        }
        .or_else(|failure| self.ambiguous_or(st, file, failure))
        .map_err(|e| self.lost_race(st, e))?;
        // Holding the lease after a commit: whatever upload files are left beside the
        // blob belong to writers that died (ours were installed or removed).
        if let Some(id) = &lease {
            if let Err(e) = self.remote.sweep_leftovers(Some(id)) {
                tracing::debug!(error = %e, "sweeping leftovers after a commit failed");
            }
        }
        self.record_version(st, &stat);
        st.sidecar.set_dirty(false);
        st.lease.published();
        self.keep_version(st, lease.as_ref());
        Ok(stat)
    }

    /// The remote took `stat`, this cache's content as of the upload: it is the
    /// base now, and as good as a fresh check.
    pub(super) fn record_version(&self, st: &mut State, stat: &BlobStat) {
        self.remote
            .counters
            .versions_up
            .fetch_add(1, Ordering::Relaxed);
        st.refresh.restart_staleness(Instant::now());
        st.write.blob_exists();
        st.sidecar.published(stat.etag.clone());
        st.publishing.knew_base(&stat.etag, stat.size);
        st.report.succeeded(Activity::Write);
    }

    /// The chunk list of the version `etag` just published, and what it tells
    /// later commits (the first chunk's counter, that the backend knows the sizes).
    pub(super) fn record_chunks(
        &self,
        st: &mut State,
        etag: Etag,
        manifest: Manifest,
        first_counter: Option<[u8; COUNTER_BYTES]>,
    ) {
        self.set_manifest(st, Some((etag, manifest)));
        st.publishing.learned(first_counter);
    }

    /// A publish refused because another writer got there first is a conflict, not
    /// a fault: the blob was created by someone else, or it moved on while our lease
    /// lapsed (expired, broken, taken). It is SQLITE_BUSY (BUSY_SNAPSHOT at COMMIT,
    /// so SQLite rolls the transaction back), and the next read takes the new version.
    pub(super) fn lost_race(&self, st: &mut State, e: Error) -> Error {
        let Error::Backend(b) = e else {
            return e;
        };
        let why = match b.kind {
            BackendErrorKind::AlreadyExists => "another writer created it first",
            BackendErrorKind::ConditionFailed => "it moved on since this transaction began",
            BackendErrorKind::LeaseLost => "this writer's lease lapsed and it may have moved on",
            _ => return Error::Backend(b),
        };
        self.force_check(st);
        Error::NotPublished {
            blob: self.config.blob.clone(),
            why,
            source: b,
        }
    }

    /// Upload local commits that are not in the remote yet (a batch's end, a flush,
    /// a close, recovery after a crash), taking the lease when none is held.
    pub(super) fn flush_locked(&self, st: &mut State, file: &mut dyn LocalFile) -> Result<()> {
        if !st.sidecar.is_dirty() || !st.connections.any_writable() {
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
    ) -> std::result::Result<BlobStat, Failure> {
        let (manifest, first_counter) = self.stage_chunks(st, file, lease)?;
        let raw = block_ids(&manifest);
        if !st.publishing.sizes_known() {
            self.teach_sizes(&manifest, &raw);
        }
        let committed = self.remote.commit_blocks(&raw, condition, lease);
        let stat = self.landed_or(committed, file, Attempt::Blocks(&raw))?;
        self.record_chunks(st, stat.etag.clone(), manifest, first_counter);
        st.publishing.chunks_published();
        Ok(stat)
    }

    /// Tell the backend the size of every chunk of `manifest` (a process that did
    /// not stage or list them would otherwise ask the blob's size after the commit).
    pub(super) fn teach_sizes(&self, manifest: &Manifest, raw: &[BlockId]) {
        let Some(blocks) = self.remote.backend().blocks() else {
            return;
        };
        let chunk = manifest.chunk_size;
        let sizes: Vec<(BlockId, u64)> = raw
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), chunk.min(manifest.len - i as u64 * chunk)))
            .collect();
        blocks.learn_sizes(&self.config.blob, &sizes);
    }

    fn publish_whole(
        &self,
        file: &mut dyn LocalFile,
        condition: &Condition,
        lease: Option<&LeaseId>,
    ) -> std::result::Result<BlobStat, Failure> {
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
    pub(super) fn landed_or(
        &self,
        result: std::result::Result<BlobStat, UploadError>,
        file: &mut dyn LocalFile,
        attempt: Attempt<'_>,
    ) -> std::result::Result<BlobStat, Failure> {
        let e = match result {
            Ok(stat) => return Ok(stat),
            Err(e) => e,
        };
        let tried = || match &attempt {
            Attempt::Blocks(raw) => Some(raw.to_vec()),
            Attempt::Whole => None,
        };
        // Every attempt failed transiently: any of them may have reached the server.
        if e.error.is_transient() {
            return Err(Failure {
                ambiguous: Some(tried()),
                error: e.error.into(),
            });
        }
        let own_condition = matches!(
            e.error.kind,
            BackendErrorKind::ConditionFailed | BackendErrorKind::AlreadyExists
        );
        if !(e.retried && own_condition) {
            return Err(Error::from(e.error).into());
        }
        let read_back = match &attempt {
            Attempt::Blocks(raw) => {
                self.remote
                    .block_list()
                    .map_err(Error::from)
                    .map(|l| match l {
                        Some((stat, list)) if list.iter().map(|(id, _)| id).eq(raw.iter()) => {
                            Some(stat)
                        }
                        _ => None,
                    })
            }
            Attempt::Whole => self
                .remote
                .download_to(&self.download_path)
                .map_err(Error::from)
                .and_then(|stat| {
                    let same = self.same_as_download(file);
                    let _ = std::fs::remove_file(&self.download_path);
                    Ok(same?.then_some(stat))
                }),
        };
        let landed = read_back.map_err(|read_error| Failure {
            error: read_error,
            ambiguous: Some(tried()),
        })?;
        match landed {
            Some(stat) => {
                tracing::info!(blob = %self.config.blob,
                    "an upload retry found its first attempt had landed");
                Ok(stat)
            }
            None => Err(Error::from(e.error).into()),
        }
    }

    /// A failed publish: when it may have landed, keep what it tried for the next
    /// check to resolve, and say so in the error.
    fn ambiguous_or(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        failure: Failure,
    ) -> Result<BlobStat> {
        // Only a COMMIT outside a batch: a flush's local commits stay in the dirty
        // cache, and the next recovery compares them with the remote anyway.
        let Some(tried) = failure.ambiguous.filter(|_| !st.sidecar.is_dirty()) else {
            return Err(failure.error);
        };
        if let Err(e) = self.record_ambiguous(st, file, tried.as_deref()) {
            tracing::warn!(cache = %self.cache_path.display(), error = %e,
                "could not keep what an ambiguous commit tried");
        }
        Err(Error::Backend(BackendError::new(
            BackendErrorKind::Transient,
            format!(
                "the commit may have been applied (its outcome is unknown: {}); the next \
                 check resolves it",
                failure.error
            ),
        )))
    }
}

/// The block ids of `manifest`'s chunks, as a block list names them.
pub(super) fn block_ids(manifest: &Manifest) -> Vec<BlockId> {
    manifest
        .ids
        .iter()
        .map(|id| id.as_bytes().to_vec())
        .collect()
}
