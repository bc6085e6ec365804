//! The sidecar: a small JSON file beside the cache (`<db>-managedblob.json`) that
//! says which remote version the cache corresponds to, whether it holds commits the
//! remote lacks, and whether a transfer was in flight when the process stopped.
//!
//! It is the only durable state of managedblob; every decision re-reads it under the
//! cache's POSIX lock, so several processes sharing one cache agree. Writes are
//! atomic (temp file, fsync, rename, directory fsync) and the file is mode 0600.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::{Etag, LeaseId};
use crate::error::{Error, Result};
use crate::fsutil;

/// The on-disk format version; a newer one is refused rather than misread.
pub const FORMAT: u32 = 1;

/// A transfer that had started and not finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InFlight {
    #[default]
    None,
    /// A downloaded image was being written into the cache (an install, or a cold
    /// open's download straight into it): the cache may be torn.
    Download,
    /// A commit's upload landed but SQLite had not finished the local commit: if a
    /// hot journal is left, SQLite would roll the cache back behind the remote.
    Commit,
}

/// The durable state of one cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    pub format: u32,
    /// Backend identity (secret-free), so a cache is never used for another remote.
    pub remote: String,
    pub blob: String,
    /// The remote version the cache was last equal to (before local commits).
    pub base: Option<Etag>,
    /// The cache holds commits the remote does not have yet.
    pub dirty: bool,
    pub in_flight: InFlight,
    /// How many remote versions this cache has taken in (uploads and downloads).
    pub generation: u64,
    /// The identity of the cache file this sidecar describes ([`file_identity`]): a
    /// cache deleted or replaced behind our back is not mistaken for the synced one.
    #[serde(default)]
    pub cache_id: Option<String>,
    /// The process that made the local commits (while `dirty`): only that process
    /// knows which chunks they touched; anyone else hashes the cache to find out.
    #[serde(default)]
    pub dirty_owner: Option<String>,
    /// The lease this cache's writer holds, when the backend's leases do not name
    /// their owner (Azure): a restart on this host takes it back from a dead owner
    /// instead of waiting for it to lapse. A lease id is not a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseOwner>,
    /// A commit whose outcome is unknown (its reply was lost), resolved at the next
    /// check (src/store/ambiguous.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_commit: Option<PendingCommit>,
    /// A background upload (`flush_ms`) of an earlier state of this dirty cache,
    /// in flight while later commits went on: when the remote holds that block list,
    /// it is the base those later commits build on, not a conflict
    /// (src/store/background.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploading: Option<PendingCommit>,
}

/// What an ambiguous commit tried to publish: over which base, and the block list
/// (delta sync, ids in hex) or the xxh3-128 hash of the bytes (a whole upload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCommit {
    pub base: Option<Etag>,
    pub blocks: Option<Vec<String>>,
    pub hash: Option<String>,
    /// The chunk size of `blocks` (a background upload's record): a remote that
    /// lists no blocks can be cut into chunks and compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
}

/// A lease id and the process that holds it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseOwner {
    pub id: LeaseId,
    pub pid: u32,
    pub host: String,
    pub boot_id: String,
}

impl std::fmt::Debug for LeaseOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} held by pid {} on {}", self.id, self.pid, self.host)
    }
}

impl LeaseOwner {
    /// `id`, held by this process.
    pub fn this_process(id: LeaseId) -> LeaseOwner {
        LeaseOwner {
            id,
            pid: std::process::id(),
            host: crate::sys::hostname(),
            boot_id: crate::sys::boot_id(),
        }
    }

    /// Only an owner on this very machine and boot whose pid no longer exists is
    /// provably dead (as for the local backend's leases).
    pub fn is_dead(&self) -> bool {
        self.host == crate::sys::hostname()
            && self.boot_id == crate::sys::boot_id()
            && !crate::sys::process_exists(self.pid)
    }
}

impl Sidecar {
    /// A sidecar for a cache that corresponds to nothing yet.
    pub fn new(remote: String, blob: String) -> Self {
        Sidecar {
            format: FORMAT,
            remote,
            blob,
            base: None,
            dirty: false,
            in_flight: InFlight::None,
            generation: 0,
            cache_id: None,
            dirty_owner: None,
            lease: None,
            pending_commit: None,
            uploading: None,
        }
    }

    /// Whether this sidecar describes the cache of `remote`/`blob`.
    pub fn is_for(&self, remote: &str, blob: &str) -> bool {
        self.remote == remote && self.blob == blob
    }
}

/// Inode and birth time of a file: a new file that happens to reuse a deleted file's
/// inode number still differs in birth time (where the filesystem records one).
pub fn file_identity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).ok()?;
    let born = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    // No device number: it can change across remounts while the file stays the same.
    Some(format!("{}:{born}", meta.ino()))
}

/// The sidecar path for a cache file.
pub fn path_for(cache: &Path) -> PathBuf {
    let mut name = cache.as_os_str().to_owned();
    name.push("-managedblob.json");
    PathBuf::from(name)
}

/// Read the sidecar; `Ok(None)` when there is none. A corrupt or newer-format
/// sidecar is an error that names the file: nothing is deleted.
pub fn load(path: &Path) -> Result<Option<Sidecar>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::local(
                format!("reading sidecar {}", path.display()),
                e,
            ))
        }
    };
    let sidecar: Sidecar =
        serde_json::from_slice(&bytes).map_err(|source| Error::CorruptSidecar {
            path: path.to_path_buf(),
            source,
        })?;
    if sidecar.format != FORMAT {
        return Err(Error::Local(format!(
            "sidecar {} has format {} but this managedblob understands format {FORMAT}",
            path.display(),
            sidecar.format
        )));
    }
    Ok(Some(sidecar))
}

/// Write the sidecar atomically and durably.
pub fn store(path: &Path, sidecar: &Sidecar) -> Result<()> {
    #[cfg(any(test, feature = "testing"))]
    if injected_failure(path) {
        return Err(Error::Local(format!(
            "writing {}: injected fault",
            path.display()
        )));
    }
    let json = serde_json::to_vec_pretty(sidecar).expect("sidecar serializes");
    write_atomic(path, &json, true)
}

/// `fsutil::write_atomic` (`src/fsutil.rs`) with the error naming the file (kept for the
/// store's call sites).
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    fsutil::write_atomic(path, bytes, durable)
        .map_err(|e| Error::local(format!("writing {}", path.display()), e))
}

/// Saves to fail, for tests: `(sidecar path, saves to let through first)`.
#[cfg(any(test, feature = "testing"))]
static FAIL_SAVES: parking_lot::Mutex<Vec<(PathBuf, usize)>> = parking_lot::Mutex::new(Vec::new());

/// Fault injection for tests: let the next `skip` saves of the sidecar at `path`
/// through, then fail the one after (once). Lets a test fail the save a commit makes
/// at a precise point (the commit point, or SQLITE_FCNTL_COMMIT_PHASETWO).
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
pub fn fail_one_save_after(path: &Path, skip: usize) {
    FAIL_SAVES.lock().push((path.to_path_buf(), skip));
}

#[cfg(any(test, feature = "testing"))]
fn injected_failure(path: &Path) -> bool {
    let mut armed = FAIL_SAVES.lock();
    let Some(i) = armed.iter().position(|(p, _)| p == path) else {
        return false;
    };
    if armed[i].1 == 0 {
        armed.remove(i);
        return true;
    }
    armed[i].1 -= 1;
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = path_for(&dir.path().join("a.db"));
        assert_eq!(load(&p).unwrap(), None);
        let mut s = Sidecar::new("local:/r".into(), "a.db".into());
        s.base = Some(Etag("e1".into()));
        s.dirty = true;
        s.in_flight = InFlight::Commit;
        store(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap(), Some(s));
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(p.to_str().unwrap().ends_with("a.db-managedblob.json"));
    }

    #[test]
    fn corrupt_sidecar_is_a_clear_error_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x-managedblob.json");
        fs::write(&p, b"{not json").unwrap();
        let err = load(&p).unwrap_err();
        let parser = std::error::Error::source(&err);
        assert!(
            parser.is_some_and(|s| s.is::<serde_json::Error>()),
            "{err:?}"
        );
        let e = err.to_string();
        assert!(
            e.contains("corrupt") && e.contains("x-managedblob.json"),
            "{e}"
        );
        assert!(p.exists());
    }

    #[test]
    fn newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x-managedblob.json");
        let mut s = Sidecar::new("r".into(), "b".into());
        s.format = 99;
        fs::write(&p, serde_json::to_vec(&s).unwrap()).unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("format 99"));
    }
}
