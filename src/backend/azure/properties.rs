//! What the operator tools ask an Azure blob beyond the [`super::Backend`] trait: its
//! modification time and lease state. Azure does not say who holds a lease, nor
//! when a fixed-duration lease ends.

use azure_storage_blob::models::{
    BlobClientGetPropertiesResultHeaders, LeaseDuration, LeaseState as AzureLeaseState,
};

use super::errors::{http_status, Op};
use super::{AzureBackend, BackendResult, BlobStat};
use crate::backend::inspect::{BlobDetails, LeaseInfo, LeaseState};

impl AzureBackend {
    /// Etag, size, modification time and lease of `blob`; `None` when it does not exist.
    pub fn details(&self, blob: &str) -> BackendResult<Option<BlobDetails>> {
        let client = self.client(blob)?;
        let result = self.exec(blob, Op::Stat, self.tuning.request_timeout, async move {
            let props = client.get_properties(None).await?;
            Ok((
                props.etag()?,
                props.content_length()?,
                props.last_modified()?.map(|t| t.unix_timestamp()),
                props.lease_state()?,
                props.duration()?,
            ))
        })?;
        let (etag, size, modified, state, duration) = match result {
            Ok(found) => found,
            Err(e) => {
                return match http_status(&e) {
                    Some((404, code)) if code == "BlobNotFound" || code.is_empty() => Ok(None),
                    _ => Err(self.error(blob, Op::Stat, &e)),
                }
            }
        };
        let state = match state {
            Some(AzureLeaseState::Leased) => LeaseState::Leased,
            Some(AzureLeaseState::Breaking) => LeaseState::Breaking,
            Some(AzureLeaseState::Broken) => LeaseState::Broken,
            Some(AzureLeaseState::Expired) => LeaseState::Expired,
            _ => LeaseState::Available,
        };
        let duration = duration.map(|d| match d {
            LeaseDuration::Infinite => "infinite".to_string(),
            _ => "fixed".to_string(),
        });
        Ok(Some(BlobDetails {
            stat: BlobStat {
                etag: self.etag_of(blob, Op::Stat, etag)?,
                size: size.unwrap_or(0),
            },
            last_modified: modified
                .and_then(|secs| u64::try_from(secs).ok())
                .map(|secs| crate::utc::rfc3339_ms(secs * 1000)),
            lease: LeaseInfo {
                state,
                duration: if state == LeaseState::Leased {
                    duration
                } else {
                    None
                },
                ..LeaseInfo::available()
            },
        }))
    }
}
