//! Reads of the local backend. A read pins one version: under the mutex it opens
//! the blob file and takes its etag ([`BlobPaths::open_current`]); the open
//! descriptor keeps that version readable after the mutex is released, even when an
//! upload renames a new file over the blob, so the copy itself needs no lock.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use super::paths::{is_missing, BlobPaths};
use crate::backend::checks::{check_range, check_version};
use crate::backend::{BackendErrorKind, BackendResult, BlobStat, BlockId, Etag};

/// The current blob version, pinned by an open descriptor.
pub(super) struct Base {
    pub file: File,
    pub stat: BlobStat,
    /// Its committed block list (empty when unknown, or not asked for).
    pub blocks: Vec<(BlockId, u64)>,
}

impl BlobPaths {
    /// Open the blob's current version (call with the mutex held), with its block
    /// list when `with_blocks`; `None` when the blob does not exist.
    pub fn open_current(&self, with_blocks: bool, op: &str) -> BackendResult<Option<Base>> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(self.io_error(op, e)),
        };
        let meta = file.metadata().map_err(|e| self.io_error(op, e))?;
        self.require_file(&meta, op)?;
        let stat = self.stat_of(&meta, op)?;
        let blocks = if with_blocks {
            self.committed_blocks(&stat, op)?
        } else {
            Vec::new()
        };
        Ok(Some(Base { file, stat, blocks }))
    }

    /// Copy the whole pinned version into `sink`.
    pub fn copy_all(&self, base: &Base, sink: &mut dyn Write, op: &str) -> BackendResult<()> {
        let size = base.stat.size;
        // Read in 1 MiB pieces (io::copy alone reads 8 KiB at a time).
        let mut source = io::BufReader::with_capacity(1 << 20, (&base.file).take(size));
        let copied = io::copy(&mut source, sink).map_err(|e| self.io_error(op, e))?;
        if copied != size {
            return Err(self.error(
                BackendErrorKind::Transient,
                op,
                &format!(
                    "the blob shrank to {copied} of {size} bytes while being read (foreign write?)"
                ),
            ));
        }
        Ok(())
    }

    /// `len` bytes at `offset` of the pinned version, which must be `etag`.
    pub fn read_at(
        &self,
        base: &Base,
        offset: u64,
        len: u64,
        etag: &Etag,
        op: &str,
    ) -> BackendResult<Vec<u8>> {
        check_version(etag, &base.stat.etag).map_err(|r| self.refused(op, r))?;
        let n = check_range(offset, len, base.stat.size).map_err(|r| self.refused(op, r))?;
        let mut data = vec![0u8; n];
        match base.file.read_exact_at(&mut data, offset) {
            Ok(()) => Ok(data),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.error(
                BackendErrorKind::Transient,
                op,
                "the blob shrank while being read (foreign write?)",
            )),
            Err(e) => Err(self.io_error(op, e)),
        }
    }
}
