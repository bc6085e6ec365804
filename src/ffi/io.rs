//! The io methods of a main database: reads and writes go to the real file, locks to
//! the [`Connection`](crate::connection::Connection), which syncs with the remote.
//! A database whose open failed answers as an empty file that cannot be written.

use std::ffi::{c_int, c_void};
use std::ptr;

use libsqlite3_sys as sql;

use super::file_control::x_file_control;
use super::real_file::close_real;
use super::{guard, main_db, MbFile};
use crate::connection::Connection;
use crate::localfile::LockLevel;

pub(super) static IO_METHODS: sql::sqlite3_io_methods = sql::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn x_close(file: *mut sql::sqlite3_file) -> c_int {
    guard(|| {
        if file.is_null() {
            return sql::SQLITE_INTERNAL;
        }
        let mb = file as *mut MbFile;
        // SAFETY: file is ours; main was created by Box::into_raw in open_main.
        let main = unsafe { std::mem::replace(&mut (*mb).main, ptr::null_mut()) };
        if main.is_null() {
            return sql::SQLITE_OK;
        }
        // SAFETY: main came from Box::into_raw and is taken exactly once (nulled above).
        let main = unsafe { Box::from_raw(main) };
        if let Some(connection) = main.connection {
            connection.close();
        }
        if main.real.is_null() {
            return sql::SQLITE_OK;
        }
        // SAFETY: the real file is open and closed only here.
        unsafe { close_real(main.real) }
    })
}

unsafe extern "C" fn x_read(
    file: *mut sql::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    off: i64,
) -> c_int {
    guard(|| {
        // SAFETY: file is ours (SQLite calls io methods only on files x_open set up).
        if let Some(connection) = unsafe { main_db(file) }.and_then(|m| m.connection.as_mut()) {
            if let Err(code) = connection.before_read(off as u64, amt.max(0) as u64) {
                return code;
            }
        }
        real_call!(
            file,
            {
                // "If xRead() returns SQLITE_IOERR_SHORT_READ it must also fill in the
                // unread portions of the buffer with zeros."
                // SAFETY: buf is valid for amt bytes.
                unsafe { ptr::write_bytes(buf as *mut u8, 0, amt.max(0) as usize) };
                sql::SQLITE_IOERR_SHORT_READ
            },
            xRead,
            buf,
            amt,
            off
        )
    })
}
unsafe extern "C" fn x_write(
    file: *mut sql::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    off: i64,
) -> c_int {
    guard(|| {
        // SAFETY: file is ours (SQLite calls io methods only on files x_open set up).
        if let Some(connection) = unsafe { main_db(file) }.and_then(|m| m.connection.as_mut()) {
            if let Err(code) = connection.before_write(off as u64, amt.max(0) as u64) {
                return code;
            }
            connection.note_write(off as u64, amt as u64);
        }
        real_call!(file, sql::SQLITE_CANTOPEN, xWrite, buf, amt, off)
    })
}
unsafe extern "C" fn x_truncate(file: *mut sql::sqlite3_file, size: i64) -> c_int {
    guard(|| real_call!(file, sql::SQLITE_CANTOPEN, xTruncate, size))
}
unsafe extern "C" fn x_sync(file: *mut sql::sqlite3_file, flags: c_int) -> c_int {
    guard(|| real_call!(file, sql::SQLITE_CANTOPEN, xSync, flags))
}

/// The answer of a failed open to xFileSize and xCheckReservedLock: 0 (an empty
/// file that nobody has reserved).
///
/// # Safety
/// `out` must be SQLite's out pointer for the call.
unsafe fn answer_zero<T: From<u8>>(out: *mut T) -> c_int {
    // SAFETY: guaranteed by the caller.
    unsafe { *out = T::from(0) };
    sql::SQLITE_OK
}

unsafe extern "C" fn x_file_size(file: *mut sql::sqlite3_file, out: *mut i64) -> c_int {
    // SAFETY: out is SQLite's out pointer for xFileSize.
    guard(|| real_call!(file, unsafe { answer_zero(out) }, xFileSize, out))
}
unsafe extern "C" fn x_check_reserved_lock(file: *mut sql::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: out is SQLite's out pointer for xCheckReservedLock.
    guard(|| real_call!(file, unsafe { answer_zero(out) }, xCheckReservedLock, out))
}
unsafe extern "C" fn x_sector_size(file: *mut sql::sqlite3_file) -> c_int {
    guard(|| real_call!(file, 4096, xSectorSize,))
}
unsafe extern "C" fn x_device_characteristics(file: *mut sql::sqlite3_file) -> c_int {
    guard(|| real_call!(file, 0, xDeviceCharacteristics,))
}

/// xLock and xUnlock: hand the level to the connection, or answer `failed` when the
/// open failed.
///
/// # Safety
/// `file` must be a file SQLite passed to one of our io methods.
unsafe fn lock_call(
    file: *mut sql::sqlite3_file,
    level: c_int,
    failed: c_int,
    call: impl FnOnce(&mut Connection, LockLevel) -> c_int,
) -> c_int {
    // SAFETY: guaranteed by the caller.
    let Some(main) = (unsafe { main_db(file) }) else {
        return sql::SQLITE_INTERNAL;
    };
    let Some(level) = LockLevel::from_raw(level) else {
        return sql::SQLITE_INTERNAL;
    };
    match main.connection.as_mut() {
        Some(connection) => call(connection, level),
        None => failed,
    }
}

unsafe extern "C" fn x_lock(file: *mut sql::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite calls xLock only on files our x_open set up.
    guard(|| unsafe { lock_call(file, level, sql::SQLITE_CANTOPEN, Connection::lock) })
}
unsafe extern "C" fn x_unlock(file: *mut sql::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite calls xUnlock only on files our x_open set up.
    guard(|| unsafe { lock_call(file, level, sql::SQLITE_OK, Connection::unlock) })
}
