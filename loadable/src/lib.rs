//! `libmanagedblob.so`: the managedblob VFS as a SQLite loadable extension.
//!
//! All the code lives in the `managedblob` crate (built with its `loadable_extension`
//! feature, so every `sqlite3_*` call goes through the host's api routines); this
//! crate only exports the entry point SQLite looks up for `libmanagedblob`, stand-ins
//! for `sqlite3_open*` that register the VFS before the first open when the library is
//! preloaded (`LD_PRELOAD`), and the same registration as a C function for hosts that
//! load the library themselves (ctypes).

use std::ffi::{c_char, c_int, c_void};

use libsqlite3_sys::{sqlite3, sqlite3_api_routines};

/// The entry point `.load ./libmanagedblob` and `load_extension` call: registers the
/// `managedblob` VFS and returns SQLITE_OK_LOAD_PERMANENTLY so it stays registered
/// after the loading connection closes.
///
/// # Safety
/// Only SQLite calls this, as an extension entry point, with its own arguments.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_managedblob_init(
    db: *mut sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut sqlite3_api_routines,
) -> c_int {
    // SAFETY: SQLite calls this entry point with the connection loading us, its error
    // message slot and its api routine table, which is what extension_init requires.
    unsafe { managedblob::internal::extension_init(db, pz_err_msg, p_api) }
}

/// Register the VFS with the process's shared SQLite library (`libsqlite3`) without
/// an entry-point call. 0 on success, 1 when there is no shared SQLite in the process
/// or its registration failed (see `managedblob::internal::register_in_process`).
#[no_mangle]
pub extern "C" fn managedblob_register_in_process() -> c_int {
    match std::panic::catch_unwind(managedblob::internal::register_in_process) {
        Ok(Ok(())) => 0,
        Ok(Err(_)) | Err(_) => 1,
    }
}

// Stand-ins for SQLite's open functions. They take effect only when this library is
// preloaded (`LD_PRELOAD`): then they come before the shared libsqlite3 in the
// process's symbol search, register the VFS once, and call SQLite's own function. A
// library loaded later (`.load`, dlopen) comes after libsqlite3 and is never reached
// under these names.

const CANTOPEN: c_int = 14;

/// One stand-in: register once, then call SQLite's function of the same name (or
/// answer SQLITE_CANTOPEN when there is none to call).
macro_rules! open_stand_in {
    ($name:ident($($arg:ident: $ty:ty),*)) => {
        #[doc = concat!("`", stringify!($name), "`, after registering the VFS once.")]
        ///
        /// # Safety
        /// As SQLite's function of this name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
            type Real = unsafe extern "C" fn($($ty),*) -> c_int;
            managedblob::internal::register_before_first_open();
            let name = concat!(stringify!($name), "\0");
            let name = std::ffi::CStr::from_bytes_with_nul(name.as_bytes()).unwrap();
            match managedblob::internal::real_sqlite_function(name) {
                // SAFETY: SQLite's function of this name, whose C type (sqlite3.h) Real
                // is, called with the caller's arguments.
                Some(f) => unsafe { std::mem::transmute::<*mut c_void, Real>(f)($($arg),*) },
                None => CANTOPEN,
            }
        }
    };
}

open_stand_in!(sqlite3_open_v2(
    filename: *const c_char,
    db: *mut *mut sqlite3,
    flags: c_int,
    vfs: *const c_char
));
open_stand_in!(sqlite3_open(filename: *const c_char, db: *mut *mut sqlite3));
open_stand_in!(sqlite3_open16(filename: *const c_void, db: *mut *mut sqlite3));
