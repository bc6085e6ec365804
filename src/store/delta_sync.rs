//! Delta sync: move only the chunks that changed, in both directions.
//!
//! - Upload: the chunks written since the base (tracked from xWrite as 64 KiB
//!   granules, or found by hashing when the tracking is incomplete, e.g. after a
//!   crash) are staged as blocks, then one block list naming every chunk in order is
//!   committed with If-Match and the lease: atomic, and O(changed).
//! - Download: the committed block list is compared with what the cache holds (the
//!   manifest of its base, or hashes of its chunks when that is not trusted), and
//!   only the differing chunks are fetched, with ranged reads pinned to the version
//!   (If-Match). They land in a side file first; the cache is written in place
//!   under an EXCLUSIVE lock with the sidecar marking the transfer in flight, so an
//!   interrupted install is resynced (cheaply: by hashes) and never trusted.
//! - A blob written by another tool (one Put Blob, foreign ids) has no usable block
//!   list: it is downloaded whole, and the next upload converts it.

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Mutex};

use super::{State, Store};
use crate::backend::{BackendErrorKind, BlobStat, BlockId, Condition, Etag, LeaseId};
use crate::config::SyncMode;
use crate::delta::{chunk_size_for, ChunkId, Manifest, GRANULE, MAX_BLOCKS};
use crate::error::{Error, Result};
use crate::localfile::LocalFile;
use crate::sidecar::{self, InFlight};

/// Transfers in flight at once (stage or ranged read).
const PARALLEL: usize = 4;

/// What a refresh brought beside the cache, waiting to be installed.
#[derive(Clone, Debug)]
pub(super) struct Fetched {
    pub stat: BlobStat,
    /// `None`: the side file holds the whole image. `Some`: only these chunks, each at
    /// its own offset.
    pub chunks: Option<(u64, Vec<u64>)>,
    /// The remote's block list, when it is ours: it becomes the cache's manifest.
    pub manifest: Option<Manifest>,
}

/// This process's token, recorded as the owner of local commits it makes.
pub(super) fn process_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| format!("{}-{:08x}", std::process::id(), fastrand::u32(..)))
}

impl Store {
    /// Whether transfers go by chunks.
    pub(super) fn delta_enabled(&self) -> bool {
        self.config.sync == SyncMode::Delta && self.remote.has_blocks()
    }

    /// The manifest of the base version, when one is known for it.
    pub(super) fn manifest_for_base(&self, st: &mut State) -> Option<Manifest> {
        let base = st.sidecar.base.clone()?;
        if let Some((etag, m)) = &st.manifest {
            if *etag == base {
                return Some(m.clone());
            }
        }
        let (etag, m) = load_manifest(&self.manifest_path)?;
        if etag != base {
            return None;
        }
        st.manifest = Some((etag, m.clone()));
        Some(m)
    }

    /// Record `manifest` as the chunk list of version `etag` (or forget it).
    pub(super) fn set_manifest(&self, st: &mut State, manifest: Option<(Etag, Manifest)>) {
        match &manifest {
            // Not made durable: a lost manifest costs one pass of hashing, not data.
            Some((etag, m)) => {
                let _ = sidecar::write_atomic(&self.manifest_path, &manifest_bytes(etag, m), false);
            }
            None => {
                let _ = std::fs::remove_file(&self.manifest_path);
            }
        }
        st.manifest = manifest;
    }

    /// Whether `st.written` names every chunk changed since the base: this process
    /// made every local commit since then.
    fn written_is_complete(&self, st: &State) -> bool {
        !st.sidecar.dirty || st.sidecar.dirty_owner.as_deref() == Some(process_token())
    }

    /// Upload the cache by chunks. Returns the new version.
    pub(super) fn upload_delta(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        condition: &Condition,
        lease: Option<&LeaseId>,
    ) -> Result<BlobStat> {
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
        let candidates: Option<BTreeSet<u64>> = match &old {
            Some(m) if self.written_is_complete(st) => {
                let old_count = m.ids.len() as u64;
                let mut c: BTreeSet<u64> = st
                    .written
                    .iter()
                    .map(|g| g * GRANULE / chunk)
                    .filter(|&i| i < count)
                    .collect();
                if m.len != size {
                    c.extend(old_count.checked_sub(1));
                    c.extend(count.checked_sub(1));
                }
                c.extend(old_count..count);
                Some(c)
            }
            // Unknown changes: look at every chunk (staging only those that differ).
            _ => None,
        };

        // Read and hash on this thread; stage on PARALLEL workers. A worker that
        // fails records the error and keeps draining, so the reader never blocks.
        let (sender, receiver) = mpsc::sync_channel::<(ChunkId, Vec<u8>)>(PARALLEL * 2);
        let receiver = Mutex::new(receiver);
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        let ids = std::thread::scope(|scope| -> Result<Vec<ChunkId>> {
            for _ in 0..PARALLEL {
                scope.spawn(|| loop {
                    let next = receiver.lock().expect("queue lock").recv();
                    let Ok((id, data)) = next else { return };
                    if failure.lock().expect("failure lock").is_some() {
                        continue;
                    }
                    if let Err(e) = self.remote.stage_block(id.as_bytes(), &data, lease) {
                        failure
                            .lock()
                            .expect("failure lock")
                            .get_or_insert(e.into());
                    }
                });
            }
            let mut ids = Vec::with_capacity(count as usize);
            let mut buf = vec![0u8; chunk as usize];
            for i in 0..count {
                if failure.lock().expect("failure lock").is_some() {
                    break;
                }
                let known = old.as_ref().and_then(|m| m.ids.get(i as usize)).copied();
                let maybe_changed = candidates.as_ref().is_none_or(|c| c.contains(&i));
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
                if known != Some(id) {
                    let _ = sender.send((id, buf[..len].to_vec()));
                }
                ids.push(id);
            }
            drop(sender);
            Ok(ids)
        })?;
        if let Some(e) = failure.into_inner().expect("failure lock") {
            return Err(e);
        }
        if ids.len() as u64 != count {
            return Err(Error::Local("staging stopped early".into()));
        }
        let raw: Vec<BlockId> = ids.iter().map(|id| id.as_bytes().to_vec()).collect();
        let stat = match self.remote.commit_blocks(&raw, condition, lease) {
            Ok(stat) => stat,
            Err(e)
                if e.retried
                    && matches!(
                        e.error.kind,
                        BackendErrorKind::ConditionFailed | BackendErrorKind::AlreadyExists
                    ) =>
            {
                // An earlier attempt may have landed: then the committed list is ours.
                match self.remote.block_list()? {
                    Some((stat, list)) if list.iter().map(|(id, _)| id).eq(raw.iter()) => {
                        tracing::info!(blob = %self.config.blob, "a block list commit retry found its first attempt had landed");
                        stat
                    }
                    _ => return Err(e.error.into()),
                }
            }
            Err(e) => return Err(e.error.into()),
        };
        let manifest = Manifest {
            chunk_size: chunk,
            len: size,
            ids,
        };
        self.set_manifest(st, Some((stat.etag.clone(), manifest)));
        st.written.clear();
        Ok(stat)
    }

    /// Fetch the chunks of the current remote version that the cache lacks into the
    /// side file. `None` when the blob is not one of ours (or it is cheaper whole).
    pub(super) fn fetch_delta(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
    ) -> Result<Option<Fetched>> {
        let Some((stat, list)) = self.remote.block_list()? else {
            return Ok(None);
        };
        let Some(remote) = Manifest::from_block_list(&list).filter(|m| m.len == stat.size) else {
            return Ok(None);
        };
        let local = self.local_manifest(st, file, remote.chunk_size)?;
        let wanted = remote.differing(&local);
        let wanted_bytes: u64 = wanted.iter().map(|&i| remote.chunk_range(i).1).sum();
        if wanted_bytes * 2 > remote.len {
            // Most of it changed (a cold cache): one whole download is cheaper in
            // requests; the block list still tells the manifest.
            let got = self.remote.download_to(&self.download_path)?;
            let manifest = if got.etag == stat.etag {
                self.verify_download(&remote)?;
                Some(remote)
            } else {
                None
            };
            return Ok(Some(Fetched {
                stat: got,
                chunks: None,
                manifest,
            }));
        }
        let side = crate::remote::create_private(&self.download_path)
            .map_err(|e| Error::local("creating the download side file", e))?;
        let queue = Mutex::new(wanted.clone().into_iter());
        std::thread::scope(|scope| -> Result<()> {
            let workers: Vec<_> = (0..PARALLEL)
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        loop {
                            let next = queue.lock().expect("queue lock").next();
                            let Some(i) = next else { return Ok(()) };
                            let (offset, len) = remote.chunk_range(i);
                            let data = self
                                .remote
                                .read_range(offset, len, &stat.etag)
                                .map_err(|e| self.moved_during_fetch(e))?;
                            self.verify_chunk(&remote, i, &data)?;
                            side.write_all_at(&data, offset)
                                .map_err(|e| Error::local("writing the download side file", e))?;
                        }
                    })
                })
                .collect();
            let mut result = Ok(());
            for w in workers {
                let r = w.join().expect("fetch worker panicked");
                if result.is_ok() {
                    result = r;
                }
            }
            result
        })?;
        side.sync_all()
            .map_err(|e| Error::local("syncing the download side file", e))?;
        Ok(Some(Fetched {
            stat,
            chunks: Some((remote.chunk_size, wanted)),
            manifest: Some(remote),
        }))
    }

    /// A ranged read pinned to the version being fetched fails when another writer
    /// commits meanwhile: that is a race, not a fault. SQLITE_BUSY makes the busy
    /// handler try again, and the retry fetches the new version.
    fn moved_during_fetch(&self, e: crate::backend::BackendError) -> Error {
        if e.kind == BackendErrorKind::ConditionFailed {
            Error::Busy(format!(
                "remote blob '{}' changed while its chunks were being fetched; the retry \
                 takes the new version",
                self.config.blob
            ))
        } else {
            e.into()
        }
    }

    /// Check a fetched chunk against its block id (index and content hash): the
    /// bytes must be the ones the block list promised, or the version moved under us
    /// (a store that paired a list with other bytes), and nothing is installed.
    fn verify_chunk(&self, remote: &Manifest, index: u64, data: &[u8]) -> Result<()> {
        let expected = remote.ids[index as usize];
        if data.len() as u64 != remote.chunk_range(index).1
            || ChunkId::new(index as u32, data) != expected
        {
            return Err(Error::Busy(format!(
                "chunk {index} of '{}' does not match its block id (the blob changed during \
                 the transfer); the retry fetches it again",
                self.config.blob
            )));
        }
        Ok(())
    }

    /// Check a whole download of one of our blobs against its block list.
    fn verify_download(&self, remote: &Manifest) -> Result<()> {
        let side = std::fs::File::open(&self.download_path)
            .map_err(|e| Error::local("opening the downloaded copy", e))?;
        let mut buf = vec![0u8; remote.chunk_size as usize];
        for i in 0..remote.ids.len() as u64 {
            let (offset, len) = remote.chunk_range(i);
            side.read_exact_at(&mut buf[..len as usize], offset)
                .map_err(|e| Error::local("reading the downloaded copy", e))?;
            self.verify_chunk(remote, i, &buf[..len as usize])?;
        }
        Ok(())
    }

    /// The chunk list of what the cache holds now: the base's manifest when it is
    /// trusted, else hashes of the cache's chunks.
    fn local_manifest(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        chunk: u64,
    ) -> Result<Manifest> {
        let trusted = st.sidecar.in_flight == InFlight::None && !st.sidecar.dirty;
        if trusted {
            if let Some(m) = self.manifest_for_base(st).filter(|m| m.chunk_size == chunk) {
                return Ok(m);
            }
        }
        let size = file
            .size()
            .map_err(|e| Error::local("reading the cache", e))?;
        let count = Manifest::chunk_count(size, chunk);
        let mut buf = vec![0u8; chunk as usize];
        let mut ids = Vec::with_capacity(count as usize);
        for i in 0..count {
            let len = chunk.min(size - i * chunk) as usize;
            let n = file
                .read_at(&mut buf[..len], i * chunk)
                .map_err(|e| Error::local("reading the cache", e))?;
            ids.push(ChunkId::new(i as u32, &buf[..n]));
        }
        Ok(Manifest {
            chunk_size: chunk,
            len: size,
            ids,
        })
    }
}

/// `<etag length u32><etag><manifest bytes>`.
fn manifest_bytes(etag: &Etag, m: &Manifest) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(etag.0.len() as u32).to_be_bytes());
    out.extend_from_slice(etag.0.as_bytes());
    out.extend_from_slice(&m.to_bytes());
    out
}

fn load_manifest(path: &std::path::Path) -> Option<(Etag, Manifest)> {
    let raw = std::fs::read(path).ok()?;
    let n = u32::from_be_bytes(raw.get(..4)?.try_into().ok()?) as usize;
    let etag = String::from_utf8(raw.get(4..4 + n)?.to_vec()).ok()?;
    let m = Manifest::from_bytes(raw.get(4 + n..)?)?;
    Some((Etag(etag), m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_files_round_trip_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m");
        let m = Manifest {
            chunk_size: GRANULE,
            len: 10,
            ids: vec![ChunkId::new(0, b"x")],
        };
        std::fs::write(&p, manifest_bytes(&Etag("e1".into()), &m)).unwrap();
        assert_eq!(load_manifest(&p), Some((Etag("e1".into()), m)));
        std::fs::write(&p, b"\x00\x00\x00\x09short").unwrap();
        assert_eq!(load_manifest(&p), None);
    }
}
