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

/// What [`create_container`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// It did not exist; now it does.
    Created,
    /// It existed already (not an error: creating a container is idempotent).
    AlreadyExisted,
}

/// Create the remote itself, so a first open can create its blob: an Azure
/// container (the VFS never creates one: a typo in a URL should fail, not make a
/// new container), or a local remote's directory with its parents. Returns the
/// remote's secret-free name with the outcome.
pub fn create_container(spec: &RemoteSpec) -> Result<(String, Created)> {
    match spec {
        RemoteSpec::Local(dir) => {
            let name = format!("local:{}", dir.display());
            if dir.is_dir() {
                return Ok((name, Created::AlreadyExisted));
            }
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::local(
                    format!("creating the remote directory {}", dir.display()),
                    e,
                )
            })?;
            Ok((name, Created::Created))
        }
        #[cfg(feature = "azure")]
        RemoteSpec::Azure(url) => {
            let backend = azure(url)?;
            let created = match backend.create_container()? {
                true => Created::Created,
                false => Created::AlreadyExisted,
            };
            Ok((crate::backend::Backend::identity(&backend), created))
        }
        #[cfg(any(test, feature = "testing"))]
        RemoteSpec::Memory(name) => Err(Error::Config(format!(
            "memory:{name} lives inside one process: there is no container to create"
        ))),
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
