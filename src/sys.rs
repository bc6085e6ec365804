//! The operating-system calls the local backend and the cache need (flock,
//! byte-range locks, FICLONE, hole punching, a read-only shared mapping, kill(0),
//! gethostname, the boot id), as
//! safe functions: with the VFS shim (`src/ffi/`), the crate's only
//! unsafe code.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Make the empty file `dest` share all of `src`'s data (a reflink, `FICLONE`):
/// instant and space-free on btrfs, xfs and other copy-on-write file systems.
/// `false` where that is not supported (ext4, tmpfs, across file systems).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn reflink(dest: &File, src: &File) -> bool {
    // SAFETY: both descriptors are valid while `dest` and `src` are borrowed; FICLONE
    // takes the source descriptor as its integer argument and reads or writes no
    // memory of this process.
    let rc = unsafe { libc::ioctl(dest.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if rc != 0 {
        tracing::trace!(error = %io::Error::last_os_error(), "no reflink; copying");
    }
    rc == 0
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn reflink(_dest: &File, _src: &File) -> bool {
    false
}

/// Give the disk space of `len` bytes at `offset` of `file` back to the file system,
/// keeping the file's length (`fallocate(PUNCH_HOLE | KEEP_SIZE)`): the range reads
/// as zeros after. `Unsupported` where the file system cannot (then nothing changed).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: the descriptor is valid while `file` is borrowed; fallocate reads or
    // writes no memory of this process.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
            io::Error::new(io::ErrorKind::Unsupported, e)
        }
        _ => e,
    })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn punch_hole(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "hole punching is implemented for Linux only",
    ))
}

/// Block until we hold `LOCK_EX` on `file`. Each `File` is its own open file
/// description, so this excludes other threads of this process as well.
pub(crate) fn flock_exclusive(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: the descriptor is valid while `file` is borrowed; flock touches no memory.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// What [`try_lock_range`] asks for on a byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeLock {
    /// A read (shared) lock: `F_RDLCK`.
    Read,
    /// A write (exclusive) lock: `F_WRLCK`.
    Write,
    /// Release what this open file description holds there: `F_UNLCK`.
    Unlock,
}

/// Try once to set a POSIX byte-range lock on `len` bytes at `start` of `file`,
/// without waiting: `Ok(false)` when another holder's lock conflicts.
///
/// On Linux these are open-file-description locks (`F_OFD_SETLK`): they belong to
/// the open `File`, not to the process, so they conflict between threads of this
/// process too and are not dropped when some other descriptor of the file is closed;
/// they still conflict with the classic `F_SETLK` locks SQLite's unix VFS takes in
/// other processes. Elsewhere, classic process-owned locks.
pub(crate) fn try_lock_range(
    file: &File,
    start: u64,
    len: u64,
    kind: RangeLock,
) -> io::Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const SET_LOCK: libc::c_int = libc::F_OFD_SETLK;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const SET_LOCK: libc::c_int = libc::F_SETLK;
    let out_of_range = || io::Error::new(io::ErrorKind::InvalidInput, "lock range too large");
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value
    // (and OFD locks require `l_pid` to be 0).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = match kind {
        RangeLock::Read => libc::F_RDLCK,
        RangeLock::Write => libc::F_WRLCK,
        RangeLock::Unlock => libc::F_UNLCK,
    } as _;
    lock.l_whence = libc::SEEK_SET as _;
    lock.l_start = libc::off_t::try_from(start).map_err(|_| out_of_range())?;
    lock.l_len = libc::off_t::try_from(len).map_err(|_| out_of_range())?;
    loop {
        // SAFETY: the descriptor is valid while `file` is borrowed, and `lock` is a
        // live, initialized `flock` that fcntl only reads for a SETLK command.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), SET_LOCK, &lock) };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN | libc::EACCES) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// The first `len` bytes of a file mapped read-only and shared (`mmap(PROT_READ,
/// MAP_SHARED)`): what another process writes there (through `pwrite` or its own
/// mapping) is seen by a memory load, without a system call. Read as 64-bit words,
/// each an atomic load (the bytes may change under us; a reader compares them,
/// it never trusts them alone).
///
/// The mapping must never extend past the file's end: a load there raises SIGBUS.
/// [`SharedView::map`] refuses a file shorter than `len`, and its callers never
/// shorten the file below `len` afterwards.
#[derive(Debug)]
pub(crate) struct SharedView {
    ptr: std::ptr::NonNull<std::sync::atomic::AtomicU64>,
    words: usize,
}

// SAFETY: the mapping is only read, through atomic loads, and lives until drop: it
// may be used and dropped from any thread.
unsafe impl Send for SharedView {}
// SAFETY: as above; `&SharedView` only gives atomic loads.
unsafe impl Sync for SharedView {}

impl SharedView {
    /// Map the first `len` bytes (a multiple of 8, at most one page is what the
    /// cache uses) of `file`. `Unsupported` for a file shorter than `len`.
    pub(crate) fn map(file: &File, len: usize) -> io::Result<SharedView> {
        if len == 0 || len % 8 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad mapping length",
            ));
        }
        if file.metadata()?.len() < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the file is shorter than the mapping",
            ));
        }
        // SAFETY: a fresh mapping (address chosen by the kernel) of a valid
        // descriptor, read-only; no memory of this process is touched. The result is
        // checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast::<std::sync::atomic::AtomicU64>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedView {
            ptr,
            words: len / 8,
        })
    }

    /// Word `i` (bytes `8i .. 8i + 8`, native order) as it is now; `None` past the end.
    pub(crate) fn word(&self, i: usize) -> Option<u64> {
        if i >= self.words {
            return None;
        }
        // SAFETY: the mapping is page-aligned, `words * 8` bytes long and alive while
        // `self` is; `i` is in range, so the pointer is aligned and in bounds.
        // AtomicU64 has u64's layout, and the memory is only ever accessed through
        // atomic loads here (another process's writes are outside this program's
        // memory model, which atomics tolerate: a torn or old value is compared,
        // never trusted).
        let w = unsafe { &*self.ptr.as_ptr().add(i) };
        Some(w.load(std::sync::atomic::Ordering::Acquire))
    }
}

impl Drop for SharedView {
    fn drop(&mut self) {
        // SAFETY: `ptr` and the length are exactly what mmap returned and was given;
        // no reference into the mapping outlives `self` (`word` copies the value).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.words * 8);
        }
    }
}

/// Whether `pid` may still be running: only ESRCH from `kill(pid, 0)` says no.
pub(crate) fn process_exists(pid: u32) -> bool {
    // 0 and negative values address process groups, not a process.
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks for existence and permission; no memory is involved.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Changes on every boot, so a pid recorded before a reboot is never trusted (the
/// local backend's lease records and the sidecar's owner both carry it).
pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The address of the function `symbol` in the library loaded after this one (the
/// process's shared libsqlite3 when this library is preloaded), or else in `library`
/// if that is already loaded (a library opened with RTLD_LOCAL, as Python opens
/// `_sqlite3` and its libsqlite3). Never this library's own definition, so a function
/// that stands in for SQLite's can find the real one. Looking up is harmless; calling
/// what is found is the caller's (unsafe) business.
#[cfg(feature = "loadable_extension")]
pub(crate) fn find_symbol(
    symbol: &std::ffi::CStr,
    library: &std::ffi::CStr,
) -> Option<*mut std::ffi::c_void> {
    // SAFETY: RTLD_NEXT is a valid pseudo-handle; symbol is a C string.
    let found = unsafe { libc::dlsym(libc::RTLD_NEXT, symbol.as_ptr()) };
    if !found.is_null() {
        return Some(found);
    }
    // SAFETY: with RTLD_NOLOAD, dlopen only returns a handle to a library that is
    // already loaded (and takes a reference, released below); library is a C string.
    let handle = unsafe { libc::dlopen(library.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return None;
    }
    // SAFETY: handle is a live handle from dlopen; symbol is a C string. The library
    // stays loaded after dlclose, which only drops the reference NOLOAD took, because
    // whoever loaded it first still holds theirs.
    let found = unsafe {
        let found = libc::dlsym(handle, symbol.as_ptr());
        libc::dlclose(handle);
        found
    };
    (!found.is_null()).then_some(found)
}
