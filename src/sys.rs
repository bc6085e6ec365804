//! The operating-system calls the local backend needs (flock, FICLONE, kill(0),
//! gethostname), as safe functions: with the VFS shim (`src/ffi/`), the crate's only
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
