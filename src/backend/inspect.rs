//! What operator tools (the `managedblob` CLI, through `crate::ops`) ask a store
//! beyond the [`super::Backend`] trait, and the shapes of the answers: a blob's
//! details and lease, and what a sweep of killed writers' leftovers found. The
//! backends fill these in (`local/inspect.rs`, `azure/properties.rs`), so they live
//! here, below the operator layer that asks.

use std::path::PathBuf;

use super::BlobStat;

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

/// One leftover file (or staging directory) and its size.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Leftover {
    pub path: PathBuf,
    pub bytes: u64,
    pub what: &'static str,
}

/// A leftover-looking file kept because its owner may be alive.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub why: String,
}

/// What a sweep removed (or, in a dry run, would remove) and what it kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    pub found: Vec<Leftover>,
    pub skipped: Vec<Skipped>,
    /// Remarks on what a sweep cannot do for this store.
    pub notes: Vec<String>,
}

impl SweepReport {
    pub fn bytes(&self) -> u64 {
        self.found.iter().map(|l| l.bytes).sum()
    }
}
