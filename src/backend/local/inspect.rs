//! What the operator tools ask a local remote beyond the [`Backend`] trait: lease
//! holder and expiry, modification time, the recorded block list even when the blob
//! file changed behind our back, and the sweep of files killed writers left.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::blocks::{unhex, BlockListRecord};
use super::{BlobPaths, LocalBackend};
use crate::backend::inspect::{BlobDetails, LeaseInfo, LeaseState, Leftover, Skipped, SweepReport};
use crate::backend::{Backend, BackendErrorKind, BackendResult, BlobStat, BlockList, LeaseId};
use crate::utc::rfc3339_ms;

/// How long the sweep holds the lease it takes to prove no writer is active.
const SWEEP_LEASE: Duration = Duration::from_secs(15);

impl LocalBackend {
    /// Etag, size, modification time and lease of `blob`; `None` when it does not exist.
    pub fn details(&self, blob: &str) -> BackendResult<Option<BlobDetails>> {
        const OP: &str = "inspect";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), "local inspect");
        let Some(_lock) = p.lock(OP)? else {
            return Ok(None);
        };
        let Some(meta) = p.metadata(OP)? else {
            return Ok(None);
        };
        let stat = p.stat_of(&meta, OP)?;
        let last_modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| rfc3339_ms(d.as_millis() as u64));
        let lease = match p.read_lease(OP)? {
            None => LeaseInfo::available(),
            Some(record) => LeaseInfo {
                state: if record.is_expired() {
                    LeaseState::Expired
                } else {
                    LeaseState::Leased
                },
                expires: Some(rfc3339_ms(record.expires_unix_ms)),
                holder: Some(format!("pid {} on {}", record.pid, record.host)),
                holder_dead: record.owner_is_dead(&self.host, &self.boot_id),
                duration: Some("fixed".into()),
            },
        };
        Ok(Some(BlobDetails {
            stat,
            last_modified,
            lease,
        }))
    }

    /// The block list recorded for `blob` (see [`crate::ops::recorded_blocks`]): the
    /// list of the version this backend last finished installing, even when the blob
    /// file changed since (bit rot, a foreign write), so that its chunk ids show what
    /// the content should hash to. Empty when none is recorded, it is unreadable, or
    /// it belongs to another version than the etag record names: a write that died
    /// between its records (new content and etag, the old list) or after an in-place
    /// commit point (no etag record yet) left it, and the content never was its.
    pub fn recorded_blocks(&self, blob: &str) -> BackendResult<Option<(BlobStat, BlockList)>> {
        const OP: &str = "read recorded block list";
        let p = self.paths(blob)?;
        tracing::debug!(blob = %p.path.display(), "local recorded block list");
        let Some(_lock) = p.lock(OP)? else {
            return Ok(None);
        };
        let Some(stat) = p.current_stat(OP)? else {
            return Ok(None);
        };
        let installed = p.installed_etag(OP)?;
        let record: Option<BlockListRecord> = p.read_json(&p.block_list_record(), OP)?;
        let list = record
            .filter(|r| installed.as_ref().is_some_and(|e| r.etag == e.0))
            .and_then(|r| {
                r.blocks
                    .iter()
                    .map(|(id, size)| unhex(id).map(|id| (id, *size)))
                    .collect::<Option<BlockList>>()
            })
            .unwrap_or_default();
        Ok(Some((stat, list)))
    }

    /// Remove (or with `dry_run` only list) what killed writers left beside the blobs
    /// of this remote: upload temp files, staged blocks, companion-file temps.
    ///
    /// Such files have no owner recorded; what proves their writer gone is the lease.
    /// Every write installs under the blob's lease, so the sweep takes the lease itself
    /// (the backend grants it only when it is free, expired, or held by a process of
    /// this host that no longer exists) and, holding it and the blob's mutex, removes
    /// them: no writer can use them any more. A blob leased by a live writer, or by a
    /// process on another host, is skipped and reported.
    pub fn sweep(&self, dry_run: bool) -> BackendResult<SweepReport> {
        let mut report = SweepReport::default();
        let mut groups: Vec<(String, Vec<PathBuf>)> = Vec::new();
        collect(&self.dir, &self.dir, &mut groups);
        for (blob, candidates) in groups {
            self.sweep_blob(&blob, &candidates, dry_run, &mut report)?;
        }
        Ok(report)
    }

    /// [`Backend::sweep_leftovers`]: one blob's leftovers, found by listing its
    /// directory (cheap when there are none, as after most commits).
    pub(super) fn sweep_blob_leftovers(
        &self,
        blob: &str,
        held: Option<&LeaseId>,
    ) -> BackendResult<u64> {
        const OP: &str = "sweep";
        let p = self.paths(blob)?;
        let candidates: Vec<PathBuf> = leftovers_of(&p).into_iter().map(|l| l.path).collect();
        if candidates.is_empty() {
            return Ok(0);
        }
        let mut report = SweepReport::default();
        match held {
            None => self.sweep_blob(blob, &candidates, false, &mut report)?,
            Some(lease) => {
                let Some(_lock) = p.lock(OP)? else {
                    return Ok(0);
                };
                self.check_write_lease(&p, Some(lease), OP)?;
                report
                    .found
                    .extend(leftovers_of(&p).into_iter().filter(|l| remove(&l.path)));
            }
        }
        if !report.found.is_empty() {
            tracing::info!(
                blob,
                files = report.found.len(),
                bytes = report.bytes(),
                "removed what killed writers left"
            );
        }
        Ok(report.bytes())
    }

    fn sweep_blob(
        &self,
        blob: &str,
        candidates: &[PathBuf],
        dry_run: bool,
        report: &mut SweepReport,
    ) -> BackendResult<()> {
        const OP: &str = "sweep";
        let Ok(p) = self.paths(blob) else {
            return Ok(());
        };
        let skip = |report: &mut SweepReport, why: String| {
            for path in candidates {
                report.skipped.push(Skipped {
                    path: path.clone(),
                    why: why.clone(),
                });
            }
        };
        if p.metadata(OP)?.is_none() {
            skip(
                report,
                format!("blob {blob} does not exist (yet): a writer may be creating it"),
            );
            return Ok(());
        }
        if dry_run {
            let _lock = p.lock(OP)?;
            match self.live_lease(&p, OP)? {
                Some(held) => skip(report, format!("blob {blob} is leased by {}", held.owner())),
                None => report.found.extend(leftovers_of(&p)),
            }
            return Ok(());
        }
        let lease = match self.acquire_lease(blob, SWEEP_LEASE) {
            Ok(lease) => lease,
            Err(e) if e.kind == BackendErrorKind::LeaseHeld => {
                skip(report, e.message);
                return Ok(());
            }
            Err(e) if e.kind == BackendErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let removed = {
            let _lock = p.lock(OP)?;
            leftovers_of(&p)
                .into_iter()
                .filter(|l| remove(&l.path))
                .collect::<Vec<_>>()
        };
        report.found.extend(removed);
        self.release_lease(blob, &lease.id)
    }
}

/// Group the leftover-looking companion files under `dir` by the blob they belong to.
fn collect(root: &Path, dir: &Path, groups: &mut Vec<(String, Vec<PathBuf>)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        match companion_of(&name) {
            Some((file, suffix)) if is_leftover_suffix(suffix) => {
                let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
                let blob = rel.join(file).to_string_lossy().into_owned();
                match groups.iter_mut().find(|(b, _)| *b == blob) {
                    Some((_, paths)) => paths.push(path),
                    None => groups.push((blob, vec![path])),
                }
            }
            Some(_) => {}
            None if is_dir && !name.starts_with('.') => collect(root, &path, groups),
            None => {}
        }
    }
}

/// `.<file>.mb-<suffix>` -> (file, suffix).
fn companion_of(name: &str) -> Option<(&str, &str)> {
    name.strip_prefix('.')?.rsplit_once(".mb-")
}

/// Upload temps (`tmp-<token>`), the staging directory, and the fixed-name temps of
/// the companion files (`lease.tmp`, `etag.tmp`, `blocks.tmp`).
fn is_leftover_suffix(suffix: &str) -> bool {
    suffix.starts_with("tmp-") || suffix == "staged" || suffix.ends_with(".tmp")
}

/// The leftovers of one blob present now, with their sizes.
fn leftovers_of(p: &BlobPaths) -> Vec<Leftover> {
    let Ok(entries) = fs::read_dir(&p.parent) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((file, suffix)) = companion_of(&name) else {
            continue;
        };
        if file != p.file || !is_leftover_suffix(suffix) {
            continue;
        }
        let what = if suffix == "staged" {
            "staged blocks"
        } else if suffix.starts_with("tmp-") {
            "upload temp file"
        } else {
            "companion temp file"
        };
        let path = entry.path();
        found.push(Leftover {
            bytes: size_of(&path),
            path,
            what,
        });
    }
    found
}

fn size_of(path: &Path) -> u64 {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::read_dir(path)
            .map(|entries| entries.flatten().map(|e| size_of(&e.path())).sum())
            .unwrap_or(0),
        Ok(meta) => meta.len(),
        Err(_) => 0,
    }
}

/// Remove a file or directory; whether it is gone.
fn remove(path: &Path) -> bool {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a leftover");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn companion_names_split_into_blob_and_suffix() {
        assert_eq!(
            companion_of(".a.db.mb-tmp-00ff"),
            Some(("a.db", "tmp-00ff"))
        );
        assert_eq!(
            companion_of(".a.db.mb-lease.tmp"),
            Some(("a.db", "lease.tmp"))
        );
        assert_eq!(companion_of("a.db"), None);
        assert!(is_leftover_suffix("staged") && is_leftover_suffix("blocks.tmp"));
        assert!(!is_leftover_suffix("lease") && !is_leftover_suffix("mutex"));
    }
}
