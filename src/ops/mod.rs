//! Operator tools' view of a remote (the `managedblob` command): what the normal
//! data path has no reason to expose, namely the lease and who holds it, a blob's
//! modification time, the block list a local remote last recorded, and the sweep of
//! files killed processes left behind.
//!
//! Everything here goes through the backends' own code; only the questions differ.

pub mod sweep;

use crate::backend::{BlobStat, BlockList};
use crate::config::RemoteSpec;
use crate::error::{Error, Result};

/// The lease state of a blob, in Azure's words (the local backend uses a subset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Nobody holds it (never taken, released, or expired).
    Available,
    /// Somebody holds it.
    Leased,
    /// Broken with a break period that has not ended yet.
    Breaking,
    /// Broken; the next acquire succeeds.
    Broken,
    /// Expired; the next acquire succeeds.
    Expired,
}

impl LeaseState {
    /// Lower case, as Azure and the CLI spell it.
    pub fn name(self) -> &'static str {
        match self {
            LeaseState::Available => "available",
            LeaseState::Leased => "leased",
            LeaseState::Breaking => "breaking",
            LeaseState::Broken => "broken",
            LeaseState::Expired => "expired",
        }
    }
}

/// What the remote knows about a blob's lease. Never contains the lease id.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LeaseInfo {
    pub state: LeaseState,
    /// When the lease ends unless renewed (RFC 3339 UTC), where the backend says.
    pub expires: Option<String>,
    /// Who holds it (`pid 42 on host-a`), where the backend records it.
    pub holder: Option<String>,
    /// Whether the holder is provably dead (a local process on this host that no
    /// longer exists): such a lease is reclaimed by the next writer.
    pub holder_dead: bool,
    /// `fixed` or `infinite` (Azure), where known.
    pub duration: Option<String>,
}

impl LeaseInfo {
    /// A blob nobody leases.
    pub fn available() -> LeaseInfo {
        LeaseInfo {
            state: LeaseState::Available,
            expires: None,
            holder: None,
            holder_dead: false,
            duration: None,
        }
    }
}

/// What `status` shows about a blob beyond its etag and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobDetails {
    pub stat: BlobStat,
    /// RFC 3339 UTC, to the second.
    pub last_modified: Option<String>,
    pub lease: LeaseInfo,
}

/// The etag, size, modification time and lease of `blob`; `None` when it does not exist.
pub fn blob_details(spec: &RemoteSpec, blob: &str) -> Result<Option<BlobDetails>> {
    match spec {
        RemoteSpec::Local(dir) => local(dir)?.details(blob).map_err(Error::from),
        #[cfg(feature = "azure")]
        RemoteSpec::Azure(url) => azure(url)?.details(blob).map_err(Error::from),
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
        _ => {
            let backend = crate::backend::connect(spec)?;
            match backend.blocks() {
                Some(blocks) => Ok(blocks.block_list(blob)?),
                None => Ok(backend.stat(blob)?.map(|stat| (stat, Vec::new()))),
            }
        }
    }
}

pub(crate) fn local(dir: &std::path::Path) -> Result<crate::backend::local::LocalBackend> {
    crate::backend::local::LocalBackend::new(dir.to_path_buf())
        .map_err(|e| Error::Config(format!("setting 'remote' names an unusable directory: {e}")))
}

#[cfg(feature = "azure")]
fn azure(url: &crate::backend::azure::ContainerUrl) -> Result<crate::backend::azure::AzureBackend> {
    crate::backend::azure::AzureBackend::connect(url).map_err(|e| {
        Error::Config(format!(
            "setting 'remote' names an unusable Azure container: {e}"
        ))
    })
}

/// RFC 3339 UTC of a Unix time in milliseconds.
pub(crate) fn rfc3339_ms(unix_ms: u64) -> String {
    crate::utc::Utc::from_unix(unix_ms / 1000).iso8601()
}
