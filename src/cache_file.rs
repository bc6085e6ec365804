//! What opening a managed database does to its cache file, in safe code (the FFI
//! layer only calls in): a new cache is created private, and a cache that a failed
//! open created is not left behind.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One open of a cache file, between "about to open" and "the open failed".
#[must_use = "a failed open calls discard_if_created"]
pub(crate) struct CacheFileOpen {
    path: PathBuf,
    existed: bool,
}

impl CacheFileOpen {
    /// Call before the real open. `create`: the open may create the file.
    ///
    /// The unix VFS would create the cache with mode 0644 (less the umask), and its
    /// journals copy the database's mode. The cache holds what the remote holds: it is
    /// created empty and private (0600) first, so it is never readable by others, not
    /// even for a moment. A cache that exists keeps the mode its owner gave it.
    pub(crate) fn prepare(path: &Path, create: bool) -> Self {
        let existed = path.exists();
        if create {
            create_private(path);
        }
        CacheFileOpen {
            path: path.to_path_buf(),
            existed,
        }
    }

    /// The open failed: a cache this open created (still empty) is removed.
    pub(crate) fn discard_if_created(self) {
        if !self.existed && std::fs::metadata(&self.path).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Create `path` empty with mode 0600 unless it exists. Errors are left to the real
/// xOpen that follows, which reports them as SQLite does.
fn create_private(path: &Path) {
    let _ = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_cache_is_private_and_a_failed_open_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let open = CacheFileOpen::prepare(&path, true);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        open.discard_if_created();
        assert!(!path.exists());
    }

    #[test]
    fn a_cache_that_existed_is_kept_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        CacheFileOpen::prepare(&path, true).discard_if_created();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn without_create_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let _ = CacheFileOpen::prepare(&path, false);
        assert!(!path.exists());
    }
}
