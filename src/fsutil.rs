//! File-system helpers shared by the sidecar, the store and the local backend:
//! private files (mode 0600: caches, sidecars and a local remote may hold private
//! data), atomic replacement, and directory fsync.
//!
//! An atomic write is: a temp file beside the target, fsync, rename over the
//! target, and (when it must survive a power cut) fsync of the directory, which is
//! what makes the rename itself durable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The mode of every file managedblob creates.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// What opening a private file does to a file already at the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfExists {
    /// Empty it.
    Truncate,
    /// Fail with `AlreadyExists` (the file must be new).
    Fail,
    /// Open it as it is.
    Keep,
}

/// Open `path` for reading and writing, creating it with mode 0600 when missing.
pub fn open_private(path: &Path, if_exists: IfExists) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).mode(PRIVATE_FILE_MODE);
    match if_exists {
        IfExists::Truncate => options.create(true).truncate(true),
        IfExists::Fail => options.create_new(true),
        IfExists::Keep => options.create(true).truncate(false),
    };
    options.open(path)
}

/// Create (truncating) a file only this user can read.
pub fn create_private(path: &Path) -> io::Result<File> {
    open_private(path, IfExists::Truncate)
}

/// Replace `path` with `bytes` so readers see the old or the new content, never a
/// mix: a private temp file beside it, fsync, rename, and (when `durable`) fsync of
/// the directory so the rename survives a power cut. The temp file is removed when
/// anything fails.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let persist = if durable {
        Persist::Rename
    } else {
        Persist::Content
    };
    replace(path, bytes, persist)
}

/// [`write_atomic`] without any fsync: while the machine runs, readers see the old or
/// the new content; after a power cut the file may be old, empty or torn. Only for
/// files whose reader checks them (a checksum) and can do without them, where the
/// fsync would cost every commit a disk flush for nothing.
pub fn replace_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, Persist::Nothing)
}

/// How much of a replacement [`replace`] makes durable (fsyncs).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Persist {
    Nothing,
    /// The new content, before the rename.
    Content,
    /// The content and the rename.
    Rename,
}

fn replace(path: &Path, bytes: &[u8], persist: Persist) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = open_private(&tmp, IfExists::Fail)?;
        file.write_all(bytes)?;
        if persist != Persist::Nothing {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if persist == Persist::Rename {
            sync_parent(path)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `<path>.tmp-<random>`: unique, so concurrent writers never share a temp file.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp-{:08x}", fastrand::u32(..)));
    PathBuf::from(name)
}

/// fsync the directory `dir`, making the renames and creations in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// fsync the directory holding `path` (the current directory for a bare name).
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names_in(dir: &Path) -> Vec<std::ffi::OsString> {
        let entries = fs::read_dir(dir).unwrap();
        entries.map(|e| e.unwrap().file_name()).collect()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn atomic_writes_replace_privately_and_leave_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_atomic(&path, b"one", true).unwrap();
        write_atomic(&path, b"two", false).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(names_in(dir.path()), ["x.json"]);
    }

    #[test]
    fn a_failed_atomic_write_leaves_the_target_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory cannot be replaced by a file: the rename fails.
        let target = dir.path().join("taken");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"kept").unwrap();
        write_atomic(&target, b"new", true).unwrap_err();
        assert!(target.is_dir());
        assert_eq!(names_in(dir.path()), ["taken"]);
    }

    #[test]
    fn private_files_are_0600_and_honour_if_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = create_private(&path).unwrap();
        file.write_all(b"abc").unwrap();
        assert_eq!(mode(&path), 0o600);
        open_private(&path, IfExists::Keep).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"abc");
        let err = open_private(&path, IfExists::Fail).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        open_private(&path, IfExists::Truncate).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn the_parent_of_a_bare_name_is_the_current_directory() {
        sync_parent(Path::new("bare-name")).unwrap();
        sync_parent(&std::env::temp_dir().join("x")).unwrap();
    }
}
