//! The cache file as the state machine sees it: SQLite's own open file handle.
//!
//! All I/O on the cache goes through the real (unix) VFS file that SQLite opened,
//! never through a second `std::fs::File`: closing another descriptor on the same
//! inode would silently drop every POSIX lock this process holds on it.

use std::io;

use crate::remote::{SourceReader, UploadSource};

/// SQLite's lock levels, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockLevel {
    None = 0,
    Shared = 1,
    Reserved = 2,
    Pending = 3,
    Exclusive = 4,
}

impl LockLevel {
    pub fn from_raw(level: i32) -> Option<LockLevel> {
        Some(match level {
            0 => LockLevel::None,
            1 => LockLevel::Shared,
            2 => LockLevel::Reserved,
            3 => LockLevel::Pending,
            4 => LockLevel::Exclusive,
            _ => return None,
        })
    }
}

/// Why a lock request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockFail {
    /// Another connection or process holds a conflicting lock.
    Busy,
    /// The lock call itself failed with this SQLite code.
    Io(i32),
}

/// One open cache file with SQLite's locking.
pub trait LocalFile: Send {
    fn lock(&mut self, level: LockLevel) -> Result<(), LockFail>;
    fn unlock(&mut self, level: LockLevel) -> Result<(), LockFail>;
    /// Read up to `buf.len()` bytes at `offset`; returns how many were read
    /// (fewer only at the end of the file).
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn truncate(&mut self, size: u64) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
    fn size(&mut self) -> io::Result<u64>;
}

/// Every cache file is something an upload can read (the remote reads its source by
/// offset, and knows nothing else of the file: it sits below this layer).
impl<F: LocalFile + ?Sized> UploadSource for F {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        LocalFile::read_at(self, buf, offset)
    }
}

/// Reads a whole `LocalFile` front to back (the body of an upload, or of a hash).
pub type LocalFileReader<'a> = SourceReader<'a, dyn LocalFile + 'a>;

/// A `LocalFile` over a plain file with in-process lock bookkeeping, for tests of the
/// state machine without SQLite. Locks conflict only through a shared [`fake::FakeLocks`].
/// Unit tests only.
#[cfg(test)]
pub mod fake {
    use super::*;
    use parking_lot::Mutex;
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::sync::Arc;

    /// Lock table shared by the fake files of one cache.
    #[derive(Default, Debug)]
    pub struct FakeLocks {
        /// (shared holders, reserved holder, exclusive holder) by file id.
        state: Mutex<Vec<LockLevel>>,
    }

    pub struct FakeFile {
        file: File,
        locks: Arc<FakeLocks>,
        id: usize,
    }

    impl FakeFile {
        pub fn open(path: &Path, locks: Arc<FakeLocks>) -> io::Result<FakeFile> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            let id = {
                let mut s = locks.state.lock();
                s.push(LockLevel::None);
                s.len() - 1
            };
            Ok(FakeFile { file, locks, id })
        }
    }

    impl LocalFile for FakeFile {
        fn lock(&mut self, level: LockLevel) -> Result<(), LockFail> {
            let mut s = self.locks.state.lock();
            let others = s
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != self.id)
                .map(|(_, l)| *l);
            let ok = match level {
                LockLevel::Shared => others.clone().all(|l| l < LockLevel::Pending),
                LockLevel::Reserved => others.clone().all(|l| l < LockLevel::Reserved),
                _ => others.clone().all(|l| l == LockLevel::None),
            };
            if !ok {
                return Err(LockFail::Busy);
            }
            if level > s[self.id] {
                s[self.id] = level;
            }
            Ok(())
        }
        fn unlock(&mut self, level: LockLevel) -> Result<(), LockFail> {
            let mut s = self.locks.state.lock();
            if level < s[self.id] {
                s[self.id] = level;
            }
            Ok(())
        }
        fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let mut done = 0;
            while done < buf.len() {
                let n = self.file.read_at(&mut buf[done..], offset + done as u64)?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            Ok(done)
        }
        fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.file.write_all_at(buf, offset)
        }
        fn truncate(&mut self, size: u64) -> io::Result<()> {
            self.file.set_len(size)
        }
        fn sync(&mut self) -> io::Result<()> {
            self.file.sync_all()
        }
        fn size(&mut self) -> io::Result<u64> {
            Ok(self.file.metadata()?.len())
        }
    }
}
