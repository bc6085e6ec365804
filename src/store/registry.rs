//! One [`Store`] per cache file per process, shared by every connection to it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::Store;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::remote::Remote;

static STORES: Mutex<Option<HashMap<PathBuf, Weak<Store>>>> = Mutex::new(None);

/// The store for `cache_path`, created on first use. A second open of the same cache
/// with another remote or blob is refused: one cache mirrors one blob.
pub fn open_store(cache_path: &Path, config: Config) -> Result<Arc<Store>> {
    let mut guard = STORES.lock();
    let stores = guard.get_or_insert_with(HashMap::new);
    stores.retain(|_, weak| weak.strong_count() > 0);
    if let Some(existing) = stores.get(cache_path).and_then(Weak::upgrade) {
        let same = existing.config.remote == config.remote && existing.config.blob == config.blob;
        if !same {
            return Err(Error::Config(format!(
                "cache {} is already open in this process for blob '{}' of another remote; \
                 one cache file mirrors one blob",
                cache_path.display(),
                existing.config.blob
            )));
        }
        return Ok(existing);
    }
    let backend = crate::backend::connect(&config.remote)?;
    let remote = Remote::new(backend, config.blob.clone(), config.retry);
    let store = Arc::new_cyclic(|me| Store::new(cache_path, config, remote, me.clone()));
    stores.insert(cache_path.to_path_buf(), Arc::downgrade(&store));
    Ok(store)
}
