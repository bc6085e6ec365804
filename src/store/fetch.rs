//! Downloads. The download half of delta sync: compare the remote's committed block
//! list with what the cache holds (the base's manifest, or hashes of its chunks when
//! that is not trusted) and fetch only the differing chunks, with ranged reads pinned
//! to the version (If-Match), in parallel (`transfer_workers`), into a side file.
//! Every chunk is checked against its block id before anything is installed.
//!
//! And the cold download: a cache with nothing worth keeping takes the whole remote
//! straight in (each byte written once), between an in-flight marker in the sidecar
//! and the fsync after which the base is recorded.

use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use super::manifest::Fetched;
use super::refresh::COPY_CHUNK;
use super::stage::transfer_workers;
use super::state::State;
use super::Store;
use crate::backend::{BackendErrorKind, BlobStat};
use crate::delta::{ChunkId, Manifest};
use crate::error::{Error, Result};
use crate::image;
use crate::localfile::{LocalFile, LockFail, LockLevel};
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
            let workers: Vec<_> = (0..transfer_workers(remote.chunk_size).min(wanted.len()))
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
        let trusted = st.sidecar.in_flight() == InFlight::None && !st.sidecar.is_dirty();
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

impl Store {
    /// Whether a refresh can download straight into the cache: it holds nothing worth
    /// keeping (no local commits, no base), either empty (a cold open) or the torn
    /// remains of such a download that a crash interrupted.
    pub(super) fn cache_is_cold(&self, st: &State, file: &mut dyn LocalFile) -> Result<bool> {
        let sc = &st.sidecar;
        if sc.is_dirty() || sc.base().is_some() || sc.pending_commit().is_some() {
            return Ok(false);
        }
        if sc.in_flight() == InFlight::Download {
            return Ok(true);
        }
        let size = file
            .size()
            .map_err(|e| Error::local("reading the cache", e))?;
        Ok(size == 0)
    }

    /// Download the remote straight into a cold cache, so each byte is written once:
    /// the sidecar marks the transfer in flight before the first byte and the base
    /// is recorded after the fsync, so a crash in between leaves a cache the next
    /// check downloads again (never served, never uploaded as local commits). Needs
    /// the cache to itself: `Ok(false)` when another connection holds it (the caller
    /// downloads beside the cache instead).
    pub(super) fn download_into_cache(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        held: LockLevel,
        discard_journal: bool,
    ) -> Result<bool> {
        let upgraded = match self.lock_exclusive(file, held) {
            Ok(upgraded) => upgraded,
            Err(LockFail::Busy) => return Ok(false),
            Err(LockFail::Io(code)) => return Err(self.lock_failed(code)),
        };
        let result = self.download_into_locked(st, file, discard_journal);
        if upgraded {
            let _ = file.unlock(held);
        }
        result.map(|()| true)
    }

    fn download_into_locked(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        discard_journal: bool,
    ) -> Result<()> {
        let old_counter = self.cache_change_counter(file)?;
        // The block list, when the blob is ours, becomes the cache's manifest and
        // checks every chunk as it streams past.
        let listed = match self.delta_enabled() {
            true => self.remote.block_list()?.and_then(|(stat, list)| {
                Manifest::from_block_list(&list)
                    .filter(|m| m.len == stat.size)
                    .map(|m| (stat, m))
            }),
            false => None,
        };
        let was_in_flight = st.sidecar.in_flight();
        st.sidecar.set_in_flight(InFlight::Download);
        self.save(st)?;
        tracing::info!(cache = %self.cache_path.display(), "downloading the remote straight into the empty cache");
        let result = self.stream_into_cache(file, old_counter, listed.as_ref());
        let (stat, manifest) = match result {
            Ok(done) => done,
            Err(e) => {
                // The cache was empty and no journal waits: empty it again and clear
                // the marker. Else (or if that fails) the marker stays: resync later.
                let emptied = was_in_flight == InFlight::None
                    && file.truncate(0).and_then(|()| file.sync()).is_ok();
                if emptied {
                    st.sidecar.set_in_flight(InFlight::None);
                    let _ = self.save(st);
                }
                return Err(e);
            }
        };
        if discard_journal {
            self.remove_journal()?;
        }
        self.took_version(st, &stat, manifest)
    }

    /// Stream the remote into the cache, check it is a database (and matches its
    /// block list), fsync. Returns the version and its manifest.
    fn stream_into_cache(
        &self,
        file: &mut dyn LocalFile,
        old_counter: Option<u32>,
        listed: Option<&(BlobStat, Manifest)>,
    ) -> Result<(BlobStat, Option<Manifest>)> {
        let cache_err = |what: &str, e: std::io::Error| {
            Error::local(format!("{what} cache {}", self.cache_path.display()), e)
        };
        let mut sink = CacheSink::new(file, old_counter, listed.map(|(_, m)| m));
        let stat = self.remote.download_into(&mut sink, CacheSink::restart)?;
        let (header, matched) = sink.finish().map_err(|e| cache_err("writing", e))?;
        image::check_database(&header, stat.size).map_err(|why| {
            Error::NotADatabase(format!(
                "remote blob '{}' in {} is not a SQLite database: {why}; the cache was left \
                 empty",
                self.config.blob, self.identity
            ))
        })?;
        let manifest = match listed {
            Some((listed, m)) if listed.etag == stat.etag => {
                if !matched {
                    return Err(Error::Busy(format!(
                        "'{}' does not match its block list (the blob changed during the \
                         transfer); the retry fetches it again",
                        self.config.blob
                    )));
                }
                Some(m.clone())
            }
            _ => None,
        };
        file.truncate(stat.size)
            .map_err(|e| cache_err("truncating", e))?;
        file.sync().map_err(|e| cache_err("syncing", e))?;
        Ok((stat, manifest))
    }
}

/// The download's destination: the cache file itself, written front to back in
/// pieces of whole chunks. Each chunk is checked against the block list (when
/// there is one) before its header is adapted and it is written.
struct CacheSink<'a> {
    file: &'a mut dyn LocalFile,
    old_counter: Option<u32>,
    manifest: Option<&'a Manifest>,
    /// Bytes received and not yet written, from offset `written`.
    pending: Vec<u8>,
    capacity: usize,
    written: u64,
    /// The first 100 bytes as the remote has them (before [`image::adapt_header`]).
    header: Vec<u8>,
    /// Every chunk so far matched its block id.
    matched: bool,
}

impl<'a> CacheSink<'a> {
    fn new(
        file: &'a mut dyn LocalFile,
        old_counter: Option<u32>,
        manifest: Option<&'a Manifest>,
    ) -> Self {
        // Whole chunks per write, at least COPY_CHUNK bytes.
        let chunk = manifest.map_or(COPY_CHUNK as u64, |m| m.chunk_size) as usize;
        let capacity = COPY_CHUNK.div_ceil(chunk) * chunk;
        CacheSink {
            file,
            old_counter,
            manifest,
            pending: Vec::with_capacity(capacity),
            capacity,
            written: 0,
            header: Vec::with_capacity(100),
            matched: true,
        }
    }

    /// Start over (a retried download): empty the cache.
    fn restart(&mut self) -> std::io::Result<()> {
        self.pending.clear();
        self.written = 0;
        self.header.clear();
        self.matched = true;
        self.file.truncate(0)
    }

    /// Write what is pending. Returns the remote's header and whether every chunk
    /// matched the block list (and the list has no chunk beyond the end).
    fn finish(mut self) -> std::io::Result<(Vec<u8>, bool)> {
        self.write_pending()?;
        let complete = self.manifest.is_none_or(|m| m.len == self.written);
        Ok((self.header, self.matched && complete))
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Some(m) = self.manifest {
            let first = self.written / m.chunk_size;
            for (k, data) in self.pending.chunks(m.chunk_size as usize).enumerate() {
                let index = first + k as u64;
                let expected = m.ids.get(index as usize);
                self.matched &= expected == Some(&ChunkId::new(index as u32, data))
                    && data.len() as u64 == m.chunk_range(index).1;
            }
        }
        if self.written == 0 {
            image::adapt_header(&mut self.pending, self.old_counter);
        }
        self.file.write_at(&self.pending, self.written)?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

impl std::io::Write for CacheSink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let take = data.len().min(self.capacity - self.pending.len());
        if self.header.len() < 100 {
            let h = (100 - self.header.len()).min(take);
            self.header.extend_from_slice(&data[..h]);
        }
        self.pending.extend_from_slice(&data[..take]);
        if self.pending.len() == self.capacity {
            self.write_pending()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::GRANULE;
    use crate::localfile::fake::FakeFile;
    use std::io::Write;
    use std::sync::Arc;

    /// A database-looking image of `len` bytes (a rollback-mode header, change
    /// counter 5) and its manifest in chunks of [`GRANULE`].
    fn image(len: usize) -> (Vec<u8>, Manifest) {
        let mut bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        bytes[..16].copy_from_slice(image::MAGIC);
        bytes[18] = 1;
        bytes[19] = 1;
        bytes[24..28].copy_from_slice(&5u32.to_be_bytes());
        bytes[92..96].copy_from_slice(&5u32.to_be_bytes());
        let ids = bytes
            .chunks(GRANULE as usize)
            .enumerate()
            .map(|(i, c)| ChunkId::new(i as u32, c))
            .collect();
        let m = Manifest {
            chunk_size: GRANULE,
            len: len as u64,
            ids,
        };
        (bytes, m)
    }

    fn cache() -> (tempfile::TempDir, FakeFile) {
        let dir = tempfile::tempdir().unwrap();
        let file = FakeFile::open(&dir.path().join("c.db"), Arc::default()).unwrap();
        (dir, file)
    }

    /// Feed `bytes` in odd-sized pieces, as a network stream does.
    fn feed(sink: &mut CacheSink<'_>, bytes: &[u8]) {
        for piece in bytes.chunks(12_345) {
            sink.write_all(piece).unwrap();
        }
    }

    #[test]
    fn the_sink_writes_the_image_checks_every_chunk_and_moves_the_counter() {
        let (bytes, m) = image(3 * 1024 * 1024 + 4096);
        let (_dir, mut file) = cache();
        let mut sink = CacheSink::new(&mut file, Some(9), Some(&m));
        feed(&mut sink, &bytes);
        let (header, matched) = sink.finish().unwrap();
        assert!(matched);
        assert_eq!(header, bytes[..100]);
        let mut got = vec![0u8; bytes.len()];
        assert_eq!(file.read_at(&mut got, 0).unwrap(), bytes.len());
        assert_eq!(got[100..], bytes[100..]);
        // The header moved past the cache's old change counter (9).
        assert_eq!(image::change_counter(&got[..100]), 10);
    }

    #[test]
    fn a_chunk_that_differs_from_the_block_list_is_noticed() {
        let (mut bytes, m) = image(2 * 1024 * 1024);
        bytes[GRANULE as usize * 3 + 17] ^= 1;
        let (_dir, mut file) = cache();
        let mut sink = CacheSink::new(&mut file, None, Some(&m));
        feed(&mut sink, &bytes);
        assert!(!sink.finish().unwrap().1);
        // A stream shorter than the list is not a match either.
        let (bytes, m) = image(2 * 1024 * 1024);
        let mut sink = CacheSink::new(&mut file, None, Some(&m));
        sink.restart().unwrap();
        feed(&mut sink, &bytes[..bytes.len() - GRANULE as usize]);
        assert!(!sink.finish().unwrap().1);
    }

    #[test]
    fn a_restart_starts_over_from_an_empty_cache() {
        let (bytes, _) = image(1024 * 1024 + 100);
        let (_dir, mut file) = cache();
        let mut sink = CacheSink::new(&mut file, None, None);
        feed(&mut sink, &bytes[..bytes.len() / 2 + 3]);
        sink.restart().unwrap();
        feed(&mut sink, &bytes);
        let (header, matched) = sink.finish().unwrap();
        assert!(matched);
        assert_eq!(header, bytes[..100]);
        assert_eq!(file.size().unwrap(), bytes.len() as u64);
        let mut got = vec![0u8; bytes.len()];
        file.read_at(&mut got, 0).unwrap();
        assert_eq!(got, bytes);
    }
}
