//! Opening a managed main database: the safe half of xOpen (src/ffi/open.rs is the
//! unsafe half). The shim hands every open to this layer and never names the store:
//! first the store, which checks the settings and the remote's address before the
//! cache file is touched; then, once SQLite has opened the cache file, the
//! connection on it.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::connection::Connection;
use crate::error::Result;
use crate::localfile::LocalFile;
use crate::store::flusher::CacheOpener;
use crate::store::{open_store, Store};

/// A managed database whose store is open (one per cache file per process, shared
/// by its connections), waiting for SQLite to open the cache file.
pub(crate) struct Opening {
    store: Arc<Store>,
}

impl Opening {
    /// The store of the cache at `cache_path`: the one this process has open, or a
    /// new one. Fails on bad settings or an unusable remote before the cache file
    /// exists, so a bad URI leaves no empty cache file behind.
    pub(crate) fn store(cache_path: &Path, config: Config) -> Result<Opening> {
        open_store(cache_path, config).map(|store| Opening { store })
    }

    /// Give the store's flusher (`flush_ms`) a way to open its own handle on the
    /// cache through SQLite's VFS; `opener` runs only if the store needs one.
    pub(crate) fn offer_cache_opener(&self, opener: impl FnOnce() -> CacheOpener) {
        self.store.offer_cache_opener(opener);
    }

    /// The connection on the cache file SQLite opened (recovery and the first
    /// freshness check happen for the first connection of the process).
    pub(crate) fn connect(self, file: Box<dyn LocalFile>, read_only: bool) -> Result<Connection> {
        Connection::open(self.store, file, read_only)
    }
}
