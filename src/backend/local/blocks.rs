//! The block capability of the local backend ([`Blocks`], for delta sync), modelled
//! on Azure's block blobs; the module header of `mod.rs` describes the design, and
//! `in_place.rs` the commit written into the blob under a SQLite journal.
//! `.mb-staged/<hex id>` holds staged blocks, `.mb-blocks` the committed list with
//! the etag of the version it belongs to.

use std::collections::HashMap;
use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::download::Base;
use super::journal::SharedLock;
use super::paths::{is_missing, BlobPaths};
use super::upload::TempFile;
use super::{require_condition, LocalBackend};
use crate::backend::checks::check_block_id;
use crate::backend::{
    hex, BackendErrorKind, BackendResult, BlobStat, BlockId, Blocks, Etag, LeaseId,
};
use crate::backend::{Block, RangeStaging, SourceRange, StagedFromRange, Terms};
use crate::sys::reflink;

/// The mode of the staging directories.
const DIR_MODE: u32 = 0o700;
/// The buffer of block copies.
const COPY_BUFFER: usize = 1 << 20;

impl Blocks for LocalBackend {
    fn block_list(&self, blob: &str) -> BackendResult<Option<(BlobStat, Vec<(BlockId, u64)>)>> {
        const OP: &str = "get block list";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), "local block list");
        if p.metadata(OP)?.is_none() {
            return Ok(None);
        }
        let Some(_lock) = p.lock(OP)? else {
            return Ok(None);
        };
        let Some(stat) = p.current_stat(OP)? else {
            return Ok(None);
        };
        let blocks = p.committed_blocks(&stat, OP)?;
        Ok(Some((stat, blocks)))
    }

    fn stage(&self, blob: &str, block: Block<'_>, lease: Option<&LeaseId>) -> BackendResult<()> {
        let Block { id, data } = block;
        const OP: &str = "stage block";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), len = data.len(), ?lease, "local stage block");
        check_block_id(id).map_err(|r| p.refused(OP, r))?;
        fs::create_dir_all(&p.parent).map_err(|e| p.io_error(OP, e))?;
        // Write outside the lock, synced: a commit after a crash must not find a
        // block whose name made it to disk but whose data did not.
        let tmp = TempFile::fill(&p, &mut &data[..], data.len() as u64, OP)?;
        self.put_staged(&p, tmp, id, lease, OP)
    }

    fn commit(&self, blob: &str, ids: &[BlockId], terms: Terms<'_>) -> BackendResult<BlobStat> {
        let Terms { condition, lease } = terms;
        const OP: &str = "commit block list";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), blocks = ids.len(), ?condition, ?lease, "local commit blocks");
        fs::create_dir_all(&p.parent).map_err(|e| p.io_error(OP, e))?;
        // Under the mutex: check, pin the current version (its open descriptor), and
        // find where each block comes from.
        let (base, plan) = {
            let _lock = p.lock(OP)?.ok_or_else(|| p.missing(OP))?;
            self.check_write_lease(&p, lease, OP)?;
            let base = p.open_current(true, OP)?;
            require_condition(&p, condition, base.as_ref().map(|b| &b.stat), OP)?;
            let plan = p.plan_commit(ids, base.as_ref(), OP)?;
            // A SQLite database with a few changed pages: in place, under its journal.
            if let Some(base) = &base {
                if let Some(stat) = p.commit_in_place(&plan, base, &self.written, OP)? {
                    p.clear_blocks(Some(&BlockListRecord::of(&stat, &plan)), OP);
                    p.sync_parent(OP)?;
                    return Ok(stat);
                }
            }
            (base, plan)
        };
        // Else, outside it: build the new blob.
        let built = p.build(&plan, base.as_ref(), &self.written, OP);
        // Under the mutex again: the same conditional rename as an upload. A build
        // that failed because a concurrent commit took the staged blocks reports the
        // condition that no longer holds.
        let _lock = p.lock(OP)?.ok_or_else(|| p.missing(OP))?;
        self.check_write_lease(&p, lease, OP)?;
        require_condition(&p, condition, p.current_stat(OP)?.as_ref(), OP)?;
        let tmp = built?;
        let stat = p.install(tmp, OP)?;
        crate::crash::crash_point("installed");
        p.clear_blocks(Some(&BlockListRecord::of(&stat, &plan)), OP);
        p.sync_parent(OP)?;
        Ok(stat)
    }

    fn read_range(&self, blob: &str, offset: u64, len: u64, etag: &Etag) -> BackendResult<Vec<u8>> {
        const OP: &str = "read range";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), offset, len, "local read range");
        let lock = p.lock(OP)?.ok_or_else(|| p.missing(OP))?;
        let base = p.open_current(false, OP)?.ok_or_else(|| p.missing(OP))?;
        // SQLite's SHARED lock keeps an in-place commit out until the read is done.
        let _shared = SharedLock::take(&p, &base.file, OP)?;
        drop(lock);
        p.read_at(&base, offset, len, etag, OP)
    }

    fn range_staging(&self) -> RangeStaging {
        RangeStaging::Supported
    }

    /// A copy of the range from the blob file into a staged block
    /// (`stage_range.rs`).
    fn stage_from_range(
        &self,
        blob: &str,
        id: &[u8],
        source: SourceRange<'_>,
        lease: Option<&LeaseId>,
    ) -> BackendResult<StagedFromRange> {
        self.stage_range_copy(blob, id, source, lease)?;
        Ok(StagedFromRange::Staged)
    }
}

impl LocalBackend {
    /// Make the synced temp file `tmp` staged block `id`, under the blob's mutex
    /// and `lease`.
    pub(super) fn put_staged(
        &self,
        p: &BlobPaths,
        tmp: TempFile,
        id: &[u8],
        lease: Option<&LeaseId>,
        op: &str,
    ) -> BackendResult<()> {
        let _lock = p.lock(op)?.ok_or_else(|| p.missing(op))?;
        self.check_write_lease(p, lease, op)?;
        match DirBuilder::new().mode(DIR_MODE).create(p.staged_dir()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(p.io_error(op, e)),
        }
        tmp.rename_to(&p.staged_block(id))
            .map_err(|e| p.io_error(op, e))
    }
}

/// What `.mb-blocks` holds: the committed block list (hex id, size) of the blob
/// version `etag`.
#[derive(Serialize, Deserialize)]
pub(super) struct BlockListRecord {
    pub(super) etag: String,
    pub(super) blocks: Vec<(String, u64)>,
}

impl BlockListRecord {
    /// The block list of `plan`, committed as version `stat`.
    fn of(stat: &BlobStat, plan: &[PlannedBlock]) -> Self {
        BlockListRecord {
            etag: stat.etag.0.clone(),
            blocks: plan.iter().map(|b| (hex(&b.id), b.size)).collect(),
        }
    }
}

/// One block of a commit: where its bytes come from and where they go.
pub(super) struct PlannedBlock {
    pub id: BlockId,
    pub size: u64,
    /// Offset in the new blob.
    pub offset: u64,
    pub source: Source,
}

pub(super) enum Source {
    /// A staged block file.
    Staged(PathBuf),
    /// A block of the current blob, at this offset.
    Committed(u64),
}

impl BlobPaths {
    /// The committed block list of version `stat` (call with the mutex held): the
    /// recorded one when it belongs to that version, else empty.
    pub fn committed_blocks(
        &self,
        stat: &BlobStat,
        op: &str,
    ) -> BackendResult<Vec<(BlockId, u64)>> {
        let Some(record) = self.read_json::<BlockListRecord>(&self.block_list_record(), op)? else {
            return Ok(Vec::new());
        };
        if record.etag != stat.etag.0 {
            return Ok(Vec::new());
        }
        let blocks: Option<Vec<(BlockId, u64)>> = record
            .blocks
            .iter()
            .map(|(id, size)| unhex(id).map(|id| (id, *size)))
            .collect();
        match blocks {
            Some(blocks) if blocks.iter().map(|(_, s)| s).sum::<u64>() == stat.size => Ok(blocks),
            _ => {
                tracing::warn!(blob = %self.path.display(), "ignoring a block list that does not fit the blob");
                Ok(Vec::new())
            }
        }
    }

    /// Where each block of `ids` comes from: the staged block of that id, else the
    /// committed one (call with the mutex held).
    fn plan_commit(
        &self,
        ids: &[BlockId],
        base: Option<&Base>,
        op: &str,
    ) -> BackendResult<Vec<PlannedBlock>> {
        let mut committed: HashMap<&[u8], (u64, u64)> = HashMap::new();
        if let Some(base) = base {
            let mut offset = 0;
            for (id, size) in &base.blocks {
                committed.entry(id.as_slice()).or_insert((offset, *size));
                offset += size;
            }
        }
        // One listing of the staging directory rather than a lookup per id: a commit
        // names every block of the blob, and stages only a few.
        let staged = self.staged_sizes(op)?;
        let mut plan = Vec::with_capacity(ids.len());
        let mut offset = 0;
        for id in ids {
            let (size, source) = match staged.get(id) {
                Some(&size) => (size, Source::Staged(self.staged_block(id))),
                None => match committed.get(id.as_slice()) {
                    Some(&(at, size)) => (size, Source::Committed(at)),
                    None => {
                        return Err(self.error(
                            BackendErrorKind::Permanent,
                            op,
                            &format!(
                                "block {} is neither staged nor committed (invalid block list)",
                                hex(id)
                            ),
                        ))
                    }
                },
            };
            plan.push(PlannedBlock {
                id: id.clone(),
                size,
                offset,
                source,
            });
            offset += size;
        }
        Ok(plan)
    }

    /// Build the blob of `plan` in a synced temp file (without the mutex): a clone of
    /// `base` where the file system can, with only the blocks not already in place
    /// written over it; else every block copied.
    fn build(
        &self,
        plan: &[PlannedBlock],
        base: Option<&Base>,
        written: &AtomicU64,
        op: &str,
    ) -> BackendResult<TempFile> {
        let (tmp, file) = TempFile::create(self, op)?;
        let cloned = base.is_some_and(|b| reflink(&file, &b.file));
        let mut buffer = Vec::new();
        for block in plan {
            match &block.source {
                Source::Committed(at) if cloned && *at == block.offset => continue,
                Source::Committed(at) => {
                    let base = base.expect("a committed block has a base");
                    copy_range(
                        &base.file,
                        *at,
                        &file,
                        block.offset,
                        block.size,
                        &mut buffer,
                    )
                    .map_err(|e| self.io_error(op, e))?;
                }
                Source::Staged(path) => {
                    let staged = self.open_staged(block, path, op)?;
                    copy_range(&staged, 0, &file, block.offset, block.size, &mut buffer)
                        .map_err(|e| self.io_error(op, e))?;
                }
            }
            written.fetch_add(block.size, Ordering::Relaxed);
        }
        let len = plan.last().map_or(0, |b| b.offset + b.size);
        file.set_len(len).map_err(|e| self.io_error(op, e))?;
        file.sync_all().map_err(|e| self.io_error(op, e))?;
        tracing::debug!(blob = %self.path.display(), cloned, len, "local commit built");
        Ok(tmp)
    }

    /// The size of each staged block, by id (its file name is the hex id; other
    /// names, such as a temp file, are not blocks).
    fn staged_sizes(&self, op: &str) -> BackendResult<HashMap<BlockId, u64>> {
        let entries = match fs::read_dir(self.staged_dir()) {
            Ok(entries) => entries,
            Err(e) if is_missing(&e) => return Ok(HashMap::new()),
            Err(e) => return Err(self.io_error(op, e)),
        };
        let mut sizes = HashMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.io_error(op, e))?;
            let Some(id) = entry.file_name().to_str().and_then(unhex) else {
                continue;
            };
            let meta = entry.metadata().map_err(|e| self.io_error(op, e))?;
            sizes.insert(id, meta.len());
        }
        Ok(sizes)
    }

    /// The staged block file of `block`, checked to still have the planned size.
    pub(super) fn open_staged(
        &self,
        block: &PlannedBlock,
        path: &Path,
        op: &str,
    ) -> BackendResult<File> {
        let staged = File::open(path).map_err(|e| self.io_error(op, e))?;
        let len = staged.metadata().map_err(|e| self.io_error(op, e))?.len();
        if len != block.size {
            return Err(self.error(
                BackendErrorKind::Transient,
                op,
                &format!("staged block {} changed during the commit", hex(&block.id)),
            ));
        }
        Ok(staged)
    }

    /// Remove the block list record before the blob's content is replaced (see
    /// [`BlobPaths::install`]); a failure fails the write before anything changed.
    pub fn forget_block_list(&self, op: &str) -> BackendResult<()> {
        match fs::remove_file(self.block_list_record()) {
            Err(e) if !is_missing(&e) => Err(self.io_error(op, e)),
            _ => Ok(()),
        }
    }

    /// After a write landed: record its block list (or none), discard staged blocks.
    /// Failures are only logged: the write has landed, and a list that is missing or
    /// belongs to another etag reads as empty.
    pub fn clear_blocks(&self, list: Option<&BlockListRecord>, op: &str) {
        let written = match list {
            Some(record) => self.write_json(&self.block_list_record(), record, false),
            None => match fs::remove_file(self.block_list_record()) {
                Err(e) if is_missing(&e) => Ok(()),
                other => other,
            },
        };
        let cleared = match fs::remove_dir_all(self.staged_dir()) {
            Err(e) if is_missing(&e) => Ok(()),
            other => other,
        };
        for (what, result) in [("block list", written), ("staged blocks", cleared)] {
            if let Err(e) = result {
                tracing::warn!(blob = %self.path.display(), op, error = %e, "could not update the {what}");
            }
        }
    }
}

/// Copy `len` bytes at `from` of `src` to `to` of `dst`.
pub(super) fn copy_range(
    src: &File,
    from: u64,
    dst: &File,
    to: u64,
    len: u64,
    buffer: &mut Vec<u8>,
) -> io::Result<()> {
    buffer.resize(COPY_BUFFER, 0);
    let mut done = 0;
    while done < len {
        let n = (len - done).min(COPY_BUFFER as u64) as usize;
        src.read_exact_at(&mut buffer[..n], from + done)?;
        dst.write_all_at(&buffer[..n], to + done)?;
        done += n as u64;
    }
    Ok(())
}

pub(super) fn unhex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::{open_private, IfExists};

    #[test]
    fn hex_round_trips() {
        let id = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(unhex(&hex(&id)), Some(id));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn reflink_clones_where_supported() {
        // On ext4 or tmpfs this only checks the fallback answer; run with TMPDIR on
        // btrfs or xfs to exercise the clone.
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        fs::write(&src_path, vec![7u8; 200_000]).unwrap();
        let src = File::open(&src_path).unwrap();
        let dest = open_private(&dir.path().join("dest"), IfExists::Fail).unwrap();
        let cloned = reflink(&dest, &src);
        eprintln!("reflink supported here: {cloned}");
        let len = dest.metadata().unwrap().len();
        if cloned {
            assert_eq!(
                fs::read(dir.path().join("dest")).unwrap(),
                vec![7u8; 200_000]
            );
        } else {
            assert_eq!(len, 0, "a failed clone leaves the file empty");
        }
    }
}
