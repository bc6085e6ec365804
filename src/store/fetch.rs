//! The download half of delta sync: compare the remote's committed block list with
//! what the cache holds (the base's manifest, or hashes of its chunks when that is
//! not trusted) and fetch only the differing chunks, with ranged reads pinned to the
//! version (If-Match), 4 in parallel, into a side file. Every chunk is checked
//! against its block id before anything is installed.

use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use super::manifest::Fetched;
use super::stage::PARALLEL;
use super::state::State;
use super::Store;
use crate::backend::BackendErrorKind;
use crate::delta::{ChunkId, Manifest};
use crate::error::{Error, Result};
use crate::localfile::LocalFile;
use crate::sidecar::InFlight;

impl Store {
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
