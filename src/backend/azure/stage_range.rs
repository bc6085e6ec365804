//! [`Blocks::stage_from_range`](crate::backend::Blocks::stage_from_range) on Azure:
//! one Put Block From URL whose source is the blob itself, `x-ms-source-range` the
//! range and `x-ms-source-if-match` the etag it must still have, with our lease id
//! on the destination. The service copies the bytes; nothing passes through us.
//!
//! **The source's authorization** (the service reads the source as a client would):
//!
//! | our credential | the source |
//! |---|---|
//! | a SAS (remote URL or connection string) | the blob's URL with that SAS (it needs read permission) |
//! | an account key | the blob's URL with a service SAS we sign: read only, this blob only, for [`SOURCE_SAS_LIFETIME`] |
//! | Entra ID | the blob's URL and `x-ms-copy-source-authorization: Bearer <token>` (scope `https://storage.azure.com/.default`) |
//!
//! None of these is ever formatted: the URL and header are built inside the request
//! future, every error is scrubbed of the signature signed here (and, as every
//! error of this backend, of the credential's secrets and any `sig=` or bearer
//! token), and the debug line of each request names the operation and status only.
//!
//! **Capability.** Azurite (3.35) does not implement Put Block From URL (Azurite
//! issue #2440). What it answers depends on the credential (checked in
//! tests/backend_azurite.rs and tests/azure.rs): `501 APINotImplemented` to a
//! Shared Key request, and `500` without an error code to a request with an account
//! SAS (its SAS check has no entry for the operation and throws before the handler).
//! Both mean "not implemented" here ([`not_implemented`]): the Azure service sends
//! an `x-ms-error-code` with its own 500s, and taking a stray codeless 500 for
//! "unsupported" only costs the fetches this call would have saved. The first call
//! finds out: such an answer marks the backend
//! [`RangeStaging::Unsupported`] for its life, the call answers
//! [`StagedFromRange::Unsupported`] (nothing was staged) and every later call
//! answers so without a request; a success marks it supported. Until then
//! [`Blocks::range_staging`](crate::backend::Blocks::range_staging) says `Unknown`.
//!
//! Not checked against the real service (the emulator cannot): which status and code
//! a failed `x-ms-source-if-match` gets. Any 412 is `ConditionFailed`, as for our other
//! conditional requests (Azure documents `SourceConditionNotMet`, 412).

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use azure_core::credentials::Secret;
use azure_core::hmac::hmac_sha256;
use azure_storage_blob::models::{BlockBlobClientStageBlockFromUrlOptions, HttpRange};

use super::errors::{http_status, scrub, Op};
use super::AzureBackend;
use crate::backend::checks::buffer_len;
use crate::backend::{BackendResult, LeaseId, RangeStaging, SourceRange, StagedFromRange};

/// How long a service SAS signed for a source stays valid. Without a start time it
/// is valid at once, so only a clock more than this far behind the service's fails.
pub const SOURCE_SAS_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The service SAS version signed here (its string to sign has the encryption scope).
const SAS_VERSION: &str = "2020-12-06";

/// The token scope of Azure Storage.
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// What this backend learned about Put Block From URL (a [`RangeStaging`]); 0,
/// the default, is "not known yet".
#[derive(Debug, Default)]
pub(super) struct Capability(AtomicU8);

impl Capability {
    const SUPPORTED: u8 = 1;
    const UNSUPPORTED: u8 = 2;

    pub(super) fn get(&self) -> RangeStaging {
        match self.0.load(Ordering::Relaxed) {
            Self::SUPPORTED => RangeStaging::Supported,
            Self::UNSUPPORTED => RangeStaging::Unsupported,
            _ => RangeStaging::Unknown,
        }
    }

    fn learn(&self, supported: bool) {
        let value = if supported {
            Self::SUPPORTED
        } else {
            Self::UNSUPPORTED
        };
        self.0.store(value, Ordering::Relaxed);
    }
}

/// A read-only service SAS for blob `blob` of `container` in `account`, valid
/// until `expiry` (`2026-12-01T05:37:02Z`): the query string, signature last.
/// `http` allows plain http too (the emulator). The documented string to sign of
/// version 2020-12-06: permissions, start, expiry, canonical resource, identifier,
/// IP, protocol, version, resource, snapshot time, encryption scope, then the five
/// response header overrides.
pub(super) fn service_sas(
    account: &str,
    key: &Secret,
    container: &str,
    blob: &str,
    expiry: &str,
    http: bool,
) -> Result<String, String> {
    let protocol = if http { "https,http" } else { "https" };
    let resource = format!("/blob/{account}/{container}/{blob}");
    let to_sign = [
        "r",
        "",
        expiry,
        &resource,
        "",
        "",
        protocol,
        SAS_VERSION,
        "b",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n");
    let sig = hmac_sha256(&to_sign, key).map_err(|_| "cannot sign a source SAS".to_string())?;
    let enc = |v: &str| -> String { url::form_urlencoded::byte_serialize(v.as_bytes()).collect() };
    Ok(format!(
        "sv={SAS_VERSION}&sr=b&sp=r&se={}&spr={}&sig={}",
        enc(expiry),
        enc(protocol),
        enc(&sig)
    ))
}

/// Whether an answer to Put Block From URL means the service does not implement
/// it (module docs): 501, or a 500 without an error code (Azurite with a SAS).
pub(super) fn not_implemented(status: u16, code: &str) -> bool {
    status == 501 || (status == 500 && code.is_empty())
}

/// How the service is to read the source.
enum Source {
    /// A URL that carries its own authorization (a SAS), or needs none.
    Url(String),
    /// A URL and a bearer token for `x-ms-copy-source-authorization`.
    Bearer(
        String,
        std::sync::Arc<dyn azure_core::credentials::TokenCredential>,
    ),
}

impl AzureBackend {
    /// The source for a copy from `blob`, and the signature signed for it (to scrub).
    fn copy_source(&self, blob: &str, op: Op) -> BackendResult<(Source, Option<String>)> {
        let invalid =
            |why: String| self.fail(crate::backend::BackendErrorKind::Invalid, blob, op, why);
        if let Some(sas) = &self.sas {
            let url = self.url.blob_url(blob, Some(sas)).map_err(invalid)?;
            return Ok((Source::Url(url.to_string()), None));
        }
        let mut url = self.url.blob_url(blob, None).map_err(invalid)?;
        if let Some((account, key)) = &self.shared_key {
            let until = std::time::SystemTime::now() + SOURCE_SAS_LIFETIME;
            let until = crate::backend::history::unix_millis(until) / 1000;
            let expiry = crate::utc::Utc::from_unix(until).iso8601();
            let container = self.url.container();
            let http = !self.url.is_https();
            let query = service_sas(account, key, container, blob, &expiry, http)
                .map_err(|why| self.local_error(blob, op, why))?;
            let sig = query.rsplit("sig=").next().map(str::to_string);
            url.set_query(Some(&query));
            return Ok((Source::Url(url.to_string()), sig));
        }
        match &self.credential {
            Some(credential) => Ok((Source::Bearer(url.to_string(), credential.clone()), None)),
            None => Ok((Source::Url(url.to_string()), None)),
        }
    }

    /// The source URL a Put Block From URL of `blob` names, with the SAS signed for
    /// it (a secret): for a test to check that the service accepts the signature
    /// (Azurite checks service SAS, but cannot run Put Block From URL).
    #[cfg(feature = "testing")]
    pub fn source_url_for_test(&self, blob: &str) -> BackendResult<String> {
        match self.copy_source(blob, Op::StageFromRange)?.0 {
            Source::Url(url) | Source::Bearer(url, _) => Ok(url),
        }
    }

    /// Put Block From URL (module docs).
    pub(super) fn stage_range_from_url(
        &self,
        blob: &str,
        id: &[u8],
        source: SourceRange<'_>,
        lease: Option<&LeaseId>,
    ) -> BackendResult<StagedFromRange> {
        let op = Op::StageFromRange;
        if self.range_capability.get() == RangeStaging::Unsupported {
            return Ok(StagedFromRange::Unsupported);
        }
        buffer_len(source.len).map_err(|r| self.refused(blob, op, r))?;
        let client = self.client(blob)?;
        let (from, signed) = self.copy_source(blob, op)?;
        let mut options = BlockBlobClientStageBlockFromUrlOptions {
            lease_id: lease.map(|l| l.0.clone()),
            source_range: Some(HttpRange::new(source.offset, source.len)),
            source_if_match: Some(source.etag.0.clone().into()),
            ..Default::default()
        };
        let (block_id, len) = (id.to_vec(), source.len);
        let result = self.exec(blob, op, self.tuning.limit_for(len), async move {
            let url = match from {
                Source::Url(url) => url,
                Source::Bearer(url, credential) => {
                    let token = credential.get_token(&[STORAGE_SCOPE], None).await?;
                    options.copy_source_authorization =
                        Some(format!("Bearer {}", token.token.secret()));
                    url
                }
            };
            client
                .block_blob_client()
                .stage_block_from_url(&block_id, 0, url, Some(options))
                .await
                .map(|_| ())
        })?;
        match result {
            Ok(()) => {
                self.range_capability.learn(true);
                self.block_sizes.lock().remember(blob, [(id, len)]);
                Ok(StagedFromRange::Staged)
            }
            Err(e) if http_status(&e).is_some_and(|(s, c)| not_implemented(s, &c)) => {
                if self.range_capability.get() != RangeStaging::Unsupported {
                    tracing::info!(
                        remote = %self.url.redacted(),
                        "the service does not implement Put Block From URL: chunks are \
                         fetched and staged instead"
                    );
                }
                self.range_capability.learn(false);
                Ok(StagedFromRange::Unsupported)
            }
            Err(e) => {
                let mut err = self.error(blob, op, &e);
                err.message = scrub(&err.message, signed.as_slice());
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature of a known SAS (the string to sign Azurite checks, in its
    /// `generateBlobSASSignature20201206`), and what the query holds.
    #[test]
    fn a_service_sas_is_read_only_for_one_blob() {
        let key = Secret::new(super::super::auth::DEV_KEY);
        let q = service_sas("acct", &key, "c", "a.db", "2030-01-01T00:00:00Z", false).unwrap();
        assert!(
            q.starts_with("sv=2020-12-06&sr=b&sp=r&se=2030-01-01T00%3A00%3A00Z&spr=https&sig="),
            "{q}"
        );
        let to_sign =
            "r\n\n2030-01-01T00:00:00Z\n/blob/acct/c/a.db\n\n\nhttps\n2020-12-06\nb\n\n\n\n\n\n\n";
        let sig = hmac_sha256(to_sign, &key).unwrap();
        let enc: String = url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
        assert!(q.ends_with(&format!("sig={enc}")), "{q}");
        let http = service_sas("acct", &key, "c", "a.db", "2030-01-01T00:00:00Z", true).unwrap();
        assert!(http.contains("&spr=https%2Chttp&"), "{http}");
    }

    #[test]
    fn what_azurite_answers_means_not_implemented() {
        assert!(not_implemented(501, "APINotImplemented"));
        assert!(not_implemented(500, ""), "Azurite, with an account SAS");
        assert!(!not_implemented(500, "InternalError"), "Azure's own 500s");
        assert!(!not_implemented(503, "ServerBusy"));
        assert!(!not_implemented(412, "SourceConditionNotMet"));
    }

    #[test]
    fn the_capability_is_unknown_until_learned() {
        let c = Capability::default();
        assert_eq!(c.get(), RangeStaging::Unknown);
        c.learn(false);
        assert_eq!(c.get(), RangeStaging::Unsupported);
        c.learn(true);
        assert_eq!(c.get(), RangeStaging::Supported);
    }
}
