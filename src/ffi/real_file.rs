//! The real (default VFS) file behind one of our main databases, seen by the safe
//! layers as a [`LocalFile`].

use std::ffi::c_int;
use std::ptr;

use libsqlite3_sys as sql;

use crate::localfile::{LocalFile, LockFail, LockLevel};

/// The largest single read or write handed to the real file. SQLite itself never
/// moves more than one page (64 KiB) at a time, and the unix VFS masks larger
/// requests (`nBuf &= 0x1ffff` in seekAndWriteFd), so bigger transfers are split.
const MAX_IO: usize = 64 * 1024;

/// The real file behind one of our main database files, as a [`LocalFile`].
pub(super) struct RealFile(pub(super) *mut sql::sqlite3_file);

// SAFETY: a RealFile is owned by one Connection, which SQLite only drives from one
// thread at a time (the connection's mutex); the pointer stays valid until xClose.
unsafe impl Send for RealFile {}

impl RealFile {
    /// # Safety
    /// `self.0` must be an open file whose methods table is set.
    unsafe fn methods(&self) -> &sql::sqlite3_io_methods {
        // SAFETY: the caller guarantees pMethods is a valid, non-null table.
        unsafe { &*(*self.0).pMethods }
    }

    fn read_method(&self) -> XRead {
        // SAFETY: the real file is open (RealFile lives between xOpen and xClose).
        unsafe { self.methods().xRead.unwrap() }
    }

    fn write_method(&self) -> XWrite {
        // SAFETY: as in read_method.
        unsafe { self.methods().xWrite.unwrap() }
    }
}

type XRead =
    unsafe extern "C" fn(*mut sql::sqlite3_file, *mut std::ffi::c_void, c_int, i64) -> c_int;
type XWrite =
    unsafe extern "C" fn(*mut sql::sqlite3_file, *const std::ffi::c_void, c_int, i64) -> c_int;

/// Run one transfer of `len` bytes at `offset` as pieces of at most [`MAX_IO`]:
/// `piece(start in the buffer, length, file offset)` returns a SQLite code; the
/// first that is not SQLITE_OK is the error.
fn in_pieces(
    len: usize,
    offset: u64,
    mut piece: impl FnMut(usize, c_int, i64) -> c_int,
) -> Result<(), c_int> {
    for start in (0..len).step_by(MAX_IO) {
        let n = MAX_IO.min(len - start);
        match piece(start, n as c_int, (offset + start as u64) as i64) {
            sql::SQLITE_OK => {}
            rc => return Err(rc),
        }
    }
    Ok(())
}

impl RealFile {
    /// SQLite code `rc` as an io error, with the system's reason the real file
    /// recorded (SQLITE_FCNTL_LAST_ERRNO: "File too large" says more than a code).
    /// A full disk keeps its kind, so that it reaches SQLite as SQLITE_FULL again.
    fn error(&self, rc: c_int, what: &str) -> std::io::Error {
        let mut errno: c_int = 0;
        // SAFETY: the real file is open; SQLITE_FCNTL_LAST_ERRNO writes one int
        // through the pointer, which is valid for that.
        let got = unsafe {
            (self.methods().xFileControl.unwrap())(
                self.0,
                sql::SQLITE_FCNTL_LAST_ERRNO,
                (&mut errno as *mut c_int).cast(),
            )
        };
        let os =
            (got == sql::SQLITE_OK && errno != 0).then(|| std::io::Error::from_raw_os_error(errno));
        let kind = match (rc & 0xff, &os) {
            (sql::SQLITE_FULL, _) => std::io::ErrorKind::StorageFull,
            (_, Some(os)) => os.kind(),
            _ => std::io::ErrorKind::Other,
        };
        let why = os.map_or(String::new(), |os| format!(": {os}"));
        std::io::Error::new(kind, format!("{what} failed with SQLite code {rc}{why}"))
    }

    fn check(&self, rc: c_int, what: &str) -> std::io::Result<()> {
        match rc {
            sql::SQLITE_OK => Ok(()),
            rc => Err(self.error(rc, what)),
        }
    }
}

impl LocalFile for RealFile {
    fn lock(&mut self, level: LockLevel) -> std::result::Result<(), LockFail> {
        // SAFETY: the real file is open (RealFile lives between xOpen and xClose).
        let rc = unsafe { (self.methods().xLock.unwrap())(self.0, level as c_int) };
        match rc {
            sql::SQLITE_OK => Ok(()),
            sql::SQLITE_BUSY => Err(LockFail::Busy),
            other => Err(LockFail::Io(other)),
        }
    }
    fn unlock(&mut self, level: LockLevel) -> std::result::Result<(), LockFail> {
        // SAFETY: as in lock.
        let rc = unsafe { (self.methods().xUnlock.unwrap())(self.0, level as c_int) };
        match rc {
            sql::SQLITE_OK => Ok(()),
            other => Err(LockFail::Io(other)),
        }
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let size = self.size()?;
        if offset >= size {
            return Ok(0);
        }
        let n = buf.len().min((size - offset) as usize);
        let read = self.read_method();
        let file = self.0;
        in_pieces(n, offset, |start, len, at| {
            // SAFETY: buf[start..start + len] is valid (start + len <= n <= buf.len());
            // the real file is open.
            unsafe { read(file, buf[start..].as_mut_ptr().cast(), len, at) }
        })
        .map_err(|rc| self.error(rc, "reading the cache"))?;
        Ok(n)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let write = self.write_method();
        let file = self.0;
        in_pieces(buf.len(), offset, |start, len, at| {
            // SAFETY: buf[start..start + len] is valid; the real file is open.
            unsafe { write(file, buf[start..].as_ptr().cast(), len, at) }
        })
        .map_err(|rc| self.error(rc, "writing the cache"))
    }
    fn truncate(&mut self, size: u64) -> std::io::Result<()> {
        // SAFETY: the real file is open.
        let rc = unsafe { (self.methods().xTruncate.unwrap())(self.0, size as i64) };
        self.check(rc, "truncating the cache")
    }
    fn sync(&mut self) -> std::io::Result<()> {
        // SAFETY: the real file is open.
        let rc = unsafe { (self.methods().xSync.unwrap())(self.0, sql::SQLITE_SYNC_NORMAL) };
        self.check(rc, "syncing the cache")
    }
    fn size(&mut self) -> std::io::Result<u64> {
        let mut size: i64 = 0;
        // SAFETY: the real file is open; size is a valid out pointer.
        let rc = unsafe { (self.methods().xFileSize.unwrap())(self.0, &mut size) };
        self.check(rc, "sizing the cache")?;
        Ok(size as u64)
    }
}

/// Close the real file (a failed open's cleanup, and xClose).
///
/// # Safety
/// `real` must be an open real file, closed exactly once.
pub(super) unsafe fn close_real(real: *mut sql::sqlite3_file) -> c_int {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let methods = (*real).pMethods;
        if methods.is_null() {
            return sql::SQLITE_OK;
        }
        let rc = ((*methods).xClose.unwrap())(real);
        (*real).pMethods = ptr::null();
        rc
    }
}

/// A second handle on a cache file, opened through the default VFS (so its locks
/// take part in SQLite's in-process lock table, and closing it drops no other
/// connection's POSIX lock), for the store's flusher thread, which has no
/// connection. Read-only: the flusher only reads and locks SHARED.
pub(super) struct OwnedRealFile {
    /// The default VFS's file, in memory of its `szOsFile` (u64s for alignment).
    buf: Vec<u64>,
    /// The filename the default VFS keeps a pointer to until the close.
    name: sql::sqlite3_filename,
}

// SAFETY: the handle is used by one thread at a time (the flusher owns it); the
// default VFS serialises what its files share (the inode's lock table) itself.
unsafe impl Send for OwnedRealFile {}

impl OwnedRealFile {
    /// Open `path` read-only through `vfs`, the default VFS.
    ///
    /// # Safety
    /// `vfs` must be a registered VFS that lives for the rest of the process.
    pub(super) unsafe fn open(
        vfs: *mut sql::sqlite3_vfs,
        path: &std::path::Path,
    ) -> std::io::Result<OwnedRealFile> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("the cache path contains a NUL byte"))?;
        // SAFETY: guaranteed by the caller.
        let size = unsafe { (*vfs).szOsFile } as usize;
        let mut buf = vec![0u64; size.div_ceil(8).max(1)];
        // SAFETY: three valid C strings and no parameters; SQLite copies them. The
        // double-NUL form is what the default VFS expects of a main database's name.
        let name = unsafe {
            sql::sqlite3_create_filename(c.as_ptr(), c"".as_ptr(), c"".as_ptr(), 0, ptr::null_mut())
        };
        if name.is_null() {
            return Err(std::io::Error::other("out of memory naming the cache"));
        }
        let file = buf.as_mut_ptr() as *mut sql::sqlite3_file;
        let flags = sql::SQLITE_OPEN_READONLY | sql::SQLITE_OPEN_MAIN_DB;
        let mut out: c_int = 0;
        // SAFETY: file has room for szOsFile bytes, 8-byte aligned; name lives until
        // the close (Drop frees it after closing).
        let rc = unsafe { ((*vfs).xOpen.unwrap())(vfs, name, file, flags, &mut out) };
        let opened = OwnedRealFile { buf, name };
        if rc != sql::SQLITE_OK {
            return Err(std::io::Error::other(format!(
                "opening the cache failed with SQLite code {rc}"
            )));
        }
        Ok(opened)
    }

    fn real(&mut self) -> RealFile {
        RealFile(self.buf.as_mut_ptr() as *mut sql::sqlite3_file)
    }
}

impl Drop for OwnedRealFile {
    fn drop(&mut self) {
        let file = self.buf.as_mut_ptr() as *mut sql::sqlite3_file;
        // SAFETY: the file was opened (or its pMethods left null by a failed open,
        // which close_real skips) and is closed exactly once, here; the name is
        // freed after the close, once nothing points to it.
        unsafe {
            close_real(file);
            sql::sqlite3_free_filename(self.name);
        }
    }
}

impl LocalFile for OwnedRealFile {
    fn lock(&mut self, level: LockLevel) -> std::result::Result<(), LockFail> {
        self.real().lock(level)
    }
    fn unlock(&mut self, level: LockLevel) -> std::result::Result<(), LockFail> {
        self.real().unlock(level)
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.real().read_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.real().write_at(buf, offset)
    }
    fn truncate(&mut self, size: u64) -> std::io::Result<()> {
        self.real().truncate(size)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.real().sync()
    }
    fn size(&mut self) -> std::io::Result<u64> {
        self.real().size()
    }
}
