//! xOpen of a pinned version (`as_of=` / `version=`, see [`crate::pinned`]): the
//! version's own file is opened read-only by the default VFS straight into our
//! buffer, with a copy of its io methods whose device characteristics add
//! `SQLITE_IOCAP_IMMUTABLE`. SQLite then treats it like `immutable=1`: no locks and
//! no hot-journal check (the cache's journal, named after the path SQLite was
//! given, is not this file's), and every write fails with SQLITE_READONLY.

use std::collections::HashMap;
use std::ffi::{c_int, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libsqlite3_sys as sql;
use parking_lot::Mutex;

use super::VfsData;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::pinned::{version_file, Pin};

/// The default VFS's io methods as first seen on a pinned file, and our copy of them.
struct Tables {
    real: *const sql::sqlite3_io_methods,
    pinned: sql::sqlite3_io_methods,
}

// SAFETY: both tables are immutable once built and hold only function pointers
// (and the address of the default VFS's static table).
unsafe impl Send for Tables {}
// SAFETY: as above.
unsafe impl Sync for Tables {}

static TABLES: OnceLock<Tables> = OnceLock::new();

unsafe extern "C" fn immutable_characteristics(file: *mut sql::sqlite3_file) -> c_int {
    let Some(tables) = TABLES.get() else {
        return sql::SQLITE_IOCAP_IMMUTABLE;
    };
    // SAFETY: SQLite calls this only on files whose pMethods is our copy, made from
    // `real`, whose method the file was opened for.
    let real = unsafe { (*tables.real).xDeviceCharacteristics };
    // SAFETY: as above; the file is open.
    let base = real.map_or(0, |f| unsafe { f(file) });
    base | sql::SQLITE_IOCAP_IMMUTABLE
}

/// Whether `methods` is the table of a pinned version's file (the auto-extension
/// lets such a main database through).
pub(super) fn is_pinned(methods: *const sql::sqlite3_io_methods) -> bool {
    TABLES
        .get()
        .is_some_and(|t| std::ptr::eq(methods, &t.pinned))
}

/// A database filename SQLite may keep for the life of the file (the unix VFS keeps
/// the pointer): one per version file, made once and kept.
fn filename_for(path: &Path) -> Result<sql::sqlite3_filename> {
    static NAMES: OnceLock<Mutex<HashMap<PathBuf, usize>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock();
    if let Some(name) = names.get(path) {
        return Ok(*name as sql::sqlite3_filename);
    }
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Config("the cache path contains a NUL byte".into()))?;
    // SAFETY: three valid C strings and no parameters; SQLite copies them.
    let name = unsafe {
        sql::sqlite3_create_filename(
            c.as_ptr(),
            c"".as_ptr(),
            c"".as_ptr(),
            0,
            std::ptr::null_mut(),
        )
    };
    if name.is_null() {
        return Err(Error::Local("out of memory naming a version file".into()));
    }
    names.insert(path.to_path_buf(), name as usize);
    Ok(name)
}

/// Open the version `pin` names of the database at `path`; `Err` before anything is
/// opened (the caller installs the failed state), else the default VFS's code.
///
/// # Safety
/// Called from xOpen of a main database: `file` has room for the default VFS's file.
pub(super) unsafe fn open_pinned(
    data: &VfsData,
    path: &str,
    config: Result<Config>,
    pin: &Pin,
    file: *mut sql::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> Result<c_int> {
    let version = version_file(Path::new(path), &config?, pin)?;
    let name = filename_for(&version)?;
    let read_only = (flags & !(sql::SQLITE_OPEN_READWRITE | sql::SQLITE_OPEN_CREATE))
        | sql::SQLITE_OPEN_READONLY;
    // SAFETY: data.real is the default VFS; file has room for its file; name lives
    // for the rest of the process.
    let rc = unsafe { ((*data.real).xOpen.unwrap())(data.real, name, file, read_only, out_flags) };
    if rc != sql::SQLITE_OK {
        return Ok(rc);
    }
    // SAFETY: the open succeeded, so pMethods is the default VFS's table.
    let real = unsafe { (*file).pMethods };
    let tables = TABLES.get_or_init(|| Tables {
        real,
        pinned: sql::sqlite3_io_methods {
            xDeviceCharacteristics: Some(immutable_characteristics),
            // SAFETY: real is a valid static table of the default VFS.
            ..unsafe { *real }
        },
    });
    if std::ptr::eq(tables.real, real) {
        // SAFETY: file is open; our table has the same methods but one.
        unsafe { (*file).pMethods = &tables.pinned };
    }
    if !out_flags.is_null() {
        // SAFETY: out_flags is SQLite's out pointer.
        unsafe {
            *out_flags = (*out_flags & !sql::SQLITE_OPEN_READWRITE) | sql::SQLITE_OPEN_READONLY
        };
    }
    Ok(sql::SQLITE_OK)
}
