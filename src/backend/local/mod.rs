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
//!
//! **Blocks** ([`Blocks`], for delta sync) follow Azure's block blobs. A commit builds
//! the new blob in a temp file outside the mutex: it first asks the file system for a
//! reflink clone of the current blob (`FICLONE`: instant on btrfs and xfs), so only
//! the blocks that changed or moved are written; where cloning is not supported (ext4,
//! tmpfs) it copies the kept blocks from the current blob instead. Then, under the
//! mutex, the same conditional rename and etag file as an upload, the new block list
//! file, and the staging directory is cleared. A commit takes for each id the staged
//! block when there is one, else the committed one. A block list whose etag is not
//! the blob's current one (a whole upload, a foreign `cp`, a crash before the list
//! was written) is reported as empty, so the caller falls back to a whole download.
//!
//! The fingerprint uses inode, size and nanosecond mtime/ctime. A foreign in-place
//! write of the same size within one file-system timestamp tick of our own upload
//! can therefore go unnoticed on kernels without fine-grained timestamps; foreign
//! writers are an operator's escape hatch, not a supported concurrent writer.
//!
//! `flock` is only as good as the file system's support for it: fine on local
//! disks, on NFS only with a working lock manager.

use crate::sys::{flock_exclusive, hostname, process_exists, reflink};
use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{
    validate_blob_name, Backend, BackendError, BackendErrorKind, BackendResult, BlobStat, BlockId,
    Blocks, Condition, Etag, Lease, LeaseId, BLOCK_ID_LEN,
};

/// The mode of every file we create: the remote may hold private data.
const FILE_MODE: u32 = 0o600;
/// The mode of the staging directories.
const DIR_MODE: u32 = 0o700;
/// The buffer of block copies.
const COPY_BUFFER: usize = 1 << 20;

/// A directory used as the remote store.
#[derive(Debug)]
pub struct LocalBackend {
    dir: PathBuf,
    /// Who we are, for lease files (and to recognize leases of dead local processes).
    host: String,
    boot_id: String,
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
            boot_id: boot_id(),
        })
    }

    /// The files of `blob`, after checking its name cannot escape the directory.
    fn paths(&self, blob: &str) -> BackendResult<BlobPaths> {
        validate_blob_name(blob)?;
        let path = self.dir.join(blob);
        let parent = path.parent().unwrap_or(&self.dir).to_path_buf();
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(BlobPaths { path, parent, file })
    }

    /// The lease currently in force on the blob: present, unexpired, and not held by
    /// a process we can prove is dead.
    fn live_lease(&self, p: &BlobPaths, op: &str) -> BackendResult<Option<LeaseRecord>> {
        Ok(p.read_lease(op)?
            .filter(|l| !l.is_expired() && !l.owner_is_dead(&self.host, &self.boot_id)))
    }

    /// Whether a write carrying `lease` may proceed given the lease state on disk.
    fn check_write_lease(
        &self,
        p: &BlobPaths,
        lease: Option<&LeaseId>,
        op: &str,
    ) -> BackendResult<()> {
        match (lease, self.live_lease(p, op)?) {
            (None, None) => Ok(()),
            (None, Some(held)) => Err(p.error(
                BackendErrorKind::LeaseHeld,
                op,
                &format!("the blob is leased by {}", held.owner()),
            )),
            (Some(ours), Some(held)) if held.token == ours.0 => Ok(()),
            (Some(_), _) => Err(p.error(
                BackendErrorKind::LeaseLost,
                op,
                "our lease expired, was released, broken or taken over",
            )),
        }
    }
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
        let file = File::open(&p.path).map_err(|e| p.io_error(OP, e))?;
        let meta = file.metadata().map_err(|e| p.io_error(OP, e))?;
        p.require_file(&meta, OP)?;
        let stat = p.stat_of(&meta, OP)?;
        // The open descriptor keeps this version readable even if an upload renames
        // a new file over the blob now, so the copy needs no lock.
        drop(lock);
        let copied = io::copy(&mut file.take(stat.size), sink).map_err(|e| p.io_error(OP, e))?;
        if copied != stat.size {
            return Err(p.error(
                BackendErrorKind::Transient,
                OP,
                &format!(
                    "the blob shrank to {copied} of {} bytes while being read (foreign write?)",
                    stat.size
                ),
            ));
        }
        Ok(stat)
    }

    fn upload(
        &self,
        blob: &str,
        source: &mut dyn Read,
        len: u64,
        condition: &Condition,
        lease: Option<&LeaseId>,
    ) -> BackendResult<BlobStat> {
        const OP: &str = "upload";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), len, ?condition, ?lease, "local upload");
        fs::create_dir_all(&p.parent).map_err(|e| p.io_error(OP, e))?;
        // Stream outside the lock: the data may be large and the source slow.
        let tmp = TempFile::fill(&p, source, len, OP)?;
        let _lock = p.lock(OP)?.ok_or_else(|| p.missing(OP))?;
        self.check_write_lease(&p, lease, OP)?;
        check_condition(&p, condition, p.current_stat(OP)?.as_ref(), OP)?;
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
            return Err(p.error(
                BackendErrorKind::LeaseHeld,
                OP,
                &format!("the blob is leased by {}", held.owner()),
            ));
        }
        let record = LeaseRecord {
            token: random_token(),
            pid: std::process::id(),
            host: self.host.clone(),
            boot_id: self.boot_id.clone(),
            expires_unix_ms: expiry_after(duration),
        };
        p.write_lease(&record, OP)?;
        Ok(Lease {
            id: LeaseId(record.token),
            stat,
        })
    }

    fn renew_lease(&self, blob: &str, lease: &LeaseId, duration: Duration) -> BackendResult<()> {
        const OP: &str = "renew lease";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), ?lease, ?duration, "local renew lease");
        let lost = || {
            p.error(
                BackendErrorKind::LeaseLost,
                OP,
                "our lease expired, was released, broken or taken over",
            )
        };
        let _lock = p.lock(OP)?.ok_or_else(lost)?;
        if p.metadata(OP)?.is_none() {
            return Err(lost());
        }
        match p.read_lease(OP)? {
            Some(mut held) if held.token == lease.0 && !held.is_expired() => {
                held.expires_unix_ms = expiry_after(duration);
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

    fn break_lease(&self, blob: &str) -> BackendResult<()> {
        const OP: &str = "break lease";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), "local break lease");
        let Some(_lock) = p.lock(OP)? else {
            return Ok(());
        };
        p.remove_lease(OP)
    }

    fn blocks(&self) -> Option<&dyn Blocks> {
        Some(self)
    }
}

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

    fn stage_block(
        &self,
        blob: &str,
        id: &[u8],
        data: Vec<u8>,
        lease: Option<&LeaseId>,
    ) -> BackendResult<()> {
        const OP: &str = "stage block";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), len = data.len(), ?lease, "local stage block");
        check_block_id(&p, id, OP)?;
        fs::create_dir_all(&p.parent).map_err(|e| p.io_error(OP, e))?;
        // Write outside the lock, synced: a commit after a crash must not find a
        // block whose name made it to disk but whose data did not.
        let tmp = TempFile::fill(&p, &mut &data[..], data.len() as u64, OP)?;
        let _lock = p.lock(OP)?.ok_or_else(|| p.missing(OP))?;
        self.check_write_lease(&p, lease, OP)?;
        match DirBuilder::new().mode(DIR_MODE).create(p.staged_dir()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(p.io_error(OP, e)),
        }
        tmp.rename_to(&p.staged_block(id))
            .map_err(|e| p.io_error(OP, e))
    }

    fn commit_blocks(
        &self,
        blob: &str,
        ids: &[BlockId],
        condition: &Condition,
        lease: Option<&LeaseId>,
    ) -> BackendResult<BlobStat> {
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
            check_condition(&p, condition, base.as_ref().map(|b| &b.stat), OP)?;
            let plan = p.plan_commit(ids, base.as_ref(), OP)?;
            (base, plan)
        };
        // Outside it: build the new blob.
        let built = p.build(&plan, base.as_ref(), OP);
        // Under the mutex again: the same conditional rename as an upload. A build
        // that failed because a concurrent commit took the staged blocks reports the
        // condition that no longer holds.
        let _lock = p.lock(OP)?.ok_or_else(|| p.missing(OP))?;
        self.check_write_lease(&p, lease, OP)?;
        check_condition(&p, condition, p.current_stat(OP)?.as_ref(), OP)?;
        let tmp = built?;
        let stat = p.install(tmp, OP)?;
        let record = BlockListRecord {
            etag: stat.etag.0.clone(),
            blocks: plan.iter().map(|b| (hex(&b.id), b.size)).collect(),
        };
        p.clear_blocks(Some(&record), OP);
        p.sync_parent(OP)?;
        Ok(stat)
    }

    fn read_range(&self, blob: &str, offset: u64, len: u64, etag: &Etag) -> BackendResult<Vec<u8>> {
        const OP: &str = "read range";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), offset, len, "local read range");
        let lock = p.lock(OP)?.ok_or_else(|| p.missing(OP))?;
        let base = p.open_current(false, OP)?.ok_or_else(|| p.missing(OP))?;
        // The open descriptor keeps this version readable: the read needs no lock.
        drop(lock);
        if base.stat.etag != *etag {
            return Err(p.error(
                BackendErrorKind::ConditionFailed,
                OP,
                &format!("expected etag {etag} but the blob is at {}", base.stat.etag),
            ));
        }
        let size = base.stat.size;
        let capacity = match offset.checked_add(len) {
            Some(end) if end <= size => usize::try_from(len).map_err(|_| {
                p.error(
                    BackendErrorKind::Permanent,
                    OP,
                    &format!("{len} bytes do not fit in memory"),
                )
            })?,
            _ => {
                return Err(p.error(
                    BackendErrorKind::Invalid,
                    OP,
                    &format!(
                        "{len} bytes at {offset} lie beyond the end of the blob ({size} bytes)"
                    ),
                ))
            }
        };
        let mut data = vec![0u8; capacity];
        match base.file.read_exact_at(&mut data, offset) {
            Ok(()) => Ok(data),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(p.error(
                BackendErrorKind::Transient,
                OP,
                "the blob shrank while being read (foreign write?)",
            )),
            Err(e) => Err(p.io_error(OP, e)),
        }
    }
}

/// Fail unless `condition` holds for the blob's current version.
fn check_condition(
    p: &BlobPaths,
    condition: &Condition,
    current: Option<&BlobStat>,
    op: &str,
) -> BackendResult<()> {
    match (condition, current) {
        (Condition::Create, None) => Ok(()),
        (Condition::Create, Some(cur)) => Err(p.error(
            BackendErrorKind::AlreadyExists,
            op,
            &format!("the blob already exists (etag {})", cur.etag),
        )),
        (Condition::Match(_), None) => Err(p.missing(op)),
        (Condition::Match(want), Some(cur)) if *want == cur.etag => Ok(()),
        (Condition::Match(want), Some(cur)) => Err(p.error(
            BackendErrorKind::ConditionFailed,
            op,
            &format!("expected etag {want} but the blob is at {}", cur.etag),
        )),
    }
}

/// Every id managedblob stages has [`BLOCK_ID_LEN`] bytes (as Azure requires one
/// length per blob); the staging file is named by its hex form.
fn check_block_id(p: &BlobPaths, id: &[u8], op: &str) -> BackendResult<()> {
    if id.len() == BLOCK_ID_LEN {
        Ok(())
    } else {
        Err(p.error(
            BackendErrorKind::Invalid,
            op,
            &format!(
                "a block id must have {BLOCK_ID_LEN} bytes, not {}",
                id.len()
            ),
        ))
    }
}

/// The current blob version, pinned by an open descriptor.
struct Base {
    file: File,
    stat: BlobStat,
    /// Its committed block list (empty when unknown, or not asked for).
    blocks: Vec<(BlockId, u64)>,
}

/// One block of a commit: where its bytes come from and where they go.
struct PlannedBlock {
    id: BlockId,
    size: u64,
    /// Offset in the new blob.
    offset: u64,
    source: Source,
}

enum Source {
    /// A staged block file.
    Staged(PathBuf),
    /// A block of the current blob, at this offset.
    Committed(u64),
}

impl BlobPaths {
    fn staged_dir(&self) -> PathBuf {
        self.side("staged")
    }

    fn staged_block(&self, id: &[u8]) -> PathBuf {
        self.staged_dir().join(hex(id))
    }

    /// Open the blob's current version (call with the mutex held), with its block
    /// list when `with_blocks`; `None` when the blob does not exist.
    fn open_current(&self, with_blocks: bool, op: &str) -> BackendResult<Option<Base>> {
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

    /// The committed block list of version `stat` (call with the mutex held): the
    /// recorded one when it belongs to that version, else empty.
    fn committed_blocks(&self, stat: &BlobStat, op: &str) -> BackendResult<Vec<(BlockId, u64)>> {
        let Some(record) = self.read_json::<BlockListRecord>(&self.side("blocks"), op)? else {
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
        let mut committed: std::collections::HashMap<&[u8], (u64, u64)> = Default::default();
        if let Some(base) = base {
            let mut offset = 0;
            for (id, size) in &base.blocks {
                committed.entry(id.as_slice()).or_insert((offset, *size));
                offset += size;
            }
        }
        let mut plan = Vec::with_capacity(ids.len());
        let mut offset = 0;
        for id in ids {
            let staged = self.staged_block(id);
            let (size, source) = match fs::metadata(&staged) {
                Ok(meta) => (meta.len(), Source::Staged(staged)),
                Err(e) if !is_missing(&e) => return Err(self.io_error(op, e)),
                _ => match committed.get(id.as_slice()) {
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
        op: &str,
    ) -> BackendResult<TempFile> {
        let (tmp, file) = TempFile::create(self, op)?;
        let cloned = base.is_some_and(|b| reflink(&file, &b.file));
        let mut buffer = Vec::new();
        for block in plan {
            match &block.source {
                Source::Committed(at) if cloned && *at == block.offset => {}
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
                    let staged = File::open(path).map_err(|e| self.io_error(op, e))?;
                    let len = staged.metadata().map_err(|e| self.io_error(op, e))?.len();
                    if len != block.size {
                        return Err(self.error(
                            BackendErrorKind::Transient,
                            op,
                            &format!("staged block {} changed during the commit", hex(&block.id)),
                        ));
                    }
                    copy_range(&staged, 0, &file, block.offset, block.size, &mut buffer)
                        .map_err(|e| self.io_error(op, e))?;
                }
            }
        }
        let len = plan.last().map_or(0, |b| b.offset + b.size);
        file.set_len(len).map_err(|e| self.io_error(op, e))?;
        file.sync_all().map_err(|e| self.io_error(op, e))?;
        tracing::debug!(blob = %self.path.display(), cloned, len, "local commit built");
        Ok(tmp)
    }

    /// Rename `tmp` over the blob and record its fresh etag (call with the mutex
    /// held, after the checks).
    fn install(&self, tmp: TempFile, op: &str) -> BackendResult<BlobStat> {
        tmp.rename_to(&self.path)
            .map_err(|e| self.io_error(op, e))?;
        let meta = self.metadata(op)?.ok_or_else(|| self.missing(op))?;
        let token = random_token();
        let record = EtagRecord {
            token: token.clone(),
            fingerprint: fingerprint(&meta),
        };
        write_atomically(&self.side("etag"), &to_json(&record))
            .map_err(|e| self.io_error(op, e))?;
        Ok(BlobStat {
            etag: Etag(format!("mb-{token}")),
            size: meta.len(),
        })
    }

    /// After a write landed: record its block list (or none), discard staged blocks.
    /// Failures are only logged: the write has landed, and a list that is missing or
    /// belongs to another etag reads as empty.
    fn clear_blocks(&self, list: Option<&BlockListRecord>, op: &str) {
        let written = match list {
            Some(record) => write_atomically(&self.side("blocks"), &to_json(record)),
            None => match fs::remove_file(self.side("blocks")) {
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
fn copy_range(
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

/// The files that belong to one blob.
struct BlobPaths {
    /// `<dir>/<blob>`.
    path: PathBuf,
    /// The directory holding the blob and its hidden companions.
    parent: PathBuf,
    /// The blob's last path segment.
    file: String,
}

impl BlobPaths {
    /// A companion file: `<parent>/.<file>.mb-<suffix>`.
    fn side(&self, suffix: &str) -> PathBuf {
        self.parent.join(format!(".{}.mb-{suffix}", self.file))
    }

    fn error(&self, kind: BackendErrorKind, op: &str, why: &str) -> BackendError {
        BackendError::new(
            kind,
            format!("local remote {}: {op} failed: {why}", self.path.display()),
        )
    }

    fn missing(&self, op: &str) -> BackendError {
        self.error(BackendErrorKind::NotFound, op, "the blob does not exist")
    }

    /// Map an io error to a kind: the local disk is not flaky, so only interrupted
    /// or would-block calls are worth retrying.
    fn io_error(&self, op: &str, e: io::Error) -> BackendError {
        let (kind, why) = match e.raw_os_error() {
            Some(libc::ENOENT) => (BackendErrorKind::NotFound, e.to_string()),
            Some(libc::EACCES | libc::EPERM) => (BackendErrorKind::Denied, e.to_string()),
            Some(libc::ENOSPC | libc::EDQUOT) => {
                (BackendErrorKind::Permanent, format!("no space left ({e})"))
            }
            Some(libc::EINTR | libc::EAGAIN) => (BackendErrorKind::Transient, e.to_string()),
            _ => (BackendErrorKind::Permanent, e.to_string()),
        };
        self.error(kind, op, &why)
    }

    /// Take the blob's cross-process mutex; `None` when the blob's directory does not
    /// exist (so neither does the blob, and there is nothing to lock).
    fn lock(&self, op: &str) -> BackendResult<Option<FileLock>> {
        match FileLock::acquire(&self.side("mutex")) {
            Ok(lock) => Ok(Some(lock)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(self.io_error(op, e)),
        }
    }

    /// The blob file's metadata, `None` when it does not exist.
    fn metadata(&self, op: &str) -> BackendResult<Option<Metadata>> {
        match fs::metadata(&self.path) {
            Ok(meta) => self.require_file(&meta, op).map(|()| Some(meta)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(self.io_error(op, e)),
        }
    }

    fn require_file(&self, meta: &Metadata, op: &str) -> BackendResult<()> {
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

    /// The version of the blob now (call with the mutex held).
    fn current_stat(&self, op: &str) -> BackendResult<Option<BlobStat>> {
        self.metadata(op)?
            .map(|meta| self.stat_of(&meta, op))
            .transpose()
    }

    /// The version of the blob file described by `meta` (call with the mutex held,
    /// so the etag file and the blob file belong to the same upload).
    fn stat_of(&self, meta: &Metadata, op: &str) -> BackendResult<BlobStat> {
        let print = fingerprint(meta);
        let recorded: Option<EtagRecord> = self.read_json(&self.side("etag"), op)?;
        let etag = match recorded {
            Some(r) if r.fingerprint == print => format!("mb-{}", r.token),
            _ => format!("fs-{print}"),
        };
        Ok(BlobStat {
            etag: Etag(etag),
            size: meta.len(),
        })
    }

    /// Read a small JSON companion file; missing or unreadable-as-JSON counts as absent
    /// (we only ever replace these files atomically, so garbage is somebody else's).
    fn read_json<T: for<'de> Deserialize<'de>>(
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

    fn read_lease(&self, op: &str) -> BackendResult<Option<LeaseRecord>> {
        self.read_json(&self.side("lease"), op)
    }

    fn write_lease(&self, record: &LeaseRecord, op: &str) -> BackendResult<()> {
        write_atomically(&self.side("lease"), &to_json(record))
            .map_err(|e| self.io_error(op, e))?;
        self.sync_parent(op)
    }

    fn remove_lease(&self, op: &str) -> BackendResult<()> {
        match fs::remove_file(self.side("lease")) {
            Ok(()) => self.sync_parent(op),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(self.io_error(op, e)),
        }
    }

    /// Make renames in the blob's directory durable.
    fn sync_parent(&self, op: &str) -> BackendResult<()> {
        File::open(&self.parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io_error(op, e))
    }
}

/// An upload's temporary file, removed on drop unless renamed over the blob, so a
/// failed upload never leaves anything behind.
struct TempFile {
    path: PathBuf,
    done: bool,
}

impl TempFile {
    /// A new, empty temp file beside the blob.
    fn create(p: &BlobPaths, op: &str) -> BackendResult<(Self, File)> {
        let path = p.side(&format!("tmp-{}", random_token()));
        let file = new_file(&path, true).map_err(|e| p.io_error(op, e))?;
        Ok((TempFile { path, done: false }, file))
    }

    /// Copy exactly `len` bytes from `source` into a new temp file and fsync it.
    fn fill(p: &BlobPaths, source: &mut dyn Read, len: u64, op: &str) -> BackendResult<Self> {
        let (tmp, mut file) = Self::create(p, op)?;
        let copied =
            io::copy(&mut Read::take(source, len), &mut file).map_err(|e| p.io_error(op, e))?;
        if copied != len {
            return Err(p.error(
                BackendErrorKind::Permanent,
                op,
                &format!("the source ended after {copied} of {len} bytes"),
            ));
        }
        file.sync_all().map_err(|e| p.io_error(op, e))?;
        Ok(tmp)
    }

    fn rename_to(mut self, target: &Path) -> io::Result<()> {
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

/// An exclusive `flock` on a mutex file, released when the file is closed on drop.
struct FileLock {
    _file: File,
}

impl FileLock {
    fn acquire(path: &Path) -> io::Result<Self> {
        let file = new_file(path, false)?;
        flock_exclusive(&file)?;
        Ok(FileLock { _file: file })
    }
}

/// Open (or create) a file with mode 0600; `fresh` requires it not to exist yet.
fn new_file(path: &Path, fresh: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).mode(FILE_MODE);
    if fresh {
        options.create_new(true);
    } else {
        options.create(true).truncate(false);
    }
    options.open(path)
}

/// Replace `path` with `bytes` so readers see the old or the new content, never a
/// mix. Callers hold the blob's mutex, so one fixed temp name suffices.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let _ = fs::remove_file(&tmp);
    let mut file = new_file(&tmp, true)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

fn is_missing(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain records always serialize")
}

/// What `.mb-blocks` holds: the committed block list (hex id, size) of the blob
/// version `etag`.
#[derive(Serialize, Deserialize)]
struct BlockListRecord {
    etag: String,
    blocks: Vec<(String, u64)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What `.mb-etag` holds: our token for the blob file with this fingerprint.
#[derive(Serialize, Deserialize)]
struct EtagRecord {
    token: String,
    fingerprint: String,
}

/// Identifies one state of the blob file well enough to notice a foreign write:
/// a `cp` over it changes mtime/ctime (and a rename also the inode).
fn fingerprint(meta: &Metadata) -> String {
    format!(
        "{:x}-{:x}-{:x}-{:x}.{:x}-{:x}.{:x}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

/// What `.mb-lease` holds. The owner fields let a process on the same machine
/// reclaim the lease of a holder that died without releasing it.
#[derive(Serialize, Deserialize)]
struct LeaseRecord {
    token: String,
    pid: u32,
    host: String,
    boot_id: String,
    expires_unix_ms: u64,
}

impl LeaseRecord {
    fn is_expired(&self) -> bool {
        now_unix_ms() >= self.expires_unix_ms
    }

    /// Only a holder on this very machine and boot, whose pid no longer exists, is
    /// provably dead; anything else must wait for the lease to expire.
    fn owner_is_dead(&self, host: &str, boot_id: &str) -> bool {
        self.host == host && self.boot_id == boot_id && !process_exists(self.pid)
    }

    /// A description of the holder for messages (never the token).
    fn owner(&self) -> String {
        let left = self.expires_unix_ms.saturating_sub(now_unix_ms());
        format!(
            "pid {} on {} for another {:.1}s",
            self.pid,
            self.host,
            left as f64 / 1000.0
        )
    }
}

/// Changes on every boot, so a pid recorded before a reboot is never trusted.
fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn expiry_after(duration: Duration) -> u64 {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    now_unix_ms().saturating_add(ms)
}

/// 32 hex characters. The pid and clock are mixed in so processes forked with the
/// same generator state still draw different tokens.
fn random_token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let salt = (u64::from(std::process::id()) << 32) | u64::from(nanos);
    format!(
        "{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..) ^ salt
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_exists_and_group_ids_are_never_dead() {
        assert!(process_exists(std::process::id()));
        assert!(process_exists(0));
        assert!(process_exists(u32::MAX));
    }

    #[test]
    fn tokens_are_32_hex_and_distinct() {
        let a = random_token();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_token());
    }

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

    #[test]
    fn reflink_clones_where_supported() {
        // On ext4 or tmpfs this only checks the fallback answer; run with TMPDIR on
        // btrfs or xfs to exercise the clone.
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        fs::write(&src_path, vec![7u8; 200_000]).unwrap();
        let src = File::open(&src_path).unwrap();
        let dest = new_file(&dir.path().join("dest"), true).unwrap();
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
            .filter(|n| n.contains("mb-tmp") || n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
