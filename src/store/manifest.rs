//! Chunk lists (manifests) of versions, for delta sync: the base version's list is
//! kept beside the sidecar (`<db>-managedblob.manifest`), so an upload stages only
//! the chunks written since, and a refresh fetches only the chunks that differ.

use super::state::State;
use super::Store;
use crate::backend::{BlobStat, Etag};
use crate::config::TransferMode;
use crate::delta::Manifest;
use crate::fsutil::replace_unsynced;

/// What a refresh brought beside the cache, waiting to be installed.
#[derive(Clone, Debug)]
pub(crate) struct Fetched {
    pub stat: BlobStat,
    /// `None`: the side file holds the whole image. `Some`: only these chunks, each at
    /// its own offset.
    pub chunks: Option<(u64, Vec<u64>)>,
    /// The remote's block list, when it is ours: it becomes the cache's manifest.
    pub manifest: Option<Manifest>,
}

impl Store {
    /// Whether transfers go by chunks.
    pub(super) fn delta_enabled(&self) -> bool {
        self.config.sync == TransferMode::Delta && self.remote.has_blocks()
    }

    /// The manifest of the base version, when one is known for it.
    pub(super) fn manifest_for_base(&self, st: &mut State) -> Option<Manifest> {
        let base = st.sidecar.base()?.clone();
        if let Some(m) = st.publishing.manifest_of(&base) {
            return Some(m.clone());
        }
        let (etag, m) = load_manifest(&self.manifest_path)?;
        if etag != base {
            return None;
        }
        st.publishing.set_manifest(Some((etag, m.clone())));
        Some(m)
    }

    /// Keep `manifest`, read from the remote, as the chunk list of the base `etag`
    /// beside the sidecar (a lazy cache that lost it: an offline open needs it).
    pub(super) fn keep_base_manifest(&self, st: &mut State, etag: &Etag, manifest: &Manifest) {
        let _ = replace_unsynced(&self.manifest_path, &manifest_bytes(etag, manifest));
        st.publishing
            .set_manifest(Some((etag.clone(), manifest.clone())));
    }

    /// Record `manifest` as the chunk list of version `etag` (or forget it).
    pub(super) fn set_manifest(&self, st: &mut State, manifest: Option<(Etag, Manifest)>) {
        match &manifest {
            // Not synced: a lost or torn manifest (its checksum tells) costs one pass
            // of hashing, not data, and a commit saves a disk flush.
            Some((etag, m)) => {
                let _ = replace_unsynced(&self.manifest_path, &manifest_bytes(etag, m));
            }
            None => {
                let _ = std::fs::remove_file(&self.manifest_path);
            }
        }
        self.lazy_rebase(manifest.as_ref());
        st.publishing.set_manifest(manifest);
    }

    /// Whether the ranges written (`Publishing::written`) name every chunk changed
    /// since the base: this process made every local commit since then.
    pub(super) fn written_is_complete(&self, st: &State) -> bool {
        st.sidecar.changes_are_ours()
    }
}

/// `<etag length u32><etag><manifest bytes><xxh3-64 of all before it>`: the file is
/// written without fsync, so the checksum is what tells a torn one after a power cut.
fn manifest_bytes(etag: &Etag, m: &Manifest) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(etag.0.len() as u32).to_be_bytes());
    out.extend_from_slice(etag.0.as_bytes());
    out.extend_from_slice(&m.to_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_be_bytes());
    out
}

fn load_manifest(path: &std::path::Path) -> Option<(Etag, Manifest)> {
    let file = std::fs::read(path).ok()?;
    let (raw, sum) = file.split_at_checked(file.len().checked_sub(8)?)?;
    if xxhash_rust::xxh3::xxh3_64(raw).to_be_bytes() != sum {
        return None;
    }
    let n = u32::from_be_bytes(raw.get(..4)?.try_into().ok()?) as usize;
    let etag = String::from_utf8(raw.get(4..4 + n)?.to_vec()).ok()?;
    let m = Manifest::from_bytes(raw.get(4 + n..)?)?;
    Some((Etag(etag), m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{ChunkId, GRANULE};

    #[test]
    fn manifest_files_round_trip_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m");
        let m = Manifest {
            chunk_size: GRANULE,
            len: 10,
            ids: vec![ChunkId::new(0, b"x")],
        };
        std::fs::write(&p, manifest_bytes(&Etag("e1".into()), &m)).unwrap();
        assert_eq!(load_manifest(&p), Some((Etag("e1".into()), m.clone())));
        std::fs::write(&p, b"\x00\x00\x00\x09short").unwrap();
        assert_eq!(load_manifest(&p), None);
        // Torn: any byte changed, or the end cut off, fails the checksum.
        let good = manifest_bytes(&Etag("e1".into()), &m);
        let mut torn = good.clone();
        torn[7] ^= 1;
        std::fs::write(&p, &torn).unwrap();
        assert_eq!(load_manifest(&p), None);
        std::fs::write(&p, &good[..good.len() - 1]).unwrap();
        assert_eq!(load_manifest(&p), None);
        std::fs::write(&p, vec![0u8; good.len()]).unwrap();
        assert_eq!(load_manifest(&p), None);
    }
}
