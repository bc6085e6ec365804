//! The reference [`History`]: each kept version is the blob's bytes (shared, not
//! copied) with the etag it had, held beside the store in a process-wide table keyed
//! by store name and blob. `unique_bytes` is counted over 64 KiB pieces by content.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use parking_lot::Mutex;

use super::MemoryBackend;
use crate::backend::checks::Refusal;
use crate::backend::history::{unique_bytes, unix_millis};
use crate::backend::{BackendErrorKind, BackendResult, Etag, History, LeaseId, VersionInfo};

struct Kept {
    id: String,
    time: SystemTime,
    etag: Etag,
    data: Arc<Vec<u8>>,
}

#[derive(Default)]
struct Shelf {
    versions: Vec<Kept>,
    /// Fail every snapshot (a test's fault).
    failing: bool,
}

type Shelves = Mutex<HashMap<(String, String), Shelf>>;

fn shelves() -> &'static Shelves {
    static SHELVES: OnceLock<Shelves> = OnceLock::new();
    SHELVES.get_or_init(Default::default)
}

/// The piece size `unique_bytes` compares versions by.
const PIECE: usize = 64 * 1024;

impl MemoryBackend {
    /// Make every snapshot of `blob` fail (`true`) or work again (`false`).
    pub fn fail_snapshots(&self, blob: &str, failing: bool) {
        let key = (self.name.clone(), blob.to_owned());
        shelves().lock().entry(key).or_default().failing = failing;
    }

    fn shelf_key(&self, blob: &str) -> (String, String) {
        (self.name.clone(), blob.to_owned())
    }
}

impl History for MemoryBackend {
    fn snapshot(&self, blob: &str, _lease: Option<&LeaseId>) -> BackendResult<String> {
        const OP: &str = "snapshot";
        let (data, etag) = {
            let state = self.state.lock();
            let stored = state
                .blobs
                .get(blob)
                .ok_or_else(|| self.refused(blob, OP, Refusal::missing()))?;
            (stored.data.clone(), stored.etag.clone())
        };
        let mut shelves = shelves().lock();
        let shelf = shelves.entry(self.shelf_key(blob)).or_default();
        if shelf.failing {
            return Err(self.error(BackendErrorKind::Permanent, blob, OP, "injected failure"));
        }
        if shelf.versions.last().is_none_or(|k| k.etag != etag) {
            let time = SystemTime::now();
            // Ids sort by time; the sequence keeps two in one millisecond apart.
            let id = format!("{:013}-{:06}", unix_millis(time), shelf.versions.len());
            shelf.versions.push(Kept {
                id,
                time,
                etag,
                data,
            });
        }
        Ok(shelf.versions.last().expect("just kept").id.clone())
    }

    fn versions(&self, blob: &str) -> BackendResult<Vec<VersionInfo>> {
        let shelves = shelves().lock();
        Ok(shelves
            .get(&self.shelf_key(blob))
            .map(|s| infos(&s.versions))
            .unwrap_or_default())
    }

    fn read_kept_range(
        &self,
        blob: &str,
        etag: &Etag,
        offset: u64,
        len: u64,
    ) -> BackendResult<Option<Vec<u8>>> {
        let shelves = shelves().lock();
        let kept = shelves
            .get(&self.shelf_key(blob))
            .and_then(|s| s.versions.iter().find(|k| k.etag == *etag));
        Ok(kept.and_then(|k| {
            let end = offset.checked_add(len)? as usize;
            k.data.get(offset as usize..end).map(<[u8]>::to_vec)
        }))
    }

    fn download_version(&self, blob: &str, id: &str, sink: &mut dyn Write) -> BackendResult<u64> {
        const OP: &str = "download version";
        let data = shelves()
            .lock()
            .get(&self.shelf_key(blob))
            .and_then(|s| s.versions.iter().find(|k| k.id == id))
            .map(|k| k.data.clone())
            .ok_or_else(|| {
                self.error(
                    BackendErrorKind::NotFound,
                    blob,
                    OP,
                    &format!("no version {id}"),
                )
            })?;
        sink.write_all(&data).map_err(|e| {
            self.error(
                BackendErrorKind::Permanent,
                blob,
                OP,
                &format!("writing: {e}"),
            )
        })?;
        Ok(data.len() as u64)
    }

    fn delete_version(&self, blob: &str, id: &str) -> BackendResult<()> {
        if let Some(shelf) = shelves().lock().get_mut(&self.shelf_key(blob)) {
            shelf.versions.retain(|k| k.id != id);
        }
        Ok(())
    }
}

fn infos(kept: &[Kept]) -> Vec<VersionInfo> {
    let pieces: Vec<Vec<(u128, u64)>> = kept
        .iter()
        .map(|k| {
            k.data
                .chunks(PIECE)
                .map(|p| (xxhash_rust::xxh3::xxh3_128(p), p.len() as u64))
                .collect()
        })
        .collect();
    kept.iter()
        .zip(unique_bytes(&pieces))
        .map(|(k, unique)| VersionInfo {
            id: k.id.clone(),
            time: k.time,
            size: k.data.len() as u64,
            unique_bytes: unique,
        })
        .collect()
}
