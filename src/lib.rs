//! managedblob: a SQLite VFS that keeps a database in blob storage (a local
//! directory, or Azure Blob Storage) and a full local copy next to the application.
//!
//! ```no_run
//! managedblob::register().unwrap();
//! let db = rusqlite::Connection::open_with_flags(
//!     "file:corpus.db?vfs=managedblob&remote=/srv/remote",
//!     rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
//!         | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
//!         | rusqlite::OpenFlags::SQLITE_OPEN_URI,
//! ).unwrap();
//! ```
//!
//! Opening downloads the database only when the remote changed; a write transaction
//! holds the remote lease; a commit uploads with a conditional write; a batch
//! (`PRAGMA managedblob_batch=begin|end`) uploads once at its end. See the README for
//! the guarantees, and docs/ARCHITECTURE.md for how SQLite's lock levels map onto
//! all this.

#![deny(unsafe_code)]

// The public API is what this file declares `pub`: `register`, `register_with`,
// `VFS_NAME`, `Options` (with `Key` and `SyncMode`, which its methods take), `Error`
// and `Result` (with `BackendError` and `BackendErrorKind`, which a variant carries),
// and `Status` (the `PRAGMA managedblob_status` answer, with `InFlight` and
// `CounterSnapshot`, its fields' types). The modules are private; managedblob's own
// programs reach further through `internal`.
mod backend;
mod cache_file;
mod config;
mod connection;
mod counters;
mod crash;
mod delta;
mod error;
mod ffi;
mod fsutil;
mod image;
#[doc(hidden)]
pub mod internal;
mod leftovers;
mod localfile;
#[cfg(feature = "log-subscriber")]
mod logging;
mod open;
mod ops;
mod pinned;
mod pragma;
mod redact;
mod remote;
mod remote_spec;
mod sidecar;
mod store;
mod sys;
mod utc;

pub use config::{Key, Options, SyncMode};
pub use connection::Status;
pub use counters::CounterSnapshot;
pub use error::{BackendError, BackendErrorKind, Error, Result};
pub use sidecar::InFlight;

/// The name the VFS is registered under.
pub const VFS_NAME: &str = "managedblob";

/// Register the `managedblob` VFS with the SQLite linked into this process.
/// Idempotent. Afterwards, open `file:<cache path>?vfs=managedblob&remote=<dir>`
/// with SQLITE_OPEN_URI.
pub fn register() -> Result<()> {
    ffi::register(Options::default())
}

/// Register with process-wide defaults (`remote`, `lease_secs`, ...) that URI
/// parameters and `MANAGEDBLOB_*` variables override, or under another VFS name.
/// Registering the same name again with different options is an error.
pub fn register_with(options: Options) -> Result<()> {
    ffi::register(options)
}
