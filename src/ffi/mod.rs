//! The VFS and io_methods tables SQLite calls: with `src/sys.rs`, the only unsafe code
//! of managedblob, shaped like SQLite's own shim VFSes (ext/misc/appendvfs.c,
//! vfstrace.c).
//!
//! - Our `sqlite3_file` ([`MbFile`]) starts with the base struct; the real (default
//!   VFS) file lives right after it, at [`REAL_OFFSET`], and `szOsFile` covers both.
//! - Files other than main databases are opened by the default VFS straight into our
//!   buffer, so SQLite then talks to them without us (journals, temp files).
//! - Every callback runs inside [`guard`], which catches panics (a panic must never
//!   unwind into C) and maps a null pointer to SQLITE_INTERNAL.
//! - A main database whose settings are invalid opens in a *failed* state: its
//!   methods report an empty file, and the auto-extension
//!   [`register::report_open_error`], which SQLite runs at the end of every open,
//!   fails the open with our message. That is how "setting 'remote' is missing"
//!   reaches `sqlite3_errmsg` (as the open's own error with the bundled SQLite; with
//!   SQLite's "automatic extension loading failed: " before it in the loadable
//!   extension).
//!
//! By job: [`register`] (the VFS table, its pass-throughs and the auto-extension),
//! [`open`] (xOpen), [`io`] (the io methods), [`file_control`] (our pragmas and the
//! commit hooks), [`real_file`] (the real file as a [`crate::localfile::LocalFile`]),
//! [`extension`] (the loadable-extension entry). Above this module everything is
//! safe Rust ([`crate::connection::Connection`], [`crate::cache_file`]).

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use libsqlite3_sys as sql;

use crate::config::Options;
use crate::connection::Connection;

/// Call a method of a main database's real file, or answer `$failed` when its open
/// failed (there is no real file then).
macro_rules! real_call {
    ($file:expr, $failed:expr, $method:ident, $($arg:expr),*) => {{
        // SAFETY: SQLite calls io methods only on files our x_open set up.
        match unsafe { $crate::ffi::main_db($file) } {
            None => sql::SQLITE_INTERNAL,
            Some(main) if main.real.is_null() => $failed,
            // SAFETY: real is open until x_close.
            Some(main) => unsafe { ((*(*main.real).pMethods).$method.unwrap())(main.real, $($arg),*) },
        }
    }};
}

#[cfg(feature = "loadable_extension")]
mod extension;
mod file_control;
mod io;
mod open;
mod pinned;
mod real_file;
mod register;

#[cfg(feature = "loadable_extension")]
pub use extension::{
    extension_init, real_sqlite_function, register_before_first_open, register_in_process,
};
pub use register::register;

/// Our part of an open file. SQLite allocates `szOsFile` bytes for it.
#[repr(C)]
struct MbFile {
    base: sql::sqlite3_file,
    main: *mut MainDb,
}

/// Where the real file starts inside our allocation (8-byte aligned).
const REAL_OFFSET: usize = std::mem::size_of::<MbFile>().next_multiple_of(8);

/// A main database file: its connection, or the reason its open failed.
struct MainDb {
    connection: Option<Connection>,
    open_error: Option<OpenError>,
    real: *mut sql::sqlite3_file,
    /// The connection's busy handler, given by SQLITE_FCNTL_BUSYHANDLER right after
    /// the open: what a pragma that must wait (a batch's begin) waits with, so the
    /// application's busy_timeout bounds it as it bounds a write.
    busy: Option<BusyHandler>,
}

/// SQLite's `int (*)(void*)` busy callback and its argument (the pager's
/// `xBusyHandler` and `pBusyHandlerArg`).
#[derive(Clone, Copy)]
struct BusyHandler {
    callback: unsafe extern "C" fn(*mut std::ffi::c_void) -> std::ffi::c_int,
    arg: *mut std::ffi::c_void,
}

impl BusyHandler {
    /// One call of the connection's busy handler: it sleeps as the connection's
    /// busy_timeout says and answers whether to try again.
    fn wait(&self) -> bool {
        // SAFETY: SQLite gave this callback and argument for this file's connection
        // (sqlite3PagerSetBusyHandler); it is called, as SQLite calls it, on the
        // connection's thread with its mutex held: from xFileControl, during the
        // pragma, before the file is closed. SQLite resets the handler's count before
        // every SQLITE_FCNTL_PRAGMA.
        unsafe { (self.callback)(self.arg) != 0 }
    }
}

/// Why an open failed: the code the open returns (SQLITE_FULL for a full disk,
/// SQLITE_CANTOPEN for most else) and our message.
struct OpenError {
    code: std::ffi::c_int,
    message: String,
}

/// What each registered VFS knows: the VFS it wraps and its defaults.
struct VfsData {
    real: *mut sql::sqlite3_vfs,
    options: Options,
    name: CString,
}

// SAFETY: VfsData is created once per registration, leaked, and never mutated; the
// real VFS pointer it holds is SQLite's and valid for the life of the process.
unsafe impl Send for VfsData {}
// SAFETY: see above: immutable after construction.
unsafe impl Sync for VfsData {}

/// Run a callback body; a panic becomes SQLITE_INTERNAL instead of unwinding into C.
fn guard(body: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(rc) => rc,
        Err(_) => {
            tracing::error!("managedblob: a panic was caught at the SQLite boundary");
            sql::SQLITE_INTERNAL
        }
    }
}

/// A copy of `s` in memory from sqlite3_malloc (SQLite frees it), redacted: every
/// text the VFS hands SQLite (open errors, pragma answers) goes through here.
fn sqlite_string(s: &str) -> *mut c_char {
    let s = crate::redact::redact(s);
    let bytes = s.as_bytes();
    // SAFETY: sqlite3_malloc returns null or a block of the requested size.
    let p = unsafe { sql::sqlite3_malloc((bytes.len() + 1) as c_int) } as *mut c_char;
    if !p.is_null() {
        // SAFETY: p has room for len + 1 bytes; bytes is valid for len bytes.
        unsafe {
            ptr::copy_nonoverlapping(bytes.as_ptr().cast(), p, bytes.len());
            *p.add(bytes.len()) = 0;
        }
    }
    p
}

/// # Safety
/// `vfs` must be one of ours.
unsafe fn vfs_data<'a>(vfs: *mut sql::sqlite3_vfs) -> &'a VfsData {
    // SAFETY: our VFS structs carry a leaked VfsData in pAppData.
    unsafe { &*((*vfs).pAppData as *const VfsData) }
}

/// # Safety
/// `file` must be null or a main database opened by [`open`] and not yet closed.
unsafe fn main_db<'a>(file: *mut sql::sqlite3_file) -> Option<&'a mut MainDb> {
    if file.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller; main is null only before open completes.
    unsafe { (*(file as *mut MbFile)).main.as_mut() }
}
