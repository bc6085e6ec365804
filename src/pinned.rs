//! Reading a kept version without restoring it: a main database opened with
//! `as_of=<RFC 3339 time>` or `version=<id>` in its URI is that version, read-only.
//!
//! The version is downloaded once into its own file beside the cache,
//! `<cache>-managedblob.version-<id>` (a complete file or none: written to a temp
//! name, checked, fsynced, renamed), and opened as a plain read-only file. A kept
//! version never changes, so the file needs no sidecar, no freshness check and no
//! lease, and it is never mistaken for the cache: the store never opens it, and an
//! open of the cache itself never reads it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::backend::history::{as_of, format_time, parse_time};
use crate::backend::{self, VersionInfo};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsutil;

/// Which kept version an open asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pin {
    /// The version current at this time (`as_of=`).
    AsOf(SystemTime),
    /// The version with this id (`version=`).
    Version(String),
}

/// The pin an open's URI asks for, if any (`uri` looks up a URI parameter).
pub fn pin_from(uri: &dyn Fn(&str) -> Option<String>) -> Result<Option<Pin>> {
    match (uri("as_of"), uri("version")) {
        (Some(_), Some(_)) => Err(Error::Config(
            "URI parameters 'as_of' and 'version' exclude each other: give one".into(),
        )),
        (Some(text), None) => parse_time(&text).map(|t| Some(Pin::AsOf(t))).ok_or_else(|| {
            Error::Config(format!(
                "URI parameter 'as_of' must be an RFC 3339 time like 2026-12-01T05:37:02Z, got {text:?}"
            ))
        }),
        (None, Some(id)) if id.trim().is_empty() => {
            Err(Error::Config("URI parameter 'version' is empty".into()))
        }
        (None, Some(id)) => Ok(Some(Pin::Version(id))),
        (None, None) => Ok(None),
    }
}

/// The file holding the pinned version of the database `config` names, downloaded
/// beside `cache` when not there yet.
pub fn version_file(cache: &Path, config: &Config, pin: &Pin) -> Result<PathBuf> {
    let store = backend::connect(&config.remote)?;
    let history = store.history().ok_or_else(|| {
        Error::Config(
            "this remote keeps no versions, so 'as_of' and 'version' cannot open one".into(),
        )
    })?;
    let blob = &config.blob;
    let kept = history.listing(blob)?;
    let chosen = choose(&kept, pin, blob)?;
    let path = path_for(cache, &chosen.id);
    if fs::metadata(&path).is_ok_and(|m| m.len() == chosen.size) {
        return Ok(path);
    }
    let tmp = temp_path(&path);
    let written = (|| {
        let mut file = fsutil::create_private(&tmp)
            .map_err(|e| Error::local(format!("creating {}", tmp.display()), e))?;
        let mut sink = std::io::BufWriter::new(&mut file);
        history.download_version(blob, &chosen.id, &mut sink)?;
        sink.flush()
            .map_err(|e| Error::local(format!("writing {}", tmp.display()), e))?;
        drop(sink);
        file.sync_all()
            .map_err(|e| Error::local(format!("syncing {}", tmp.display()), e))?;
        check_header(&tmp, &chosen.id)?;
        fs::rename(&tmp, &path)
            .map_err(|e| Error::local(format!("renaming to {}", path.display()), e))?;
        fsutil::sync_parent(&path)
            .map_err(|e| Error::local(format!("syncing the directory of {}", path.display()), e))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| path)
}

fn choose<'a>(kept: &'a [VersionInfo], pin: &Pin, blob: &str) -> Result<&'a VersionInfo> {
    let found = match pin {
        Pin::Version(id) => kept.iter().find(|v| &v.id == id),
        Pin::AsOf(time) => as_of(kept, *time),
    };
    found.ok_or_else(|| {
        let wanted = match pin {
            Pin::Version(id) => format!("version {id}"),
            Pin::AsOf(time) => format!("version as of {}", format_time(*time)),
        };
        Error::Config(format!(
            "blob '{blob}' has no kept {wanted} ({} kept{})",
            kept.len(),
            kept.first()
                .map(|v| format!(", the oldest from {}", format_time(v.time)))
                .unwrap_or_default()
        ))
    })
}

/// `<cache>-managedblob.version-<id>`, the id's characters other than letters,
/// digits, `-` and `.` written as `_`.
pub fn path_for(cache: &Path, id: &str) -> PathBuf {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = cache.as_os_str().to_owned();
    name.push(format!("-managedblob.version-{safe}"));
    PathBuf::from(name)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(
        ".tmp-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    PathBuf::from(name)
}

fn check_header(path: &Path, id: &str) -> Result<()> {
    let bytes =
        fs::read(path).map_err(|e| Error::local(format!("reading {}", path.display()), e))?;
    if !bytes.starts_with(b"SQLite format 3\0") {
        return Err(Error::NotADatabase(format!(
            "kept version {id} is not a SQLite database"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_and_exclude_each_other() {
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(pin_from(&lookup(&[])).unwrap(), None);
        assert_eq!(
            pin_from(&lookup(&[("version", "abc")])).unwrap(),
            Some(Pin::Version("abc".into()))
        );
        assert!(matches!(
            pin_from(&lookup(&[("as_of", "2026-12-01T05:37:02Z")])).unwrap(),
            Some(Pin::AsOf(_))
        ));
        assert!(pin_from(&lookup(&[("as_of", "yesterday")])).is_err());
        assert!(pin_from(&lookup(&[
            ("as_of", "2026-12-01T05:37:02Z"),
            ("version", "a")
        ]))
        .is_err());
    }

    #[test]
    fn version_files_sit_beside_the_cache_with_safe_names() {
        let p = path_for(Path::new("/c/app.db"), "2026-12-01T05:37:02.1Z/../x");
        assert_eq!(
            p,
            Path::new("/c/app.db-managedblob.version-2026-12-01T05_37_02.1Z_.._x")
        );
    }
}
