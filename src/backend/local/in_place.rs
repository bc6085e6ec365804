//! A delta commit written into the blob file in place, in O(changed pages), under
//! SQLite's own rollback-journal protocol (`journal.rs`), so that neither this
//! backend nor any SQLite reader of the remote file ever sees it half done.
//!
//! Only for a blob that is a SQLite database in rollback mode whose kept blocks stay
//! where they are and where at most half of the file is rewritten; anything else is
//! rebuilt in a temp file and renamed over the blob (`blocks.rs`).
//!
//! The steps, all under the blob's mutex, and what a crash after each leaves:
//!
//! 1. RESERVED on the blob; compare each staged block with the blob page by page and
//!    write the original of every page that differs (and of every page cut off) into
//!    a synced temp journal. *Crash*: the blob and its records are untouched; a temp
//!    file is left (swept like an upload's).
//! 2. PENDING + EXCLUSIVE (waits for SQLite readers and our downloads; after
//!    [`LOCK_WAIT`](super::journal) the commit fails as transient and nothing
//!    changed). Rename the journal to `<blob>-journal`, delete the etag record, fsync
//!    the directory. *Crash*: a hot journal (no RESERVED holder once we are dead).
//!    The next accessor of this backend rolls it back (a no-op on the content) and
//!    records the old etag token from the journal's marker again: the old version,
//!    same etag, block list still valid. A SQLite reader that comes first rolls it
//!    back itself: the old content under a new `fs-` etag (the block list no longer
//!    matches: callers download it whole).
//! 3. Write the changed pages and the pages past the old end, set the new length,
//!    fsync the blob. *Crash*: as 2; the rollback restores every changed page and the
//!    old length.
//! 4. Delete the journal and fsync the directory: the commit point (as for SQLite).
//!    *Crash*: the new content, no etag record: the etag is `fs-<fingerprint>`, new
//!    and unlike the old one, and the old block list no longer matches (nor counts
//!    for `verify`: no etag record names its version). The new version, seen by a
//!    caller as a commit whose answer was lost.
//! 5. Record the new etag (`mb-<token>`), then (the caller) the block list, fsync the
//!    directory, drop the locks. *Crash between the two records*: the block list
//!    belongs to another etag than the record names and reads as empty, for the
//!    VFS and for `verify` alike.
//!
//! The etag record is deleted in step 2 rather than kept until step 5 because the
//! fingerprint may not move: an in-place write within one timestamp tick of the last
//! commit keeps inode, size, mtime and ctime, and would leave the new content under
//! the old etag. The lock page (at 1 GiB, never used by SQLite) is not journaled.
//!
//! For tests, `MANAGEDBLOB_TEST_CRASH_AT=<step>` aborts the process at a step
//! (`journaled`, `half-written`, `blob-synced`, `journal-deleted`, `etag-recorded`;
//! `rollback-recorded` in a rollback, `renamed` and `installed` in a rebuilt commit),
//! and `MANAGEDBLOB_TEST_IN_PLACE_PAUSE_MS` pauses in the middle of step 3, so a
//! kill from outside can land there (both only in builds with the `testing` feature).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::blocks::{PlannedBlock, Source};
use super::download::Base;
use super::journal::{lock_page, rollback_page_size, JournalWriter, SqliteLock};
use super::paths::BlobPaths;
use super::upload::TempFile;
use crate::backend::{BackendResult, BlobStat};
use crate::crash::crash_point;

/// A page to write: its offset in the blob, and where its new bytes come from.
struct Write {
    offset: u64,
    len: u64,
    block: usize,
    at_in_block: u64,
}

/// The test hook `MANAGEDBLOB_TEST_IN_PLACE_PAUSE_MS` (the `testing` feature only).
#[cfg(feature = "testing")]
fn test_pause() {
    let ms = std::env::var("MANAGEDBLOB_TEST_IN_PLACE_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Without the `testing` feature: nothing.
#[cfg(not(feature = "testing"))]
#[inline(always)]
fn test_pause() {}

impl BlobPaths {
    /// Commit `plan` over `base` in place (call with the mutex held, after the
    /// checks); `None` when this commit is not one for the in-place path. Adds the
    /// bytes written (journal and blob) to `written`.
    pub(super) fn commit_in_place(
        &self,
        plan: &[PlannedBlock],
        base: &Base,
        written: &AtomicU64,
        op: &str,
    ) -> BackendResult<Option<BlobStat>> {
        let Some(page) = self.in_place_page_size(plan, base, op)? else {
            return Ok(None);
        };
        let Some(lock) = SqliteLock::open(self, op)? else {
            return Ok(None);
        };
        let same_file = lock.file().metadata().map_err(|e| self.io_error(op, e))?;
        let pinned = base.file.metadata().map_err(|e| self.io_error(op, e))?;
        if !same_inode(&same_file, &pinned) {
            return Ok(None);
        }
        lock.reserved(self, op)?;
        // Step 1: the journal, in a temp file.
        let old_size = base.stat.size;
        let (tmp, journal) = TempFile::create(self, op)?;
        let staged = open_staged(self, plan, op)?;
        let mut writer = JournalWriter::new(page);
        let writes = self
            .journal_changes(plan, &staged, base, page, &journal, &mut writer)
            .map_err(|e| self.io_error(op, e))?;
        let token = base.stat.etag.0.strip_prefix("mb-");
        let journal_bytes = writer
            .finish(&journal, old_size / page, token)
            .map_err(|e| self.io_error(op, e))?;
        written.fetch_add(journal_bytes, Ordering::Relaxed);
        // Step 2: readers out, the journal in place, the old etag forgotten.
        lock.exclusive(self, op)?;
        tmp.rename_to(&self.journal())
            .map_err(|e| self.io_error(op, e))?;
        let installed = (|| {
            self.forget_etag(op)?;
            self.sync_parent(op)?;
            crash_point("journaled");
            // Step 3: the new pages.
            let new_size = plan.last().map_or(0, |b| b.offset + b.size);
            let bytes =
                write_pages(lock.file(), &writes, &staged).map_err(|e| self.io_error(op, e))?;
            written.fetch_add(bytes, Ordering::Relaxed);
            lock.file()
                .set_len(new_size)
                .and_then(|()| lock.file().sync_all())
                .map_err(|e| self.io_error(op, e))?;
            crash_point("blob-synced");
            // Step 4: the commit point.
            self.remove_journal(op)?;
            crash_point("journal-deleted");
            Ok(())
        })();
        if let Err(e) = installed {
            // Undo now if we can; else the journal stays hot for the next accessor.
            drop(lock);
            if let Err(undo) = self.recover_hot_journal(op) {
                tracing::warn!(blob = %self.path.display(), error = %undo, "could not roll back a failed in-place commit");
            }
            return Err(e);
        }
        // Step 5: the new version's etag (the block list is the caller's).
        let meta = lock.file().metadata().map_err(|e| self.io_error(op, e))?;
        let stat = self.record_new_etag(&meta, op)?;
        crash_point("etag-recorded");
        tracing::debug!(blob = %self.path.display(), journal_bytes, pages = writes.len(), "local commit in place");
        Ok(Some(stat))
    }

    /// The page size when `plan` over `base` is a commit for the in-place path.
    fn in_place_page_size(
        &self,
        plan: &[PlannedBlock],
        base: &Base,
        op: &str,
    ) -> BackendResult<Option<u64>> {
        let old_size = base.stat.size;
        let mut header = [0u8; 100];
        if old_size < 100 {
            return Ok(None);
        }
        base.file
            .read_exact_at(&mut header, 0)
            .map_err(|e| self.io_error(op, e))?;
        let Some(page) = rollback_page_size(&header) else {
            return Ok(None);
        };
        let mut staged_bytes = 0;
        for block in plan {
            match block.source {
                Source::Committed(at) if at != block.offset => return Ok(None),
                Source::Committed(_) => {}
                Source::Staged(_) => staged_bytes += block.size,
            }
            if block.offset % page != 0 {
                return Ok(None);
            }
        }
        let fits = old_size % page == 0 && staged_bytes <= old_size / 2;
        Ok(fits.then_some(page))
    }

    /// Step 1: journal every page that the commit changes or cuts off; return the
    /// page writes to make.
    fn journal_changes(
        &self,
        plan: &[PlannedBlock],
        staged: &[Option<File>],
        base: &Base,
        page: u64,
        journal: &File,
        writer: &mut JournalWriter,
    ) -> std::io::Result<Vec<Write>> {
        let old_size = base.stat.size;
        let new_size = plan.last().map_or(0, |b| b.offset + b.size);
        let (mut old, mut new) = (vec![0u8; page as usize], vec![0u8; page as usize]);
        let mut writes = Vec::new();
        for (index, block) in plan.iter().enumerate() {
            let Some(file) = &staged[index] else { continue };
            let mut at = 0;
            while at < block.size {
                let len = page.min(block.size - at);
                let offset = block.offset + at;
                let new = &mut new[..len as usize];
                file.read_exact_at(new, at)?;
                let changed = if offset >= old_size {
                    true
                } else {
                    base.file.read_exact_at(&mut old, offset)?;
                    let differs = old[..len as usize] != *new || offset + page > new_size;
                    if differs && offset / page + 1 != lock_page(page) {
                        writer.add(journal, offset / page + 1, &old)?;
                    }
                    differs
                };
                if changed {
                    writes.push(Write {
                        offset,
                        len,
                        block: index,
                        at_in_block: at,
                    });
                }
                at += len;
            }
        }
        // Pages cut off by a shrink (the partial page at the new end is journaled above).
        let mut offset = new_size.next_multiple_of(page);
        while offset < old_size {
            base.file.read_exact_at(&mut old, offset)?;
            if offset / page + 1 != lock_page(page) {
                writer.add(journal, offset / page + 1, &old)?;
            }
            offset += page;
        }
        Ok(writes)
    }
}

/// The staged block files of `plan`, by index (`None` for kept blocks).
fn open_staged(p: &BlobPaths, plan: &[PlannedBlock], op: &str) -> BackendResult<Vec<Option<File>>> {
    plan.iter()
        .map(|block| match &block.source {
            Source::Committed(_) => Ok(None),
            Source::Staged(path) => {
                let file = p.open_staged(block, path, op)?;
                Ok(Some(file))
            }
        })
        .collect()
}

/// Step 3: copy each changed page from its staged block into the blob.
fn write_pages(blob: &File, writes: &[Write], staged: &[Option<File>]) -> std::io::Result<u64> {
    let mut buffer = Vec::new();
    let mut bytes = 0;
    for (n, w) in writes.iter().enumerate() {
        buffer.resize(w.len as usize, 0);
        let source = staged[w.block]
            .as_ref()
            .expect("writes come from staged blocks");
        source.read_exact_at(&mut buffer, w.at_in_block)?;
        blob.write_all_at(&buffer, w.offset)?;
        bytes += w.len;
        if n == 0 {
            crash_point("half-written");
            test_pause();
        }
    }
    Ok(bytes)
}

fn same_inode(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}
