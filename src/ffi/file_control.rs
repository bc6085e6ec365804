//! xFileControl of a main database: our pragmas, the commit hooks (SYNC and
//! COMMIT_PHASETWO, where a commit is published), and the VFS name. The rest goes to
//! the real file.

use std::ffi::{c_char, c_int, c_void, CStr};

use libsqlite3_sys as sql;

use super::{guard, main_db, sqlite_string, BusyHandler};
use crate::pragma::unavailable_journal_mode;

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
        if op == sql::SQLITE_FCNTL_BUSYHANDLER {
            // SAFETY: for FCNTL_BUSYHANDLER, arg is a void*[2]: the busy callback (an
            // `int (*)(void*)`, non-null: SQLite's btreeInvokeBusyHandler) and its
            // argument, valid while the connection is open.
            main.busy = unsafe {
                let slots = arg as *const *mut c_void;
                let callback = *slots;
                (!callback.is_null()).then(|| BusyHandler {
                    callback: std::mem::transmute::<
                        *mut c_void,
                        unsafe extern "C" fn(*mut c_void) -> c_int,
                    >(callback),
                    arg: *slots.add(1),
                })
            };
        }
        let busy = main.busy;
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
                if let Some((mode, why)) = unavailable_journal_mode(&name, value.as_deref()) {
                    tracing::info!(
                        "managedblob: journal_mode={mode} is not available on a managed \
                         database ({why}); the journal mode in force stays"
                    );
                    // SAFETY: args[2] is the value, non-null here: SQLite's own writable
                    // copy of the token for this one pragma (sqlite3NameFromToken in
                    // pragma.c), at least one byte plus its NUL, which SQLite reads again
                    // when we answer NOTFOUND and frees afterwards.
                    unsafe { keep_journal_mode(*args.add(2)) };
                    return pass_on();
                }
                let Some(parsed) = crate::pragma::parse(&name, value.as_deref()) else {
                    return pass_on();
                };
                let mut wait = || busy.is_some_and(|b| b.wait());
                let outcome = parsed.and_then(|command| connection.pragma(command, &mut wait));
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
                    connection.commit_point()
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

/// Turn `PRAGMA journal_mode=<value>` into SQLite's query form, which answers the mode
/// in force: SQLite takes a value that names no mode as a query (pragma.c,
/// PragTyp_JOURNAL_MODE), and `?` starts no mode's name. The pragma then goes on as
/// SQLite's own, so the application sees the mode that really applies.
///
/// # Safety
/// `value` must be the writable, NUL-terminated value of the pragma, at least one byte
/// long.
unsafe fn keep_journal_mode(value: *mut c_char) {
    // SAFETY: guaranteed by the caller: bytes 0 and 1 (the first byte's successor, a
    // character or the NUL) are inside the string.
    unsafe {
        *value = b'?' as c_char;
        *value.add(1) = 0;
    }
}
