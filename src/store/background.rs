//! `flush_ms`'s background upload, without the locks: the flusher reads the chunks
//! that changed into memory under the cache's SHARED lock and the store's mutex,
//! records the upload in the sidecar (`uploading`: the base and the block list),
//! then releases both and uploads. Meanwhile the application's connections go on
//! reading and committing (their commits stay local and dirty, and the publishing
//! part notes that they came meanwhile, `Background::Uploading`); what would
//! publish, or take a new version, waits for the upload (`lock_state_settled`) or
//! answers SQLITE_BUSY. Before, the writer's next transaction waited for the whole
//! upload.
//!
//! A crash during the upload leaves the record: when the remote holds that block
//! list, the next check takes it as the cache's base (the later commits are
//! uploaded on top of it, not kept as a conflict copy); otherwise the record is
//! dropped and the cache is dirty over its old base, as before the upload.

use std::sync::Arc;
use std::time::Instant;

use super::publish::{block_ids, Attempt};
use super::refresh::read_full;
use super::stage::{transfer_workers, Snapshot};
use super::state::{Activity, State};
use super::Store;
use crate::backend::hex;
use crate::backend::{BlobStat, BlockId, Condition, Etag, LeaseId};
use crate::delta::{ChunkId, Manifest};
use crate::error::{Error, Result};
use crate::layout::Ranges;
use crate::localfile::LocalFile;
use crate::sidecar::InFlight;

/// The most changed bytes a background upload holds in memory; more are uploaded
/// under the locks, streamed as they are read.
const SNAPSHOT_MAX: usize = 64 << 20;

/// A background upload between its start (under the locks) and its end.
pub(super) struct BackgroundUpload {
    snapshot: Snapshot,
    /// The snapshot's block list.
    raw: Vec<BlockId>,
    base: Etag,
    lease: LeaseId,
    /// The byte ranges the snapshot covers: written back if the upload fails.
    written: Ranges,
}

impl Store {
    /// Under the cache's SHARED lock and the mutex: when deferred commits are due
    /// and can go without the locks (delta sync, the lease live, no history to
    /// keep, at most [`SNAPSHOT_MAX`] changed), read them and mark the upload in
    /// flight. `None`: upload under the locks instead, as a flush does.
    pub(super) fn start_background_upload(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
    ) -> Option<BackgroundUpload> {
        if st.write.flush_due().is_none_or(|due| due > Instant::now())
            || !self.delta_enabled()
            || self.config.history.is_on()
            || !st.connections.any_writable()
            || st.write.creates_blob()
            || !st.lease.observe().is_live()
        {
            return None;
        }
        self.reload(st).ok()?;
        let sc = &st.sidecar;
        if !sc.is_dirty()
            || sc.in_flight() != InFlight::None
            || sc.pending_commit().is_some()
            || sc.uploading().is_some()
            || !self.written_is_complete(st)
        {
            return None;
        }
        let lease = st.lease.slot().live_id()?.clone();
        let base = st.sidecar.base()?.clone();
        let snapshot = self.snapshot_chunks(st, file, SNAPSHOT_MAX).ok()??;
        let raw = block_ids(&snapshot.manifest);
        let recorded = raw.iter().map(|id| hex(id)).collect();
        if !st
            .sidecar
            .begin_upload(recorded, snapshot.manifest.chunk_size)
        {
            return None;
        }
        if let Err(e) = self.save(st) {
            tracing::debug!(error = %e, "could not record a background upload; uploading under the locks");
            st.sidecar.clear_upload();
            return None;
        }
        if !st.publishing.sizes_known() {
            self.teach_sizes(&snapshot.manifest, &raw);
        }
        st.publishing.upload_started();
        Some(BackgroundUpload {
            snapshot,
            raw,
            base,
            lease,
            written: st.publishing.take_written(),
        })
    }

    /// With neither lock held: stage the snapshot's chunks in parallel (handing
    /// their bytes over), then commit the block list, If-Match the base, under the
    /// lease. `file` (the flusher's own handle, unlocked) is not read: a block list
    /// is checked by listing.
    pub(super) fn run_background_upload(
        &self,
        up: &mut BackgroundUpload,
        file: &mut dyn LocalFile,
    ) -> Result<BlobStat> {
        let chunks = std::mem::take(&mut up.snapshot.chunks);
        let workers = transfer_workers(up.snapshot.manifest.chunk_size);
        self.stage_parallel(Some(&up.lease), workers, None, |emit| {
            for (id, data) in chunks {
                if !emit(id, data, None) {
                    break;
                }
            }
            Ok(())
        })?;
        let condition = Condition::Match(up.base.clone());
        let committed = self
            .remote
            .commit_blocks(&up.raw, &condition, Some(&up.lease));
        self.landed_or(committed, file, Attempt::Blocks(&up.raw))
            .map_err(|f| f.into_error())
    }

    /// What a freshness check or a lease taken again answers while a background
    /// upload is in flight: they must wait for its outcome.
    pub(super) fn busy_uploading(&self) -> Error {
        Error::Busy(format!(
            "cache {} is uploading deferred commits",
            self.cache_path.display()
        ))
    }

    /// Under the mutex again: record the outcome. The commits made meanwhile stay
    /// dirty and go with the next upload, `flush_ms` later.
    pub(super) fn finish_background_upload(
        self: &Arc<Self>,
        st: &mut State,
        up: BackgroundUpload,
        result: Result<BlobStat>,
    ) {
        let more = st.publishing.upload_ended();
        self.upload_done.notify_all();
        match result {
            Ok(stat) => {
                self.record_version(st, &stat);
                let snapshot = up.snapshot;
                self.record_chunks(st, stat.etag, snapshot.manifest, snapshot.first_counter);
                st.sidecar.set_dirty(more);
                if let Err(e) = self.save(st) {
                    // On disk: dirty over the old base, with the upload recorded; the
                    // next check finds it landed. Nothing is lost.
                    self.note_error(st, Activity::Write, &e);
                }
                if more {
                    st.write.defer_again(Instant::now() + self.config.flush);
                } else {
                    self.end_deferral(st);
                }
            }
            Err(e) => {
                // It may have landed all the same (a lost reply): the record stays
                // for the next check to resolve, which the next attempt forces.
                st.publishing.wrote(&up.written);
                let e = self.lost_race(st, e);
                self.force_check(st);
                if e.is_busy() {
                    self.deferred_flush_refused(st, &e);
                } else {
                    self.deferred_flush_failed(st, &e);
                }
            }
        }
    }

    /// A crash (or a failed reply) left a background upload recorded: when the
    /// remote moved to exactly that block list, it is the cache's base now (the
    /// cache stays dirty: later commits are uploaded on top). Either way the record
    /// goes.
    pub(super) fn resolve_background_upload(
        &self,
        st: &mut State,
        remote: Option<&BlobStat>,
    ) -> Result<()> {
        let Some(pending) = st.sidecar.uploading().cloned() else {
            return Ok(());
        };
        let moved = remote.filter(|stat| pending.base.as_ref() != Some(&stat.etag));
        if let (Some(stat), true) = (moved, st.sidecar.base() == pending.base.as_ref()) {
            let recorded: Vec<String> = pending.blocks.clone().unwrap_or_default();
            let listed = self
                .remote
                .block_list()?
                .filter(|(l, list)| l.etag == stat.etag && !list.is_empty());
            let landed = match &listed {
                Some((_, list)) => list
                    .iter()
                    .map(|(id, _)| hex(id))
                    .eq(recorded.iter().cloned()),
                // No block list to compare (a local remote killed before it recorded
                // one): compare the content, cut as the upload cut it.
                None => self.remote_has_chunks(stat, &recorded, pending.chunk_size)?,
            };
            if landed {
                tracing::info!(cache = %self.cache_path.display(),
                    "an interrupted background upload had landed: the cache's later \
                     commits build on it");
                st.sidecar.rebase(stat.etag.clone());
                let manifest = listed.and_then(|(_, list)| Manifest::from_block_list(&list));
                self.set_manifest(st, manifest.map(|m| (stat.etag.clone(), m)));
            }
        }
        st.sidecar.clear_upload();
        self.save(st)
    }

    /// Whether the remote, downloaded and cut into `chunk_size` chunks, is exactly
    /// the chunk list `recorded` (hex ids).
    fn remote_has_chunks(
        &self,
        stat: &BlobStat,
        recorded: &[String],
        chunk_size: Option<u64>,
    ) -> Result<bool> {
        let Some(chunk) = chunk_size.filter(|c| *c > 0) else {
            return Ok(false);
        };
        if Manifest::chunk_count(stat.size, chunk) != recorded.len() as u64 {
            return Ok(false);
        }
        let got = self.remote.download_to(&self.download_path)?;
        let same = got.etag == stat.etag && self.download_has_chunks(recorded, chunk);
        let _ = std::fs::remove_file(&self.download_path);
        Ok(same)
    }

    /// The downloaded copy, read chunk by chunk, against `recorded`.
    fn download_has_chunks(&self, recorded: &[String], chunk: u64) -> bool {
        let Ok(mut file) = std::fs::File::open(&self.download_path) else {
            return false;
        };
        let mut buf = vec![0u8; chunk as usize];
        for (i, want) in recorded.iter().enumerate() {
            match read_full(&mut file, &mut buf) {
                Ok(n) if n > 0 => {
                    if hex(ChunkId::new(i as u32, &buf[..n]).as_bytes()) != *want {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        matches!(read_full(&mut file, &mut buf), Ok(0))
    }
}
