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
//!   condition (`If-Match: <etag>`, or `If-None-Match: *` for [`Condition::Create`])
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
//!   mapping as uploads (`blocks.rs`).
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

mod auth;
mod blocks;
mod errors;
mod properties;
mod runtime;
mod shared_key;
pub mod url;

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::num::NonZero;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use azure_core::http::policies::Policy;
use azure_core::http::{
    new_http_client, ClientOptions, HttpClientOptions, RequestContent, RetryOptions, Transport,
};
use azure_core::Bytes;
use azure_storage_blob::models::{
    BlobClientAcquireLeaseOptions, BlobClientAcquireLeaseResultHeaders,
    BlobClientBreakLeaseOptions, BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders,
    BlobClientUploadOptions, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientCommitBlockListResultHeaders, BlockBlobClientStageBlockOptions, BlockLookupList,
};
use azure_storage_blob::{
    BlobClient, BlobClientOptions, BlobContainerClient, BlobContainerClientOptions,
};
use futures::StreamExt;
use parking_lot::Mutex;

use self::errors::{http_status, map_error, subject, Op, Where};
use self::runtime::RunError;
pub use self::url::{ContainerUrl, SasToken};
use super::{
    validate_blob_name, Backend, BackendError, BackendErrorKind, BackendResult, BlobStat, Blocks,
    Condition, Etag, Lease, LeaseId,
};

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

/// Azure's limits on block blobs.
const MAX_BLOCKS: u64 = 50_000;
const MAX_BLOCK_SIZE: u64 = 4000 << 20;
/// Length of our block ids before base64: 16 hex digits of a per-upload nonce, then 16
/// of the block index. Azure requires every block id of a blob to have one length;
/// delta sync must use this length too (uncommitted blocks of another length make
/// Put Block fail until the next commit).
pub use super::BLOCK_ID_LEN;
/// Azure's lease duration bounds, in seconds.
const MIN_LEASE_SECS: u64 = 15;
const MAX_LEASE_SECS: u64 = 60;
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
    /// Sizes of the blocks staged or seen committed, so a block commit can tell the
    /// new blob's size without another request (`blocks.rs`).
    block_sizes: Mutex<blocks::BlockSizes>,
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

impl AzureBackend {
    /// Connect to the container `url` with credentials from the process environment
    /// (in the order of the module docs). Makes no request: a missing container or a
    /// wrong key shows at the first call, with a message that says so.
    pub fn connect(url: &ContainerUrl) -> BackendResult<AzureBackend> {
        Self::connect_with(
            url,
            &|name| std::env::var(name).ok(),
            AzureTuning::default(),
        )
    }

    /// [`AzureBackend::connect`] with the environment given as a function and explicit
    /// tuning.
    pub fn connect_with(
        url: &ContainerUrl,
        env: &dyn Fn(&str) -> Option<String>,
        tuning: AzureTuning,
    ) -> BackendResult<AzureBackend> {
        let resolved = auth::resolve(url, env).map_err(|why| {
            BackendError::new(
                BackendErrorKind::Denied,
                format!("azure remote {url}: {why}"),
            )
        })?;
        let mut client_options = ClientOptions {
            retry: RetryOptions::none(),
            transport: Some(Transport::new(new_http_client(Some(HttpClientOptions {
                // Partitioned downloads need the raw bytes (as the SDK's own default).
                automatic_decompression: false,
            })))),
            ..Default::default()
        };
        let mut sas = None;
        let mut credential = None;
        match resolved.credential {
            auth::Credential::Sas(token) => sas = Some(token),
            auth::Credential::SharedKey { account, key } => {
                let policy = shared_key::SharedKeyPolicy::new(account, key).map_err(|why| {
                    BackendError::new(
                        BackendErrorKind::Denied,
                        format!("azure remote {url}: {}: {why}", resolved.description),
                    )
                })?;
                client_options
                    .per_try_policies
                    .push(Arc::new(policy) as Arc<dyn Policy>);
            }
            auth::Credential::Token(token) => credential = Some(token),
        }
        tracing::debug!(remote = %url, auth = %resolved.description, "azure backend ready");
        Ok(AzureBackend {
            url: url.clone(),
            auth: resolved.description,
            secrets: resolved.secrets,
            sas,
            credential,
            options: BlobClientOptions {
                client_options,
                ..Default::default()
            },
            tuning,
            clients: Mutex::new(HashMap::new()),
            pending_acquires: Mutex::new(HashMap::new()),
            block_sizes: Mutex::new(blocks::BlockSizes::default()),
        })
    }

    /// Create the container (an operator's or a test's step: the backend itself never
    /// creates one). `Ok(false)` when it exists already.
    pub fn create_container(&self) -> BackendResult<bool> {
        let op = Op::CreateContainer;
        let mut url = azure_core::http::Url::parse(&self.url.redacted()).map_err(|e| {
            BackendError::new(BackendErrorKind::Invalid, format!("{}: {e}", self.remote()))
        })?;
        if let Some(sas) = &self.sas {
            url.set_query(Some(sas.expose()));
        }
        let options = BlobContainerClientOptions {
            client_options: self.options.client_options.clone(),
            ..Default::default()
        };
        let client = BlobContainerClient::new(url, self.credential.clone(), Some(options))
            .map_err(|e| self.error("", op, &e))?;
        let result = self.exec("", op, self.tuning.request_timeout, async move {
            client.create(None).await.map(|_| ())
        })?;
        match result {
            Ok(()) => Ok(true),
            Err(e) => match http_status(&e) {
                Some((409, code)) if code == "ContainerAlreadyExists" => Ok(false),
                _ => Err(self.error("", op, &e)),
            },
        }
    }

    /// The container URL (without any SAS).
    pub fn url(&self) -> &ContainerUrl {
        &self.url
    }

    /// How this backend authenticates, e.g. "the SAS token in the remote URL".
    pub fn auth_description(&self) -> &str {
        &self.auth
    }

    fn client(&self, blob: &str) -> BackendResult<Arc<BlobClient>> {
        validate_blob_name(blob)?;
        let mut clients = self.clients.lock();
        if let Some(client) = clients.get(blob) {
            return Ok(client.clone());
        }
        let url = self
            .url
            .blob_url(blob, self.sas.as_ref())
            .map_err(|why| BackendError::new(BackendErrorKind::Invalid, why))?;
        let client = BlobClient::new(url, self.credential.clone(), Some(self.options.clone()))
            .map_err(|e| self.error(blob, Op::Stat, &e))?;
        if clients.len() >= MAX_CACHED_CLIENTS {
            clients.clear();
        }
        let client = Arc::new(client);
        clients.insert(blob.to_string(), client.clone());
        Ok(client)
    }

    fn remote(&self) -> String {
        format!("azure remote {}", self.url.redacted())
    }

    /// "azure remote <url> blob 'x.db'", for messages.
    fn subject(&self, blob: &str) -> String {
        subject(&self.remote(), blob)
    }

    fn error(&self, blob: &str, op: Op, err: &azure_core::Error) -> BackendError {
        let remote = self.remote();
        let at = Where {
            remote: &remote,
            account: self.url.account(),
            container: self.url.container(),
            blob,
            auth: &self.auth,
        };
        map_error(err, op, &at, &self.secrets)
    }

    fn run_error(&self, blob: &str, op: Op, err: RunError) -> BackendError {
        let kind = match err {
            RunError::NoRuntime(_) => BackendErrorKind::Permanent,
            RunError::TimedOut(_) | RunError::Lost => BackendErrorKind::Transient,
        };
        BackendError::new(
            kind,
            format!("{}: {} failed: {err}", self.subject(blob), op.name()),
        )
    }

    fn local_error(&self, blob: &str, op: Op, why: String) -> BackendError {
        BackendError::new(
            BackendErrorKind::Permanent,
            format!("{}: {} failed: {why}", self.subject(blob), op.name()),
        )
    }

    /// Run one SDK call on the shared runtime. The outer error is a runtime problem
    /// (already mapped); the inner result is the SDK's, for the caller to interpret.
    fn exec<T, F>(
        &self,
        blob: &str,
        op: Op,
        limit: Duration,
        fut: F,
    ) -> BackendResult<azure_core::Result<T>>
    where
        F: std::future::Future<Output = azure_core::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let start = Instant::now();
        let result = runtime::run(limit, fut).map_err(|e| self.run_error(blob, op, e))?;
        tracing::debug!(
            remote = %self.url.redacted(),
            blob,
            op = op.name(),
            elapsed_ms = start.elapsed().as_millis() as u64,
            status = %match &result {
                Ok(_) => "ok".to_string(),
                Err(e) => http_status(e).map_or_else(|| "error".to_string(), |(s, c)| format!("{s} {c}")),
            },
            "azure request"
        );
        Ok(result)
    }

    /// `exec`, with every SDK error mapped.
    fn call<T, F>(&self, blob: &str, op: Op, limit: Duration, fut: F) -> BackendResult<T>
    where
        F: std::future::Future<Output = azure_core::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.exec(blob, op, limit, fut)?
            .map_err(|e| self.error(blob, op, &e))
    }

    fn etag_of(
        &self,
        blob: &str,
        op: Op,
        etag: Option<azure_core::http::Etag>,
    ) -> BackendResult<Etag> {
        etag.map(|e| Etag(e.to_string()))
            .ok_or_else(|| self.local_error(blob, op, "the response carried no ETag".to_string()))
    }

    fn upload_single(
        &self,
        blob: &str,
        client: Arc<BlobClient>,
        source: &mut dyn Read,
        len: u64,
        condition: &Condition,
        lease: Option<&LeaseId>,
    ) -> BackendResult<BlobStat> {
        let op = Op::Upload {
            create: *condition == Condition::Create,
        };
        let data = read_exactly(source, len).map_err(|why| self.local_error(blob, op, why))?;
        let mut options = BlobClientUploadOptions {
            lease_id: lease.map(|l| l.0.clone()),
            // One request: the whole body fits in one partition.
            partition_size: NonZero::new(self.tuning.single_put_max.max(len).max(1)),
            parallel: NonZero::new(1),
            ..Default::default()
        };
        match condition {
            Condition::Create => options.if_none_match = Some("*".into()),
            Condition::Match(etag) => options.if_match = Some(etag.0.clone().into()),
        }
        let etag = self.call(blob, op, self.tuning.limit_for(len), async move {
            let result = client
                .upload(RequestContent::from(data), Some(options))
                .await?;
            Ok(result.etag)
        })?;
        Ok(BlobStat {
            etag: self.etag_of(blob, op, etag)?,
            size: len,
        })
    }

    fn upload_staged(
        &self,
        blob: &str,
        client: Arc<BlobClient>,
        source: &mut dyn Read,
        len: u64,
        condition: &Condition,
        lease: Option<&LeaseId>,
    ) -> BackendResult<BlobStat> {
        let op = Op::Upload {
            create: *condition == Condition::Create,
        };
        let block_size = self
            .tuning
            .block_size
            .max(len.div_ceil(MAX_BLOCKS))
            .min(MAX_BLOCK_SIZE);
        let nonce = fastrand::u64(..);
        let count = len.div_ceil(block_size);
        let mut ids: Vec<Vec<u8>> = Vec::with_capacity(count as usize);
        let mut in_flight = std::collections::VecDeque::new();
        let lease_id = lease.map(|l| l.0.clone());
        let limit = self.tuning.limit_for(block_size);
        let wait_one = |rx: Pending| -> BackendResult<()> {
            runtime::wait(rx)
                .map_err(|e| self.run_error(blob, Op::StageBlock, e))?
                .map_err(|e| self.error(blob, Op::StageBlock, &e))
        };
        let mut staged: BackendResult<()> = Ok(());
        for index in 0..count {
            let size = block_size.min(len - index * block_size);
            let chunk = match read_exactly(source, size) {
                Ok(chunk) => chunk,
                Err(why) => {
                    staged = Err(self.local_error(blob, op, why));
                    break;
                }
            };
            let id = format!("{nonce:016x}{index:016x}").into_bytes();
            debug_assert_eq!(id.len(), BLOCK_ID_LEN);
            ids.push(id.clone());
            let client = client.clone();
            let options = BlockBlobClientStageBlockOptions {
                lease_id: lease_id.clone(),
                ..Default::default()
            };
            let rx = runtime::spawn(limit, async move {
                client
                    .block_blob_client()
                    .stage_block(&id, size, RequestContent::from(chunk), Some(options))
                    .await
                    .map(|_| ())
            })
            .map_err(|e| self.run_error(blob, Op::StageBlock, e))?;
            in_flight.push_back(rx);
            if in_flight.len() >= self.tuning.parallel {
                if let Err(e) = wait_one(in_flight.pop_front().expect("not empty")) {
                    staged = Err(e);
                    break;
                }
            }
        }
        // Wait for every block still in flight, even after a failure, so no request
        // outlives the call.
        for rx in in_flight {
            let result = wait_one(rx);
            if staged.is_ok() {
                staged = result;
            }
        }
        staged?;
        tracing::debug!(
            blob,
            blocks = count,
            block_size,
            "blocks staged; committing"
        );
        let mut options = BlockBlobClientCommitBlockListOptions {
            lease_id,
            ..Default::default()
        };
        match condition {
            Condition::Create => options.if_none_match = Some("*".into()),
            Condition::Match(etag) => options.if_match = Some(etag.0.clone().into()),
        }
        let list = BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        };
        let etag = self.call(blob, op, self.tuning.limit_for(count * 64), async move {
            let result = client
                .block_blob_client()
                .commit_block_list(list.try_into()?, Some(options))
                .await?;
            result.etag()
        })?;
        Ok(BlobStat {
            etag: self.etag_of(blob, op, etag)?,
            size: len,
        })
    }
}

/// A staged block upload in flight.
type Pending = mpsc::Receiver<Result<azure_core::Result<()>, RunError>>;

/// Read exactly `len` bytes from `source`.
fn read_exactly(source: &mut dyn Read, len: u64) -> Result<Vec<u8>, String> {
    let capacity = usize::try_from(len).map_err(|_| format!("{len} bytes do not fit in memory"))?;
    let mut data = Vec::with_capacity(capacity);
    Read::take(source, len)
        .read_to_end(&mut data)
        .map_err(|e| format!("reading the source failed: {e}"))?;
    if data.len() as u64 != len {
        return Err(format!(
            "the source ended after {} of {len} bytes; nothing was written",
            data.len()
        ));
    }
    Ok(data)
}

/// Azure's lease duration for `duration`: whole seconds within 15..=60.
fn lease_secs(duration: Duration) -> i32 {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    secs.clamp(MIN_LEASE_SECS, MAX_LEASE_SECS) as i32
}

/// A message from a download task to the waiting thread.
enum Piece {
    Start(Option<azure_core::http::Etag>),
    Data(Bytes),
    Done,
    Failed(azure_core::Error),
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
        let op = Op::Download;
        // Pin the download to one version: stat first, then GET with If-Match, and
        // report that etag. (Azurite 3.35 can pair a newer ETag header with older
        // bytes when a block list commit lands mid-download; If-Match closes that.)
        let pinned = match self.stat(blob)? {
            Some(stat) => stat.etag,
            None => {
                return Err(BackendError::new(
                    BackendErrorKind::NotFound,
                    format!(
                        "{}: download failed: the blob does not exist",
                        self.subject(blob)
                    ),
                ))
            }
        };
        let client = self.client(blob)?;
        let handle =
            runtime::handle().map_err(|e| self.run_error(blob, op, RunError::NoRuntime(e)))?;
        // A bounded channel; the task waits on `space` when it is full (a tokio wait,
        // never a blocking one), and this thread signals it after each receive.
        let (tx, rx) = mpsc::sync_channel::<Piece>(4);
        let space = Arc::new(tokio::sync::Notify::new());
        let task_space = space.clone();
        let idle = self.tuning.idle_timeout;
        let options = BlobClientDownloadOptions {
            parallel: NonZero::new(self.tuning.parallel),
            if_match: Some(pinned.0.clone().into()),
            ..Default::default()
        };
        let task = handle.spawn(async move {
            let send = |piece: Piece| {
                let tx = tx.clone();
                let space = task_space.clone();
                async move {
                    let mut piece = piece;
                    loop {
                        match tx.try_send(piece) {
                            Ok(()) => return true,
                            Err(mpsc::TrySendError::Full(p)) => {
                                piece = p;
                                space.notified().await;
                            }
                            Err(mpsc::TrySendError::Disconnected(_)) => return false,
                        }
                    }
                }
            };
            let started = tokio::time::timeout(idle, client.download(Some(options))).await;
            let response = match started {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => {
                    send(Piece::Failed(e)).await;
                    return;
                }
                Err(_) => {
                    send(Piece::Failed(azure_core::Error::with_message(
                        azure_core::error::ErrorKind::Io,
                        format!("no response within {}s (timed out)", idle.as_secs()),
                    )))
                    .await;
                    return;
                }
            };
            if !send(Piece::Start(response.properties.etag.clone())).await {
                return;
            }
            let mut body = response.body;
            loop {
                let piece = match tokio::time::timeout(idle, body.next()).await {
                    Ok(Some(Ok(bytes))) => Piece::Data(bytes),
                    Ok(Some(Err(e))) => Piece::Failed(e),
                    Ok(None) => Piece::Done,
                    Err(_) => Piece::Failed(azure_core::Error::with_message(
                        azure_core::error::ErrorKind::Io,
                        format!("no data for {}s (timed out)", idle.as_secs()),
                    )),
                };
                let last = !matches!(piece, Piece::Data(_));
                if !send(piece).await || last {
                    return;
                }
            }
        });
        // Receive until done; on any exit the receiver is dropped, which stops the task.
        let start = Instant::now();
        let mut etag = None;
        let mut written: u64 = 0;
        let outcome: BackendResult<()> = loop {
            let piece = match rx.recv_timeout(idle + Duration::from_secs(5)) {
                Ok(piece) => piece,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    task.abort();
                    break Err(self.run_error(blob, op, RunError::TimedOut(idle)));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(self.run_error(blob, op, RunError::Lost))
                }
            };
            space.notify_one();
            match piece {
                Piece::Start(e) => match self.etag_of(blob, op, e) {
                    Ok(e) => etag = Some(e),
                    Err(e) => break Err(e),
                },
                Piece::Data(bytes) => {
                    if let Err(e) = sink.write_all(&bytes) {
                        break Err(self.local_error(
                            blob,
                            op,
                            format!("writing to the sink failed: {e}"),
                        ));
                    }
                    written += bytes.len() as u64;
                }
                Piece::Done => break Ok(()),
                Piece::Failed(e) => break Err(self.error(blob, op, &e)),
            }
        };
        drop(rx);
        space.notify_one();
        tracing::debug!(
            remote = %self.url.redacted(),
            blob,
            op = op.name(),
            bytes = written,
            elapsed_ms = start.elapsed().as_millis() as u64,
            ok = outcome.is_ok(),
            "azure download"
        );
        if let Err(e) = outcome {
            // The blob moved between the stat and the GET: a retry takes the new one.
            return Err(if e.kind == BackendErrorKind::ConditionFailed {
                BackendError::new(BackendErrorKind::Transient, e.message)
            } else {
                e
            });
        }
        etag.ok_or_else(|| self.local_error(blob, op, "no response".into()))?;
        Ok(BlobStat {
            etag: pinned,
            size: written,
        })
    }

    fn upload(
        &self,
        blob: &str,
        source: &mut dyn Read,
        len: u64,
        condition: &Condition,
        lease: Option<&LeaseId>,
    ) -> BackendResult<BlobStat> {
        let client = self.client(blob)?;
        let result = if len <= self.tuning.single_put_max {
            self.upload_single(blob, client, source, len, condition, lease)
        } else {
            self.upload_staged(blob, client, source, len, condition, lease)
        };
        match result {
            // If-Match on a blob that does not exist fails its precondition (412);
            // the trait wants NotFound then, so look.
            Err(e)
                if e.kind == BackendErrorKind::ConditionFailed
                    && matches!(condition, Condition::Match(_))
                    && matches!(self.stat(blob), Ok(None)) =>
            {
                Err(BackendError::new(
                    BackendErrorKind::NotFound,
                    format!(
                        "{}: upload failed: the blob does not exist",
                        self.subject(blob)
                    ),
                ))
            }
            other => other,
        }
    }

    fn acquire_lease(&self, blob: &str, duration: Duration) -> BackendResult<Lease> {
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
        let acquire_client = client.clone();
        let result = self.call(blob, op, self.tuning.request_timeout, async move {
            let response = acquire_client.acquire_lease(secs, Some(options)).await?;
            response.lease_id()
        });
        let id = match result {
            Ok(id) => id.unwrap_or(proposed),
            Err(e) => {
                if e.is_transient() {
                    self.pending_acquires
                        .lock()
                        .insert(blob.to_string(), proposed);
                }
                return Err(e);
            }
        };
        let lease = LeaseId(id);
        // The lease fences writers, so this stat is the version the lease starts from.
        match self.stat(blob) {
            Ok(Some(stat)) => Ok(Lease { id: lease, stat }),
            failed => {
                // Do not keep a lease nobody will use.
                let _ = self.release_lease(blob, &lease);
                Err(failed.err().unwrap_or_else(|| {
                    BackendError::new(
                        BackendErrorKind::NotFound,
                        format!(
                            "{}: {} failed: the blob vanished after its lease was taken",
                            self.subject(blob),
                            op.name()
                        ),
                    )
                }))
            }
        }
    }

    fn renew_lease(&self, blob: &str, lease: &LeaseId, _duration: Duration) -> BackendResult<()> {
        let client = self.client(blob)?;
        let id = lease.0.clone();
        self.call(
            blob,
            Op::RenewLease,
            self.tuning.request_timeout,
            async move { client.renew_lease(id, None).await.map(|_| ()) },
        )
    }

    fn release_lease(&self, blob: &str, lease: &LeaseId) -> BackendResult<()> {
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

    fn break_lease(&self, blob: &str) -> BackendResult<()> {
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

    fn blocks(&self) -> Option<&dyn Blocks> {
        Some(self)
    }
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

    #[test]
    fn short_sources_are_refused() {
        let e = read_exactly(&mut &b"abc"[..], 5).unwrap_err();
        assert!(e.contains("3 of 5"), "{e}");
        assert_eq!(read_exactly(&mut &b"abcdef"[..], 4).unwrap(), b"abcd");
    }

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
