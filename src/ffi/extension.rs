//! The loadable-extension entry (`sqlite3_managedblob_init` in `loadable/`), and
//! registration without an entry-point call, for a library preloaded with
//! `LD_PRELOAD` (or loaded by other means) into a process whose SQLite is the shared
//! `libsqlite3`.
//!
//! The loadable build reaches SQLite only through the api routines an entry point
//! receives. Preloaded, nobody calls the entry point, so [`register_in_process`] asks
//! the process's SQLite for them the way SQLite hands them out: it adds an
//! auto-extension (found with `dlsym`), opens and closes an in-memory database, which
//! runs it with the routines, and removes it again. `loadable/` runs it from its
//! stand-ins for `sqlite3_open*` ([`register_before_first_open`]), so the VFS exists
//! before the host's first open, and SQLite is not initialized before the host has
//! configured it.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use libsqlite3_sys as sql;

use super::{guard, register};
use crate::config::Options;

/// The api routines this copy is bound to: one SQLite per process.
static BOUND_API: AtomicPtr<sql::sqlite3_api_routines> = AtomicPtr::new(ptr::null_mut());

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
    // Every way in (`.load`, the preload path, ctypes) comes through here; the first
    // call sets up MANAGEDBLOB_LOG, later ones do nothing.
    crate::logging::init_from_env();
    guard(|| {
        if api.is_null() {
            return sql::SQLITE_INTERNAL;
        }
        // SAFETY: api is the routine table SQLite passed to the entry point; err its
        // out pointer.
        let fail = |message: &str| unsafe { fail_with(api, err, message) };
        let bound = BOUND_API.load(Ordering::Acquire);
        if !bound.is_null() && bound != api {
            return fail(
                "managedblob: already registered with another SQLite library in this \
                 process (one copy serves one SQLite)",
            );
        }
        // SAFETY: api is the routine table SQLite passed to the entry point.
        if let Err(e) = unsafe { sql::rusqlite_extension_init2(api) } {
            return fail(&format!("managedblob: {e}"));
        }
        BOUND_API.store(api, Ordering::Release);
        match register(Options::default()) {
            Ok(()) => sql::SQLITE_OK_LOAD_PERMANENTLY,
            Err(e) => fail(&e.to_string()),
        }
    })
}

/// Report `message` through SQLite's out pointer, in memory from `api`'s own
/// allocator (the routines may not be bound yet, or bound to nothing else).
///
/// # Safety
/// `api` is a routine table from SQLite; `err` is null or SQLite's out pointer.
unsafe fn fail_with(
    api: *mut sql::sqlite3_api_routines,
    err: *mut *mut c_char,
    message: &str,
) -> c_int {
    // SAFETY: guaranteed by the caller.
    let malloc = unsafe { (*api).malloc };
    if let (false, Some(malloc)) = (err.is_null(), malloc) {
        let bytes = message.as_bytes();
        // SAFETY: malloc returns null or a block of the requested size.
        let p = unsafe { malloc((bytes.len() + 1) as c_int) } as *mut c_char;
        if !p.is_null() {
            // SAFETY: p has room for len + 1 bytes; err is SQLite's out pointer.
            unsafe {
                ptr::copy_nonoverlapping(bytes.as_ptr().cast(), p, bytes.len());
                *p.add(bytes.len()) = 0;
                *err = p;
            }
        }
    }
    sql::SQLITE_ERROR
}

/// The auto-extension [`register_in_process`] adds for one in-memory open: the entry
/// point, with "stay loaded" meaning success (an auto-extension has no such answer).
unsafe extern "C" fn preload_entry(
    db: *mut sql::sqlite3,
    err: *mut *mut c_char,
    api: *const sql::sqlite3_api_routines,
) -> c_int {
    // SAFETY: SQLite runs auto-extensions with the same arguments as entry points.
    match unsafe { extension_init(db, err, api as *mut _) } {
        sql::SQLITE_OK_LOAD_PERMANENTLY => sql::SQLITE_OK,
        rc => rc,
    }
}

/// Where the process's SQLite is looked for when it is not in the global scope (a
/// library loaded with RTLD_LOCAL, as Python loads `_sqlite3`).
const SHARED_SQLITE: &CStr = c"libsqlite3.so.0";

type AutoExtensionFn = unsafe extern "C" fn(Option<unsafe extern "C" fn()>) -> c_int;
type OpenFn = unsafe extern "C" fn(*const c_char, *mut *mut sql::sqlite3) -> c_int;
type CloseFn = unsafe extern "C" fn(*mut sql::sqlite3) -> c_int;

/// Register the VFS with the SQLite library of this process (the shared `libsqlite3`
/// that `/usr/bin/sqlite3` and Debian's Python link), without an entry-point call.
/// `Err` says why not: no shared SQLite in the process (a statically linked one
/// exports nothing to look up), or its registration failed.
pub fn register_in_process() -> Result<(), String> {
    let find = |name: &CStr| crate::sys::find_symbol(name, SHARED_SQLITE);
    let (Some(add), Some(cancel), Some(open), Some(close)) = (
        find(c"sqlite3_auto_extension"),
        find(c"sqlite3_cancel_auto_extension"),
        find(c"sqlite3_open"),
        find(c"sqlite3_close"),
    ) else {
        return Err("no shared SQLite library (libsqlite3) in this process".into());
    };
    // SAFETY: these are SQLite's exported functions of those names, whose C types are
    // the ones given here (sqlite3.h); a function address fits a pointer.
    let (add, cancel, open, close) = unsafe {
        (
            std::mem::transmute::<*mut c_void, AutoExtensionFn>(add),
            std::mem::transmute::<*mut c_void, AutoExtensionFn>(cancel),
            std::mem::transmute::<*mut c_void, OpenFn>(open),
            std::mem::transmute::<*mut c_void, CloseFn>(close),
        )
    };
    type Entry = unsafe extern "C" fn(
        *mut sql::sqlite3,
        *mut *mut c_char,
        *const sql::sqlite3_api_routines,
    ) -> c_int;
    let entry: Entry = preload_entry;
    // SAFETY: sqlite3_auto_extension takes `void(*)(void)` and calls it as an entry
    // point (sqlite3.h), which preload_entry is.
    let entry = Some(unsafe { std::mem::transmute::<Entry, unsafe extern "C" fn()>(entry) });
    let mut db: *mut sql::sqlite3 = ptr::null_mut();
    // SAFETY: SQLite's own functions with valid arguments: the auto-extension lives as
    // long as the process; db is the out pointer of open, closed right after (close
    // accepts the handle of a failed open too).
    let (added, opened) = unsafe {
        let added = add(entry);
        let opened = open(c":memory:".as_ptr(), &mut db);
        close(db);
        cancel(entry);
        (added, opened)
    };
    if added != sql::SQLITE_OK {
        return Err(format!("sqlite3_auto_extension failed with code {added}"));
    }
    if opened != sql::SQLITE_OK {
        return Err(format!(
            "the in-memory open that registers the VFS failed with code {opened}"
        ));
    }
    Ok(())
}

/// Register once, before the first open of a process that preloaded this library
/// (`LD_PRELOAD`): called by the library's stand-ins for `sqlite3_open*`. Not at load
/// time: registering initializes SQLite, and a host configures SQLite
/// (`sqlite3_config`, which fails once it is initialized) before it opens anything.
/// Silent when it cannot register (the reason is logged at debug level).
pub fn register_before_first_open() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    crate::logging::init_from_env(); // so a failure below is logged
    ONCE.call_once(|| match std::panic::catch_unwind(register_in_process) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("managedblob: not registered before the first open: {e}"),
        Err(_) => tracing::error!("managedblob: a panic was caught while registering"),
    });
}

/// The real `sqlite3_open*` named `name` (SQLite's, not this library's stand-in), for
/// the stand-ins to call after [`register_before_first_open`].
pub fn real_sqlite_function(name: &CStr) -> Option<*mut c_void> {
    crate::sys::find_symbol(name, SHARED_SQLITE)
}
