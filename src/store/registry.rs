//! One [`Store`] per cache file per process, shared by every connection to it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::Store;
use crate::backend::local::LocalBackend;
use crate::backend::memory::MemoryBackend;
use crate::backend::Backend;
use crate::config::{Config, RemoteSpec};
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
    let backend = connect(&config.remote)?;
    let remote = Remote::new(backend, config.blob.clone(), config.retry);
    let store = Arc::new(Store::new(cache_path, config, remote));
    stores.insert(cache_path.to_path_buf(), Arc::downgrade(&store));
    Ok(store)
}

/// Build the backend a `remote` setting names.
fn connect(spec: &RemoteSpec) -> Result<Arc<dyn Backend>> {
    match spec {
        RemoteSpec::Local(dir) => LocalBackend::new(dir.clone())
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
            .map_err(|e| {
                Error::Config(format!("setting 'remote' names an unusable directory: {e}"))
            }),
        RemoteSpec::Memory(name) => Ok(MemoryBackend::named(name) as Arc<dyn Backend>),
        #[cfg(feature = "azure")]
        RemoteSpec::Azure(url) => crate::backend::azure::AzureBackend::connect(url)
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
            .map_err(|e| {
                Error::Config(format!(
                    "setting 'remote' names an unusable Azure container: {e}"
                ))
            }),
    }
}
