//! What killed processes leave beside a cache file, and sweeping it: download side
//! files `<cache>-managedblob.download-<pid>-<n>` whose pid no longer exists on this
//! host, and the temps of the sidecar and the manifest
//! (`<cache>-managedblob.json.tmp-<n>`, `...manifest.tmp-<n>`), which their writer
//! keeps open from creation to rename: one that no process of this host has open is
//! abandoned. Hot journals are never touched (SQLite recovers from them).
//!
//! The store sweeps at open; the `managedblob sweep` command (`crate::ops::sweep`)
//! runs the same code, which is why it lives here, below both.

use std::fs;
use std::path::{Path, PathBuf};

use crate::backend::inspect::{Leftover, Skipped, SweepReport};
use crate::error::{Error, Result};

/// Sweep the leftovers beside the cache file `cache`.
pub fn sweep_cache(cache: &Path, dry_run: bool) -> Result<SweepReport> {
    let (Some(name), Some(dir)) = (cache.file_name(), cache.parent()) else {
        return Err(Error::Config(format!(
            "{} does not name a cache file",
            cache.display()
        )));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let name = name.to_string_lossy().into_owned();
    let entries =
        fs::read_dir(dir).map_err(|e| Error::local(format!("listing {}", dir.display()), e))?;
    let mut report = SweepReport::default();
    // Scanned at the first temp found, after it was listed: a temp made later is not
    // judged against an older scan.
    let mut open: Option<Option<OpenFiles>> = None;
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(kind) = cache_leftover(&name, &file) else {
            continue;
        };
        let path = entry.path();
        let owner_gone = match kind {
            CacheLeftover::Download { pid } => pid.is_some_and(|p| !crate::sys::process_exists(p)),
            CacheLeftover::Temp => open
                .get_or_insert_with(OpenFiles::scan)
                .as_ref()
                .is_some_and(|o| !o.contains(&path)),
        };
        if !owner_gone {
            report.skipped.push(Skipped {
                path,
                why: "its owner may still be running on this host".into(),
            });
            continue;
        }
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        if !dry_run {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a leftover");
                continue;
            }
        }
        report.found.push(Leftover {
            path,
            bytes,
            what: kind.describe(),
        });
    }
    Ok(report)
}

#[derive(Debug, PartialEq, Eq)]
enum CacheLeftover {
    Download { pid: Option<u32> },
    Temp,
}

impl CacheLeftover {
    fn describe(&self) -> &'static str {
        match self {
            CacheLeftover::Download { .. } => "download side file",
            CacheLeftover::Temp => "sidecar temp file",
        }
    }
}

/// Whether `file` is a leftover of the cache named `cache`.
fn cache_leftover(cache: &str, file: &str) -> Option<CacheLeftover> {
    let rest = file.strip_prefix(cache)?.strip_prefix("-managedblob.")?;
    if let Some(owner) = rest.strip_prefix("download-") {
        let pid = owner.split('-').next().and_then(|p| p.parse().ok());
        return Some(CacheLeftover::Download { pid });
    }
    let temp = rest
        .strip_prefix("json.tmp-")
        .or(rest.strip_prefix("manifest.tmp-"))?;
    (!temp.is_empty()).then_some(CacheLeftover::Temp)
}

/// Every file some process of this host has open; `None` when a process's table
/// cannot be read (then nothing is provably unused).
struct OpenFiles(Vec<PathBuf>);

impl OpenFiles {
    fn scan() -> Option<OpenFiles> {
        let mut open = Vec::new();
        for proc_entry in fs::read_dir("/proc").ok()?.flatten() {
            let name = proc_entry.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let fds = match fs::read_dir(proc_entry.path().join("fd")) {
                Ok(fds) => fds,
                // Exited while we looked: it holds nothing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) => return None,
            };
            open.extend(fds.flatten().filter_map(|fd| fs::read_link(fd.path()).ok()));
        }
        Some(OpenFiles(open))
    }

    fn contains(&self, path: &Path) -> bool {
        let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.0.contains(&path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_leftovers_are_recognized_by_name() {
        let kind = |f| cache_leftover("a.db", f);
        assert_eq!(
            kind("a.db-managedblob.download-42-00ff00ff"),
            Some(CacheLeftover::Download { pid: Some(42) })
        );
        assert_eq!(
            kind("a.db-managedblob.json.tmp-1234abcd"),
            Some(CacheLeftover::Temp)
        );
        assert_eq!(
            kind("a.db-managedblob.manifest.tmp-1"),
            Some(CacheLeftover::Temp)
        );
        for kept in [
            "a.db",
            "a.db-journal",
            "a.db-managedblob.json",
            "a.db-managedblob.manifest",
            "b.db-managedblob.json.tmp-1",
        ] {
            assert_eq!(kind(kept), None, "{kept}");
        }
    }

    #[test]
    fn an_open_temp_is_kept_and_an_abandoned_one_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("a.db");
        let held = dir.path().join("a.db-managedblob.json.tmp-00000001");
        let abandoned = dir.path().join("a.db-managedblob.json.tmp-00000002");
        let _open = fs::File::create(&held).unwrap();
        fs::write(&abandoned, b"{}").unwrap();
        let report = sweep_cache(&cache, false).unwrap();
        assert!(held.exists() && !abandoned.exists());
        assert_eq!(report.found.len(), 1);
        assert_eq!(report.bytes(), 2);
    }
}
