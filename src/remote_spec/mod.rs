//! Where the remote lives: the `remote` setting parsed ([`RemoteSpec`]), an Azure
//! container's URL (`azure_url`, with the `azure` feature), and the rule every blob
//! name follows. Plain values at the bottom of the crate: the settings parse them and
//! the backends connect to them, so neither has to import the other.

#[cfg(feature = "azure")]
pub mod azure_url;

use std::path::PathBuf;

use crate::error::{BackendError, BackendErrorKind, BackendResult};

/// Where the remote lives, parsed from the `remote` setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteSpec {
    /// A directory plays the remote (`file:///dir`, `/dir` or `./dir`).
    Local(PathBuf),
    /// A process-wide in-memory store (`memory:<name>`): the test double, only in
    /// builds with the `testing` feature (the test harness's).
    #[cfg(any(test, feature = "testing"))]
    Memory(String),
    /// An Azure Blob Storage container: `https://<account>.blob.core.windows.net/<container>`
    /// with an optional SAS token, or an emulator's `http://127.0.0.1:10000/<account>/<container>`
    /// (the `azure` feature). Its `Debug` and `Display` never show the SAS token.
    #[cfg(feature = "azure")]
    Azure(azure_url::ContainerUrl),
}

/// Parse the `remote` setting. Never echoes anything after a `?` (a SAS token).
pub fn parse_remote(value: &str) -> std::result::Result<RemoteSpec, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("it is empty".into());
    }
    if value.contains('\0') {
        return Err("it contains a NUL byte".into());
    }
    if let Some(path) = value.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err("file:// URLs must be absolute, like file:///srv/remote".into());
        }
        return Ok(RemoteSpec::Local(PathBuf::from(path)));
    }
    if let Some(name) = value.strip_prefix("memory:") {
        return memory(name);
    }
    if let Some((scheme, _)) = value.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "https" || scheme == "http" {
            #[cfg(feature = "azure")]
            return azure_url::ContainerUrl::parse(value).map(RemoteSpec::Azure);
            #[cfg(not(feature = "azure"))]
            return Err(format!(
                "{scheme}:// remotes (Azure Blob Storage) need managedblob built with the \
                 `azure` cargo feature (features = [\"azure\"]); this build has only \
                 directory remotes"
            ));
        }
        return Err(format!(
            "unknown scheme '{scheme}://' (expected a directory, file:///dir or https://)"
        ));
    }
    Ok(RemoteSpec::Local(PathBuf::from(value)))
}

/// A `memory:<name>` remote: the in-memory test double, which only test builds have.
#[cfg(any(test, feature = "testing"))]
fn memory(name: &str) -> std::result::Result<RemoteSpec, String> {
    if name.is_empty() {
        return Err("memory: needs a name, like memory:test".into());
    }
    Ok(RemoteSpec::Memory(name.to_string()))
}

/// Without the `testing` feature there is no memory backend.
#[cfg(not(any(test, feature = "testing")))]
fn memory(_name: &str) -> std::result::Result<RemoteSpec, String> {
    Err(
        "memory: remotes are managedblob's in-memory test double, built only for its own \
         tests (the `testing` cargo feature); use a directory or an Azure container"
            .into(),
    )
}

/// Check a blob name the way every backend must: non-empty `/`-separated segments,
/// none of them `.` or `..` or starting with `.` (reserved for our own files),
/// no NUL, no backslash, at most 1024 bytes.
pub fn validate_blob_name(name: &str) -> BackendResult<()> {
    let bad = |why: &str| {
        Err(BackendError::new(
            BackendErrorKind::Invalid,
            format!("invalid blob name {name:?}: {why}"),
        ))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 1024 {
        return bad("it is longer than 1024 bytes");
    }
    if name.contains('\0') {
        return bad("it contains a NUL byte");
    }
    if name.contains('\\') {
        return bad("it contains a backslash");
    }
    for segment in name.split('/') {
        if segment.is_empty() {
            return bad("it has an empty path segment (leading, trailing or double '/')");
        }
        if segment == "." || segment == ".." {
            return bad("'.' and '..' segments are not allowed");
        }
        if segment.starts_with('.') {
            return bad("segments may not start with '.' (reserved for managedblob's own files)");
        }
    }
    Ok(())
}
