//! The loadable-extension entry (`sqlite3_managedblob_init` in `loadable/`).

use std::ffi::{c_char, c_int};

use libsqlite3_sys as sql;

use super::{guard, register, sqlite_string};
use crate::config::Options;

/// The body of `sqlite3_managedblob_init`: bind to the host's api routines, register
/// the VFS, and stay loaded after the loading connection closes.
///
/// # Safety
/// Must be called by SQLite as an extension entry point, with its arguments.
pub unsafe fn extension_init(
    _db: *mut sql::sqlite3,
    err: *mut *mut c_char,
    api: *mut sql::sqlite3_api_routines,
) -> c_int {
    guard(|| {
        // SAFETY: api is the routine table SQLite passed to the entry point.
        if let Err(e) = unsafe { sql::rusqlite_extension_init2(api) } {
            if !err.is_null() {
                // SAFETY: err is SQLite's out pointer; sqlite_string uses the api just bound
                // (or returns null when it failed before binding malloc).
                unsafe { *err = sqlite_string(&format!("managedblob: {e}")) };
            }
            return sql::SQLITE_ERROR;
        }
        match register(Options::default()) {
            Ok(()) => sql::SQLITE_OK_LOAD_PERMANENTLY,
            Err(e) => {
                if !err.is_null() {
                    // SAFETY: as above.
                    unsafe { *err = sqlite_string(&e.to_string()) };
                }
                sql::SQLITE_ERROR
            }
        }
    })
}
