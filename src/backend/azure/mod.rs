//! Azure Blob Storage (and Azurite) through the GA SDK (`azure_storage_blob` 1.x).
//!
//! One container, named by the `remote` URL ([`ContainerUrl`]); each managed database
//! is one block blob in it. The promises of [`Backend`] map onto Azure like this:
//!
//! * **Etags** are Azure's: every write yields a new one.
//! * **Atomic, conditional uploads.** Bodies up to [`AzureTuning::single_put_max`]
//!   (32 MiB) are read into memory and sent in one Put Blob. Larger ones are read from
//!   the source block by block ([`AzureTuning::block_size`], 8 MiB, a few in flight),
//!   staged with fixed-length ids, and made visible by one Put Block List. The
//!   condition (`If-Match: <etag>`, or `If-None-Match: *` for [`Condition::Create`](crate::backend::Condition::Create))
//!   and the lease id go on that final request, so a stale write changes nothing:
//!   staged blocks stay uncommitted (the service drops them after a week, or at the next
//!   commit). A source that ends early fails the upload before anything is committed.
//! * **Leases** are Azure blob leases. Azure only knows 15 to 60 s: shorter durations
//!   are rounded up to 15 s and longer ones capped at 60 s. A renewal keeps the
//!   duration the lease was acquired with. An acquire that failed transiently is
//!   retried with the same proposed lease id, so a lost reply does not lock us out.
//! * **Downloads** stream into the sink; the etag returned is the one of the first
//!   response, and every further range is read with `If-Match` on it, so the bytes and
//!   the etag always agree (a blob replaced mid-download is a transient error and the
//!   caller downloads again).
//! * **Blocks** (delta sync's [`Blocks`]): Get Block List, Put Block, Put Block List
//!   and ranged reads, one request each, with the same conditions, lease and error
//!   mapping as uploads (`blocks.rs`); a block staged from a range of the blob is one
//!   Put Block From URL, where the service implements it (`stage_range.rs`).
//! * **Errors** are mapped in `errors.rs` (its header has the table); only
//!   [`BackendErrorKind::Transient`] ones are worth retrying.
//!
//! **Retries.** The SDK's own retry policy is switched off (`RetryOptions::none()`):
//! every backend call is exactly one attempt of each HTTP request, and the caller's
//! bounded, counted retry (`src/remote.rs`) is the only one, so request counts are
//! honest and a conditional write is never silently re-sent by the SDK.
//!
//! **Runtime.** Calls run on one process-wide tokio runtime (`runtime.rs`) and the
//! calling thread waits on a channel, so the backend is safe to call from code running
//! inside an application's own tokio runtime. Each request has a time limit (30 s,
//! more for large bodies); a download fails when no data arrives for 60 s.
//!
//! **Credentials** are resolved once, when the backend is built, in this order (the
//! first that applies wins; `auth.rs` has the details):
//!
//! 1. a SAS token in the `remote` URL;
//! 2. `AZURE_STORAGE_CONNECTION_STRING` when it is for the remote's account
//!    (`AccountName`/`AccountKey`, `SharedAccessSignature`, `BlobEndpoint`,
//!    `DefaultEndpointsProtocol`, `EndpointSuffix`, `UseDevelopmentStorage=true`);
//! 3. `AZURE_STORAGE_KEY` (with `AZURE_STORAGE_ACCOUNT`, which must match when set);
//! 4. Entra ID, https only: environment client secret (`AZURE_TENANT_ID`,
//!    `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`), workload identity
//!    (`AZURE_FEDERATED_TOKEN_FILE`), managed identity, Azure CLI, Azure Developer CLI;
//!    `AZURE_TOKEN_CREDENTIALS=dev|prod|<credential name>` narrows the chain.
//!
//! Nothing found is an error listing what was tried. No secret appears in a message, a
//! log line or `Debug` output. (The SDK's own debug-level request log does show lease
//! ids, which are not credentials.)

//!
//! The code is split by job: `client.rs` (connecting, SDK calls, error context),
//! `download.rs`, `upload.rs`, `lease.rs`, `blocks.rs` (delta sync),
//! `stage_range.rs` (Put Block From URL), `snapshots/` (history), with
//! `auth.rs`/`entra.rs`/`shared_key.rs` (credentials), `errors.rs` (status mapping),
//! `runtime.rs`; the container URL it connects to is the remote's address
//! (src/remote_spec/azure_url.rs), re-exported here as `url`.

mod auth;
mod blocks;
mod client;
mod download;
mod entra;
mod errors;
mod http_count;
mod lease;
mod properties;
mod runtime;
mod shared_key;
mod snapshots;
mod stage_range;
mod upload;
mod waiter;
/// The container URL is part of the remote's address (src/remote_spec/), which the
/// settings parse without the backend; here under its old name.
pub use crate::remote_spec::azure_url as url;

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders;
use azure_storage_blob::{BlobClient, BlobClientOptions};
use parking_lot::Mutex;

use self::errors::{http_status, Op};
use self::upload::Put;
pub use self::url::{ContainerUrl, SasToken};
#[cfg(doc)]
use super::BackendErrorKind;
use super::{Backend, BackendResult, BlobStat, Blocks, Lease, LeaseId};
use crate::backend::{Body, Terms, WaiterQueue};

/// Sizes and limits of the transfers. The defaults suit production; tests shrink them
/// to exercise the staged path with small bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AzureTuning {
    /// Bodies up to this many bytes go up in one Put Blob request (read into memory).
    pub single_put_max: u64,
    /// Larger bodies are staged in blocks of this many bytes (grown when a body would
    /// need more than 50,000 blocks).
    pub block_size: u64,
    /// Blocks staged at once during a large upload; ranges fetched at once during a
    /// large download.
    pub parallel: usize,
    /// Time limit of a request without a body.
    pub request_timeout: Duration,
    /// A download fails when no data arrives for this long.
    pub idle_timeout: Duration,
}

impl Default for AzureTuning {
    fn default() -> Self {
        AzureTuning {
            single_put_max: 32 << 20,
            block_size: 8 << 20,
            parallel: 4,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl AzureTuning {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn single_put_max(mut self, bytes: u64) -> Self {
        self.single_put_max = bytes.max(1);
        self
    }
    pub fn block_size(mut self, bytes: u64) -> Self {
        self.block_size = bytes.clamp(1, MAX_BLOCK_SIZE);
        self
    }
    pub fn parallel(mut self, n: usize) -> Self {
        self.parallel = n.max(1);
        self
    }

    /// The limit for a request carrying `bytes` of body: the base plus 2 s per MiB
    /// (a 512 KiB/s floor on throughput).
    fn limit_for(&self, bytes: u64) -> Duration {
        self.request_timeout + Duration::from_secs(bytes.div_ceil(1 << 20) * 2)
    }
}

/// Azure's limit on the size of one block.
const MAX_BLOCK_SIZE: u64 = 4000 << 20;
/// Length of our block ids before base64: 16 hex digits of a per-upload nonce, then 16
/// of the block index. Azure requires every block id of a blob to have one length;
/// delta sync must use this length too (uncommitted blocks of another length make
/// Put Block fail until the next commit).
pub use super::BLOCK_ID_LEN;
/// Most blob clients cached (normally one per database).
const MAX_CACHED_CLIENTS: usize = 64;

/// An Azure Blob Storage container used as the remote store.
pub struct AzureBackend {
    url: ContainerUrl,
    /// How we authenticate, secret-free, for messages.
    auth: String,
    /// Secret values to scrub from messages.
    secrets: Vec<String>,
    sas: Option<SasToken>,
    credential: Option<Arc<dyn TokenCredential>>,
    options: BlobClientOptions,
    tuning: AzureTuning,
    clients: Mutex<HashMap<String, Arc<BlobClient>>>,
    /// Proposed lease ids of acquires that failed transiently, reused by the retry.
    pending_acquires: Mutex<HashMap<String, String>>,
    /// When a refused acquire last looked up the lease's state, per blob: at most
    /// once a second, so writers contending for a lease do not double the requests.
    lease_lookups: Mutex<HashMap<String, (std::time::Instant, String)>>,
    /// HTTP requests sent, by kind (counted by a pipeline policy).
    http_counts: Arc<http_count::HttpCounts>,
    /// Sizes of the blocks staged or seen committed, so a block commit can tell the
    /// new blob's size without another request (`blocks.rs`).
    block_sizes: Mutex<blocks::BlockSizes>,
    /// The account name and key when requests are signed with Shared Key: what signs
    /// a source SAS for Put Block From URL (`stage_range.rs`). Never formatted.
    shared_key: Option<(String, azure_core::credentials::Secret)>,
    /// Whether the service implements Put Block From URL, once a call showed it.
    range_capability: stage_range::Capability,
}

impl fmt::Debug for AzureBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureBackend")
            .field("url", &self.url)
            .field("auth", &self.auth)
            .field("tuning", &self.tuning)
            .finish_non_exhaustive()
    }
}

impl Backend for AzureBackend {
    fn identity(&self) -> String {
        format!("azure:{}", self.url.redacted())
    }

    fn stat(&self, blob: &str) -> BackendResult<Option<BlobStat>> {
        let client = self.client(blob)?;
        let result = self.exec(blob, Op::Stat, self.tuning.request_timeout, async move {
            let props = client.get_properties(None).await?;
            Ok((props.etag()?, props.content_length()?))
        })?;
        match result {
            Ok((etag, size)) => Ok(Some(BlobStat {
                etag: self.etag_of(blob, Op::Stat, etag)?,
                size: size.unwrap_or(0),
            })),
            Err(e) => match http_status(&e) {
                // A HEAD response has no body; Azure still sends x-ms-error-code.
                Some((404, code)) if code == "BlobNotFound" || code.is_empty() => Ok(None),
                _ => Err(self.error(blob, Op::Stat, &e)),
            },
        }
    }

    fn download(&self, blob: &str, sink: &mut dyn Write) -> BackendResult<BlobStat> {
        self.download_pinned(blob, sink)
    }

    fn put_blob(&self, blob: &str, body: Body<'_>, terms: Terms<'_>) -> BackendResult<BlobStat> {
        let (Body { source, len }, Terms { condition, lease }) = (body, terms);
        let put = Put {
            blob,
            client: self.client(blob)?,
            len,
            condition,
            lease,
        };
        self.put(put, source)
    }

    fn acquire_lease(&self, blob: &str, duration: Duration) -> BackendResult<Lease> {
        self.take_lease(blob, duration)
    }

    fn renew_lease(&self, blob: &str, lease: &LeaseId, _duration: Duration) -> BackendResult<()> {
        self.extend_lease(blob, lease)
    }

    fn release_lease(&self, blob: &str, lease: &LeaseId) -> BackendResult<()> {
        self.give_back_lease(blob, lease)
    }

    fn break_lease(&self, blob: &str) -> BackendResult<()> {
        self.end_lease(blob)
    }

    fn leases_name_their_owner(&self) -> bool {
        false
    }

    fn http_requests(&self) -> Option<Vec<(&'static str, u64)>> {
        Some(self.http_counts.snapshot())
    }

    fn blocks(&self) -> Option<&dyn Blocks> {
        Some(self)
    }

    fn waiter_queue(&self, blob: &str) -> BackendResult<Option<WaiterQueue>> {
        self.get_waiter_queue(blob)
    }

    fn replace_waiter_queue(
        &self,
        blob: &str,
        text: &str,
        expected: Option<&str>,
    ) -> BackendResult<Option<String>> {
        self.put_waiter_queue(blob, text, expected)
    }

    fn waiter_mark(&self, blob: &str) -> BackendResult<Option<String>> {
        self.read_waiter_mark(blob)
    }

    fn history(&self) -> Option<&dyn super::History> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_credentials() {
        let url =
            ContainerUrl::parse("https://acct1.blob.core.windows.net/cont1?sv=1&sig=TOPSECRET")
                .unwrap();
        let b = AzureBackend::connect_with(&url, &|_| None, AzureTuning::default()).unwrap();
        let shown = format!("{b:?} {}", b.identity());
        assert!(!shown.contains("TOPSECRET"), "{shown}");
        assert_eq!(
            b.identity(),
            "azure:https://acct1.blob.core.windows.net/cont1"
        );
        let key = "S0VZS0VZS0VZS0VZ";
        let url = ContainerUrl::parse("http://127.0.0.1:1/devstoreaccount1/cont1").unwrap();
        let env = |k: &str| (k == auth::STORAGE_KEY).then(|| key.to_string());
        let b = AzureBackend::connect_with(&url, &env, AzureTuning::default()).unwrap();
        assert!(!format!("{b:?}").contains(key));
    }
}
