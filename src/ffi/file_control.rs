//! xFileControl of a main database: our pragmas, the commit hooks (SYNC and
//! COMMIT_PHASETWO, where a commit is published), and the VFS name. The rest goes to
//! the real file.

use std::ffi::{c_char, c_int, c_void, CStr};

use libsqlite3_sys as sql;

use super::{guard, main_db, sqlite_string};

pub(super) unsafe extern "C" fn x_file_control(
    file: *mut sql::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    guard(|| {
        // SAFETY: file is ours.
        let Some(main) = (unsafe { main_db(file) }) else {
            return sql::SQLITE_INTERNAL;
        };
        let Some(connection) = main.connection.as_mut() else {
            return sql::SQLITE_NOTFOUND;
        };
        let pass_on = || real_call!(file, sql::SQLITE_NOTFOUND, xFileControl, op, arg);
        match op {
            sql::SQLITE_FCNTL_PRAGMA => {
                // SAFETY: for FCNTL_PRAGMA, arg is a char*[3]: out message, name, value.
                let args = arg as *mut *mut c_char;
                let (name, value) = unsafe {
                    let name = CStr::from_ptr(*args.add(1)).to_string_lossy().into_owned();
                    let value = (*args.add(2))
                        .as_ref()
                        .map(|v| CStr::from_ptr(v).to_string_lossy().into_owned());
                    (name, value)
                };
                let Some(parsed) = crate::pragma::parse(&name, value.as_deref()) else {
                    return pass_on();
                };
                let outcome = parsed.and_then(|command| connection.pragma(command));
                let (rc, text) = match outcome {
                    Ok(row) => (sql::SQLITE_OK, row),
                    Err(message) => (sql::SQLITE_ERROR, Some(message)),
                };
                if let Some(text) = text {
                    // SAFETY: args[0] is the out slot; SQLite frees it with sqlite3_free.
                    unsafe { *args = sqlite_string(&text) };
                }
                rc
            }
            sql::SQLITE_FCNTL_SYNC | sql::SQLITE_FCNTL_COMMIT_PHASETWO => {
                let rc = if op == sql::SQLITE_FCNTL_SYNC {
                    connection.sync_point()
                } else {
                    connection.commit_phase_two()
                };
                if rc != sql::SQLITE_OK {
                    return rc;
                }
                pass_on()
            }
            sql::SQLITE_FCNTL_VFSNAME => {
                let rc = pass_on();
                let slot = arg as *mut *mut c_char;
                // SAFETY: for VFSNAME, arg is a char** the real VFS may have filled with
                // memory from sqlite3_malloc.
                unsafe {
                    let inner = (*slot)
                        .as_ref()
                        .map(|p| CStr::from_ptr(p).to_string_lossy().into_owned());
                    let ours = match &inner {
                        Some(inner) => format!("{}/{inner}", crate::VFS_NAME),
                        None => crate::VFS_NAME.to_string(),
                    };
                    if !(*slot).is_null() {
                        sql::sqlite3_free((*slot).cast());
                    }
                    *slot = sqlite_string(&ours);
                }
                if rc == sql::SQLITE_NOTFOUND {
                    sql::SQLITE_OK
                } else {
                    rc
                }
            }
            _ => pass_on(),
        }
    })
}
