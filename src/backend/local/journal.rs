//! SQLite's own undo protocol on the remote file, so that any SQLite reader (and
//! this backend) sees a delta commit written in place as all or nothing:
//!
//! * **Locks**: the byte-range locks of SQLite's unix VFS (`sqlite3.c`: `PENDING_BYTE`
//!   0x40000000, `RESERVED_BYTE` = +1, `SHARED_FIRST` = +2, `SHARED_SIZE` 510).
//!   A writer holds RESERVED while its journal exists (so a reader never takes a live
//!   journal for a hot one), then PENDING (no new readers) and EXCLUSIVE (the shared
//!   range: no readers left) while it writes the file.
//! * **Journal** `<blob>-journal`, in the rollback-journal format of
//!   <https://www.sqlite.org/fileformat.html#the_rollback_journal>: a header (magic,
//!   record count, checksum nonce, the database's page count before the commit, sector
//!   and page size), then per page: its number, its original bytes, and a checksum
//!   (the nonce plus every 200th byte, as `pager_cksum`). SQLite reads only the first
//!   28 header bytes; the rest of the header sector carries our marker with the etag
//!   token of the version the journal restores, so a rollback by this backend gives
//!   that version its etag back. The file is padded (sparse) to 64 KiB because SQLite
//!   ignores a journal shorter than one of its own sectors (up to 64 KiB).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::thread;
use std::time::{Duration, Instant};

use super::paths::{is_missing, BlobPaths};
use crate::backend::{BackendErrorKind, BackendResult};
use crate::sys::{try_lock_range, RangeLock};

use crate::image::{PENDING_BYTE, RESERVED_BYTE, SHARED_FIRST, SHARED_SIZE};

const MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
/// The header's sector: records start here.
const SECTOR: u64 = 512;
/// SQLite's largest sector size: a shorter journal file is not played back.
const MIN_JOURNAL_LEN: u64 = 64 * 1024;
/// Our marker in the header sector, followed by the etag token and a newline.
const MARKER: &[u8] = b"managedblob-undo token=";

/// How long a lock step waits for SQLite readers (or this backend's downloads) to
/// finish before the operation fails as transient (and is retried by the caller).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// A SQLite database's page size and whether it is in rollback (not WAL) mode, from
/// its first 100 bytes; `None` when `header` is not a SQLite database header.
pub(super) fn rollback_page_size(header: &[u8]) -> Option<u64> {
    if header.len() < 100 || &header[..16] != b"SQLite format 3\0" {
        return None;
    }
    let raw = u16::from_be_bytes([header[16], header[17]]);
    let size = if raw == 1 { 65536 } else { u64::from(raw) };
    let legacy = header[18] == 1 && header[19] == 1;
    (legacy && (512..=65536).contains(&size) && size.is_power_of_two()).then_some(size)
}

/// The page SQLite never uses (it holds the lock bytes): not journaled, because
/// SQLite stops a playback at it.
pub(super) fn lock_page(page_size: u64) -> u64 {
    PENDING_BYTE / page_size + 1
}

/// SQLite's journal checksum of one page.
fn checksum(nonce: u32, page: &[u8]) -> u32 {
    let mut sum = nonce;
    let mut i = page.len() as i64 - 200;
    while i > 0 {
        sum = sum.wrapping_add(u32::from(page[i as usize]));
        i -= 200;
    }
    sum
}

/// A journal being written into a temp file: the header first, then one record per
/// original page, in any order.
pub(super) struct JournalWriter {
    page_size: u64,
    nonce: u32,
    records: u32,
    len: u64,
}

impl JournalWriter {
    pub fn new(page_size: u64) -> Self {
        JournalWriter {
            page_size,
            nonce: fastrand::u32(..),
            records: 0,
            len: SECTOR,
        }
    }

    /// Append the original bytes of page `pgno` (1-based).
    pub fn add(&mut self, file: &File, pgno: u64, original: &[u8]) -> io::Result<()> {
        debug_assert_eq!(original.len() as u64, self.page_size);
        let pgno = u32::try_from(pgno).map_err(|_| invalid("page number too large"))?;
        let mut record = Vec::with_capacity(original.len() + 8);
        record.extend_from_slice(&pgno.to_be_bytes());
        record.extend_from_slice(original);
        record.extend_from_slice(&checksum(self.nonce, original).to_be_bytes());
        file.write_all_at(&record, self.len)?;
        self.len += record.len() as u64;
        self.records += 1;
        Ok(())
    }

    /// Write the header (the database had `db_pages` pages; the etag `token`, if any,
    /// is what a rollback restores), pad, and fsync. Returns the bytes written.
    pub fn finish(self, file: &File, db_pages: u64, token: Option<&str>) -> io::Result<u64> {
        let db_pages = u32::try_from(db_pages).map_err(|_| invalid("database too large"))?;
        let mut header = vec![0u8; SECTOR as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&self.records.to_be_bytes());
        header[12..16].copy_from_slice(&self.nonce.to_be_bytes());
        header[16..20].copy_from_slice(&db_pages.to_be_bytes());
        header[20..24].copy_from_slice(&(SECTOR as u32).to_be_bytes());
        header[24..28].copy_from_slice(&(self.page_size as u32).to_be_bytes());
        if let Some(token) = token {
            let marker = [MARKER, token.as_bytes(), b"\n"].concat();
            header[28..28 + marker.len()].copy_from_slice(&marker);
        }
        file.write_all_at(&header, 0)?;
        file.set_len(self.len.max(MIN_JOURNAL_LEN))?;
        file.sync_all()?;
        Ok(self.len)
    }
}

/// Play the journal `journal` back into `db` as SQLite does (records up to the first
/// bad checksum; never the lock page or a page past the original end), truncate `db`
/// to its original size, and fsync it. Returns the marker's etag token, if any.
/// `None` for a journal that is not hot (empty or zeroed header): nothing to undo.
pub(super) fn play_back(journal: &File, db: &File) -> io::Result<Option<Option<String>>> {
    let mut header = vec![0u8; SECTOR as usize];
    let len = journal.metadata()?.len();
    if len < 28 {
        return Ok(None);
    }
    let n = journal.read_at(&mut header, 0)?;
    if header[0] == 0 || n < 28 || header[..8] != MAGIC {
        return Ok(None);
    }
    let word = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().unwrap());
    let (records, nonce, db_pages) = (word(8), word(12), u64::from(word(16)));
    let (sector, page_size) = (u64::from(word(20)), u64::from(word(24)));
    if !(512..=65536).contains(&page_size)
        || !page_size.is_power_of_two()
        || !(32..=65536).contains(&sector)
        || !sector.is_power_of_two()
    {
        return Ok(None);
    }
    let token = header[28..]
        .strip_prefix(MARKER)
        .and_then(|rest| rest.split(|b| *b == b'\n').next())
        .and_then(|t| std::str::from_utf8(t).ok())
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let mut record = vec![0u8; page_size as usize + 8];
    let mut at = sector;
    for _ in 0..records {
        if at + record.len() as u64 > len {
            break;
        }
        journal.read_exact_at(&mut record, at)?;
        at += record.len() as u64;
        let pgno = u64::from(u32::from_be_bytes(record[..4].try_into().unwrap()));
        let page = &record[4..4 + page_size as usize];
        let sum = u32::from_be_bytes(record[4 + page_size as usize..].try_into().unwrap());
        if pgno == 0 || pgno == lock_page(page_size) || checksum(nonce, page) != sum {
            break;
        }
        if pgno <= db_pages {
            db.write_all_at(page, (pgno - 1) * page_size)?;
        }
    }
    db.set_len(db_pages * page_size)?;
    db.sync_all()?;
    Ok(Some(token))
}

/// Hot, as SQLite decides it (with RESERVED free): the first byte is not zero.
fn is_hot(journal: &File) -> io::Result<bool> {
    let mut first = [0u8; 1];
    Ok(journal.read_at(&mut first, 0)? == 1 && first[0] != 0)
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why)
}

/// SQLite's lock levels on the blob file, held by one open file description and
/// released when it is dropped.
pub(super) struct SqliteLock {
    file: File,
}

impl SqliteLock {
    /// Open the blob for reading and writing, to lock and write it.
    pub fn open(p: &BlobPaths, op: &str) -> BackendResult<Option<Self>> {
        match OpenOptions::new().read(true).write(true).open(&p.path) {
            Ok(file) => Ok(Some(SqliteLock { file })),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(p.io_error(op, e)),
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// RESERVED without waiting: `false` when another writer holds it (its journal
    /// is live, not hot).
    pub fn try_reserved(&self, p: &BlobPaths, op: &str) -> BackendResult<bool> {
        try_lock_range(&self.file, RESERVED_BYTE, 1, RangeLock::Write)
            .map_err(|e| p.io_error(op, e))
    }

    /// RESERVED, waiting a while for another writer.
    pub fn reserved(&self, p: &BlobPaths, op: &str) -> BackendResult<()> {
        wait_for(p, op, "a SQLite writer holds the remote file", || {
            try_lock_range(&self.file, RESERVED_BYTE, 1, RangeLock::Write)
        })
    }

    /// PENDING (no new readers), then EXCLUSIVE (waiting for the readers to leave).
    pub fn exclusive(&self, p: &BlobPaths, op: &str) -> BackendResult<()> {
        let busy = "a SQLite reader (or a download) holds the remote file";
        wait_for(p, op, busy, || {
            try_lock_range(&self.file, PENDING_BYTE, 1, RangeLock::Write)
        })?;
        wait_for(p, op, busy, || {
            try_lock_range(&self.file, SHARED_FIRST, SHARED_SIZE, RangeLock::Write)
        })
    }
}

/// A SQLite SHARED lock on a pinned blob file while it is read: a writer of the file
/// in place waits until it is released (on drop).
pub(super) struct SharedLock<'a> {
    file: &'a File,
}

impl<'a> SharedLock<'a> {
    /// As SQLite takes SHARED: through PENDING, so a waiting writer is not starved.
    pub fn take(p: &BlobPaths, file: &'a File, op: &str) -> BackendResult<Self> {
        let busy = "a SQLite writer holds the remote file";
        wait_for(p, op, busy, || {
            try_lock_range(file, PENDING_BYTE, 1, RangeLock::Read)
        })?;
        let shared = wait_for(p, op, busy, || {
            try_lock_range(file, SHARED_FIRST, SHARED_SIZE, RangeLock::Read)
        });
        let _ = try_lock_range(file, PENDING_BYTE, 1, RangeLock::Unlock);
        shared.map(|()| SharedLock { file })
    }
}

impl Drop for SharedLock<'_> {
    fn drop(&mut self) {
        let _ = try_lock_range(self.file, SHARED_FIRST, SHARED_SIZE, RangeLock::Unlock);
    }
}

/// Retry `attempt` with a growing pause for up to [`LOCK_WAIT`].
fn wait_for(
    p: &BlobPaths,
    op: &str,
    busy: &str,
    mut attempt: impl FnMut() -> io::Result<bool>,
) -> BackendResult<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if attempt().map_err(|e| p.io_error(op, e))? {
            return Ok(());
        }
        if started.elapsed() >= LOCK_WAIT {
            return Err(p.error(
                BackendErrorKind::Transient,
                op,
                &format!("busy: {busy} (waited {} ms)", LOCK_WAIT.as_millis()),
            ));
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

impl BlobPaths {
    /// Roll back a hot journal beside the blob (call with the mutex held, before
    /// anything else looks at the blob): one left by a commit of ours that died, or
    /// by a SQLite writer of the remote file that died. A journal whose writer still
    /// holds RESERVED is live and left alone. After our own journal, the blob gets
    /// back the etag of the version it restores.
    pub fn recover_hot_journal(&self, op: &str) -> BackendResult<()> {
        let journal_path = self.journal();
        let journal = match File::open(&journal_path) {
            Ok(file) => file,
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) => return Err(self.io_error(op, e)),
        };
        let Some(lock) = SqliteLock::open(self, op)? else {
            // No database: nothing to restore into (SQLite deletes such a journal too).
            return self.remove_journal(op);
        };
        if !lock.try_reserved(self, op)? || !is_hot(&journal).map_err(|e| self.io_error(op, e))? {
            // A live writer's journal, or one SQLite left empty or zeroed (journal
            // modes TRUNCATE and PERSIST): nothing to undo.
            return Ok(());
        }
        lock.exclusive(self, op)?;
        let played = play_back(&journal, lock.file()).map_err(|e| self.io_error(op, e))?;
        // The old etag back before the journal goes: killed in between, the journal
        // is still hot and the next accessor plays it back again (which moves the
        // fingerprint) and records the token again. Removing the journal first would
        // leave the old content without its etag (and its block list unused).
        if let Some(token) = played.flatten() {
            let meta = lock.file().metadata().map_err(|e| self.io_error(op, e))?;
            self.record_etag_token(&token, &meta, op)?;
            self.sync_parent(op)?;
        }
        crate::crash::crash_point("rollback-recorded");
        self.remove_journal(op)?;
        tracing::info!(blob = %self.path.display(), "rolled back a hot journal of the remote file");
        Ok(())
    }

    /// Delete the journal (the commit point of an in-place write) and make that durable.
    pub fn remove_journal(&self, op: &str) -> BackendResult<()> {
        match fs::remove_file(self.journal()) {
            Ok(()) => self.sync_parent(op),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(self.io_error(op, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_adds_every_200th_byte_from_the_end() {
        let mut page = vec![0u8; 1024];
        page[824] = 3; // 1024 - 200
        page[624] = 4;
        page[24] = 5;
        page[0] = 100; // i > 0 only: never byte 0
        assert_eq!(checksum(10, &page), 22);
    }

    #[test]
    fn page_size_comes_from_a_rollback_mode_header() {
        let mut header = vec![0u8; 100];
        header[..16].copy_from_slice(b"SQLite format 3\0");
        header[16..18].copy_from_slice(&4096u16.to_be_bytes());
        header[18] = 1;
        header[19] = 1;
        assert_eq!(rollback_page_size(&header), Some(4096));
        header[16..18].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(rollback_page_size(&header), Some(65536));
        header[18] = 2;
        assert_eq!(rollback_page_size(&header), None, "WAL mode");
        assert_eq!(rollback_page_size(b"not a database"), None);
    }
}
