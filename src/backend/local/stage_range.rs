//! [`Blocks::stage_from_range`](crate::backend::Blocks::stage_from_range) on the
//! local backend: a copy of the range of the blob file into a staged block, the file
//! form of Azure's Put Block From URL.
//!
//! The source is pinned as `read_range` pins it: under the blob's mutex the current
//! version is opened and SQLite's SHARED lock taken on it (an in-place commit waits
//! for it), then the mutex is let go and the etag and range checked against the
//! version opened. The copy goes into a synced temp file outside the mutex, and is
//! renamed into `.mb-staged/` under the mutex and the lease, as `stage` does.

use super::blocks::copy_range;
use super::journal::SharedLock;
use super::upload::TempFile;
use super::LocalBackend;
use crate::backend::checks::{check_block_id, check_range, check_version};
use crate::backend::{BackendResult, LeaseId, SourceRange};

impl LocalBackend {
    /// Stage block `id` of `blob` as a copy of `source`.
    pub(super) fn stage_range_copy(
        &self,
        blob: &str,
        id: &[u8],
        source: SourceRange<'_>,
        lease: Option<&LeaseId>,
    ) -> BackendResult<()> {
        const OP: &str = "stage block from range";
        let p = self.paths(blob)?;
        tracing::debug!(
            blob = %p.path.display(),
            offset = source.offset,
            len = source.len,
            ?lease,
            "local stage block from range"
        );
        check_block_id(id).map_err(|r| p.refused(OP, r))?;
        let lock = p.lock(OP)?.ok_or_else(|| p.missing(OP))?;
        let base = p.open_current(false, OP)?.ok_or_else(|| p.missing(OP))?;
        let _shared = SharedLock::take(&p, &base.file, OP)?;
        drop(lock);
        check_version(source.etag, &base.stat.etag).map_err(|r| p.refused(OP, r))?;
        let len = check_range(source.offset, source.len, base.stat.size)
            .map_err(|r| p.refused(OP, r))? as u64;
        let (tmp, file) = TempFile::create(&p, OP)?;
        copy_range(&base.file, source.offset, &file, 0, len, &mut Vec::new())
            .map_err(|e| p.io_error(OP, e))?;
        file.sync_all().map_err(|e| p.io_error(OP, e))?;
        drop(file);
        self.put_staged(&p, tmp, id, lease, OP)
    }
}
