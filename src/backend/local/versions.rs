//! Versions of a local blob ([`History`]): a content-addressed chunk store plus one
//! manifest per version, in `.<file>.mb-versions/` beside the blob:
//!
//! * `chunks/<xxh3-128 hex>-<len>`: a piece of some version, named by its content, so
//!   a piece unchanged between versions is stored once. A snapshot writes only the
//!   pieces no kept version has yet.
//! * `manifests/<id>.json`: one version: its pieces in order, size, time, and the
//!   etag it was taken from. The id starts with the time in milliseconds, so ids sort
//!   by time.
//! * `lock`: `flock`ed by snapshots and prunes (not by readers, and not the blob's
//!   own mutex: a snapshot never holds up a commit of the blob).
//!
//! Crash safety: a snapshot writes its chunks (each atomically), fsyncs the chunk
//! directory, then writes the manifest atomically and durably; a prune deletes
//! manifests first (durably), then every chunk no remaining manifest names. A kill
//! anywhere leaves each listed manifest with all its chunks; what it leaves behind
//! (chunks without a manifest, temp files) goes at the next prune.
//!
//! For tests, `MANAGEDBLOB_TEST_HISTORY_PAUSE=<step>:<ms>` pauses inside a snapshot
//! (`snapshot`: after each new chunk, before the manifest) or a prune (`prune`:
//! between dropping manifests and collecting their chunks), so a kill from outside
//! (the history crash soak) can land there (only in builds with the `testing` feature).
//!
//! The blob is read through the backend's own [`Blocks`] calls (its block list and
//! ranged reads pinned to the version's etag), never by its file layout. When the
//! blob's block ids are managedblob chunk ids they carry the content hash, so a
//! piece already kept is not even read.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::paths::{is_missing, BlobPaths};
use super::LocalBackend;
use crate::backend::history::{expired, unique_bytes, unix_millis};
use crate::backend::{
    hex, BackendErrorKind, BackendResult, Blocks, Etag, History, LeaseId, VersionInfo,
};
use crate::config::HistoryPolicy;
use crate::delta::{chunk_size_for, ChunkId};
use crate::fsutil::{self, write_atomic};

/// One kept version, as `manifests/<id>.json` holds it.
#[derive(Serialize, Deserialize)]
struct VersionManifest {
    id: String,
    time_ms: u64,
    size: u64,
    etag: String,
    /// (chunk name, length) in blob order.
    chunks: Vec<(String, u64)>,
}

/// The version store of one blob.
struct Shelf {
    p: BlobPaths,
    root: PathBuf,
}

impl Shelf {
    fn new(p: BlobPaths) -> Shelf {
        let root = p.side("versions");
        Shelf { p, root }
    }

    fn chunks(&self) -> PathBuf {
        self.root.join("chunks")
    }

    fn manifests(&self) -> PathBuf {
        self.root.join("manifests")
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.manifests().join(format!("{id}.json"))
    }

    fn io(&self, op: &str) -> impl Fn(io::Error) -> crate::backend::BackendError + '_ {
        let op = op.to_owned();
        move |e| self.p.io_error(&op, e)
    }

    /// Create the directories and take the store's lock (released when dropped).
    fn lock(&self, op: &str) -> BackendResult<File> {
        fs::create_dir_all(self.chunks()).map_err(self.io(op))?;
        fs::create_dir_all(self.manifests()).map_err(self.io(op))?;
        let file = fsutil::open_private(&self.root.join("lock"), fsutil::IfExists::Keep)
            .map_err(self.io(op))?;
        crate::sys::flock_exclusive(&file).map_err(self.io(op))?;
        Ok(file)
    }

    /// The ids of the kept versions, oldest first.
    fn ids(&self, op: &str) -> BackendResult<Vec<String>> {
        let entries = match fs::read_dir(self.manifests()) {
            Ok(entries) => entries,
            Err(e) if is_missing(&e) => return Ok(Vec::new()),
            Err(e) => return Err(self.p.io_error(op, e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let name = entry.map_err(self.io(op))?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn read_manifest(&self, id: &str, op: &str) -> BackendResult<VersionManifest> {
        let path = self.manifest_path(id);
        let bytes = fs::read(&path).map_err(self.io(op))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            self.p.error(
                BackendErrorKind::Permanent,
                op,
                &format!("version manifest {} is unreadable: {e}", path.display()),
            )
        })
    }

    fn manifests_all(&self, op: &str) -> BackendResult<Vec<VersionManifest>> {
        self.ids(op)?
            .iter()
            .map(|id| self.read_manifest(id, op))
            .collect()
    }

    /// Delete every file in `chunks/` that no kept manifest names (and manifest
    /// temp files a kill left). Call with the lock held, after deleting manifests.
    fn collect_garbage(&self, op: &str) -> BackendResult<()> {
        let live: HashSet<String> = self
            .manifests_all(op)?
            .into_iter()
            .flat_map(|m| m.chunks.into_iter().map(|(name, _)| name))
            .collect();
        for entry in fs::read_dir(self.chunks()).map_err(self.io(op))? {
            let entry = entry.map_err(self.io(op))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(&name) {
                remove_if_present(&entry.path()).map_err(self.io(op))?;
            }
        }
        for entry in fs::read_dir(self.manifests()).map_err(self.io(op))? {
            let entry = entry.map_err(self.io(op))?;
            if !entry.file_name().to_string_lossy().ends_with(".json") {
                remove_if_present(&entry.path()).map_err(self.io(op))?;
            }
        }
        Ok(())
    }
}

/// Pause here when the test hook names this step (the `testing` feature only).
#[cfg(feature = "testing")]
fn test_pause(step: &str) {
    let Ok(setting) = std::env::var("MANAGEDBLOB_TEST_HISTORY_PAUSE") else {
        return;
    };
    let ms = setting
        .split_once(':')
        .filter(|(at, _)| *at == step)
        .and_then(|(_, ms)| ms.parse().ok())
        .unwrap_or(0);
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// Without the `testing` feature: nothing.
#[cfg(not(feature = "testing"))]
#[inline(always)]
fn test_pause(_step: &str) {}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if !is_missing(&e) => Err(e),
        _ => Ok(()),
    }
}

/// A chunk's name: its content hash and length.
fn chunk_name(hash: u128, len: u64) -> String {
    format!("{}-{len}", hex(&hash.to_be_bytes()))
}

/// The content hash a managedblob block id carries (bytes 8..24), if it is one.
fn hash_in_block_id(id: &[u8]) -> Option<u128> {
    ChunkId::from_bytes(id)?;
    Some(u128::from_be_bytes(id[8..24].try_into().ok()?))
}

fn time_of(manifest: &VersionManifest) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(manifest.time_ms)
}

fn infos(manifests: &[VersionManifest]) -> Vec<VersionInfo> {
    let lists: Vec<Vec<(String, u64)>> = manifests.iter().map(|m| m.chunks.clone()).collect();
    manifests
        .iter()
        .zip(unique_bytes(&lists))
        .map(|(m, unique)| VersionInfo {
            id: m.id.clone(),
            time: time_of(m),
            size: m.size,
            unique_bytes: unique,
        })
        .collect()
}

/// A piece of the current version: its content hash when its block id tells it,
/// its offset and its length.
struct Piece {
    hash: Option<u128>,
    offset: u64,
    len: u64,
}

/// The current version of a blob, as pieces.
struct Current {
    etag: Etag,
    size: u64,
    pieces: Vec<Piece>,
}

impl LocalBackend {
    fn shelf(&self, blob: &str) -> BackendResult<Shelf> {
        Ok(Shelf::new(self.paths(blob)?))
    }

    /// The current version, by its block list (or fixed pieces without one).
    fn current(&self, blob: &str, op: &str) -> BackendResult<Current> {
        let p = self.paths(blob)?;
        let (stat, list) = Blocks::block_list(self, blob)?.ok_or_else(|| p.missing(op))?;
        let listed: u64 = list.iter().map(|(_, len)| len).sum();
        let mut pieces = Vec::new();
        let mut offset = 0;
        if !list.is_empty() && listed == stat.size {
            for (id, len) in &list {
                pieces.push(Piece {
                    hash: hash_in_block_id(id),
                    offset,
                    len: *len,
                });
                offset += len;
            }
        } else {
            let step = chunk_size_for(stat.size);
            while offset < stat.size {
                let len = step.min(stat.size - offset);
                pieces.push(Piece {
                    hash: None,
                    offset,
                    len,
                });
                offset += len;
            }
        }
        Ok(Current {
            etag: stat.etag,
            size: stat.size,
            pieces,
        })
    }
}

impl History for LocalBackend {
    fn snapshot(&self, blob: &str, _lease: Option<&LeaseId>) -> BackendResult<String> {
        const OP: &str = "snapshot";
        let shelf = self.shelf(blob)?;
        let _lock = shelf.lock(OP)?;
        let Current { etag, size, pieces } = self.current(blob, OP)?;
        // Only the newest manifest is read: a snapshot costs the same with 10 versions
        // kept or 10,000.
        let newest = match shelf.ids(OP)?.pop() {
            Some(id) => Some(shelf.read_manifest(&id, OP)?),
            None => None,
        };
        if let Some(newest) = newest.as_ref().filter(|m| m.etag == etag.0) {
            return Ok(newest.id.clone());
        }
        let mut chunks = Vec::with_capacity(pieces.len());
        for Piece { hash, offset, len } in pieces {
            if let Some(hash) = hash {
                let name = chunk_name(hash, len);
                if shelf.chunks().join(&name).exists() {
                    chunks.push((name, len));
                    continue;
                }
            }
            let data = Blocks::read_range(self, blob, offset, len, &etag)?;
            let actual = xxhash_rust::xxh3::xxh3_128(&data);
            if hash.is_some_and(|h| h != actual) {
                return Err(shelf.p.error(
                    BackendErrorKind::Permanent,
                    OP,
                    &format!("the block at offset {offset} does not match its id"),
                ));
            }
            let name = chunk_name(actual, len);
            let path = shelf.chunks().join(&name);
            if !path.exists() {
                write_atomic(&path, &data, false).map_err(shelf.io(OP))?;
                test_pause("snapshot");
            }
            chunks.push((name, len));
        }
        fsutil::sync_dir(&shelf.chunks()).map_err(shelf.io(OP))?;
        let now = SystemTime::now();
        let time_ms = unix_millis(now).max(newest.map_or(0, |m| m.time_ms + 1));
        let manifest = VersionManifest {
            id: format!("{time_ms:013}-{:08x}", fastrand::u32(..)),
            time_ms,
            size,
            etag: etag.0,
            chunks,
        };
        let bytes = serde_json::to_vec(&manifest).expect("plain records serialize");
        write_atomic(&shelf.manifest_path(&manifest.id), &bytes, true).map_err(shelf.io(OP))?;
        Ok(manifest.id)
    }

    fn versions(&self, blob: &str) -> BackendResult<Vec<VersionInfo>> {
        Ok(infos(&self.shelf(blob)?.manifests_all("list versions")?))
    }

    fn read_kept_range(
        &self,
        blob: &str,
        etag: &Etag,
        offset: u64,
        len: u64,
    ) -> BackendResult<Option<Vec<u8>>> {
        const OP: &str = "read a kept version";
        let shelf = self.shelf(blob)?;
        let Some(manifest) = shelf
            .manifests_all(OP)?
            .into_iter()
            .find(|m| m.etag == etag.0)
        else {
            return Ok(None);
        };
        let end = offset.saturating_add(len);
        if end > manifest.size {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(len as usize);
        let mut at = 0u64;
        for (name, piece_len) in &manifest.chunks {
            let piece_end = at + piece_len;
            if piece_end > offset && at < end {
                let data = fs::read(shelf.chunks().join(name)).map_err(shelf.io(OP))?;
                let actual = chunk_name(xxhash_rust::xxh3::xxh3_128(&data), data.len() as u64);
                if &actual != name {
                    return Err(shelf.p.error(
                        BackendErrorKind::Permanent,
                        OP,
                        &format!("chunk {name} of a kept version is damaged"),
                    ));
                }
                let from = offset.max(at) - at;
                let to = end.min(piece_end) - at;
                out.extend_from_slice(&data[from as usize..to as usize]);
            }
            at = piece_end;
            if at >= end {
                break;
            }
        }
        Ok(Some(out))
    }

    fn download_version(&self, blob: &str, id: &str, sink: &mut dyn Write) -> BackendResult<u64> {
        const OP: &str = "download version";
        let shelf = self.shelf(blob)?;
        if !shelf.ids(OP)?.iter().any(|kept| kept == id) {
            return Err(shelf
                .p
                .error(BackendErrorKind::NotFound, OP, &format!("no version {id}")));
        }
        let manifest = shelf.read_manifest(id, OP)?;
        for (name, len) in &manifest.chunks {
            let data = fs::read(shelf.chunks().join(name)).map_err(shelf.io(OP))?;
            let actual = chunk_name(xxhash_rust::xxh3::xxh3_128(&data), data.len() as u64);
            if &actual != name || data.len() as u64 != *len {
                return Err(shelf.p.error(
                    BackendErrorKind::Permanent,
                    OP,
                    &format!("chunk {name} of version {id} is damaged"),
                ));
            }
            sink.write_all(&data).map_err(shelf.io(OP))?;
        }
        Ok(manifest.size)
    }

    fn delete_version(&self, blob: &str, id: &str) -> BackendResult<()> {
        const OP: &str = "delete version";
        let shelf = self.shelf(blob)?;
        let _lock = shelf.lock(OP)?;
        remove_if_present(&shelf.manifest_path(id)).map_err(shelf.io(OP))?;
        fsutil::sync_dir(&shelf.manifests()).map_err(shelf.io(OP))?;
        shelf.collect_garbage(OP)
    }

    /// Retention by ids alone (they start with the time), then one garbage pass.
    fn prune(
        &self,
        blob: &str,
        policy: HistoryPolicy,
        now: SystemTime,
    ) -> BackendResult<Vec<String>> {
        const OP: &str = "prune versions";
        let shelf = self.shelf(blob)?;
        let _lock = shelf.lock(OP)?;
        let listed: Vec<VersionInfo> = shelf
            .ids(OP)?
            .into_iter()
            .map(|id| {
                let ms = id
                    .split('-')
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                VersionInfo {
                    id,
                    time: UNIX_EPOCH + Duration::from_millis(ms),
                    size: 0,
                    unique_bytes: 0,
                }
            })
            .collect();
        let dropped = expired(&listed, policy, now);
        if dropped.is_empty() {
            return Ok(dropped);
        }
        for id in &dropped {
            remove_if_present(&shelf.manifest_path(id)).map_err(shelf.io(OP))?;
        }
        fsutil::sync_dir(&shelf.manifests()).map_err(shelf.io(OP))?;
        test_pause("prune");
        shelf.collect_garbage(OP)?;
        Ok(dropped)
    }
}
