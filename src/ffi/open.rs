//! xOpen: main databases become managed connections; everything else (journals, temp
//! files) is the default VFS's, opened straight into our buffer. The file policy
//! (a missing cache directory created 0700, a private cache, nothing left by a failed
//! open, an error that names the cache and never the URI) is [`crate::cache_file`]'s;
//! the store and the connection come from [`crate::open`] (the shim never names the
//! store).

use std::ffi::{c_int, CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use libsqlite3_sys as sql;

use super::io::IO_METHODS;
use super::real_file::{close_real, OwnedRealFile, RealFile};
use super::{guard, vfs_data, MainDb, MbFile, OpenError, VfsData, REAL_OFFSET};
use crate::cache_file::CacheFileOpen;
use crate::config::Config;
use crate::error::Error;
use crate::open::Opening;

pub(super) unsafe extern "C" fn x_open(
    vfs: *mut sql::sqlite3_vfs,
    name: sql::sqlite3_filename,
    file: *mut sql::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    guard(|| {
        if vfs.is_null() || file.is_null() {
            return sql::SQLITE_INTERNAL;
        }
        // SAFETY: vfs is ours (SQLite passes back the struct we registered).
        let data = unsafe { vfs_data(vfs) };
        // SAFETY: data.real is the default VFS.
        let real_vfs = unsafe { &*data.real };
        // SAFETY: name, when not null, is a database filename from xOpen.
        if flags & sql::SQLITE_OPEN_MAIN_DB == 0 || name.is_null() || !unsafe { asks_for_us(name) }
        {
            // Journals, temp files, and plain databases that only inherited this VFS
            // (a plain ATTACH or VACUUM INTO target): the default VFS owns them, in our
            // buffer.
            // SAFETY: our szOsFile is larger than the real one, so the buffer fits.
            return unsafe { (real_vfs.xOpen.unwrap())(data.real, name, file, flags, out_flags) };
        }
        // SAFETY: SQLite allocated szOsFile bytes at file, for an MbFile and the real file.
        unsafe { open_main(data, name, file, flags, out_flags) }
    })
}

/// xFullPathname: the default VFS's, except that where it fails with SQLITE_CANTOPEN
/// (a path it cannot resolve: a file where a directory should be, a directory it may
/// not search) the path is made absolute without resolving it, so the failure comes
/// from xOpen instead, where a managed cache gets managedblob's message naming the
/// file (see [`CacheFileOpen::open_error`]). Drivers print SQLITE_CANTOPEN from here
/// with the whole `file:` URI, which may carry a SAS (rusqlite does). For any other
/// file, xOpen then fails with SQLITE_CANTOPEN as this would have.
pub(super) unsafe extern "C" fn x_full_pathname(
    vfs: *mut sql::sqlite3_vfs,
    name: *const std::ffi::c_char,
    n: c_int,
    out: *mut std::ffi::c_char,
) -> c_int {
    guard(|| {
        // SAFETY: vfs is ours; pAppData holds the default VFS, called with SQLite's arguments.
        let rc = unsafe {
            let real = vfs_data(vfs).real;
            ((*real).xFullPathname.unwrap())(real, name, n, out)
        };
        if rc != sql::SQLITE_CANTOPEN || name.is_null() || out.is_null() {
            return rc;
        }
        // SAFETY: name is the NUL-terminated filename SQLite passes to xFullPathname.
        let given = Path::new(OsStr::from_bytes(
            unsafe { CStr::from_ptr(name) }.to_bytes(),
        ));
        let Ok(full) = std::path::absolute(given) else {
            return rc;
        };
        let bytes = full.as_os_str().as_bytes();
        if bytes.len() >= usize::try_from(n).unwrap_or(0) {
            return rc;
        }
        // SAFETY: SQLite gives out room for n bytes; bytes plus the NUL fit (checked).
        unsafe {
            ptr::copy_nonoverlapping(bytes.as_ptr().cast(), out, bytes.len());
            *out.add(bytes.len()) = 0;
        }
        sql::SQLITE_OK
    })
}

/// Whether a main database file asks to be managed: its `file:` URI names this VFS
/// (`vfs=`) or a remote (`remote=`).
///
/// Otherwise it only inherited the VFS from its connection: `ATTACH '<plain path>'`
/// and `VACUUM INTO '<plain path>'` open their file through the connection's VFS with
/// the connection's flags (attach.c, vacuum.c), so the two look the same here, and
/// they get a plain local file, as they would from any other connection, even when
/// `MANAGEDBLOB_REMOTE` is set. A connection's own database opened that way (the VFS
/// given by name to `sqlite3_open_v2`, a plain path) looks the same too: the
/// auto-extension fails that open with a message (see [`super::register`]).
///
/// # Safety
/// `name` must be a database filename from xOpen.
unsafe fn asks_for_us(name: sql::sqlite3_filename) -> bool {
    [c"vfs", c"remote"].iter().any(|key| {
        // SAFETY: name is a database filename, the form sqlite3_uri_parameter takes.
        !unsafe { sql::sqlite3_uri_parameter(name, key.as_ptr()) }.is_null()
    })
}

/// # Safety
/// Called from x_open with valid arguments for a main database.
unsafe fn open_main(
    data: &VfsData,
    name: sql::sqlite3_filename,
    file: *mut sql::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let mb = file as *mut MbFile;
    // SAFETY: the buffer holds REAL_OFFSET + real szOsFile bytes.
    let real = unsafe { (file as *mut u8).add(REAL_OFFSET) } as *mut sql::sqlite3_file;
    // SAFETY: mb points to writable memory of at least size_of::<MbFile>().
    unsafe {
        (*mb).base.pMethods = ptr::null();
        (*mb).main = ptr::null_mut();
        (*real).pMethods = ptr::null();
    }
    // SAFETY: name is the NUL-terminated full path SQLite passes to xOpen.
    let name_bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
    let path = String::from_utf8_lossy(name_bytes).into_owned();
    let read_only = flags & sql::SQLITE_OPEN_READONLY != 0;
    let uri = |key: &str| -> Option<String> {
        let key = CString::new(key).ok()?;
        // SAFETY: name is a database filename from xOpen, the form sqlite3_uri_parameter takes.
        let v = unsafe { sql::sqlite3_uri_parameter(name, key.as_ptr()) };
        // SAFETY: a non-null result is a NUL-terminated string owned by SQLite.
        (!v.is_null()).then(|| unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned())
    };
    let env = |key: &str| std::env::var(key).ok();
    match crate::pinned::pin_from(&uri) {
        Ok(None) => {}
        Ok(Some(pin)) => {
            let config = Config::resolve(Path::new(&path), &data.options, &uri, &env);
            // SAFETY: called from xOpen of a main database, as open_pinned requires.
            return match unsafe {
                super::pinned::open_pinned(data, &path, config, &pin, file, flags, out_flags)
            } {
                Ok(rc) => rc,
                // SAFETY: mb is our struct, set up above.
                Err(e) => unsafe { install_failed(mb, &path, e) },
            };
        }
        // SAFETY: mb is our struct, set up above.
        Err(e) => return unsafe { install_failed(mb, &path, e) },
    }
    // Settings and the remote's address are checked before the cache is touched, so
    // a bad URI leaves no empty cache file behind.
    let opening = Config::resolve(Path::new(&path), &data.options, &uri, &env)
        .and_then(|config| Opening::store(Path::new(&path), config));
    let opening = match opening {
        Ok(opening) => opening,
        // SAFETY: mb is our struct, set up above.
        Err(e) => return unsafe { install_failed(mb, &path, e) },
    };

    // Open the cache read-write (and create it) even for mode=ro, so the first sync and
    // later refreshes can write it; SQLite still sees a read-only file.
    let creates = read_only || flags & sql::SQLITE_OPEN_CREATE != 0;
    let cache = CacheFileOpen::prepare(Path::new(OsStr::from_bytes(name_bytes)), creates);
    // SAFETY: data.real is the default VFS.
    let real_vfs = unsafe { &*data.real };
    let mut real_out: c_int = 0;
    let mut rc = sql::SQLITE_CANTOPEN;
    if read_only {
        let rw = (flags & !sql::SQLITE_OPEN_READONLY)
            | sql::SQLITE_OPEN_READWRITE
            | sql::SQLITE_OPEN_CREATE;
        // SAFETY: real points to room for the real file.
        rc = unsafe { (real_vfs.xOpen.unwrap())(data.real, name, real, rw, &mut real_out) };
    }
    if rc != sql::SQLITE_OK {
        // SAFETY: as above.
        rc = unsafe { (real_vfs.xOpen.unwrap())(data.real, name, real, flags, &mut real_out) };
    }
    if rc != sql::SQLITE_OK {
        // errno of the failed open(2), read before anything else can change it.
        let os = std::io::Error::last_os_error();
        let os = (os.raw_os_error() != Some(0)).then_some(os);
        let error = cache.open_error(os);
        cache.discard_if_created();
        // Our message instead of the real VFS's SQLITE_CANTOPEN, which drivers print
        // with the `file:` URI (see install_failed); it names the cache file and a
        // missing directory.
        // SAFETY: mb is our struct, set up above; the real file is not open.
        return unsafe { install_failed(mb, &path, error) };
    }
    if !out_flags.is_null() {
        let reported = if read_only {
            (real_out & !sql::SQLITE_OPEN_READWRITE) | sql::SQLITE_OPEN_READONLY
        } else {
            real_out
        };
        // SAFETY: out_flags is SQLite's out pointer.
        unsafe { *out_flags = reported };
    }

    offer_cache_opener(&opening, data.real, &path);
    let connection = match opening.connect(Box::new(RealFile(real)), read_only) {
        Ok(connection) => connection,
        Err(e) => {
            // SAFETY: the real file was opened above and is closed exactly once here.
            unsafe { close_real(real) };
            cache.discard_if_created();
            // SAFETY: mb is our struct.
            return unsafe { install_failed(mb, &path, e) };
        }
    };
    let main = MainDb {
        connection: Some(connection),
        open_error: None,
        real,
        busy: None,
    };
    // SAFETY: mb is our struct; IO_METHODS is static.
    unsafe {
        (*mb).main = Box::into_raw(Box::new(main));
        (*mb).base.pMethods = &IO_METHODS;
    }
    sql::SQLITE_OK
}

/// Let the store's flusher (`flush_ms`) open its own handle on the cache through
/// the default VFS.
fn offer_cache_opener(opening: &Opening, real: *mut sql::sqlite3_vfs, path: &str) {
    let vfs = real as usize;
    let path = std::path::PathBuf::from(path);
    opening.offer_cache_opener(|| {
        std::sync::Arc::new(move || {
            // SAFETY: the default VFS stays registered for the life of the process
            // (VfsData, which holds it, is leaked).
            let file = unsafe { OwnedRealFile::open(vfs as *mut sql::sqlite3_vfs, &path) }?;
            Ok(Box::new(file) as Box<dyn crate::localfile::LocalFile>)
        })
    });
}

/// Finish an open in the failed state: the file looks empty to SQLite and the
/// auto-extension [`super::register::report_open_error`] fails the open with
/// `error`'s message.
///
/// # Safety
/// `mb` must be the MbFile being opened by [`open_main`].
unsafe fn install_failed(mb: *mut MbFile, path: &str, error: Error) -> c_int {
    tracing::warn!(path, error = %crate::redact::redact(&error.to_string()), "managedblob: open failed");
    let main = MainDb {
        busy: None,
        connection: None,
        open_error: Some(OpenError {
            // SQLITE_FULL for a full disk; otherwise SQLITE_ERROR, not SQLITE_CANTOPEN:
            // drivers append the file name to a CANTOPEN message (rusqlite does), and a
            // `file:` URI may carry a SAS.
            code: if error.is_full() {
                sql::SQLITE_FULL
            } else {
                sql::SQLITE_ERROR
            },
            message: error.to_string(),
        }),
        real: ptr::null_mut(),
    };
    // SAFETY: guaranteed by the caller; IO_METHODS is static.
    unsafe {
        (*mb).main = Box::into_raw(Box::new(main));
        (*mb).base.pMethods = &IO_METHODS;
    }
    sql::SQLITE_OK
}
