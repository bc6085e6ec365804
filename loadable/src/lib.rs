//! `libmanagedblob.so`: the managedblob VFS as a SQLite loadable extension.
//!
//! All the code lives in the `managedblob` crate (built with its `loadable_extension`
//! feature, so every `sqlite3_*` call goes through the host's api routines); this
//! crate only exports the entry point SQLite looks up for `libmanagedblob`.

use std::ffi::{c_char, c_int};

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
    unsafe { managedblob::extension_init(db, pz_err_msg, p_api) }
}
