//! Azure blob leases. Azure only knows 15 to 60 s: shorter durations are rounded
//! up to 15 s and longer ones capped at 60 s; a renewal keeps the duration the lease
//! was acquired with. An acquire that failed transiently is retried with the same
//! proposed lease id, so a lost reply does not lock us out. The Acquire Lease reply
//! carries the blob's ETag: no Get Properties follows it. Releasing or breaking a
//! lease that is already gone succeeds.

use std::time::Duration;

use azure_storage_blob::models::{
    BlobClientAcquireLeaseOptions, BlobClientAcquireLeaseResultHeaders, BlobClientBreakLeaseOptions,
};

use super::errors::{http_status, Op};
use super::AzureBackend;
use crate::backend::{Backend, BackendError, BackendErrorKind, BackendResult, Lease, LeaseId};

/// Azure's lease duration bounds, in seconds.
const MIN_LEASE_SECS: u64 = 15;
const MAX_LEASE_SECS: u64 = 60;

/// Azure's lease duration for `duration`: whole seconds within 15..=60.
fn lease_secs(duration: Duration) -> i32 {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    secs.clamp(MIN_LEASE_SECS, MAX_LEASE_SECS) as i32
}

impl AzureBackend {
    /// [`Backend::acquire_lease`].
    pub(super) fn take_lease(&self, blob: &str, duration: Duration) -> BackendResult<Lease> {
        let op = Op::AcquireLease;
        let client = self.client(blob)?;
        let secs = lease_secs(duration);
        // Reuse the id of an acquire whose reply was lost: Azure accepts an acquire
        // with the active lease's own id, so the retry succeeds instead of LeaseHeld.
        let proposed = self
            .pending_acquires
            .lock()
            .remove(blob)
            .unwrap_or_else(|| azure_core::Uuid::new_v4().to_string());
        let options = BlobClientAcquireLeaseOptions {
            proposed_lease_id: Some(proposed.clone()),
            ..Default::default()
        };
        let result = self.call(blob, op, self.tuning.request_timeout, async move {
            let response = client.acquire_lease(secs, Some(options)).await?;
            Ok((response.lease_id()?, response.etag()?))
        });
        let (id, etag) = match result {
            Ok(reply) => reply,
            Err(e) => {
                if e.is_transient() {
                    self.pending_acquires
                        .lock()
                        .insert(blob.to_string(), proposed);
                }
                if e.kind == BackendErrorKind::LeaseHeld {
                    return Err(self.describe_lease(blob, e));
                }
                return Err(e);
            }
        };
        let id = LeaseId(id.unwrap_or(proposed));
        // The lease fences writers, so the reply's ETag is the version the lease
        // starts from. Its size is not in the reply: the caller asks when it needs it.
        match etag {
            Some(etag) => Ok(Lease {
                etag: self.etag_of(blob, op, Some(etag))?,
                id,
                size: None,
            }),
            None => self.stat_for_lease(blob, id),
        }
    }

    /// A reply without an ETag (never seen from Azure or Azurite): the version the
    /// lease starts from, asked. A lease nobody will use is given back.
    fn stat_for_lease(&self, blob: &str, lease: LeaseId) -> BackendResult<Lease> {
        match self.stat(blob) {
            Ok(Some(stat)) => Ok(Lease::on(lease, stat)),
            failed => {
                // When the release fails too, the id is kept as the next acquire's
                // proposal: Azure accepts an acquire with the active lease's own id,
                // so this process takes it back instead of waiting for it to lapse.
                if let Err(e) = self.release_lease(blob, &lease) {
                    tracing::warn!(blob, lease = ?lease, error = %e,
                        "releasing a lease taken for a failed acquire failed; its id is \
                         kept for the next acquire");
                    self.pending_acquires
                        .lock()
                        .insert(blob.to_string(), lease.0);
                }
                Err(failed.err().unwrap_or_else(|| {
                    self.fail(
                        BackendErrorKind::NotFound,
                        blob,
                        Op::AcquireLease,
                        "the blob vanished after its lease was taken",
                    )
                }))
            }
        }
    }

    /// A refused acquire, with what Azure tells of the lease in force: its state
    /// and duration (it names no holder and no end). Looked up at most once a second
    /// per blob (writers contending for a lease would double the requests); within
    /// that second the last description is reused.
    fn describe_lease(&self, blob: &str, mut refused: BackendError) -> BackendError {
        let now = std::time::Instant::now();
        let cached = self
            .lease_lookups
            .lock()
            .get(blob)
            .filter(|(t, _)| now.duration_since(*t) < Duration::from_secs(1))
            .map(|(_, d)| d.clone());
        let description = match cached {
            Some(d) => d,
            None => {
                let d = match self.details(blob) {
                    Ok(Some(details)) => lease_description(&details.lease),
                    _ => String::new(),
                };
                self.lease_lookups
                    .lock()
                    .insert(blob.to_string(), (now, d.clone()));
                d
            }
        };
        if !description.is_empty() {
            refused.message = format!("{} ({description})", refused.message);
        }
        refused
    }

    /// [`Backend::renew_lease`] (Azure renews for the duration of the acquire).
    pub(super) fn extend_lease(&self, blob: &str, lease: &LeaseId) -> BackendResult<()> {
        let client = self.client(blob)?;
        let id = lease.0.clone();
        self.call(
            blob,
            Op::RenewLease,
            self.tuning.request_timeout,
            async move { client.renew_lease(id, None).await.map(|_| ()) },
        )
    }

    /// [`Backend::release_lease`].
    pub(super) fn give_back_lease(&self, blob: &str, lease: &LeaseId) -> BackendResult<()> {
        let client = self.client(blob)?;
        let id = lease.0.clone();
        let result = self.exec(
            blob,
            Op::ReleaseLease,
            self.tuning.request_timeout,
            async move { client.release_lease(id, None).await.map(|_| ()) },
        )?;
        match result {
            Ok(()) => Ok(()),
            Err(e) => match http_status(&e) {
                // Already gone, broken, expired into someone else's, or never ours.
                Some((404, code)) if code != "ContainerNotFound" => Ok(()),
                Some((409, code)) if code.starts_with("Lease") => Ok(()),
                _ => Err(self.error(blob, Op::ReleaseLease, &e)),
            },
        }
    }

    /// [`Backend::break_lease`].
    pub(super) fn end_lease(&self, blob: &str) -> BackendResult<()> {
        let client = self.client(blob)?;
        let options = BlobClientBreakLeaseOptions {
            break_period: Some(0),
            ..Default::default()
        };
        let result = self.exec(
            blob,
            Op::BreakLease,
            self.tuning.request_timeout,
            async move { client.break_lease(Some(options)).await.map(|_| ()) },
        )?;
        match result {
            Ok(()) => Ok(()),
            Err(e) => match http_status(&e) {
                Some((409, code)) if code == "LeaseNotPresentWithLeaseOperation" => Ok(()),
                Some((404, code)) if code != "ContainerNotFound" => Ok(()),
                _ => Err(self.error(blob, Op::BreakLease, &e)),
            },
        }
    }
}

/// "lease state leased, duration fixed: ..." for a refused acquire's message.
fn lease_description(lease: &crate::backend::inspect::LeaseInfo) -> String {
    let until = match lease.duration.as_deref() {
        Some("infinite") => "until it is released or broken".to_string(),
        _ => format!(
            "for at most {MAX_LEASE_SECS} s more unless its holder renews it; Azure does not \
             say who holds it (a writer killed on another host: wait, or `managedblob \
             break-lease`)"
        ),
    };
    format!(
        "lease state {}, duration {}: held {until}",
        lease.state.name(),
        lease.duration.as_deref().unwrap_or("unknown")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_durations_fit_azure() {
        assert_eq!(lease_secs(Duration::from_millis(200)), 15);
        assert_eq!(lease_secs(Duration::from_secs(30)), 30);
        assert_eq!(lease_secs(Duration::from_millis(30_001)), 31);
        assert_eq!(lease_secs(Duration::from_secs(3600)), 60);
    }
}
