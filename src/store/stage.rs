//! The upload half of delta sync: stage the chunks that changed since the base
//! (tracked from xWrite as byte ranges, or found by hashing when the tracking is
//! incomplete, e.g. after a crash) as blocks, in parallel, and return the new
//! version's full chunk list for [`Store::publish`] to commit in one request.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::{mpsc, Mutex};

use super::state::State;
use super::Store;
use crate::backend::{Etag, LeaseId};
use crate::delta::{chunk_size_for, ChunkId, Manifest, MAX_BLOCKS};
use crate::error::{Error, Result};
use crate::layout::Ranges;
use crate::localfile::LocalFile;

/// Chunk bytes a transfer keeps in flight at most, across its workers.
const IN_FLIGHT_BYTES: u64 = 16 << 20;

/// Transfers of `chunk`-byte chunks to run at once (stage or ranged read): 16, fewer
/// for chunks over 1 MiB so that about [`IN_FLIGHT_BYTES`] are in memory, at least 4.
/// A commit that changes many chunks (speedtest1: 22 per commit) then costs one or two
/// round trips of staging instead of one per four chunks; each worker holds one
/// chunk and the queue one more per worker.
pub(super) fn transfer_workers(chunk: u64) -> usize {
    (IN_FLIGHT_BYTES / chunk.max(1)).clamp(4, 16) as usize
}

/// A chunk to stage: its id, its bytes, and the range of the base version that holds
/// the same bytes when the commit left them unchanged (the store may copy it from
/// there instead of taking the upload: [`crate::remote::Remote::stage_from_range`]).
type Emit<'a> = dyn FnMut(ChunkId, Vec<u8>, Option<Range<u64>>) -> bool + 'a;
/// [`Emit`] as the plan walks the cache (the bytes borrowed from its buffer).
type PlanEmit<'a> = dyn FnMut(ChunkId, &[u8], Option<Range<u64>>) -> bool + 'a;

/// The changed chunks of the cache read into memory, for an upload that runs
/// without the cache's lock or the store's mutex ([`Store::snapshot_chunks`]).
pub(super) struct Snapshot {
    /// The new version's chunk list.
    pub manifest: Manifest,
    /// As [`Store::stage_chunks`] returns it.
    pub first_counter: Option<[u8; COUNTER_BYTES]>,
    /// The chunks to stage, with their bytes.
    pub chunks: Vec<(ChunkId, Vec<u8>)>,
}

impl Store {
    /// Stage every chunk of the cache that the base's chunk list lacks; the chunk
    /// list of the new version, and the change-counter bytes its first chunk carries
    /// when they are known to differ from the last ones published (see
    /// [`kept_first_chunk`]).
    pub(super) fn stage_chunks(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        lease: Option<&LeaseId>,
    ) -> Result<(Manifest, Option<[u8; COUNTER_BYTES]>)> {
        // Read and hash on this thread; stage on workers. Their number only bounds
        // memory, so the chunk size a fresh plan would take is close enough.
        let size = file
            .size()
            .map_err(|e| Error::local("reading the cache", e))?;
        let workers = transfer_workers(chunk_size_for(size));
        let base = st.sidecar.base().cloned();
        let planned = self.stage_parallel(lease, workers, base.as_ref(), |emit| {
            self.plan_chunks(st, file, &mut |id, data, from| {
                emit(id, data.to_vec(), from)
            })
        })?;
        planned.ok_or_else(|| Error::Local("staging stopped early".into()))
    }

    /// Stage on up to `workers` threads what `produce` emits (a thread per chunk
    /// emitted until there are `workers`: a one-chunk commit starts one); `emit`
    /// answers whether to go on (no stage failed yet). A chunk emitted with a range
    /// of version `base` is copied by the store from there where it can, else its
    /// bytes go up. A worker that fails records the error and keeps draining, so the
    /// producer never blocks; the first error wins.
    pub(super) fn stage_parallel<T>(
        &self,
        lease: Option<&LeaseId>,
        workers: usize,
        base: Option<&Etag>,
        produce: impl FnOnce(&mut Emit<'_>) -> Result<T>,
    ) -> Result<T> {
        type Job = (ChunkId, Vec<u8>, Option<Range<u64>>);
        let (sender, receiver) = mpsc::sync_channel::<Job>(workers);
        let receiver = Mutex::new(receiver);
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        let stage = |id: ChunkId, data: &[u8], from: Option<Range<u64>>| {
            if let (Some(etag), Some(r)) = (base, from) {
                let len = r.end - r.start;
                if self
                    .remote
                    .stage_from_range(id.as_bytes(), r.start, len, etag, lease)?
                {
                    return Ok(());
                }
            }
            self.remote.stage_block(id.as_bytes(), data, lease)
        };
        let worker = || loop {
            let next = receiver.lock().expect("queue lock").recv();
            let Ok((id, data, from)) = next else { return };
            if failure.lock().expect("failure lock").is_some() {
                continue;
            }
            if let Err(e) = stage(id, &data, from) {
                failure
                    .lock()
                    .expect("failure lock")
                    .get_or_insert(e.into());
            }
        };
        let produced = std::thread::scope(|scope| {
            let mut started = 0;
            let produced = produce(&mut |id, data, from| {
                if started < workers {
                    scope.spawn(worker);
                    started += 1;
                }
                let _ = sender.send((id, data, from));
                failure.lock().expect("failure lock").is_none()
            });
            drop(sender);
            produced
        })?;
        match failure.into_inner().expect("failure lock") {
            Some(e) => Err(e),
            None => Ok(produced),
        }
    }

    /// The changed chunks read into memory, up to `max_bytes` of them (`None` when
    /// there are more: the caller stages them as it reads instead).
    pub(super) fn snapshot_chunks(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        max_bytes: usize,
    ) -> Result<Option<Snapshot>> {
        let mut chunks = Vec::new();
        let mut bytes = 0;
        let planned = self.plan_chunks(st, file, &mut |id, data, _from| {
            bytes += data.len();
            chunks.push((id, data.to_vec()));
            bytes <= max_bytes
        })?;
        Ok(planned.map(|(manifest, first_counter)| Snapshot {
            manifest,
            first_counter,
            chunks,
        }))
    }

    /// Walk the cache's chunks against the base's chunk list: `emit` each chunk to
    /// stage (it returns whether to go on), with the range of the base that holds
    /// its bytes unchanged, if any ([`Store::unchanged_since_base`]); the new
    /// version's chunk list and first counter, or `None` when `emit` stopped the walk.
    fn plan_chunks(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        emit: &mut PlanEmit<'_>,
    ) -> Result<Option<(Manifest, Option<[u8; COUNTER_BYTES]>)>> {
        let size = file
            .size()
            .map_err(|e| Error::local("reading the cache", e))?;
        let old = self.manifest_for_base(st);
        let chunk = match &old {
            Some(m) if size.div_ceil(m.chunk_size) <= MAX_BLOCKS => m.chunk_size,
            _ => chunk_size_for(size),
        };
        let old = old.filter(|m| m.chunk_size == chunk);
        let count = Manifest::chunk_count(size, chunk);
        // A lazy cache's absent chunks are the base's, unchanged: never read (a hole).
        let absent = self.lazy_prepare_upload(file, size, chunk)?;
        let candidates = old
            .as_ref()
            .filter(|_| self.written_is_complete(st))
            .map(|m| changed_chunks(m, st.publishing.written(), size, chunk));
        let lagging_counter = st.publishing.remote_counter().filter(|_| {
            self.remote
                .backend()
                .blocks()
                .is_some_and(|b| b.counter_may_lag())
        });
        let unchanged = self.unchanged_since_base(st);
        let mut first_counter = None;
        let mut ids = Vec::with_capacity(count as usize);
        let mut buf = vec![0u8; chunk as usize];
        for i in 0..count {
            let known = old.as_ref().and_then(|m| m.ids.get(i as usize)).copied();
            let maybe_changed = candidates.as_ref().is_none_or(|c| c.contains(&i))
                && !absent.get(i as usize).copied().unwrap_or(false);
            if let (Some(id), false) = (known, maybe_changed) {
                ids.push(id);
                continue;
            }
            let len = chunk.min(size - i * chunk) as usize;
            let n = file
                .read_at(&mut buf[..len], i * chunk)
                .map_err(|e| Error::local("reading the cache", e))?;
            if n != len {
                return Err(Error::Local("the cache shrank during an upload".into()));
            }
            let id = ChunkId::new(i as u32, &buf[..len]);
            if i == 0 && known != Some(id) {
                if let Some(kept) =
                    known.filter(|k| kept_first_chunk(&buf[..len], *k, lagging_counter))
                {
                    ids.push(kept);
                    continue;
                }
                first_counter = counter_bytes(&buf[..len]);
            }
            let range = i * chunk..i * chunk + len as u64;
            let from = unchanged
                .as_ref()
                .and_then(|u| u(range.clone()).then_some(range));
            if known != Some(id) && !emit(id, &buf[..len], from) {
                return Ok(None);
            }
            ids.push(id);
        }
        let manifest = Manifest {
            chunk_size: chunk,
            len: size,
            ids,
        };
        Ok(Some((manifest, first_counter)))
    }
}

impl Store {
    /// Which byte ranges of the cache still hold the base version's bytes: those
    /// within the base's length that no commit since wrote into (ranges tracked
    /// from xWrite, so only when this process made every local commit). `None` when
    /// that is not known, or the store cannot stage from a range anyway.
    fn unchanged_since_base(&self, st: &State) -> Option<impl Fn(Range<u64>) -> bool + '_> {
        let base = st.sidecar.base()?;
        let size = st.publishing.base_size_of(base)?;
        if !self.written_is_complete(st) || !self.remote.may_stage_from_range() {
            return None;
        }
        let written = st.publishing.written().clone();
        // Never the first chunk: an install moves the cache's change counter past
        // the remote's (src/store/refresh.rs), so its bytes are the cache's own.
        Some(move |r: Range<u64>| {
            r.start > 0 && r.end <= size && r.start < r.end && !written.overlaps(r)
        })
    }
}

/// Header offsets 24..28 (the file change counter) and 92..96 ("version-valid-for"),
/// the two fields SQLite rewrites on every commit, as one 8-byte value.
pub(super) const COUNTER_BYTES: usize = 8;

/// The change-counter bytes of a first chunk (none when it is too short to hold them).
fn counter_bytes(first: &[u8]) -> Option<[u8; COUNTER_BYTES]> {
    let mut out = [0u8; COUNTER_BYTES];
    out[..4].copy_from_slice(first.get(24..28)?);
    out[4..].copy_from_slice(first.get(92..96)?);
    Some(out)
}

/// Whether the base's first chunk `known` can stay in the new version: the cache's
/// first chunk `first` equals it once the change counter the remote carries
/// (`remote_counter`, a hint) is put back. SQLite bumps that counter on every commit,
/// so without this every small commit would stage the first chunk (one more
/// request); the hash comparison makes a stale hint cost a staged chunk, never a
/// wrong version. Only where readers take the blob whole
/// ([`crate::backend::Blocks::counter_may_lag`]): each cache moves its own counter
/// past the old one when it installs a version (src/store/refresh.rs).
fn kept_first_chunk(
    first: &[u8],
    known: ChunkId,
    remote_counter: Option<[u8; COUNTER_BYTES]>,
) -> bool {
    let Some(counter) = remote_counter else {
        return false;
    };
    if first.len() < 96 {
        return false;
    }
    let mut probe = first.to_vec();
    probe[24..28].copy_from_slice(&counter[..4]);
    probe[92..96].copy_from_slice(&counter[4..]);
    ChunkId::new(0, &probe) == known
}

/// The chunks that may differ from the base `old`: those holding a written range,
/// the last chunk of each length when the size changed, and every new chunk.
fn changed_chunks(old: &Manifest, written: &Ranges, size: u64, chunk: u64) -> BTreeSet<u64> {
    let count = Manifest::chunk_count(size, chunk);
    let old_count = old.ids.len() as u64;
    let mut c: BTreeSet<u64> = written
        .iter()
        .flat_map(|r| r.start / chunk..=(r.end - 1) / chunk)
        .filter(|&i| i < count)
        .collect();
    if old.len != size {
        c.extend(old_count.checked_sub(1));
        c.extend(count.checked_sub(1));
    }
    c.extend(old_count..count);
    c
}
