//! The only unsafe code of managedblob: the VFS and io_methods tables SQLite calls,
//! shaped like SQLite's own shim VFSes (ext/misc/appendvfs.c, vfstrace.c).
//!
//! - Our `sqlite3_file` ([`MbFile`]) starts with the base struct; the real (default
//!   VFS) file lives right after it, at [`REAL_OFFSET`], and `szOsFile` covers both.
//! - Files other than main databases are opened by the default VFS straight into our
//!   buffer, so SQLite then talks to them without us (journals, temp files).
//! - Every callback runs inside [`guard`], which catches panics (a panic must never
//!   unwind into C) and maps a null pointer to SQLITE_INTERNAL.
//! - A main database whose settings are invalid opens in a *failed* state: its
//!   methods report an empty file, and the auto-extension [`report_open_error`],
//!   which SQLite runs at the end of every open, fails the open with our message.
//!   That is how "setting 'remote' is missing" reaches `sqlite3_errmsg`.
//!
//! Above this module everything is safe Rust ([`crate::connection::Connection`]).

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use libsqlite3_sys as sql;
use parking_lot::Mutex;

use crate::config::{Config, Options};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::localfile::{LocalFile, LockFail, LockLevel};
use crate::store::open_store;

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
    open_error: Option<String>,
    real: *mut sql::sqlite3_file,
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

/// The largest single read or write handed to the real file. SQLite itself never
/// moves more than one page (64 KiB) at a time, and the unix VFS masks larger
/// requests (`nBuf &= 0x1ffff` in seekAndWriteFd), so bigger transfers are split.
const MAX_IO: usize = 64 * 1024;

/// The real file behind one of our main database files, as a [`LocalFile`].
struct RealFile(*mut sql::sqlite3_file);

// SAFETY: a RealFile is owned by one Connection, which SQLite only drives from one
// thread at a time (the connection's mutex); the pointer stays valid until xClose.
unsafe impl Send for RealFile {}

impl RealFile {
    /// # Safety
    /// `self.0` must be an open file whose methods table is set.
    unsafe fn methods(&self) -> &sql::sqlite3_io_methods {
        // SAFETY: the caller guarantees pMethods is a valid, non-null table.
        unsafe { &*(*self.0).pMethods }
    }
}

fn io(rc: c_int, what: &str) -> std::io::Result<()> {
    if rc == sql::SQLITE_OK {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{what} failed with SQLite code {rc}"
        )))
    }
}

impl LocalFile for RealFile {
    fn lock(&mut self, level: LockLevel) -> std::result::Result<(), LockFail> {
        // SAFETY: the real file is open (RealFile lives between xOpen and xClose).
        let rc = unsafe { (self.methods().xLock.unwrap())(self.0, level as c_int) };
        match rc {
            sql::SQLITE_OK => Ok(()),
            sql::SQLITE_BUSY => Err(LockFail::Busy),
            other => Err(LockFail::Io(other)),
        }
    }
    fn unlock(&mut self, level: LockLevel) -> std::result::Result<(), LockFail> {
        // SAFETY: as in lock.
        let rc = unsafe { (self.methods().xUnlock.unwrap())(self.0, level as c_int) };
        match rc {
            sql::SQLITE_OK => Ok(()),
            other => Err(LockFail::Io(other)),
        }
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let size = self.size()?;
        if offset >= size {
            return Ok(0);
        }
        let n = buf.len().min((size - offset) as usize);
        for (i, chunk) in buf[..n].chunks_mut(MAX_IO).enumerate() {
            let at = offset + (i * MAX_IO) as u64;
            // SAFETY: chunk is valid for its length; the real file is open.
            let rc = unsafe {
                (self.methods().xRead.unwrap())(
                    self.0,
                    chunk.as_mut_ptr().cast(),
                    chunk.len() as c_int,
                    at as i64,
                )
            };
            io(rc, "reading the cache")?;
        }
        Ok(n)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        for (i, chunk) in buf.chunks(MAX_IO).enumerate() {
            let at = offset + (i * MAX_IO) as u64;
            // SAFETY: chunk is valid for its length; the real file is open.
            let rc = unsafe {
                (self.methods().xWrite.unwrap())(
                    self.0,
                    chunk.as_ptr().cast(),
                    chunk.len() as c_int,
                    at as i64,
                )
            };
            io(rc, "writing the cache")?;
        }
        Ok(())
    }
    fn truncate(&mut self, size: u64) -> std::io::Result<()> {
        // SAFETY: the real file is open.
        let rc = unsafe { (self.methods().xTruncate.unwrap())(self.0, size as i64) };
        io(rc, "truncating the cache")
    }
    fn sync(&mut self) -> std::io::Result<()> {
        // SAFETY: the real file is open.
        let rc = unsafe { (self.methods().xSync.unwrap())(self.0, sql::SQLITE_SYNC_NORMAL) };
        io(rc, "syncing the cache")
    }
    fn size(&mut self) -> std::io::Result<u64> {
        let mut size: i64 = 0;
        // SAFETY: the real file is open; size is a valid out pointer.
        let rc = unsafe { (self.methods().xFileSize.unwrap())(self.0, &mut size) };
        io(rc, "sizing the cache")?;
        Ok(size as u64)
    }
}

// ---------------------------------------------------------------------------
// Registration

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
        xFullPathname: Some(x_full_pathname),
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
unsafe extern "C" fn report_open_error(
    db: *mut sql::sqlite3,
    err: *mut *mut c_char,
    _api: *const sql::sqlite3_api_routines,
) -> c_int {
    guard(|| {
        let mut file: *mut sql::sqlite3_file = ptr::null_mut();
        // SAFETY: db is the connection being opened; FILE_POINTER writes a pointer.
        let rc = unsafe {
            sql::sqlite3_file_control(
                db,
                c"main".as_ptr(),
                sql::SQLITE_FCNTL_FILE_POINTER,
                (&mut file as *mut *mut sql::sqlite3_file).cast(),
            )
        };
        if rc != sql::SQLITE_OK || file.is_null() {
            return sql::SQLITE_OK;
        }
        // SAFETY: file is the main db file of db; pMethods identifies who opened it.
        let methods = unsafe { (*file).pMethods };
        if !ptr::eq(methods, &IO_METHODS) {
            return sql::SQLITE_OK;
        }
        // SAFETY: files with our methods table are MbFile with a live MainDb.
        let main = unsafe { &*(*(file as *mut MbFile)).main };
        match &main.open_error {
            Some(message) => {
                // SAFETY: err is SQLite's out pointer for the message.
                unsafe { *err = sqlite_string(message) };
                sql::SQLITE_ERROR
            }
            None => sql::SQLITE_OK,
        }
    })
}

/// A copy of `s` in memory from sqlite3_malloc (SQLite frees it).
fn sqlite_string(s: &str) -> *mut c_char {
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

// ---------------------------------------------------------------------------
// VFS methods

unsafe extern "C" fn x_open(
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
        if flags & sql::SQLITE_OPEN_MAIN_DB == 0 || name.is_null() {
            // Journals, temp files: the default VFS owns them, in our buffer.
            // SAFETY: our szOsFile is larger than the real one, so the buffer fits.
            return unsafe { (real_vfs.xOpen.unwrap())(data.real, name, file, flags, out_flags) };
        }
        // SAFETY: SQLite allocated szOsFile bytes at file, for an MbFile and the real file.
        unsafe { open_main(data, name, file, flags, out_flags) }
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
    let path = unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned();
    let read_only = flags & sql::SQLITE_OPEN_READONLY != 0;
    let uri = |key: &str| -> Option<String> {
        let key = CString::new(key).ok()?;
        // SAFETY: name is a database filename from xOpen, the form sqlite3_uri_parameter takes.
        let v = unsafe { sql::sqlite3_uri_parameter(name, key.as_ptr()) };
        // SAFETY: a non-null result is a NUL-terminated string owned by SQLite.
        (!v.is_null()).then(|| unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned())
    };
    let env = |key: &str| std::env::var(key).ok();
    // Settings and the remote's address are checked before the cache is touched, so
    // a bad URI leaves no empty cache file behind.
    let store = Config::resolve(std::path::Path::new(&path), &data.options, &uri, &env)
        .and_then(|config| open_store(std::path::Path::new(&path), config));
    let store = match store {
        Ok(store) => store,
        // SAFETY: mb is our struct, set up above.
        Err(e) => return unsafe { install_failed(mb, &path, e) },
    };

    // Before anything creates it: a failed open removes a cache it created.
    let existed = std::path::Path::new(&path).exists();
    // The unix VFS would create the cache with mode 0644 (less the umask), and its
    // journals copy the database's mode. The cache holds what the remote holds: create
    // it empty and private (0600) first, so it is never readable by others, not even
    // for a moment. A cache that exists keeps the mode its owner gave it.
    if read_only || flags & sql::SQLITE_OPEN_CREATE != 0 {
        // SAFETY: name is the NUL-terminated path SQLite passes to xOpen.
        let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
        create_private(std::path::Path::new(std::ffi::OsStr::from_bytes(bytes)));
    }

    // Open the cache read-write (and create it) even for mode=ro, so the first sync and
    // later refreshes can write it; SQLite still sees a read-only file.
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
        return rc;
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

    let connection = match Connection::open(store, Box::new(RealFile(real)), read_only) {
        Ok(connection) => connection,
        Err(e) => {
            // SAFETY: the real file was opened above and is closed exactly once here.
            unsafe { close_real(real) };
            // A cache this open created (still empty) is not left behind.
            if !existed && std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&path);
            }
            // SAFETY: mb is our struct.
            return unsafe { install_failed(mb, &path, e) };
        }
    };
    let main = MainDb {
        connection: Some(connection),
        open_error: None,
        real,
    };
    // SAFETY: mb is our struct; IO_METHODS is static.
    unsafe {
        (*mb).main = Box::into_raw(Box::new(main));
        (*mb).base.pMethods = &IO_METHODS;
    }
    sql::SQLITE_OK
}

/// Create `path` empty with mode 0600 unless it exists. Errors are left to the real
/// xOpen that follows, which reports them as SQLite does.
fn create_private(path: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
}

/// Finish an open in the failed state: the file looks empty to SQLite and the
/// auto-extension [`report_open_error`] fails the open with `error`'s message.
///
/// # Safety
/// `mb` must be the MbFile being opened by [`open_main`].
unsafe fn install_failed(mb: *mut MbFile, path: &str, error: Error) -> c_int {
    tracing::warn!(path, error = %error, "managedblob: open failed");
    let main = MainDb {
        connection: None,
        open_error: Some(error.to_string()),
        real: ptr::null_mut(),
    };
    // SAFETY: guaranteed by the caller; IO_METHODS is static.
    unsafe {
        (*mb).main = Box::into_raw(Box::new(main));
        (*mb).base.pMethods = &IO_METHODS;
    }
    sql::SQLITE_OK
}

/// # Safety
/// `real` must be an open real file, closed exactly once.
unsafe fn close_real(real: *mut sql::sqlite3_file) -> c_int {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let methods = (*real).pMethods;
        if methods.is_null() {
            return sql::SQLITE_OK;
        }
        let rc = ((*methods).xClose.unwrap())(real);
        (*real).pMethods = ptr::null();
        rc
    }
}

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
unsafe extern "C" fn x_full_pathname(
    vfs: *mut sql::sqlite3_vfs,
    name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    guard(|| real_vfs_call!(vfs, xFullPathname, name, n, out))
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

// ---------------------------------------------------------------------------
// io_methods of a main database

static IO_METHODS: sql::sqlite3_io_methods = sql::sqlite3_io_methods {
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

/// # Safety
/// `file` must be a main database opened by [`open_main`] and not yet closed.
unsafe fn main_db<'a>(file: *mut sql::sqlite3_file) -> Option<&'a mut MainDb> {
    if file.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller; main is null only before open completes.
    unsafe { (*(file as *mut MbFile)).main.as_mut() }
}

/// Call a method of the real file, or answer `$failed` when the open failed.
macro_rules! real_call {
    ($file:expr, $failed:expr, $method:ident, $($arg:expr),*) => {{
        // SAFETY: SQLite calls io methods only on files our x_open set up.
        match unsafe { main_db($file) } {
            None => sql::SQLITE_INTERNAL,
            Some(main) if main.real.is_null() => $failed,
            // SAFETY: real is open until x_close.
            Some(main) => unsafe { ((*(*main.real).pMethods).$method.unwrap())(main.real, $($arg),*) },
        }
    }};
}

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
unsafe extern "C" fn x_file_size(file: *mut sql::sqlite3_file, out: *mut i64) -> c_int {
    guard(|| {
        real_call!(
            file,
            {
                // SAFETY: out is SQLite's out pointer.
                unsafe { *out = 0 };
                sql::SQLITE_OK
            },
            xFileSize,
            out
        )
    })
}
unsafe extern "C" fn x_check_reserved_lock(file: *mut sql::sqlite3_file, out: *mut c_int) -> c_int {
    guard(|| {
        real_call!(
            file,
            {
                // SAFETY: out is SQLite's out pointer.
                unsafe { *out = 0 };
                sql::SQLITE_OK
            },
            xCheckReservedLock,
            out
        )
    })
}
unsafe extern "C" fn x_sector_size(file: *mut sql::sqlite3_file) -> c_int {
    guard(|| real_call!(file, 4096, xSectorSize,))
}
unsafe extern "C" fn x_device_characteristics(file: *mut sql::sqlite3_file) -> c_int {
    guard(|| real_call!(file, 0, xDeviceCharacteristics,))
}

unsafe extern "C" fn x_lock(file: *mut sql::sqlite3_file, level: c_int) -> c_int {
    guard(|| {
        // SAFETY: file is ours.
        let Some(main) = (unsafe { main_db(file) }) else {
            return sql::SQLITE_INTERNAL;
        };
        let Some(level) = LockLevel::from_raw(level) else {
            return sql::SQLITE_INTERNAL;
        };
        match main.connection.as_mut() {
            Some(c) => c.lock(level),
            None => sql::SQLITE_CANTOPEN,
        }
    })
}

unsafe extern "C" fn x_unlock(file: *mut sql::sqlite3_file, level: c_int) -> c_int {
    guard(|| {
        // SAFETY: file is ours.
        let Some(main) = (unsafe { main_db(file) }) else {
            return sql::SQLITE_INTERNAL;
        };
        let Some(level) = LockLevel::from_raw(level) else {
            return sql::SQLITE_INTERNAL;
        };
        match main.connection.as_mut() {
            Some(c) => c.unlock(level),
            None => sql::SQLITE_OK,
        }
    })
}

unsafe extern "C" fn x_file_control(
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
                    return real_call!(file, sql::SQLITE_NOTFOUND, xFileControl, op, arg);
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
            sql::SQLITE_FCNTL_SYNC => {
                let rc = connection.sync_point();
                if rc != sql::SQLITE_OK {
                    return rc;
                }
                real_call!(file, sql::SQLITE_NOTFOUND, xFileControl, op, arg)
            }
            sql::SQLITE_FCNTL_COMMIT_PHASETWO => {
                let rc = connection.commit_phase_two();
                if rc != sql::SQLITE_OK {
                    return rc;
                }
                real_call!(file, sql::SQLITE_NOTFOUND, xFileControl, op, arg)
            }
            sql::SQLITE_FCNTL_VFSNAME => {
                let rc = real_call!(file, sql::SQLITE_NOTFOUND, xFileControl, op, arg);
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
            _ => real_call!(file, sql::SQLITE_NOTFOUND, xFileControl, op, arg),
        }
    })
}

// ---------------------------------------------------------------------------
// Loadable extension entry

/// The body of `sqlite3_managedblob_init`: bind to the host's api routines, register
/// the VFS, and stay loaded after the loading connection closes.
///
/// # Safety
/// Must be called by SQLite as an extension entry point, with its arguments.
#[cfg(feature = "loadable_extension")]
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
