//! The client side of the Azure backend: connecting (credentials, SDK options),
//! one cached SDK client per blob, running one SDK call on the shared runtime with
//! a time limit (`exec`, `call`), and the errors that name the remote and the blob.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::http::policies::Policy;
use azure_core::http::Etag as AzEtag;
use azure_core::http::{
    new_http_client, ClientOptions, HttpClientOptions, RetryOptions, Transport,
};
use azure_storage_blob::{
    BlobClient, BlobClientOptions, BlobContainerClient, BlobContainerClientOptions,
};
use parking_lot::Mutex;

use super::errors::{http_status, map_error, subject, Op, Where};
use super::runtime::{self, RunError};
use super::{
    auth, blocks, shared_key, AzureBackend, AzureTuning, ContainerUrl, MAX_CACHED_CLIENTS,
};
use crate::backend::checks::{validate_blob_name, Refusal};
use crate::backend::{Backend, BackendError, BackendErrorKind, BackendResult, Condition, Etag};

/// The `If-Match` and `If-None-Match` headers of a conditional write.
pub(super) fn precondition(condition: &Condition) -> (Option<AzEtag>, Option<AzEtag>) {
    match condition {
        Condition::Create => (None, Some("*".into())),
        Condition::Match(etag) => (Some(etag.0.clone().into()), None),
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
        let http_counts = Arc::new(super::http_count::HttpCounts::default());
        client_options
            .per_try_policies
            .push(
                Arc::new(super::http_count::CountingPolicy(http_counts.clone())) as Arc<dyn Policy>,
            );
        let mut sas = None;
        let mut credential = None;
        let mut signing_key = None;
        match resolved.credential {
            auth::Credential::Sas(token) => sas = Some(token),
            auth::Credential::SharedKey { account, key } => {
                signing_key = Some((account.clone(), key.clone()));
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
            lease_lookups: Mutex::new(HashMap::new()),
            http_counts,
            block_sizes: Mutex::new(blocks::BlockSizes::default()),
            shared_key: signing_key,
            range_capability: Default::default(),
        })
    }

    /// Create the container (an operator's or a test's step: the backend itself never
    /// creates one). `Ok(false)` when it exists already.
    pub fn create_container(&self) -> BackendResult<bool> {
        let op = Op::CreateContainer;
        let client = self.container_client(op)?;
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

    /// A client for the container itself (creating it, listing its blobs).
    pub(super) fn container_client(&self, op: Op) -> BackendResult<BlobContainerClient> {
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
        BlobContainerClient::new(url, self.credential.clone(), Some(options))
            .map_err(|e| self.error("", op, &e))
    }

    /// The container URL (without any SAS).
    pub fn url(&self) -> &ContainerUrl {
        &self.url
    }

    /// How this backend authenticates, e.g. "the SAS token in the remote URL".
    pub fn auth_description(&self) -> &str {
        &self.auth
    }

    pub(super) fn client(&self, blob: &str) -> BackendResult<Arc<BlobClient>> {
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
    pub(super) fn subject(&self, blob: &str) -> String {
        subject(&self.remote(), blob)
    }

    pub(super) fn error(&self, blob: &str, op: Op, err: &azure_core::Error) -> BackendError {
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

    pub(super) fn run_error(&self, blob: &str, op: Op, err: RunError) -> BackendError {
        let kind = match err {
            RunError::NoRuntime(_) => BackendErrorKind::Permanent,
            RunError::TimedOut(_) | RunError::Lost => BackendErrorKind::Transient,
        };
        BackendError::new(
            kind,
            format!("{}: {} failed: {err}", self.subject(blob), op.name()),
        )
    }

    pub(super) fn local_error(&self, blob: &str, op: Op, why: String) -> BackendError {
        self.fail(BackendErrorKind::Permanent, blob, op, why)
    }

    /// The error "<subject>: <op> failed: <why>".
    pub(super) fn fail(
        &self,
        kind: BackendErrorKind,
        blob: &str,
        op: Op,
        why: impl fmt::Display,
    ) -> BackendError {
        BackendError::failed(kind, self.subject(blob), op.name(), why)
    }

    /// A refusal of a shared check ([`crate::backend::checks`]) as this blob's error.
    pub(super) fn refused(&self, blob: &str, op: Op, refusal: Refusal) -> BackendError {
        refusal.at(self.subject(blob), op.name())
    }

    pub(super) fn missing(&self, blob: &str, op: Op) -> BackendError {
        self.refused(blob, op, Refusal::missing())
    }

    /// If-Match on a blob that does not exist fails its precondition (412, and
    /// Azurite answers a ranged read so too); the trait wants `NotFound` then, so a
    /// `ConditionFailed` of a conditional request (`conditional`) is checked with a
    /// stat.
    pub(super) fn missing_if_gone<T>(
        &self,
        blob: &str,
        op: Op,
        conditional: bool,
        result: BackendResult<T>,
    ) -> BackendResult<T> {
        match result {
            Err(e)
                if e.kind == BackendErrorKind::ConditionFailed
                    && conditional
                    && matches!(self.stat(blob), Ok(None)) =>
            {
                Err(self.missing(blob, op))
            }
            other => other,
        }
    }

    /// Run one SDK call on the shared runtime. The outer error is a runtime problem
    /// (already mapped); the inner result is the SDK's, for the caller to interpret.
    pub(super) fn exec<T, F>(
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
    pub(super) fn call<T, F>(&self, blob: &str, op: Op, limit: Duration, fut: F) -> BackendResult<T>
    where
        F: std::future::Future<Output = azure_core::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.exec(blob, op, limit, fut)?
            .map_err(|e| self.error(blob, op, &e))
    }

    pub(super) fn etag_of(
        &self,
        blob: &str,
        op: Op,
        etag: Option<azure_core::http::Etag>,
    ) -> BackendResult<Etag> {
        etag.map(|e| Etag(e.to_string()))
            .ok_or_else(|| self.local_error(blob, op, "the response carried no ETag".to_string()))
    }
}
