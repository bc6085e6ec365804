//! What opening a managed database does to its cache file, in safe code (the FFI
//! layer only calls in): a missing cache directory is created (mode 0700), a new
//! cache is created private, and what a failed open created is not left behind.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// One open of a cache file, between "about to open" and "the open failed".
#[must_use = "a failed open calls discard_if_created"]
pub(crate) struct CacheFileOpen {
    path: PathBuf,
    existed: bool,
    /// The directories this open created, outermost first.
    created_dirs: Vec<PathBuf>,
    /// Why a missing directory could not be created: the directory, and the
    /// operating system's error (its kind makes a full disk SQLITE_FULL).
    dir_error: Option<(PathBuf, std::io::Error)>,
}

impl CacheFileOpen {
    /// Call before the real open. `create`: the open may create the file.
    ///
    /// A cache whose directory is missing (`h1/corpus.db` in a fresh working
    /// directory) gets it: the missing directories are created with mode 0700, as
    /// the cache is private. Without `create`, nothing is created.
    ///
    /// The unix VFS would create the cache with mode 0644 (less the umask), and its
    /// journals copy the database's mode. The cache holds what the remote holds: it is
    /// created empty and private (0600) first, so it is never readable by others, not
    /// even for a moment. A cache that exists keeps the mode its owner gave it.
    pub(crate) fn prepare(path: &Path, create: bool) -> Self {
        let existed = path.exists();
        let (mut created_dirs, mut dir_error) = (Vec::new(), None);
        if create {
            (created_dirs, dir_error) = create_missing_dirs(path);
            create_private(path);
        }
        CacheFileOpen {
            path: path.to_path_buf(),
            existed,
            created_dirs,
            dir_error,
        }
    }

    /// The error for a cache the real open could not open: it names the file and,
    /// when the directory is missing, the directory; `os` is the operating system's
    /// reason (errno right after the failed open), when known. It keeps SQLite's
    /// "unable to open database file", and never holds the `file:` URI (which may
    /// carry a SAS).
    pub(crate) fn open_error(&self, os: Option<std::io::Error>) -> Error {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        let missing = dir.filter(|d| !d.exists());
        let err = match (missing, &self.dir_error) {
            (Some(d), Some((failed, why))) => std::io::Error::new(
                why.kind(),
                format!(
                    "its directory {} does not exist and could not be created: creating {}: \
                     {why}",
                    d.display(),
                    failed.display()
                ),
            ),
            (Some(d), None) => std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "its directory {} does not exist (it is created only by an open that may \
                     create the cache)",
                    d.display()
                ),
            ),
            (None, _) => os.unwrap_or_else(|| std::io::Error::other("the open failed")),
        };
        Error::local(
            format_args!(
                "unable to open database file {} (the cache)",
                self.path.display()
            ),
            err,
        )
    }

    /// The open failed: a cache this open created (still empty) is removed, and so are
    /// the directories it created, when they are still empty.
    pub(crate) fn discard_if_created(self) {
        if !self.existed && std::fs::metadata(&self.path).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&self.path);
        }
        for dir in self.created_dirs.iter().rev() {
            // remove_dir refuses a directory that is not empty.
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

/// Create the missing ancestors of `path`'s file, mode 0700 (the umask can only
/// remove bits). Returns those created, outermost first, and the one that could not
/// be with the operating system's error.
/// The real xOpen that follows then fails, reported by [`CacheFileOpen::open_error`].
fn create_missing_dirs(path: &Path) -> (Vec<PathBuf>, Option<(PathBuf, std::io::Error)>) {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return (Vec::new(), None);
    };
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && std::fs::symlink_metadata(d).is_err())
        .map(Path::to_path_buf)
        .collect();
    let mut created = Vec::new();
    for d in missing.into_iter().rev() {
        match DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => {
                tracing::info!(dir = %d.display(), "managedblob: created the cache directory (mode 0700)");
                created.push(d);
            }
            // Another process made it meanwhile: fine, it is not ours to remove.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return (created, Some((d, e))),
        }
    }
    (created, None)
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
    fn missing_directories_are_created_private_and_removed_after_a_failed_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.db");
        let open = CacheFileOpen::prepare(&path, true);
        assert!(path.is_file());
        for d in ["a", "a/b"] {
            let mode = std::fs::metadata(dir.path().join(d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{d}");
        }
        open.discard_if_created();
        assert!(!dir.path().join("a").exists());
    }

    #[test]
    fn a_directory_holding_other_files_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/c.db");
        let open = CacheFileOpen::prepare(&path, true);
        std::fs::write(dir.path().join("a/other"), b"x").unwrap();
        open.discard_if_created();
        assert!(!path.exists());
        assert!(dir.path().join("a/other").exists());
    }

    #[test]
    fn the_open_error_names_the_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodir/c.db");
        let open = CacheFileOpen::prepare(&path, false);
        let text = open.open_error(None).to_string();
        assert!(text.contains("unable to open database file"), "{text}");
        assert!(
            text.contains(&format!(
                "{} does not exist",
                dir.path().join("nodir").display()
            )),
            "{text}"
        );
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_named_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let open = CacheFileOpen::prepare(&dir.path().join("file/sub/c.db"), true);
        let text = open.open_error(None).to_string();
        assert!(text.contains("could not be created: creating"), "{text}");
        assert!(text.contains("Not a directory"), "{text}");
    }

    #[test]
    fn without_create_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let _ = CacheFileOpen::prepare(&path, false);
        assert!(!path.exists());
        let _ = CacheFileOpen::prepare(&dir.path().join("d/c.db"), false);
        assert!(!dir.path().join("d").exists());
    }
}
