//! A directory that plays the remote: each blob is a plain file `<dir>/<blob>`.
//!
//! This backend exists so the VFS can be used (and tested) without a cloud account,
//! with the remote on a local disk or a shared POSIX file system. It keeps the
//! promises of [`Backend`] with a few hidden files beside each blob:
//!
//! * `.<file>.mb-mutex`: `flock(LOCK_EX)` on it serializes every operation on the
//!   blob across threads and processes. It is never deleted (deleting a lock file
//!   races with a process that just opened it).
//! * `.<file>.mb-etag`: a random token plus the stat fingerprint of the blob file
//!   the upload produced. While the fingerprint still matches, the etag is
//!   `mb-<token>`, which is fresh for every upload even when size and mtime are not.
//!   When it does not (a foreign `cp` over the blob, or a crash between rename and
//!   etag write) the etag is `fs-<fingerprint>`, so foreign writes still move it.
//! * `.<file>.mb-lease`: the current lease as JSON (token, owner, expiry).
//! * `.<file>.mb-tmp-<random>`: an upload in flight, renamed over the blob at the end.
//! * `.<file>.mb-blocks`: the committed block list (ids and sizes) of the blob, with
//!   the etag of the version it belongs to (see below).
//! * `.<file>.mb-staged/<hex id>`: blocks staged for the next block commit.
//! * `.<file>.mb-waiting`: the waiter queue (fair turns, `waiter.rs`): the writers
//!   waiting for the lease, under a version token a holder keeping the lease warm
//!   watches; `.<file>.mb-waiting-lock` is `flock`ed around its replace.
//! * `<file>-journal`: during a block commit written in place, SQLite's rollback
//!   journal of the blob (named and formatted as SQLite's own, see `journal.rs`).
//! * `.<file>.mb-versions/`: kept versions (the history capability), `versions.rs`.
//!
//! **Blocks** ([`Blocks`], for delta sync) follow Azure's block blobs. A commit into
//! a blob that is a SQLite database (rollback mode) whose kept blocks stay in place
//! and at most half of which is rewritten is written **in place**, under the mutex, in
//! O(changed pages): the original of each page that changes goes into a synced
//! `<file>-journal`, the pages are written, the journal is deleted (the commit point),
//! then the new etag and block list are recorded. The blob file is locked as SQLite
//! locks a database it writes (RESERVED, then PENDING and EXCLUSIVE), so a plain
//! `sqlite3` on the remote file waits (SQLITE_BUSY) during the write, and after a
//! crash finds a hot journal and rolls the half-done commit back itself; every
//! operation of this backend does the same before anything else (in
//! `BlobPaths::lock`). Downloads and range reads hold SQLite's SHARED lock while
//! they copy, so an in-place commit waits for them (at most a few seconds, then fails
//! as transient). `in_place.rs` lists each crash point and what it leaves.
//!
//! Any other commit builds the new blob in a temp file outside the mutex: a reflink
//! clone of the current blob where the file system can (`FICLONE`: btrfs, xfs), with
//! only the blocks that changed or moved written over it; else every block copied.
//! Then, under the mutex, the same conditional rename and etag file as an upload.
//! Either way the new block list file is written and the staging directory cleared.
//! A commit takes for each id the staged block when there is one, else the committed
//! one. A block list whose etag is not the blob's current one (a whole upload, a
//! foreign `cp`, a crash before the list was written) is reported as empty, so the
//! caller falls back to a whole download. The list record is removed before a rename
//! over the blob and written after the new etag record, so at every crash point it is
//! absent, or belongs to the version the etag record names (which `verify` checks the
//! content against even when the content changed since: rot, a foreign write).
//!
//! The fingerprint uses inode, size and nanosecond mtime/ctime. A foreign in-place
//! write of the same size within one file-system timestamp tick of our own upload
//! can therefore go unnoticed on kernels without fine-grained timestamps; foreign
//! writers are an operator's escape hatch, not a supported concurrent writer.
//!
//! `flock` is only as good as the file system's support for it: fine on local
//! disks, on NFS only with a working lock manager.
//!
//! The code is split by job: `paths.rs` names every file above and maps io errors,
//! `etag.rs` the etag record, `lease.rs` the lease record and dead-owner reclaim,
//! `download.rs` pinned reads, `upload.rs` temp files and the install of a new
//! version, `blocks.rs` the block capability (`stage_range.rs`: a block staged as
//! a copy of a range of the blob file), `in_place.rs` the commit written in
//! place and `journal.rs` SQLite's journal format and locks on the blob file.

mod blocks;
mod download;
mod etag;
mod in_place;
mod inspect;
mod journal;
mod lease;
mod paths;
mod stage_range;
mod upload;
mod versions;
mod waiter;

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use self::journal::SharedLock;
use self::paths::BlobPaths;
use self::upload::TempFile;
use super::checks::{check_condition, Refusal};
use super::{
    Backend, BackendError, BackendErrorKind, BackendResult, BlobStat, Blocks, Condition, Lease,
    LeaseId,
};
use super::{Body, Terms, WaiterQueue};
use crate::sys::hostname;

/// A directory used as the remote store.
#[derive(Debug)]
pub struct LocalBackend {
    dir: PathBuf,
    /// Who we are, for lease files (and to recognize leases of dead local processes).
    host: String,
    boot_id: String,
    /// Bytes block commits wrote into the remote (blob and journal): for tests.
    written: AtomicU64,
}

impl LocalBackend {
    /// Use the existing directory `dir` as the remote (it is not created: a typo in a
    /// setting should fail loudly rather than start an empty remote).
    pub fn new(dir: impl Into<PathBuf>) -> BackendResult<Self> {
        let dir = dir.into();
        let fail = |kind, why: String| {
            BackendError::new(kind, format!("local remote {}: {why}", dir.display()))
        };
        let canonical = fs::canonicalize(&dir).map_err(|e| {
            let kind = match e.kind() {
                io::ErrorKind::PermissionDenied => BackendErrorKind::Denied,
                _ => BackendErrorKind::NotFound,
            };
            fail(kind, format!("the directory cannot be resolved: {e}"))
        })?;
        if !canonical.is_dir() {
            return Err(fail(
                BackendErrorKind::NotFound,
                "it is not a directory".into(),
            ));
        }
        Ok(LocalBackend {
            dir: canonical,
            host: hostname(),
            boot_id: crate::sys::boot_id(),
            written: AtomicU64::new(0),
        })
    }

    /// How many bytes this backend's block commits have written into the remote
    /// directory (blob file and journal; staged blocks not counted): a commit of a few
    /// changed pages in place writes about twice those pages, a rebuilt blob its size.
    pub fn commit_bytes_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// The files of `blob`, after checking its name cannot escape the directory.
    fn paths(&self, blob: &str) -> BackendResult<BlobPaths> {
        BlobPaths::new(&self.dir, blob)
    }
}

/// Fail unless `condition` holds for the blob's current version.
fn require_condition(
    p: &BlobPaths,
    condition: &Condition,
    current: Option<&BlobStat>,
    op: &str,
) -> BackendResult<()> {
    check_condition(condition, current.map(|c| &c.etag)).map_err(|r| p.refused(op, r))
}

impl Backend for LocalBackend {
    fn identity(&self) -> String {
        format!("local:{}", self.dir.display())
    }

    fn stat(&self, blob: &str) -> BackendResult<Option<BlobStat>> {
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), "local stat");
        // A missing blob needs no lock (and should not leave a mutex file behind).
        if p.metadata("stat")?.is_none() {
            return Ok(None);
        }
        let Some(_lock) = p.lock("stat")? else {
            return Ok(None);
        };
        p.current_stat("stat")
    }

    fn download(&self, blob: &str, sink: &mut dyn Write) -> BackendResult<BlobStat> {
        const OP: &str = "download";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), "local download");
        let lock = p.lock(OP)?.ok_or_else(|| p.missing(OP))?;
        let base = p.open_current(false, OP)?.ok_or_else(|| p.missing(OP))?;
        // The open descriptor keeps this version readable even if an upload renames
        // a new file over the blob now, and SQLite's SHARED lock keeps an in-place
        // commit out until the copy is done, so the copy needs no mutex.
        let _shared = SharedLock::take(&p, &base.file, OP)?;
        drop(lock);
        p.copy_all(&base, sink, OP)?;
        Ok(base.stat)
    }

    fn put_blob(&self, blob: &str, body: Body<'_>, terms: Terms<'_>) -> BackendResult<BlobStat> {
        let (Body { source, len }, Terms { condition, lease }) = (body, terms);
        const OP: &str = "upload";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), len, ?condition, ?lease, "local upload");
        fs::create_dir_all(&p.parent).map_err(|e| p.io_error(OP, e))?;
        // Stream outside the lock: the data may be large and the source slow.
        let tmp = TempFile::fill(&p, source, len, OP)?;
        let _lock = p.lock(OP)?.ok_or_else(|| p.missing(OP))?;
        self.check_write_lease(&p, lease, OP)?;
        require_condition(&p, condition, p.current_stat(OP)?.as_ref(), OP)?;
        let stat = p.install(tmp, OP)?;
        // Like Azure's Put Blob: no committed block list, no staged blocks.
        p.clear_blocks(None, OP);
        p.sync_parent(OP)?;
        Ok(stat)
    }

    fn acquire_lease(&self, blob: &str, duration: Duration) -> BackendResult<Lease> {
        const OP: &str = "acquire lease";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), ?duration, "local acquire lease");
        let _lock = p.lock(OP)?.ok_or_else(|| p.missing(OP))?;
        let stat = p.current_stat(OP)?.ok_or_else(|| p.missing(OP))?;
        if let Some(held) = self.live_lease(&p, OP)? {
            return Err(p.refused(OP, Refusal::lease_held(&held.owner())));
        }
        let record = self.new_lease(duration);
        p.write_lease(&record, OP)?;
        Ok(Lease::on(LeaseId(record.token), stat))
    }

    fn renew_lease(&self, blob: &str, lease: &LeaseId, duration: Duration) -> BackendResult<()> {
        const OP: &str = "renew lease";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), ?lease, ?duration, "local renew lease");
        let lost = || p.refused(OP, Refusal::lease_lost());
        let _lock = p.lock(OP)?.ok_or_else(lost)?;
        if p.metadata(OP)?.is_none() {
            return Err(lost());
        }
        match p.read_lease(OP)? {
            Some(mut held) if held.token == lease.0 && !held.is_expired() => {
                held.extend(duration);
                p.write_lease(&held, OP)
            }
            _ => Err(lost()),
        }
    }

    fn release_lease(&self, blob: &str, lease: &LeaseId) -> BackendResult<()> {
        const OP: &str = "release lease";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), ?lease, "local release lease");
        let Some(_lock) = p.lock(OP)? else {
            return Ok(());
        };
        match p.read_lease(OP)? {
            Some(held) if held.token == lease.0 => p.remove_lease(OP),
            _ => Ok(()),
        }
    }

    fn sweep_leftovers(&self, blob: &str, held: Option<&LeaseId>) -> BackendResult<u64> {
        self.sweep_blob_leftovers(blob, held)
    }

    fn break_lease(&self, blob: &str) -> BackendResult<()> {
        const OP: &str = "break lease";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), "local break lease");
        let Some(_lock) = p.lock(OP)? else {
            return Ok(());
        };
        p.remove_lease(OP)
    }

    fn waiter_queue(&self, blob: &str) -> BackendResult<Option<WaiterQueue>> {
        self.paths(blob)?.read_waiter_queue()
    }

    fn replace_waiter_queue(
        &self,
        blob: &str,
        text: &str,
        expected: Option<&str>,
    ) -> BackendResult<Option<String>> {
        self.paths(blob)?
            .replace_waiter_queue(text, expected)
            .map(Some)
    }

    fn waiter_mark(&self, blob: &str) -> BackendResult<Option<String>> {
        Ok(self.paths(blob)?.read_waiter_queue()?.map(|q| q.version))
    }

    fn history(&self) -> Option<&dyn super::History> {
        Some(self)
    }

    fn blocks(&self) -> Option<&dyn Blocks> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_directory_is_not_found() {
        let err = LocalBackend::new("/definitely/not/here").unwrap_err();
        assert_eq!(err.kind, BackendErrorKind::NotFound);
        assert!(err.message.contains("/definitely/not/here"), "{err}");
    }

    #[test]
    fn a_file_is_not_a_remote_directory() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = LocalBackend::new(file.path()).unwrap_err();
        assert_eq!(err.kind, BackendErrorKind::NotFound);
    }
}
