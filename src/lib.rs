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
//!
//! The API is [`register`], [`register_with`] with its [`Options`], [`VFS_NAME`],
//! [`Error`], and [`Status`] (what `PRAGMA managedblob_status` answers, as JSON), with
//! the types they name. `managedblob::internal`, left out of these pages, serves
//! managedblob's own command, loadable extension and tests: it is not for
//! applications and may change in any release.

#![deny(unsafe_code)]

// Every module is private: the public API is what this file declares `pub`, and a
// type a public item names (`Key` and `TransferMode` for `Options`, `BackendError` and
// `BackendErrorKind` for `Error`, `InFlight`, `CounterSnapshot` and `Residence` for `Status`) is
// re-exported below.
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
mod layout;
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
mod residency;
mod sidecar;
mod store;
mod sys;
mod utc;

pub use config::{Key, Options, TransferMode};
pub use connection::{Residence, Status};
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

/// The `rust` code blocks of the README and docs/LOADABLE.md, compiled by `cargo test`
/// as doctests (cli/tests/docs.rs checks that every document with one is listed here).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// See [`ReadmeDoctests`].
#[cfg(doctest)]
#[doc = include_str!("../docs/LOADABLE.md")]
pub struct LoadableDoctests;
