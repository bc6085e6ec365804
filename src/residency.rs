//! The residency record of a lazy cache: which chunks of the base version the cache
//! holds (docs/ARCHITECTURE.md, "Lazy fetch"). `<db>-managedblob.resident`:
//!
//! ```text
//! offset 0     header (HEADER_LEN bytes): magic, epoch, chunk size, length, chunk
//!              count, the base etag, the cache file's identity (inode and birth
//!              time: a record beside a replaced cache describes nothing), xxh3-64
//!              of what precedes it
//! offset 4096  one state byte per chunk: 0 absent, 1 present, 2 present and
//!              written by local commits not uploaded yet (never dropped), 3 partial:
//!              written into by an open transaction without having been fetched
//!              (read as absent by anyone who loads the record)
//! ```
//!
//! Crash rules: a chunk is marked present only after its bytes are durable in the
//! cache (the caller fsyncs first), and one byte cannot tear. Presence is taken away
//! (a new base, a dropped chunk) by zeroing bytes and fsyncing *before* anything else
//! changes. A header that fails its checksum, or names another base than the
//! sidecar's, describes nothing: every chunk is absent. The epoch moves whenever
//! presence is taken away, so that another process sharing the cache re-reads the
//! states before it trusts its own copy.
//!
//! The header page is mapped read-only and shared ([`crate::sys::SharedView`]), so
//! that the look at every SHARED lock ([`Residency::reload_if_moved`]) is a compare
//! of a few words in memory with the header as this process last knew it, not a
//! read: only a difference (or no mapping) costs a read. The record is never made
//! shorter than its header page, which the mapping needs.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use crate::delta::Manifest;

const MAGIC: &[u8; 8] = b"mbres002";
/// Where the state bytes start: the header has a page of its own (one write).
pub const HEADER_LEN: u64 = 4096;
/// The longest etag the header holds (Azure's are about 20 bytes).
const MAX_ETAG: usize = 1024;
const ABSENT: u8 = 0;
const PRESENT: u8 = 1;
/// Present, and holding local commits the remote lacks: a chunk the bounded cache
/// must never drop. The next base (the upload of those commits) makes it PRESENT.
const DIRTY: u8 = 2;
/// Written into by this process's open transaction without having been fetched (a
/// reused free page): only the writer knows which of its bytes are written, so the
/// commit point completes it (then DIRTY) or a rollback forgets it (then ABSENT).
/// A record loaded from disk reads it as ABSENT: a transaction that crashed left
/// nothing committed in it (SQLite's journal restores what it wrote).
const PARTIAL: u8 = 3;

/// The record's path for a cache file.
pub fn path_for(cache: &Path) -> PathBuf {
    let mut s = cache.as_os_str().to_owned();
    s.push("-managedblob.resident");
    PathBuf::from(s)
}

/// What the header says.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Header {
    /// Moves whenever presence is taken away.
    epoch: u64,
    chunk_size: u64,
    len: u64,
    count: u64,
    etag: String,
    /// [`crate::sidecar::file_identity`] of the cache file the states describe.
    cache: String,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN as usize);
        out.extend_from_slice(MAGIC);
        for n in [self.epoch, self.chunk_size, self.len, self.count] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&(self.etag.len() as u16).to_le_bytes());
        out.extend_from_slice(self.etag.as_bytes());
        out.extend_from_slice(&(self.cache.len() as u16).to_le_bytes());
        out.extend_from_slice(self.cache.as_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out.resize(HEADER_LEN as usize, 0);
        out
    }

    fn decode(raw: &[u8]) -> Option<Header> {
        let word = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(raw.get(at..at + 8)?.try_into().ok()?))
        };
        if raw.get(..8)? != MAGIC {
            return None;
        }
        let etag_len = u16::from_le_bytes(raw.get(40..42)?.try_into().ok()?) as usize;
        if etag_len > MAX_ETAG {
            return None;
        }
        let cache_at = 42 + etag_len;
        let cache_len =
            u16::from_le_bytes(raw.get(cache_at..cache_at + 2)?.try_into().ok()?) as usize;
        if cache_len > MAX_ETAG {
            return None;
        }
        let end = cache_at + 2 + cache_len;
        let sum = word(end)?;
        if xxhash_rust::xxh3::xxh3_64(&raw[..end]) != sum {
            return None;
        }
        Some(Header {
            epoch: word(8)?,
            chunk_size: word(16)?,
            len: word(24)?,
            count: word(32)?,
            etag: String::from_utf8(raw[42..cache_at].to_vec()).ok()?,
            cache: String::from_utf8(raw[cache_at + 2..end].to_vec()).ok()?,
        })
    }

    fn describes(&self, etag: &str, m: &Manifest, cache: &str) -> bool {
        self.etag == etag
            && self.cache == cache
            && self.chunk_size == m.chunk_size
            && self.len == m.len
            && self.count == m.ids.len() as u64
    }
}

/// The record, open, with its states in memory. Presence is added through `&self`
/// (atomics and positioned writes: readers fetch in parallel); taking it away needs
/// `&mut self`, which the store's lazy part gives only with no read in progress.
#[derive(Debug)]
pub struct Residency {
    file: File,
    /// The identity of the cache file now.
    cache: String,
    header: Header,
    states: Vec<AtomicU8>,
    /// The header page, mapped (`None` where mapping failed: then it is read).
    view: Option<crate::sys::SharedView>,
    /// `header` encoded, as the words the mapping shows while nobody changed it.
    seen: Vec<u64>,
}

impl Residency {
    /// Open (or create) the record of the cache at `cache` for base `etag` with chunk
    /// list `manifest`. A record for anything else (another base, a torn header, none
    /// at all) is reset: every chunk absent.
    pub fn open(cache: &Path, etag: &str, manifest: &Manifest) -> io::Result<Residency> {
        let path = path_for(cache);
        let file = crate::fsutil::open_private(&path, crate::fsutil::IfExists::Keep)?;
        let header = read_header(&file)?;
        let identity = crate::sidecar::file_identity(cache).unwrap_or_default();
        let mut record = Residency {
            file,
            cache: identity.clone(),
            header: header.clone().unwrap_or(Header {
                epoch: 0,
                chunk_size: manifest.chunk_size,
                len: manifest.len,
                count: 0,
                etag: String::new(),
                cache: String::new(),
            }),
            states: Vec::new(),
            view: None,
            seen: Vec::new(),
        };
        match header {
            Some(h) if h.describes(etag, manifest, &identity) => record.load_states()?,
            _ => record.adopt(etag, manifest, &|_| false)?,
        }
        // The header page is whole now (written or read whole above).
        record.view = crate::sys::SharedView::map(&record.file, HEADER_LEN as usize)
            .map_err(|e| tracing::debug!(error = %e, "residency header not mapped; read instead"))
            .ok();
        record.note_header();
        Ok(record)
    }

    /// The base etag this record describes.
    pub fn etag(&self) -> &str {
        &self.header.etag
    }

    pub fn chunk_count(&self) -> u64 {
        self.states.len() as u64
    }

    /// Whether chunk `index` holds the base's bytes, or local commits on top of
    /// them (an index past the end does not).
    pub fn is_present(&self, index: u64) -> bool {
        self.states
            .get(index as usize)
            .is_some_and(|s| matches!(s.load(Ordering::Acquire), PRESENT | DIRTY))
    }

    /// Whether chunk `index` is partial: written into without having been fetched.
    pub fn is_partial(&self, index: u64) -> bool {
        self.states
            .get(index as usize)
            .is_some_and(|s| s.load(Ordering::Acquire) == PARTIAL)
    }

    /// Present and holding nothing the remote lacks: it may be dropped.
    pub fn is_clean(&self, index: u64) -> bool {
        self.states
            .get(index as usize)
            .is_some_and(|s| s.load(Ordering::Acquire) == PRESENT)
    }

    /// How many chunks are present.
    pub fn present_count(&self) -> u64 {
        self.states
            .iter()
            .filter(|s| matches!(s.load(Ordering::Relaxed), PRESENT | DIRTY))
            .count() as u64
    }

    /// Local writes go into `chunks` (present already, or partial and completed
    /// since): never drop them until the next base. Returns whether any was not marked yet (then the caller syncs the
    /// record with the commit, [`Residency::sync`]).
    pub fn mark_dirty(&self, chunks: std::ops::Range<u64>) -> io::Result<bool> {
        let mut marked = false;
        for i in chunks {
            if let Some(s) = self.states.get(i as usize) {
                if s.load(Ordering::Acquire) != DIRTY {
                    self.file.write_all_at(&[DIRTY], HEADER_LEN + i)?;
                    s.store(DIRTY, Ordering::Release);
                    marked = true;
                }
            }
        }
        Ok(marked)
    }

    /// The cache holds nothing the remote lacks any more (its sidecar was saved
    /// clean): dirty chunks become clean.
    pub fn clean_dirty(&self) -> io::Result<()> {
        for (i, s) in self.states.iter().enumerate() {
            if s.load(Ordering::Acquire) == DIRTY {
                self.file.write_all_at(&[PRESENT], HEADER_LEN + i as u64)?;
                s.store(PRESENT, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Whether the file system under the record (and the cache beside it) gives
    /// the space of a punched hole back: tried on the header's unused tail, which
    /// is zeros either way.
    pub fn holes_supported(&self) -> bool {
        let tail = 2048;
        crate::sys::punch_hole(&self.file, tail, HEADER_LEN - tail).is_ok()
    }

    /// Make the state bytes written so far durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Drop `chunks` (clean ones): their bytes zeroed and fsynced, and the epoch
    /// moved so that other processes re-read, before the caller punches the holes.
    pub fn mark_absent(&mut self, chunks: &[u64]) -> io::Result<()> {
        for &i in chunks {
            if let Some(s) = self.states.get(i as usize) {
                self.file.write_all_at(&[ABSENT], HEADER_LEN + i)?;
                s.store(ABSENT, Ordering::Release);
            }
        }
        self.file.sync_data()?;
        self.header.epoch = self.header.epoch.wrapping_add(1);
        self.file.write_all_at(&self.header.encode(), 0)?;
        self.note_header();
        self.file.sync_data()
    }

    /// Absent `index` is written into without being fetched ([`PARTIAL`]). Not
    /// synced: the commit point completes it, a rollback forgets it, and a crash
    /// leaves a state every loader reads as absent.
    pub fn mark_partial(&self, index: u64) -> io::Result<()> {
        if let Some(s) = self.states.get(index as usize) {
            self.file.write_all_at(&[PARTIAL], HEADER_LEN + index)?;
            s.store(PARTIAL, Ordering::Release);
        }
        Ok(())
    }

    /// Partial `chunks` whose transaction rolled back: absent again. No other
    /// process ever took them for present, so the epoch stays. Absent in memory
    /// first, whatever the write does: a partial byte left on disk reads as absent.
    pub fn forget_partial(&self, chunks: &[u64]) -> io::Result<()> {
        let mut forgotten = Vec::new();
        for &i in chunks {
            if let Some(s) = self.states.get(i as usize) {
                if s.compare_exchange(PARTIAL, ABSENT, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    forgotten.push(i);
                }
            }
        }
        for i in forgotten {
            self.file.write_all_at(&[ABSENT], HEADER_LEN + i)?;
        }
        Ok(())
    }

    /// Mark `chunks` present. The caller made their bytes durable in the cache first.
    pub fn mark_present(&self, chunks: &[u64]) -> io::Result<()> {
        for &i in chunks {
            if let Some(s) = self.states.get(i as usize) {
                self.file.write_all_at(&[PRESENT], HEADER_LEN + i)?;
                s.store(PRESENT, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Read the state bytes of `chunks` from disk: another process sharing the cache
    /// may have fetched them. Only adds presence (taking it away moves the epoch,
    /// which [`Residency::reload_if_moved`] sees).
    pub fn look_again(&self, chunks: std::ops::Range<u64>) -> io::Result<()> {
        let end = chunks.end.min(self.chunk_count());
        if chunks.start >= end {
            return Ok(());
        }
        let mut buf = vec![0u8; (end - chunks.start) as usize];
        let n = read_up_to(&self.file, &mut buf, HEADER_LEN + chunks.start)?;
        for (k, byte) in buf[..n].iter().enumerate() {
            let state = &self.states[chunks.start as usize + k];
            if matches!(*byte, PRESENT | DIRTY) && state.load(Ordering::Acquire) == ABSENT {
                state.store(PRESENT, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Another process took presence away (its epoch moved) or changed the base:
    /// re-read everything. `Ok(false)` when nothing moved.
    pub fn reload_if_moved(&mut self) -> io::Result<bool> {
        if self.header_unchanged() {
            return Ok(false);
        }
        match read_header(&self.file)? {
            Some(h) if h == self.header => Ok(false),
            Some(h) => {
                self.header = h;
                self.note_header();
                self.load_states()?;
                Ok(true)
            }
            None => {
                // Torn by a crash elsewhere: nothing is known to be present.
                let (etag, m) = (self.header.etag.clone(), self.header_manifest());
                self.adopt(&etag, &m, &|_| false)?;
                Ok(true)
            }
        }
    }

    /// Describe base `etag` with chunk list `manifest`, keeping present the chunks
    /// for which `unchanged(index)` says the new version has the same bytes as the
    /// old one (same block id at the same chunk size). Crash-safe in two steps: the
    /// states that go are zeroed and fsynced, then the header is written and fsynced.
    pub fn adopt(
        &mut self,
        etag: &str,
        manifest: &Manifest,
        unchanged: &dyn Fn(u64) -> bool,
    ) -> io::Result<()> {
        if etag.len() > MAX_ETAG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "etag too long for the residency record",
            ));
        }
        let count = manifest.ids.len() as u64;
        let same_layout =
            self.header.chunk_size == manifest.chunk_size && self.header.cache == self.cache;
        let keep: Vec<u8> = (0..count)
            .map(|i| {
                let kept = same_layout && self.is_present(i) && unchanged(i);
                match self.states.get(i as usize) {
                    Some(s) if kept => s.load(Ordering::Acquire),
                    _ => ABSENT,
                }
            })
            .collect();
        // Step 1: what goes, goes durably (and any old tail past the new count).
        self.file.set_len(HEADER_LEN + count)?;
        self.file.write_all_at(&keep, HEADER_LEN)?;
        self.file.sync_data()?;
        // Step 2: the header names the new base.
        self.header = Header {
            epoch: self.header.epoch.wrapping_add(1),
            chunk_size: manifest.chunk_size,
            len: manifest.len,
            count,
            etag: etag.to_string(),
            cache: self.cache.clone(),
        };
        self.file.write_all_at(&self.header.encode(), 0)?;
        self.note_header();
        self.file.sync_data()?;
        self.states = keep.into_iter().map(AtomicU8::new).collect();
        Ok(())
    }

    /// Re-read the header and every state byte from disk (an evicting process,
    /// under its marking lock: what other processes fetched, dirtied or dropped).
    pub fn reload(&mut self) -> io::Result<()> {
        match read_header(&self.file)? {
            Some(h) => {
                self.header = h;
                self.note_header();
                self.load_states()
            }
            None => {
                let (etag, m) = (self.header.etag.clone(), self.header_manifest());
                self.adopt(&etag, &m, &|_| false)
            }
        }
    }

    /// Whether the header on disk still describes the layout this process knows
    /// (the same base, chunk size, length, count and cache): the state bytes on
    /// disk are then indexed as its own. Another process's new base may not be.
    pub fn layout_on_disk_is_mine(&self) -> io::Result<bool> {
        Ok(read_header(&self.file)?.is_some_and(|h| {
            h.etag == self.header.etag
                && h.chunk_size == self.header.chunk_size
                && h.len == self.header.len
                && h.count == self.header.count
                && h.cache == self.header.cache
        }))
    }

    /// Which of `chunks` the record on disk says are absent now (read once).
    pub fn absent_on_disk(&self, chunks: &[u64]) -> io::Result<Vec<u64>> {
        let mut buf = vec![0u8; self.header.count as usize];
        let n = read_up_to(&self.file, &mut buf, HEADER_LEN)?;
        Ok(chunks
            .iter()
            .copied()
            .filter(|&i| (i as usize) < n && buf[i as usize] == ABSENT)
            .collect())
    }

    /// The header on disk is, word for word, the one this process last read or
    /// wrote: a compare in the mapping (no system call). `false` when it differs,
    /// may be being written, or is not mapped: then the caller reads it.
    pub fn header_unchanged(&self) -> bool {
        let Some(view) = &self.view else {
            return false;
        };
        !self.seen.is_empty()
            && self
                .seen
                .iter()
                .enumerate()
                .all(|(i, &w)| view.word(i) == Some(w))
    }

    /// Remember the header's words as the mapping shows them (after it changed here
    /// or was read): up to the end of its checksum; the rest of the page is zeros.
    fn note_header(&mut self) {
        let raw = self.header.encode();
        // magic, four words, two lengths with their strings, the checksum: every
        // byte that says what the header is (a header equal up to its checksum is
        // the same header).
        let used = 8 + 32 + 2 + self.header.etag.len() + 2 + self.header.cache.len() + 8;
        let used = (used.div_ceil(8) * 8).min(raw.len());
        self.seen = raw[..used]
            .chunks_exact(8)
            .map(|w| u64::from_ne_bytes(w.try_into().expect("eight bytes")))
            .collect();
    }

    fn load_states(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; self.header.count as usize];
        let n = read_up_to(&self.file, &mut buf, HEADER_LEN)?;
        buf[n..].fill(ABSENT);
        self.states = buf
            .into_iter()
            .map(|b| {
                AtomicU8::new(if b == PRESENT || b == DIRTY {
                    b
                } else {
                    ABSENT
                })
            })
            .collect();
        Ok(())
    }

    /// A manifest of the header's shape (ids unknown): for a reset.
    fn header_manifest(&self) -> Manifest {
        let mut m = Manifest::empty(self.header.chunk_size);
        m.len = self.header.len;
        m.ids = vec![crate::delta::ChunkId::new(0, &[]); self.header.count as usize];
        m
    }
}

/// What a residency record says, read without changing it (`managedblob status`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// The base version the record describes.
    pub etag: String,
    pub chunk_size: u64,
    /// The base's length in bytes.
    pub len: u64,
    pub chunks_total: u64,
    /// Chunks present (partial ones, and all of a record beside another cache file,
    /// count as absent, as for the VFS).
    pub chunks_present: u64,
    /// Bytes of the present chunks (the last chunk may be short).
    pub resident_bytes: u64,
}

/// The record beside `cache`, read only: `None` when there is none (a full cache)
/// or its header is torn (it describes nothing).
pub fn summary(cache: &Path) -> io::Result<Option<Summary>> {
    let file = match File::open(path_for(cache)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(h) = read_header(&file)? else {
        return Ok(None);
    };
    let ours = crate::sidecar::file_identity(cache).is_some_and(|id| id == h.cache);
    let mut states = vec![ABSENT; if ours { h.count as usize } else { 0 }];
    let n = read_up_to(&file, &mut states, HEADER_LEN)?;
    let mut m = Manifest::empty(h.chunk_size.max(1));
    m.len = h.len;
    let present: Vec<u64> = (0..n as u64)
        .filter(|&i| matches!(states[i as usize], PRESENT | DIRTY))
        .collect();
    Ok(Some(Summary {
        chunks_present: present.len() as u64,
        resident_bytes: present.iter().map(|&i| m.chunk_range(i).1).sum(),
        etag: h.etag,
        chunk_size: h.chunk_size,
        len: h.len,
        chunks_total: h.count,
    }))
}

/// The header: its first 256 bytes hold it whole in practice (read at every SHARED
/// lock of a lazy connection, so kept small); longer etags cost a second read.
fn read_header(file: &File) -> io::Result<Option<Header>> {
    let mut raw = [0u8; 256];
    let n = read_up_to(file, &mut raw, 0)?;
    if let Some(header) = Header::decode(&raw[..n]) {
        return Ok(Some(header));
    }
    let mut raw = vec![0u8; HEADER_LEN as usize];
    let n = read_up_to(file, &mut raw, 0)?;
    Ok(Header::decode(&raw[..n]))
}

/// Read at `offset` until `buf` is full or the file ends; the bytes read.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::ChunkId;

    fn manifest(chunks: u32) -> Manifest {
        Manifest {
            chunk_size: 65536,
            len: u64::from(chunks) * 65536,
            ids: (0..chunks).map(|i| ChunkId::new(i, &[i as u8])).collect(),
        }
    }

    fn cache() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        (dir, path)
    }

    #[test]
    fn a_partial_chunk_is_absent_to_anyone_who_loads_the_record() {
        let (_dir, db) = cache();
        let m = manifest(4);
        let r = Residency::open(&db, "v1", &m).unwrap();
        r.mark_partial(1).unwrap();
        r.mark_partial(2).unwrap();
        assert!(r.is_partial(1) && !r.is_present(1) && !r.is_clean(1));
        let other = Residency::open(&db, "v1", &m).unwrap();
        other.look_again(0..4).unwrap();
        assert!(
            !other.is_present(1) && !other.is_partial(1),
            "another process"
        );
        r.mark_dirty(1..2).unwrap();
        r.forget_partial(&[1, 2]).unwrap();
        assert!(r.is_present(1), "completed: dirty, not forgotten");
        assert!(!r.is_present(2) && !r.is_partial(2), "forgotten: absent");
        r.mark_partial(3).unwrap();
        drop((r, other));
        let r = Residency::open(&db, "v1", &m).unwrap();
        assert!(
            !r.is_present(3) && !r.is_partial(3),
            "left by a crash: absent"
        );
        assert!(r.is_present(1));
        assert_eq!(r.present_count(), 1);
    }

    #[test]
    fn presence_survives_a_reopen_for_the_same_base_only() {
        let (_dir, db) = cache();
        let m = manifest(10);
        let r = Residency::open(&db, "v1", &m).unwrap();
        assert_eq!(r.present_count(), 0);
        r.mark_present(&[0, 3, 9]).unwrap();
        drop(r);
        let r = Residency::open(&db, "v1", &m).unwrap();
        assert!(r.is_present(0) && r.is_present(3) && r.is_present(9) && !r.is_present(1));
        assert!(!r.is_present(10), "past the end");
        drop(r);
        let r = Residency::open(&db, "v2", &m).unwrap();
        assert_eq!(r.present_count(), 0, "another base describes nothing");
        assert_eq!(r.etag(), "v2");
    }

    #[test]
    fn a_record_beside_a_replaced_cache_describes_nothing() {
        let (_dir, db) = cache();
        std::fs::write(&db, b"first cache").unwrap();
        let m = manifest(3);
        Residency::open(&db, "v1", &m)
            .unwrap()
            .mark_present(&[0, 1, 2])
            .unwrap();
        assert_eq!(Residency::open(&db, "v1", &m).unwrap().present_count(), 3);
        std::fs::remove_file(&db).unwrap();
        std::fs::write(&db, b"a new, empty cache").unwrap();
        assert_eq!(Residency::open(&db, "v1", &m).unwrap().present_count(), 0);
    }

    #[test]
    fn a_summary_reads_the_record_and_changes_nothing() {
        let (_dir, db) = cache();
        std::fs::write(&db, b"cache").unwrap();
        assert_eq!(summary(&db).unwrap(), None, "no record: a full cache");
        let mut m = manifest(3);
        m.len = 2 * 65536 + 100;
        let r = Residency::open(&db, "v1", &m).unwrap();
        r.mark_present(&[0, 2]).unwrap();
        r.mark_partial(1).unwrap();
        let before = std::fs::read(path_for(&db)).unwrap();
        let s = summary(&db).unwrap().unwrap();
        assert_eq!((s.chunks_present, s.chunks_total), (2, 3));
        assert_eq!(s.resident_bytes, 65536 + 100, "the last chunk is short");
        assert_eq!(s.etag, "v1");
        assert_eq!(std::fs::read(path_for(&db)).unwrap(), before);
    }

    #[test]
    fn a_torn_header_means_nothing_is_present() {
        let (_dir, db) = cache();
        let m = manifest(4);
        Residency::open(&db, "v1", &m)
            .unwrap()
            .mark_present(&[0, 1, 2, 3])
            .unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path_for(&db))
            .unwrap();
        f.write_all_at(b"XX", 20).unwrap();
        let r = Residency::open(&db, "v1", &m).unwrap();
        assert_eq!(r.present_count(), 0);
    }

    #[test]
    fn a_new_base_keeps_only_unchanged_chunks_and_moves_the_epoch() {
        let (_dir, db) = cache();
        let m1 = manifest(6);
        let mut r = Residency::open(&db, "v1", &m1).unwrap();
        r.mark_present(&[0, 1, 2, 5]).unwrap();
        let mut m2 = manifest(8);
        m2.ids[1] = ChunkId::new(1, b"changed");
        let epoch = r.header.epoch;
        r.adopt("v2", &m2, &|i| {
            m1.ids.get(i as usize) == m2.ids.get(i as usize)
        })
        .unwrap();
        assert_eq!(r.header.epoch, epoch + 1);
        let kept: Vec<u64> = (0..8).filter(|&i| r.is_present(i)).collect();
        assert_eq!(kept, vec![0, 2, 5]);
        drop(r);
        let r = Residency::open(&db, "v2", &m2).unwrap();
        let kept: Vec<u64> = (0..8).filter(|&i| r.is_present(i)).collect();
        assert_eq!(kept, vec![0, 2, 5], "durable");
    }

    #[test]
    fn dirty_chunks_are_present_not_clean_and_a_new_base_cleans_them() {
        let (_dir, db) = cache();
        let m = manifest(4);
        let r = Residency::open(&db, "v1", &m).unwrap();
        r.mark_present(&[0, 1, 2]).unwrap();
        assert!(r.mark_dirty(1..2).unwrap());
        assert!(!r.mark_dirty(1..2).unwrap(), "marked once");
        r.sync().unwrap();
        assert!(r.is_present(1) && !r.is_clean(1) && r.is_clean(2));
        drop(r);
        let mut r = Residency::open(&db, "v1", &m).unwrap();
        assert!(r.is_present(1) && !r.is_clean(1), "dirty survives a reopen");
        r.mark_absent(&[2]).unwrap();
        assert!(!r.is_present(2));
        r.adopt("v2", &m, &|_| true).unwrap();
        assert!(
            !r.is_clean(1),
            "a new base alone does not say the commits are in it"
        );
        r.clean_dirty().unwrap();
        assert!(
            r.is_clean(1),
            "the cache was saved clean: the remote has them"
        );
    }

    #[test]
    fn a_second_process_sees_fetches_on_a_look_and_losses_by_the_epoch() {
        let (_dir, db) = cache();
        let m = manifest(5);
        let mut mine = Residency::open(&db, "v1", &m).unwrap();
        let mut theirs = Residency::open(&db, "v1", &m).unwrap();
        theirs.mark_present(&[2, 4]).unwrap();
        assert!(!mine.is_present(2));
        mine.look_again(0..5).unwrap();
        assert!(mine.is_present(2) && mine.is_present(4));
        assert!(!mine.reload_if_moved().unwrap(), "adding moves no epoch");
        theirs.adopt("v1", &m, &|i| i != 4).unwrap();
        assert!(mine.reload_if_moved().unwrap());
        assert!(mine.is_present(2) && !mine.is_present(4));
    }
}
