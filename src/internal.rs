//! Not for applications: what managedblob's own programs need beyond the public API
//! (`register`, `register_with`, `Options`, `Error`, `Status` and what they name):
//! the `managedblob` command (cli/), the loadable extension (loadable/), the test
//! harness (tests/common/), the tests, benches and examples.
//!
//! No stability promise: anything here may change or go in any release, and it is
//! left out of the documentation. Each module re-exports the crate module of the same
//! name, so a path reads as it does inside the crate.

/// The blob stores behind one trait (local directory, memory, Azure).
pub mod backend {
    pub use crate::backend::*;
}

/// Settings, and the `remote` setting parsed.
pub mod config {
    pub use crate::config::*;
}

/// Chunk ids and manifests of delta uploads.
pub mod delta {
    pub use crate::delta::*;
}

/// The `MANAGEDBLOB_LOG` subscriber for processes without one of their own.
#[cfg(feature = "log-subscriber")]
pub mod logging {
    pub use crate::logging::*;
}

/// The `managedblob` command's questions about a remote.
pub mod ops {
    pub use crate::ops::*;
}

/// Redaction of URIs and credentials in messages.
pub mod redact {
    pub use crate::redact::*;
}

/// A lazy cache's residency record, read only ([`residency::summary`]).
pub mod residency {
    pub use crate::residency::{path_for, summary, Summary};
}

/// The cache's durable state beside it.
pub mod sidecar {
    pub use crate::sidecar::*;
}

/// The loadable extension's entry and the LD_PRELOAD stand-ins (loadable/).
#[cfg(feature = "loadable_extension")]
pub use crate::ffi::{
    extension_init, real_sqlite_function, register_before_first_open, register_in_process,
};
