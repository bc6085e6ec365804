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

pub mod backend;
mod cache_file;
pub mod config;
mod connection;
mod counters;
mod crash;
pub mod delta;
pub mod error;
mod ffi;
mod fsutil;
mod image;
mod leftovers;
pub mod localfile;
#[cfg(feature = "log-subscriber")]
pub mod logging;
mod open;
pub mod ops;
pub mod pinned;
mod pragma;
pub mod redact;
mod remote;
pub mod remote_spec;
mod residency;
pub mod sidecar;
mod store;
mod sys;
mod utc;

pub use config::Options;
pub use counters::CounterSnapshot;
pub use error::{Error, Result};

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

#[cfg(feature = "loadable_extension")]
pub use ffi::{
    extension_init, real_sqlite_function, register_before_first_open, register_in_process,
};

/// The `rust` code blocks of the README and docs/LOADABLE.md, compiled by `cargo test`
/// as doctests (cli/tests/docs.rs checks that every document with one is listed here).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// See [`ReadmeDoctests`].
#[cfg(doctest)]
#[doc = include_str!("../docs/LOADABLE.md")]
pub struct LoadableDoctests;
