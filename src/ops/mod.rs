//! Operator tools' view of a remote (the `managedblob` command): what the normal
//! data path has no reason to expose, namely the lease and who holds it, a blob's
//! modification time, the block list a local remote last recorded, and the sweep of
//! files killed processes left behind.
//!
//! Everything here goes through the backends' own code; only the questions differ.

pub mod sweep;

/// What the backends answer these questions with (src/backend/inspect.rs: the
/// operator layer sits above the backends, so the shapes live with them).
pub use crate::backend::inspect::{BlobDetails, LeaseInfo, LeaseState};
use crate::backend::{BlobStat, BlockList};
use crate::config::RemoteSpec;
use crate::error::{Error, Result};

/// The etag, size, modification time and lease of `blob`; `None` when it does not exist.
pub fn blob_details(spec: &RemoteSpec, blob: &str) -> Result<Option<BlobDetails>> {
    match spec {
        RemoteSpec::Local(dir) => local(dir)?.details(blob).map_err(Error::from),
        #[cfg(feature = "azure")]
        RemoteSpec::Azure(url) => azure(url)?.details(blob).map_err(Error::from),
        #[cfg(any(test, feature = "testing"))]
        RemoteSpec::Memory(_) => {
            let backend = crate::backend::connect(spec)?;
            Ok(backend.stat(blob)?.map(|stat| BlobDetails {
                stat,
                last_modified: None,
                lease: LeaseInfo::available(),
            }))
        }
    }
}

/// The block list the remote associates with `blob`'s content, for verifying it.
/// Unlike [`crate::backend::Blocks::block_list`], a local remote's list is returned
/// even when the blob file changed behind the backend's back (bit rot, a foreign
/// write): its chunk ids are what the content should hash to. `None` when the blob
/// does not exist; an empty list when nothing is recorded.
pub fn recorded_blocks(spec: &RemoteSpec, blob: &str) -> Result<Option<(BlobStat, BlockList)>> {
    match spec {
        RemoteSpec::Local(dir) => local(dir)?.recorded_blocks(blob).map_err(Error::from),
        #[cfg(feature = "azure")]
        RemoteSpec::Azure(_) => committed_blocks(spec, blob),
        #[cfg(any(test, feature = "testing"))]
        RemoteSpec::Memory(_) => committed_blocks(spec, blob),
    }
}

/// The block list the backend's contract reports (`Blocks::block_list`), where the
/// remote's content and its list cannot part.
#[cfg(any(feature = "azure", test, feature = "testing"))]
fn committed_blocks(spec: &RemoteSpec, blob: &str) -> Result<Option<(BlobStat, BlockList)>> {
    let backend = crate::backend::connect(spec)?;
    match backend.blocks() {
        Some(blocks) => Ok(blocks.block_list(blob)?),
        None => Ok(backend.stat(blob)?.map(|stat| (stat, Vec::new()))),
    }
}

pub(crate) fn local(dir: &std::path::Path) -> Result<crate::backend::local::LocalBackend> {
    crate::backend::local::LocalBackend::new(dir.to_path_buf()).map_err(|source| Error::Setting {
        what: "setting 'remote' names an unusable directory".into(),
        source,
    })
}

#[cfg(feature = "azure")]
fn azure(url: &crate::backend::azure::ContainerUrl) -> Result<crate::backend::azure::AzureBackend> {
    crate::backend::azure::AzureBackend::connect(url).map_err(|source| Error::Setting {
        what: "setting 'remote' names an unusable Azure container".into(),
        source,
    })
}
