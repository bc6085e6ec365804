//! Azure errors lifted into [`BackendErrorKind`], with messages that say which blob,
//! which operation and which credential, and never carry a secret.
//!
//! | status | `x-ms-error-code` | kind |
//! |---|---|---|
//! | 412 | ConditionNotMet | `ConditionFailed` (`AlreadyExists` for an If-None-Match:* write: Azure answers 412 where Azurite answers 409) |
//! | 409 | BlobAlreadyExists | `AlreadyExists` |
//! | 412 | LeaseIdMissing | `LeaseHeld` (a write without our lease on a leased blob) |
//! | 409 | LeaseAlreadyPresent, LeaseIsBreakingAndCannotBeAcquired | `LeaseHeld` |
//! | 412 | LeaseIdMismatchWithBlobOperation, LeaseLost, LeaseNotPresentWithBlobOperation | `LeaseLost` |
//! | 409 | LeaseIsBrokenAndCannotBeRenewed, LeaseIdMismatchWithLeaseOperation, LeaseNotPresentWithLeaseOperation, LeaseAlreadyBroken, LeaseIsBreakingAndCannotBeChanged | `LeaseLost` |
//! | 404 | any (ContainerNotFound gets its own message) | `NotFound` |
//! | 401, 403 | any | `Denied` |
//! | 408, 429, 5xx; connection and I/O errors; timeouts | | `Transient` |
//! | 416 | any, on a ranged read of delta sync | `Invalid` |
//! | 400 and other 4xx | | `Permanent` (`Invalid` for a bad name or header) |
//!
//! A 412 ConditionNotMet while a download pins the etag of its first range means the
//! blob changed mid-download: `Transient`, so the caller starts the download again.

use azure_core::error::ErrorKind;

use crate::backend::{BackendError, BackendErrorKind};

/// What was being done, for the message and for the few codes whose meaning depends
/// on the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Stat,
    Download,
    /// An upload with If-None-Match:* (`create` is true) or If-Match.
    Upload {
        create: bool,
    },
    StageBlock,
    /// Get Block List (delta sync).
    BlockList,
    /// Put Block for delta sync.
    Stage,
    /// Put Block List for delta sync, with If-None-Match:* (`create`) or If-Match.
    CommitBlocks {
        create: bool,
    },
    /// A ranged read pinned to one etag (delta sync).
    ReadRange,
    /// Put Block From URL: a block staged from a range of the blob itself.
    StageFromRange,
    AcquireLease,
    RenewLease,
    ReleaseLease,
    BreakLease,
    CreateContainer,
    /// Snapshot Blob (history).
    Snapshot,
    /// List Blobs with snapshots or versions (history).
    ListVersions,
    /// A read of a kept snapshot or version (history).
    ReadVersion,
    /// Delete Blob of a snapshot or an old version (history).
    DeleteVersion,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Stat => "stat",
            Op::Download => "download",
            Op::Upload { .. } => "upload",
            Op::StageBlock => "upload (stage block)",
            Op::BlockList => "get block list",
            Op::Stage => "stage block",
            Op::CommitBlocks { .. } => "commit block list",
            Op::ReadRange => "read range",
            Op::StageFromRange => "stage block from range",
            Op::AcquireLease => "acquire lease",
            Op::RenewLease => "renew lease",
            Op::ReleaseLease => "release lease",
            Op::BreakLease => "break lease",
            Op::CreateContainer => "create container",
            Op::Snapshot => "snapshot",
            Op::ListVersions => "list versions",
            Op::ReadVersion => "read version",
            Op::DeleteVersion => "delete version",
        }
    }
}

/// Where the error happened, for messages: all of it secret-free.
pub struct Where<'a> {
    /// `azure remote https://acct.blob.core.windows.net/container`
    pub remote: &'a str,
    pub account: &'a str,
    pub container: &'a str,
    pub blob: &'a str,
    /// How we authenticated, e.g. "a shared key from AZURE_STORAGE_CONNECTION_STRING".
    pub auth: &'a str,
}

/// The HTTP status and error code of an SDK error, when it is an HTTP error.
pub fn http_status(err: &azure_core::Error) -> Option<(u16, String)> {
    match err.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => Some((u16::from(*status), error_code.clone().unwrap_or_default())),
        _ => None,
    }
}

/// The kind of error an HTTP status and code mean for `op`.
pub fn classify(op: Op, status: u16, code: &str) -> BackendErrorKind {
    use BackendErrorKind as K;
    match (status, code) {
        (412, "ConditionNotMet") => match op {
            Op::Upload { create: true } | Op::CommitBlocks { create: true } => K::AlreadyExists,
            Op::Download => K::Transient,
            _ => K::ConditionFailed,
        },
        (409, "BlobAlreadyExists") => K::AlreadyExists,
        (412, "LeaseIdMissing")
        | (409, "LeaseAlreadyPresent")
        | (409, "LeaseIsBreakingAndCannotBeAcquired") => K::LeaseHeld,
        (412, "LeaseIdMismatchWithBlobOperation")
        | (412, "LeaseLost")
        | (412, "LeaseNotPresentWithBlobOperation")
        | (409, "LeaseIsBrokenAndCannotBeRenewed")
        | (409, "LeaseIdMismatchWithLeaseOperation")
        | (409, "LeaseNotPresentWithLeaseOperation")
        | (409, "LeaseAlreadyBroken")
        | (409, "LeaseIsBreakingAndCannotBeChanged") => K::LeaseLost,
        // Any other failed precondition on a conditional write.
        (412, _) => K::ConditionFailed,
        (404, _) => K::NotFound,
        // A range outside the blob: the caller's mistake, not the service's.
        (416, _) if op == Op::ReadRange => K::Invalid,
        (401, _) | (403, _) => K::Denied,
        (408, _) | (429, _) | (500..=599, _) => K::Transient,
        (400, "InvalidHeaderValue")
        | (400, "InvalidQueryParameterValue")
        | (400, "InvalidResourceName")
        | (400, "InvalidUri") => K::Invalid,
        _ => K::Permanent,
    }
}

/// Lift an SDK error into a [`BackendError`] whose message names the blob, the
/// operation and the credential, scrubbed of `secrets`.
pub fn map_error(
    err: &azure_core::Error,
    op: Op,
    at: &Where<'_>,
    secrets: &[String],
) -> BackendError {
    let prefix = format!("{}: {} failed", subject(at.remote, at.blob), op.name());
    let (kind, detail) = match err.kind() {
        ErrorKind::HttpResponse { status, .. } => {
            let status = u16::from(*status);
            let code = http_status(err).map(|(_, c)| c).unwrap_or_default();
            let kind = classify(op, status, &code);
            let shown_code = if code.is_empty() {
                "(no error code)".to_string()
            } else {
                code.clone()
            };
            let why = explain(op, status, &code, at);
            (kind, format!("HTTP {status} {shown_code}{why}"))
        }
        ErrorKind::Credential => (
            BackendErrorKind::Denied,
            format!("no token from {}: {}", at.auth, chain(err)),
        ),
        ErrorKind::Connection | ErrorKind::Io => (
            BackendErrorKind::Transient,
            format!("network error: {}", chain(err)),
        ),
        ErrorKind::DataConversion => (
            BackendErrorKind::Permanent,
            format!("unexpected response: {}", chain(err)),
        ),
        _ => {
            // The SDK wraps some transport failures (and our own timeouts) as `Other`.
            let text = chain(err);
            let kind = if looks_transient(&text) {
                BackendErrorKind::Transient
            } else {
                BackendErrorKind::Permanent
            };
            (kind, text)
        }
    };
    BackendError::new(kind, scrub(&format!("{prefix}: {detail}"), secrets))
}

/// "azure remote <url> blob 'x.db'", or just the remote for container operations.
pub fn subject(remote: &str, blob: &str) -> String {
    if blob.is_empty() {
        remote.to_string()
    } else {
        format!("{remote} blob '{blob}'")
    }
}

/// The extra sentence for the codes a user can act on.
fn explain(op: Op, status: u16, code: &str, at: &Where<'_>) -> String {
    match (status, code) {
        (404, "ContainerNotFound") => format!(
            ": container '{}' does not exist in storage account '{}'; create it first \
             (for example: az storage container create --account-name {} --name {})",
            at.container, at.account, at.account, at.container
        ),
        (404, "ResourceNotFound") | (400, "InvalidResourceName") if op == Op::Stat => format!(
            ": the account '{}' or container '{}' was not found",
            at.account, at.container
        ),
        (403, "AuthenticationFailed") | (403, "AuthorizationFailure") | (401, _) => format!(
            ": the service refused {}: check that it belongs to storage account '{}', is \
             current (not rotated, revoked or expired) and allows this operation, and that \
             this machine's clock is right",
            at.auth, at.account
        ),
        (403, _) => format!(
            ": access denied with {}: it needs read, write and lease rights on container \
             '{}' (a SAS: permissions rwac at least; Entra ID: the 'Storage Blob Data \
             Contributor' role)",
            at.auth, at.container
        ),
        (412, "ConditionNotMet") if op == Op::Download => {
            ": the blob changed while it was being downloaded".to_string()
        }
        (412, "ConditionNotMet")
            if op == (Op::Upload { create: true }) || op == (Op::CommitBlocks { create: true }) =>
        {
            ": the blob already exists".to_string()
        }
        (400, "InvalidBlockList") => ": a listed block is neither staged nor committed".to_string(),
        (416, _) if op == Op::ReadRange => {
            ": the range lies beyond the end of the blob".to_string()
        }
        (412, "ConditionNotMet") => ": the blob moved to another version (etag)".to_string(),
        (412, _) if op == Op::StageFromRange => {
            ": the source range's blob moved to another version (etag)".to_string()
        }
        (409, "BlobAlreadyExists") => ": the blob already exists".to_string(),
        (412, "LeaseIdMissing") | (409, "LeaseAlreadyPresent") => {
            ": the blob is leased by another writer".to_string()
        }
        (409, "LeaseIsBreakingAndCannotBeAcquired") => {
            ": the blob's lease is being broken".to_string()
        }
        (412, _) | (409, _) if code.starts_with("Lease") => {
            ": our lease expired, was released, broken or taken over".to_string()
        }
        (400, "InvalidHeaderValue") => ": the service refused a header (is the emulator too \
                                          old for this API version? start Azurite with \
                                          --skipApiVersionCheck)"
            .to_string(),
        (408, _) | (429, _) | (500..=599, _) => " (transient)".to_string(),
        _ => String::new(),
    }
}

/// An error and its sources, joined with ": ".
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

fn looks_transient(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "timed out",
        "timeout",
        "connection",
        "reset",
        "broken pipe",
        "incomplete",
        "premature",
        "unexpected eof",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// `text` without any of `secrets` (this backend's credential values), then through
/// [`crate::redact::redact`] (a transport error may quote the request URL, SAS
/// included).
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret.as_str(), crate::redact::REDACTED);
    }
    crate::redact::redact(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendErrorKind as K;

    #[test]
    fn codes_map_to_kinds() {
        let up = Op::Upload { create: false };
        let create = Op::Upload { create: true };
        assert_eq!(classify(up, 412, "ConditionNotMet"), K::ConditionFailed);
        assert_eq!(classify(create, 412, "ConditionNotMet"), K::AlreadyExists);
        assert_eq!(classify(create, 409, "BlobAlreadyExists"), K::AlreadyExists);
        assert_eq!(classify(Op::Download, 412, "ConditionNotMet"), K::Transient);
        assert_eq!(classify(up, 412, "LeaseIdMissing"), K::LeaseHeld);
        assert_eq!(
            classify(Op::AcquireLease, 409, "LeaseAlreadyPresent"),
            K::LeaseHeld
        );
        for code in [
            "LeaseIdMismatchWithBlobOperation",
            "LeaseLost",
            "LeaseNotPresentWithBlobOperation",
        ] {
            assert_eq!(classify(up, 412, code), K::LeaseLost, "{code}");
        }
        for code in [
            "LeaseIsBrokenAndCannotBeRenewed",
            "LeaseIdMismatchWithLeaseOperation",
            "LeaseNotPresentWithLeaseOperation",
        ] {
            assert_eq!(classify(Op::RenewLease, 409, code), K::LeaseLost, "{code}");
        }
        assert_eq!(classify(Op::Stat, 404, "BlobNotFound"), K::NotFound);
        assert_eq!(
            classify(Op::Stat, 403, "AuthorizationPermissionMismatch"),
            K::Denied
        );
        for status in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify(up, status, ""), K::Transient, "{status}");
        }
        assert_eq!(classify(up, 400, "InvalidBlockList"), K::Permanent);
        let commit = Op::CommitBlocks { create: false };
        let commit_create = Op::CommitBlocks { create: true };
        assert_eq!(classify(commit, 412, "ConditionNotMet"), K::ConditionFailed);
        assert_eq!(
            classify(commit_create, 412, "ConditionNotMet"),
            K::AlreadyExists
        );
        assert_eq!(
            classify(commit_create, 409, "BlobAlreadyExists"),
            K::AlreadyExists
        );
        assert_eq!(classify(commit, 412, "LeaseIdMissing"), K::LeaseHeld);
        assert_eq!(
            classify(commit, 412, "LeaseIdMismatchWithBlobOperation"),
            K::LeaseLost
        );
        assert_eq!(classify(Op::Stage, 412, "LeaseIdMissing"), K::LeaseHeld);
        assert_eq!(
            classify(Op::Stage, 412, "LeaseNotPresentWithBlobOperation"),
            K::LeaseLost
        );
        assert_eq!(
            classify(Op::ReadRange, 412, "ConditionNotMet"),
            K::ConditionFailed
        );
        assert_eq!(classify(Op::ReadRange, 416, "InvalidRange"), K::Invalid);
        assert_eq!(classify(Op::BlockList, 404, "BlobNotFound"), K::NotFound);
    }

    #[test]
    fn scrub_removes_secrets_and_signatures() {
        let text =
            "error sending request for url (http://h/c/b?sv=1&sig=abc%2Bdef&se=2) key=S3CRETKEY";
        let s = scrub(text, &["S3CRETKEY".to_string()]);
        assert!(!s.contains("abc%2Bdef"), "{s}");
        assert!(!s.contains("S3CRETKEY"), "{s}");
        assert!(s.contains("sig=<redacted>&se=2"), "{s}");
    }
}
