//! Which remote, blob and cache a command works on: `--remote`/`--blob` (or their
//! `MANAGEDBLOB_*` variables), a `REMOTE/BLOB` shorthand, or `--cache`, whose
//! sidecar records the remote and blob.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use managedblob::internal::backend::{self, Backend};
use managedblob::internal::config::{parse_remote, RemoteSpec};
use managedblob::internal::sidecar::{self, Sidecar};

/// Where the database is, by flags.
#[derive(Args, Debug)]
pub struct Location {
    /// The remote: a directory, or an Azure container URL (`https://<account>.blob.core.windows.net/<container>[?<SAS>]`).
    #[arg(long, env = "MANAGEDBLOB_REMOTE", hide_env_values = true)]
    pub remote: Option<String>,
    /// The blob name in the remote (default: the cache file's name, as for the VFS).
    #[arg(long, env = "MANAGEDBLOB_BLOB")]
    pub blob: Option<String>,
    /// A local cache: its sidecar names the remote and blob, and `status` and `verify`
    /// include it.
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// Where the database is, by flags or a `REMOTE/BLOB` shorthand.
#[derive(Args, Debug)]
pub struct Address {
    /// Shorthand for --remote and --blob: `/srv/remote/app.db`, or a container URL
    /// followed by the blob name (`https://acct.blob.core.windows.net/data/app.db`).
    #[arg(value_name = "REMOTE/BLOB")]
    target: Option<String>,
    #[command(flatten)]
    location: Location,
}

impl Address {
    pub fn resolve(&self) -> Result<Target> {
        self.location.resolve(self.target.as_deref())
    }
}

/// Where the database is, by flags or a `REMOTE/BLOB` shorthand, and the local file a
/// command reads or writes: `[REMOTE/BLOB] FILE` (`export`, `push`).
#[derive(Args, Debug)]
pub struct WithFile {
    /// The local file (export: the copy to write; push: the database to publish),
    /// after the blob's REMOTE/BLOB shorthand when that is given instead of --remote
    /// and --blob.
    #[arg(value_name = "[REMOTE/BLOB] FILE", num_args = 1..=2, required = true)]
    paths: Vec<String>,
    #[command(flatten)]
    location: Location,
}

impl WithFile {
    /// The target and the local file.
    pub fn resolve(&self) -> Result<(Target, PathBuf)> {
        match self.paths.as_slice() {
            [file] => Ok((self.location.resolve(None)?, PathBuf::from(file))),
            [shorthand, file] => Ok((self.location.resolve(Some(shorthand))?, PathBuf::from(file))),
            _ => bail!("expected [REMOTE/BLOB] FILE"),
        }
    }
}

/// A whole remote, not one blob (`sweep`, `create-container`): `REMOTE` or --remote.
#[derive(Args, Debug)]
pub struct RemoteOnly {
    /// The remote, as --remote: a directory or an Azure container URL.
    #[arg(value_name = "REMOTE")]
    target: Option<String>,
    /// The remote: a directory, or an Azure container URL (`https://<account>.blob.core.windows.net/<container>[?<SAS>]`).
    #[arg(long, env = "MANAGEDBLOB_REMOTE", hide_env_values = true)]
    remote: Option<String>,
}

impl RemoteOnly {
    /// The remote given (the positional one first), if any.
    pub fn given(&self) -> Option<&str> {
        self.target.as_deref().or(self.remote.as_deref())
    }
}

/// A resolved remote, blob and (optionally) cache.
pub struct Target {
    pub spec: RemoteSpec,
    /// The remote setting as given; it may carry a SAS token, so it is never shown.
    remote: String,
    pub blob: String,
    pub cache: Option<PathBuf>,
    /// The cache's sidecar, when it has one.
    pub sidecar: Option<Sidecar>,
}

impl Location {
    pub fn resolve(&self, shorthand: Option<&str>) -> Result<Target> {
        let (remote, blob) = match shorthand {
            Some(text) => {
                let (remote, blob) = split_shorthand(text)?;
                (Some(remote), Some(blob))
            }
            None => (self.remote.clone(), self.blob.clone()),
        };
        let sidecar = match &self.cache {
            Some(cache) => sidecar::load(&sidecar::path_for(cache))?,
            None => None,
        };
        let remote = match (remote, &sidecar) {
            (Some(remote), _) => remote,
            (None, Some(found)) => remote_of_identity(&found.remote)?,
            (None, None) => match &self.cache {
                Some(cache) => bail!(
                    "{} has no sidecar (it is not a managedblob cache yet): give --remote and --blob",
                    cache.display()
                ),
                None => bail!(
                    "no remote given: pass --remote <dir|container URL> and --blob <name>, \
                     a REMOTE/BLOB argument, --cache <path>, or set MANAGEDBLOB_REMOTE"
                ),
            },
        };
        let spec = parse_remote(&remote).map_err(|why| anyhow!("--remote is invalid: {why}"))?;
        let blob = match (blob, &sidecar, &self.cache) {
            (Some(blob), _, _) => blob,
            (None, Some(found), _) => found.blob.clone(),
            (None, None, Some(cache)) => file_name(cache)?,
            (None, None, None) => bail!("no blob given: pass --blob <name>"),
        };
        backend::validate_blob_name(&blob).map_err(|e| anyhow!("--blob is invalid: {e}"))?;
        let target = Target {
            spec,
            remote,
            blob,
            cache: self.cache.clone(),
            sidecar,
        };
        target.check_sidecar_matches()?;
        Ok(target)
    }
}

impl Target {
    /// The backend the remote setting names.
    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        Ok(backend::connect(&self.spec)?)
    }

    /// What every report starts with: the remote, the blob and the version looked at.
    pub fn heading(&self, stat: &managedblob::internal::backend::BlobStat) -> Heading {
        Heading {
            remote: self.shown_remote(),
            blob: self.blob.clone(),
            etag: stat.etag.0.clone(),
            size: stat.size,
        }
    }

    /// A secret-free name of the remote (the backend's identity).
    pub fn shown_remote(&self) -> String {
        match &self.spec {
            RemoteSpec::Local(dir) => format!("local:{}", dir.display()),
            other => match backend::connect(other) {
                Ok(b) => b.identity(),
                Err(_) => "(unusable remote)".into(),
            },
        }
    }

    /// The error for a blob that does not exist.
    pub fn missing_blob(&self) -> anyhow::Error {
        anyhow!(
            "blob {} does not exist in {}",
            self.blob,
            self.shown_remote()
        )
    }

    /// The `file:` URI that opens `cache` through the VFS on this remote and blob.
    pub fn vfs_uri(&self, cache: &Path) -> String {
        format!(
            "file:{}?vfs={}&remote={}&blob={}",
            encode(&cache.to_string_lossy(), "?#%"),
            managedblob::VFS_NAME,
            encode(&self.remote, "?#%&="),
            encode(&self.blob, "?#%&=")
        )
    }

    /// A cache given with --cache must belong to this remote and blob.
    fn check_sidecar_matches(&self) -> Result<()> {
        let (Some(found), Some(cache)) = (&self.sidecar, &self.cache) else {
            return Ok(());
        };
        let identity = self.backend()?.identity();
        if !found.is_for(&identity, &self.blob) {
            bail!(
                "cache {} belongs to blob {} of {}, not to blob {} of {identity}",
                cache.display(),
                found.blob,
                found.remote,
                self.blob
            );
        }
        Ok(())
    }
}

/// The remote setting for a backend identity recorded in a sidecar (`local:/dir`,
/// `azure:<container URL>`, whose credentials then come from the environment).
fn remote_of_identity(identity: &str) -> Result<String> {
    if let Some(dir) = identity.strip_prefix("local:") {
        return Ok(dir.to_string());
    }
    if let Some(url) = identity.strip_prefix("azure:") {
        return Ok(url.to_string());
    }
    bail!("the sidecar names a remote this tool cannot reach ({identity}): give --remote")
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no usable file name", path.display()))
}

/// `REMOTE/BLOB` -> (remote, blob). A container URL's path is `<container>/<blob>`
/// (`<account>/<container>/<blob>` for an emulator on an IP or localhost); a local
/// path splits at its last `/`, so a blob in a subdirectory needs --blob.
fn split_shorthand(text: &str) -> Result<(String, String)> {
    let unusable =
        || anyhow!("REMOTE/BLOB: cannot tell the remote from the blob; use --remote and --blob");
    if let Some((scheme, rest)) = text.split_once("://") {
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (host, path) = rest.split_once('/').ok_or_else(unusable)?;
        let prefix_segments = if host.contains(".blob.") { 1 } else { 2 };
        let segments: Vec<&str> = path.splitn(prefix_segments + 1, '/').collect();
        if segments.len() != prefix_segments + 1 || segments.iter().any(|s| s.is_empty()) {
            return Err(unusable());
        }
        let container = segments[..prefix_segments].join("/");
        let mut remote = format!("{scheme}://{host}/{container}");
        if let Some(q) = query {
            remote.push('?');
            remote.push_str(q);
        }
        return Ok((remote, segments[prefix_segments].to_string()));
    }
    if Path::new(text).is_dir() {
        bail!("{text} is a directory: give the blob too (REMOTE/BLOB) or use --remote and --blob");
    }
    match text.rsplit_once('/') {
        Some((dir, blob)) if !blob.is_empty() => Ok((
            if dir.is_empty() { "/" } else { dir }.to_string(),
            blob.to_string(),
        )),
        _ => Err(unusable()),
    }
}

/// Percent-encode `chars` (and control characters) for a SQLite URI.
fn encode(text: &str, chars: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if chars.contains(c) || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_splits_container_urls_and_paths() {
        assert_eq!(
            split_shorthand("https://acct.blob.core.windows.net/data/dir/app.db?sv=1&sig=x")
                .unwrap(),
            (
                "https://acct.blob.core.windows.net/data?sv=1&sig=x".to_string(),
                "dir/app.db".to_string()
            )
        );
        assert_eq!(
            split_shorthand("http://127.0.0.1:10000/devstoreaccount1/c/app.db").unwrap(),
            (
                "http://127.0.0.1:10000/devstoreaccount1/c".to_string(),
                "app.db".to_string()
            )
        );
        assert_eq!(
            split_shorthand("/srv/remote/app.db").unwrap(),
            ("/srv/remote".to_string(), "app.db".to_string())
        );
        assert!(split_shorthand("https://acct.blob.core.windows.net/data").is_err());
    }

    #[test]
    fn uri_values_are_percent_encoded() {
        assert_eq!(
            encode("http://h/c?sv=1&sig=a%2B", "?#%&="),
            "http://h/c%3Fsv%3D1%26sig%3Da%252B"
        );
    }
}

/// The first fields of every report (`status`, `verify`).
#[derive(serde::Serialize)]
pub struct Heading {
    pub remote: String,
    pub blob: String,
    pub etag: String,
    pub size: u64,
}
