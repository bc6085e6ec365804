//! Writes of the local backend: a new version is streamed (or built) into a synced
//! temp file beside the blob outside the mutex, then, under the mutex and after the
//! lease and condition checks, renamed over the blob and given a fresh etag
//! ([`BlobPaths::install`]). A temp file that is not installed is removed on drop,
//! so a failed write never leaves anything behind.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::paths::BlobPaths;
use crate::backend::checks::short_source;
use crate::backend::{BackendResult, BlobStat};
use crate::fsutil::{open_private, IfExists};

/// An upload's temporary file, removed on drop unless renamed into place.
pub(super) struct TempFile {
    path: PathBuf,
    done: bool,
}

impl TempFile {
    /// A new, empty temp file beside the blob.
    pub fn create(p: &BlobPaths, op: &str) -> BackendResult<(Self, File)> {
        let path = p.temp();
        let file = open_private(&path, IfExists::Fail).map_err(|e| p.io_error(op, e))?;
        Ok((TempFile { path, done: false }, file))
    }

    /// Copy exactly `len` bytes from `source` into a new temp file and fsync it.
    pub fn fill(p: &BlobPaths, source: &mut dyn Read, len: u64, op: &str) -> BackendResult<Self> {
        let (tmp, mut file) = Self::create(p, op)?;
        let copied =
            io::copy(&mut Read::take(source, len), &mut file).map_err(|e| p.io_error(op, e))?;
        if copied != len {
            return Err(p.refused(op, short_source(copied, len)));
        }
        file.sync_all().map_err(|e| p.io_error(op, e))?;
        Ok(tmp)
    }

    /// Move the file to `target` (which it replaces); it is no longer ours to remove.
    pub fn rename_to(mut self, target: &Path) -> io::Result<()> {
        fs::rename(&self.path, target)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl BlobPaths {
    /// Rename `tmp` over the blob and record its fresh etag (call with the mutex
    /// held, after the checks); the caller then records the new block list (or none).
    ///
    /// The old block list record goes first: between the rename and the etag record
    /// the etag record still names the old version, and a list recorded for that
    /// version would be taken for the new content's (`verify` would report chunks
    /// that do not match). Killed after the removal, the blob keeps its version and
    /// etag and has no block list (the next delta sync downloads it whole); after the
    /// rename, the new content has no list either.
    pub fn install(&self, tmp: TempFile, op: &str) -> BackendResult<BlobStat> {
        self.forget_block_list(op)?;
        tmp.rename_to(&self.path)
            .map_err(|e| self.io_error(op, e))?;
        crate::crash::crash_point("renamed");
        let meta = self.metadata(op)?.ok_or_else(|| self.missing(op))?;
        self.record_new_etag(&meta, op)
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::local::LocalBackend;
    use crate::backend::{Backend, BackendErrorKind, Condition};
    use std::fs;

    #[test]
    fn failed_uploads_leave_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path()).unwrap();
        let err = b
            .upload("x.db", &mut &b"abc"[..], 10, &Condition::Create, None)
            .unwrap_err();
        assert_eq!(err.kind, BackendErrorKind::Permanent);
        b.upload("x.db", &mut &b"abc"[..], 3, &Condition::Create, None)
            .unwrap();
        let err = b
            .upload("x.db", &mut &b"abc"[..], 3, &Condition::Create, None)
            .unwrap_err();
        assert_eq!(err.kind, BackendErrorKind::AlreadyExists);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
