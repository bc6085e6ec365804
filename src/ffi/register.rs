//! Registration: the VFS table (xOpen is ours, the rest pass through to the default
//! VFS) and the auto-extension that reports a failed open's message.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;

use libsqlite3_sys as sql;
use parking_lot::Mutex;

use super::io::IO_METHODS;
use super::open::x_open;
use super::{guard, sqlite_string, vfs_data, MbFile, OpenError, VfsData, REAL_OFFSET};
use crate::config::Options;
use crate::error::{Error, Result};

struct Registered {
    name: String,
    options: Options,
}

static REGISTERED: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

/// Register a VFS named `options.vfs_name` (default `managedblob`) wrapping the
/// default VFS. Idempotent for equal options.
pub fn register(options: Options) -> Result<()> {
    let name = options
        .vfs_name
        .clone()
        .unwrap_or_else(|| crate::VFS_NAME.to_string());
    let mut registered = REGISTERED.lock();
    if let Some(r) = registered.iter().find(|r| r.name == name) {
        return if r.options == options {
            Ok(())
        } else {
            Err(Error::Registration(format!(
                "VFS '{name}' is already registered with other options"
            )))
        };
    }
    let cname = CString::new(name.clone())
        .map_err(|_| Error::Registration("the VFS name contains a NUL byte".into()))?;
    // SAFETY: sqlite3_vfs_find accepts NULL (the default VFS) and any C string; it
    // initializes SQLite when needed.
    let real = unsafe { sql::sqlite3_vfs_find(ptr::null()) };
    if real.is_null() {
        return Err(Error::Registration("SQLite has no default VFS".into()));
    }
    // SAFETY: cname is a valid C string.
    let existing = unsafe { sql::sqlite3_vfs_find(cname.as_ptr()) };
    if !existing.is_null() {
        // Registered by another copy of this code (the loadable extension).
        registered.push(Registered { name, options });
        return Ok(());
    }
    // SAFETY: real is SQLite's default VFS, valid for the process lifetime.
    let (real_version, real_size, real_path) =
        unsafe { ((*real).iVersion, (*real).szOsFile, (*real).mxPathname) };
    let data: &'static VfsData = Box::leak(Box::new(VfsData {
        real,
        options: options.clone(),
        name: cname,
    }));
    let vfs: &'static mut sql::sqlite3_vfs = Box::leak(Box::new(sql::sqlite3_vfs {
        iVersion: real_version.min(3),
        szOsFile: REAL_OFFSET as c_int + real_size,
        mxPathname: real_path,
        pNext: ptr::null_mut(),
        zName: data.name.as_ptr(),
        pAppData: data as *const VfsData as *mut c_void,
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(super::open::x_full_pathname),
        xDlOpen: Some(x_dl_open),
        xDlError: Some(x_dl_error),
        xDlSym: Some(x_dl_sym),
        xDlClose: Some(x_dl_close),
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: Some(x_current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    }));
    // SAFETY: vfs is leaked, so it outlives every connection that may use it.
    let rc = unsafe { sql::sqlite3_vfs_register(vfs, 0) };
    if rc != sql::SQLITE_OK {
        return Err(Error::Registration(format!(
            "sqlite3_vfs_register failed with code {rc}"
        )));
    }
    if registered.is_empty() {
        // SAFETY: report_open_error has the signature SQLite calls auto-extensions with.
        let rc = unsafe { sql::sqlite3_auto_extension(auto_extension_entry()) };
        if rc != sql::SQLITE_OK {
            return Err(Error::Registration(format!(
                "sqlite3_auto_extension failed with code {rc}"
            )));
        }
    }
    registered.push(Registered { name, options });
    Ok(())
}

/// The signature SQLite calls an auto-extension with.
type AutoExtension = unsafe extern "C" fn(
    *mut sql::sqlite3,
    *mut *mut c_char,
    *const sql::sqlite3_api_routines,
) -> c_int;

/// [`report_open_error`] as `sqlite3_auto_extension` takes it. The bundled bindings
/// type the parameter; the loadable-extension bindings, generated from the host's
/// sqlite3ext.h, keep sqlite3.h's `void (*)(void)`.
#[cfg(not(feature = "loadable_extension"))]
fn auto_extension_entry() -> Option<AutoExtension> {
    Some(report_open_error)
}

/// See above: the loadable-extension form.
#[cfg(feature = "loadable_extension")]
fn auto_extension_entry() -> Option<unsafe extern "C" fn()> {
    let entry: AutoExtension = report_open_error;
    // SAFETY: only the pointer's type changes; SQLite casts it back to the entry point
    // type (AutoExtension) before it calls it, as sqlite3.h documents.
    Some(unsafe { std::mem::transmute::<AutoExtension, unsafe extern "C" fn()>(entry) })
}

/// Runs at the end of every `sqlite3_open*`: fails the open of a managed database
/// whose settings or first sync failed, with our message.
pub(super) unsafe extern "C" fn report_open_error(
    db: *mut sql::sqlite3,
    err: *mut *mut c_char,
    _api: *const sql::sqlite3_api_routines,
) -> c_int {
    guard(|| {
        // SAFETY: db is the connection being opened; FILE_POINTER writes its main file.
        let Some(file) =
            (unsafe { main_pointer::<sql::sqlite3_file>(db, sql::SQLITE_FCNTL_FILE_POINTER) })
        else {
            return sql::SQLITE_OK;
        };
        // SAFETY: file is the main db file of db; pMethods identifies who opened it.
        let methods = unsafe { (*file).pMethods };
        if methods.is_null() {
            // In memory or temporary: no file was opened.
            return sql::SQLITE_OK;
        }
        if super::pinned::is_pinned(methods) {
            // A pinned version (as_of= / version=), opened read-only as a plain file.
            return sql::SQLITE_OK;
        }
        if !ptr::eq(methods, &IO_METHODS) {
            // SAFETY: db is the connection being opened; err is SQLite's out pointer.
            return unsafe { refuse_plain_main(db, err) };
        }
        // SAFETY: files with our methods table are MbFile with a live MainDb.
        let main = unsafe { &*(*(file as *mut MbFile)).main };
        match &main.open_error {
            // SAFETY: db is the connection being opened; err is SQLite's out pointer.
            Some(OpenError { code, message }) => unsafe { fail_open(db, err, *code, message) },
            None => sql::SQLITE_OK,
        }
    })
}

/// The pointer a file control `op` that writes one (FILE_POINTER, VFS_POINTER)
/// gives for the main database of `db`; None when it fails or gives null.
///
/// # Safety
/// `db` is an open connection and `op` writes a `*mut T` to its argument.
unsafe fn main_pointer<T>(db: *mut sql::sqlite3, op: c_int) -> Option<*mut T> {
    let mut out: *mut T = ptr::null_mut();
    // SAFETY: guaranteed by the caller; out is a valid place for one pointer.
    let rc = unsafe {
        sql::sqlite3_file_control(db, c"main".as_ptr(), op, (&mut out as *mut *mut T).cast())
    };
    (rc == sql::SQLITE_OK && !out.is_null()).then_some(out)
}

/// A connection whose VFS is ours but whose own database was opened as a plain file:
/// the VFS was given by name (`sqlite3_open_v2`, `sqlite3 -vfs`) with a filename that
/// names neither `vfs=` nor `remote=`. In xOpen that looks like an `ATTACH` or
/// `VACUUM INTO` target, which is plain; here it is known to be the main database,
/// and the open fails instead of running unmanaged.
///
/// # Safety
/// `db` is the connection being opened and `err` SQLite's out pointer for the message.
unsafe fn refuse_plain_main(db: *mut sql::sqlite3, err: *mut *mut c_char) -> c_int {
    // SAFETY: db is the connection being opened; VFS_POINTER writes its main VFS.
    let Some(vfs) =
        (unsafe { main_pointer::<sql::sqlite3_vfs>(db, sql::SQLITE_FCNTL_VFS_POINTER) })
    else {
        return sql::SQLITE_OK;
    };
    // SAFETY: vfs is a registered VFS, valid for the life of the process, and its
    // name a C string.
    let name = unsafe { CStr::from_ptr((*vfs).zName) }.to_string_lossy();
    if !REGISTERED.lock().iter().any(|r| r.name == name) {
        return sql::SQLITE_OK;
    }
    let message = "managedblob: the database was opened with the managedblob VFS given by \
                   name and a filename that names neither vfs=managedblob nor remote=, which \
                   is how a plain ATTACH or VACUUM INTO target opens (as a plain local file); \
                   to manage it, open 'file:<cache path>?vfs=managedblob' with SQLITE_OPEN_URI";
    // SAFETY: guaranteed by the caller.
    unsafe { fail_open(db, err, sql::SQLITE_ERROR, message) }
}

/// Fail the open being run with `code` and `message`, as the open's own error.
///
/// What the auto-extension returns in `err`, SQLite reports as "automatic extension
/// loading failed: <message>". So where it can, it sets the connection's error itself
/// (`sqlite3_set_errmsg`, SQLite 3.51) and returns SQLITE_OK: `sqlite3_open_v2` then
/// fails with that error as it stands, and a Rust application (rusqlite) sees
/// `managedblob: ...`. The bundled SQLite has it; the loadable extension calls the
/// host's SQLite through the api routines of the sqlite3ext.h it was built against
/// (3.40.1 on Debian 12, without it), so there the message keeps SQLite's prefix
/// (docs/LOADABLE.md, "Errors name the setting").
///
/// # Safety
/// `db` is the connection being opened and `err` SQLite's out pointer for the message.
unsafe fn fail_open(
    db: *mut sql::sqlite3,
    err: *mut *mut c_char,
    code: c_int,
    message: &str,
) -> c_int {
    #[cfg(all(feature = "bundled", not(feature = "loadable_extension")))]
    if let Ok(text) = CString::new(crate::redact::redact(message)) {
        // SAFETY: db is open (SQLite runs auto-extensions once it is); SQLite copies text.
        if unsafe { sql::sqlite3_set_errmsg(db, code, text.as_ptr()) } == sql::SQLITE_OK {
            return sql::SQLITE_OK;
        }
    }
    #[cfg(not(all(feature = "bundled", not(feature = "loadable_extension"))))]
    let _ = db;
    // SAFETY: err is SQLite's out pointer for the message.
    unsafe { *err = sqlite_string(message) };
    code
}

// ---------------------------------------------------------------------------
// The default VFS's methods, passed through

macro_rules! real_vfs_call {
    ($vfs:expr, $method:ident, $($arg:expr),*) => {{
        // SAFETY: $vfs is ours, its pAppData holds the default VFS, whose method we call
        // with the arguments SQLite gave us.
        unsafe {
            let real = vfs_data($vfs).real;
            ((*real).$method.unwrap())(real, $($arg),*)
        }
    }};
}

unsafe extern "C" fn x_delete(
    vfs: *mut sql::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    guard(|| real_vfs_call!(vfs, xDelete, name, sync_dir))
}
unsafe extern "C" fn x_access(
    vfs: *mut sql::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    guard(|| real_vfs_call!(vfs, xAccess, name, flags, out))
}
unsafe extern "C" fn x_dl_open(vfs: *mut sql::sqlite3_vfs, name: *const c_char) -> *mut c_void {
    real_vfs_call!(vfs, xDlOpen, name)
}
unsafe extern "C" fn x_dl_error(vfs: *mut sql::sqlite3_vfs, n: c_int, out: *mut c_char) {
    real_vfs_call!(vfs, xDlError, n, out)
}
unsafe extern "C" fn x_dl_sym(
    vfs: *mut sql::sqlite3_vfs,
    handle: *mut c_void,
    symbol: *const c_char,
) -> Option<unsafe extern "C" fn(*mut sql::sqlite3_vfs, *mut c_void, *const c_char)> {
    real_vfs_call!(vfs, xDlSym, handle, symbol)
}
unsafe extern "C" fn x_dl_close(vfs: *mut sql::sqlite3_vfs, handle: *mut c_void) {
    real_vfs_call!(vfs, xDlClose, handle)
}
unsafe extern "C" fn x_randomness(vfs: *mut sql::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    real_vfs_call!(vfs, xRandomness, n, out)
}
unsafe extern "C" fn x_sleep(vfs: *mut sql::sqlite3_vfs, micros: c_int) -> c_int {
    real_vfs_call!(vfs, xSleep, micros)
}
unsafe extern "C" fn x_current_time(vfs: *mut sql::sqlite3_vfs, out: *mut f64) -> c_int {
    real_vfs_call!(vfs, xCurrentTime, out)
}
unsafe extern "C" fn x_get_last_error(
    vfs: *mut sql::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    real_vfs_call!(vfs, xGetLastError, n, out)
}
unsafe extern "C" fn x_current_time_int64(vfs: *mut sql::sqlite3_vfs, out: *mut i64) -> c_int {
    real_vfs_call!(vfs, xCurrentTimeInt64, out)
}
