//! The files the local backend keeps for one blob (the list is in the module
//! header of `mod.rs`), the blob's cross-process mutex, and the errors that name the
//! blob, with the one mapping of io errors onto [`BackendErrorKind`].

use std::fs::{self, File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::etag::random_token;
use crate::backend::checks::{validate_blob_name, Refusal};
use crate::backend::{hex, BackendError, BackendErrorKind, BackendResult};
use crate::fsutil::{self, open_private, IfExists};
use crate::sys::flock_exclusive;

/// The files that belong to one blob.
pub(super) struct BlobPaths {
    /// `<dir>/<blob>`.
    pub path: PathBuf,
    /// The directory holding the blob and its hidden companions.
    pub parent: PathBuf,
    /// The blob's last path segment.
    pub(super) file: String,
}

impl BlobPaths {
    /// The files of `blob` in the remote directory `dir`, after checking its name
    /// cannot escape the directory.
    pub fn new(dir: &Path, blob: &str) -> BackendResult<Self> {
        validate_blob_name(blob)?;
        let path = dir.join(blob);
        let parent = path.parent().unwrap_or(dir).to_path_buf();
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(BlobPaths { path, parent, file })
    }

    /// A companion file: `<parent>/.<file>.mb-<suffix>`.
    pub(super) fn side(&self, suffix: &str) -> PathBuf {
        self.parent.join(format!(".{}.mb-{suffix}", self.file))
    }

    /// `.mb-mutex`: `flock`ed around every operation, never deleted.
    fn mutex(&self) -> PathBuf {
        self.side("mutex")
    }

    /// `.mb-etag`: the etag record of the last upload.
    pub fn etag_record(&self) -> PathBuf {
        self.side("etag")
    }

    /// `.mb-lease`: the lease in force.
    pub fn lease_record(&self) -> PathBuf {
        self.side("lease")
    }

    /// `.mb-waiting`: the waiter queue (its version, then the writers waiting).
    pub fn waiter_mark(&self) -> PathBuf {
        self.side("waiting")
    }

    /// `.mb-blocks`: the committed block list.
    pub fn block_list_record(&self) -> PathBuf {
        self.side("blocks")
    }

    /// `<blob>-journal`: SQLite's rollback journal of the blob, written by an
    /// in-place commit (named as SQLite names it, so SQLite readers honour it).
    pub fn journal(&self) -> PathBuf {
        self.parent.join(format!("{}-journal", self.file))
    }

    /// `.mb-tmp-<random>`: a new temp file name for an upload or a block commit.
    pub fn temp(&self) -> PathBuf {
        self.side(&format!("tmp-{}", random_token()))
    }

    /// `.mb-staged/`: blocks staged for the next commit.
    pub fn staged_dir(&self) -> PathBuf {
        self.side("staged")
    }

    /// `.mb-staged/<hex id>`.
    pub fn staged_block(&self, id: &[u8]) -> PathBuf {
        self.staged_dir().join(hex(id))
    }

    pub fn error(&self, kind: BackendErrorKind, op: &str, why: &str) -> BackendError {
        BackendError::failed(kind, self.subject(), op, why)
    }

    /// A refusal of a shared check ([`crate::backend::checks`]) as this blob's error.
    pub fn refused(&self, op: &str, refusal: Refusal) -> BackendError {
        refusal.at(self.subject(), op)
    }

    fn subject(&self) -> String {
        format!("local remote {}", self.path.display())
    }

    pub fn missing(&self, op: &str) -> BackendError {
        self.refused(op, Refusal::missing())
    }

    /// Map an io error to a kind: the local disk is not flaky, so only interrupted
    /// or would-block calls are worth retrying. (The one place the local backend
    /// turns an io error into a [`BackendError`].)
    pub fn io_error(&self, op: &str, e: io::Error) -> BackendError {
        let full = matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        );
        let why = if full {
            format!("no space left ({e})")
        } else {
            e.to_string()
        };
        self.error(BackendErrorKind::for_io(&e), op, &why)
            .with_io(e.kind())
    }

    /// Take the blob's cross-process mutex; `None` when the blob's directory does not
    /// exist (so neither does the blob, and there is nothing to lock). A hot journal
    /// left by a commit that died is rolled back first, so every operation sees a
    /// whole version.
    pub fn lock(&self, op: &str) -> BackendResult<Option<FileLock>> {
        let lock = match FileLock::acquire(&self.mutex()) {
            Ok(lock) => lock,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(self.io_error(op, e)),
        };
        self.recover_hot_journal(op)?;
        Ok(Some(lock))
    }

    /// The blob file's metadata, `None` when it does not exist.
    pub fn metadata(&self, op: &str) -> BackendResult<Option<Metadata>> {
        match fs::metadata(&self.path) {
            Ok(meta) => self.require_file(&meta, op).map(|()| Some(meta)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(self.io_error(op, e)),
        }
    }

    pub fn require_file(&self, meta: &Metadata, op: &str) -> BackendResult<()> {
        if meta.is_file() {
            Ok(())
        } else {
            Err(self.error(
                BackendErrorKind::Invalid,
                op,
                "the path exists but is not a regular file",
            ))
        }
    }

    /// Read a small JSON companion file; missing or unreadable-as-JSON counts as absent
    /// (we only ever replace these files atomically, so garbage is somebody else's).
    pub fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &Path,
        op: &str,
    ) -> BackendResult<Option<T>> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(self.io_error(op, e)),
        };
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(Some(value)),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring a corrupt companion file");
                Ok(None)
            }
        }
    }

    /// Replace a JSON companion file atomically (`durable`: and fsync the directory).
    pub fn write_json<T: Serialize>(
        &self,
        path: &Path,
        value: &T,
        durable: bool,
    ) -> io::Result<()> {
        let bytes = serde_json::to_vec(value).expect("plain records always serialize");
        fsutil::write_atomic(path, &bytes, durable)
    }

    /// Make renames in the blob's directory durable.
    pub fn sync_parent(&self, op: &str) -> BackendResult<()> {
        fsutil::sync_dir(&self.parent).map_err(|e| self.io_error(op, e))
    }
}

/// An exclusive `flock` on a mutex file, released when the file is closed on drop.
pub(super) struct FileLock {
    _file: File,
}

impl FileLock {
    pub(super) fn acquire(path: &Path) -> io::Result<Self> {
        let file = open_private(path, IfExists::Keep)?;
        flock_exclusive(&file)?;
        Ok(FileLock { _file: file })
    }
}

/// The blob, or a directory on its path, does not exist.
pub(super) fn is_missing(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
}
