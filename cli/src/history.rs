//! `versions` (the kept versions of a blob), `export --as-of | --version` (a plain
//! copy of one of them) and `restore --as-of | --version` (publish one of them as
//! the newest version, conditional on the version it replaces, which stays in
//! history).

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use managedblob::internal::backend::history::{as_of, format_time, parse_time};
use managedblob::internal::backend::{Backend, History, VersionInfo};
use serde_json::json;

use crate::address::Target;
use crate::output::{bytes, print_json};
use crate::transfer::{self, Replace};

/// Which kept version: by time or by id.
#[derive(Args, Debug, Clone)]
#[group(multiple = false)]
pub struct Pick {
    /// The version that was current at this time (RFC 3339, like
    /// 2026-12-01T05:37:02Z or 2026-12-01T07:37:02+02:00).
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
    /// The version with this id (as `managedblob versions` lists it).
    #[arg(long, value_name = "ID")]
    pub version: Option<String>,
}

impl Pick {
    pub fn given(&self) -> bool {
        self.as_of.is_some() || self.version.is_some()
    }

    /// The chosen version among those kept.
    fn find(&self, kept: &[VersionInfo], blob: &str) -> Result<VersionInfo> {
        if let Some(id) = &self.version {
            return kept.iter().find(|v| &v.id == id).cloned().ok_or_else(|| {
                anyhow!("blob {blob} has no kept version {id} (`managedblob versions` lists them)")
            });
        }
        let text = self.as_of.as_deref().context("give --as-of or --version")?;
        let time = parse_time(text).ok_or_else(|| {
            anyhow!("--as-of {text:?} is not an RFC 3339 time like 2026-12-01T05:37:02Z")
        })?;
        as_of(kept, time)
            .cloned()
            .ok_or_else(|| match kept.first() {
                Some(first) => anyhow!(
                    "blob {blob} has no version as of {text}: the oldest kept is from {}",
                    format_time(first.time)
                ),
                None => anyhow!("blob {blob} has no kept versions (is the history setting on?)"),
            })
    }
}

/// The backend, checked to keep versions.
fn history_of(target: &Target) -> Result<Arc<dyn Backend>> {
    let backend = target.backend()?;
    if backend.history().is_none() {
        bail!("this remote keeps no versions");
    }
    Ok(backend)
}

fn history(backend: &dyn Backend) -> &dyn History {
    backend.history().expect("checked by history_of")
}

pub fn versions(target: &Target, json: bool) -> Result<u8> {
    let backend = history_of(target)?;
    let kept = history(backend.as_ref()).versions(&target.blob)?;
    if json {
        print_json(&json!({ "blob": target.blob, "versions": kept }));
        return Ok(0);
    }
    if kept.is_empty() {
        println!("blob {} has no kept versions", target.blob);
        return Ok(0);
    }
    println!(
        "{:<34} {:<24} {:>12} {:>12}",
        "id", "time", "size", "unique"
    );
    for v in &kept {
        println!(
            "{:<34} {:<24} {:>12} {:>12}",
            v.id,
            format_time(v.time),
            bytes(v.size),
            bytes(v.unique_bytes)
        );
    }
    Ok(0)
}

pub fn export(target: &Target, pick: &Pick, out: &Path, force: bool, json: bool) -> Result<u8> {
    transfer::refuse_existing(out, force)?;
    let backend = history_of(target)?;
    let h = history(backend.as_ref());
    let chosen = pick.find(&h.listing(&target.blob)?, &target.blob)?;
    transfer::write_copy(out, &target.blob, chosen.size, |sink| {
        h.download_version(&target.blob, &chosen.id, sink)?;
        Ok(())
    })?;
    if json {
        print_json(&json!({
            "blob": target.blob,
            "version": chosen,
            "size": chosen.size,
            "out": out.display().to_string(),
        }));
    } else {
        println!(
            "exported {} version {} ({}, {}) to {}",
            target.blob,
            chosen.id,
            format_time(chosen.time),
            bytes(chosen.size),
            out.display()
        );
    }
    Ok(0)
}

pub fn restore(target: &Target, pick: &Pick, json: bool) -> Result<u8> {
    if !pick.given() {
        bail!("restore needs --as-of <time> or --version <id>");
    }
    let backend = history_of(target)?;
    let h = history(backend.as_ref());
    let current = backend
        .stat(&target.blob)?
        .ok_or_else(|| target.missing_blob())?;
    // The version being replaced stays in history (a no-op when it is kept already).
    let replaced = h.snapshot(&target.blob, None)?;
    let chosen = pick.find(&h.listing(&target.blob)?, &target.blob)?;
    let dir = tempfile::tempdir().context("creating a temp directory")?;
    let copy = dir.path().join("restore.db");
    transfer::write_copy(&copy, &target.blob, chosen.size, |sink| {
        h.download_version(&target.blob, &chosen.id, sink)?;
        Ok(())
    })?;
    // Conditional on the version just kept: a writer that published since wins,
    // and nothing is restored.
    let pushed = transfer::publish_file(target, &copy, &Replace::IfMatch(current.etag.0.clone()))
        .context("nothing restored")?;
    let kept = h.snapshot(&target.blob, None);
    if json {
        print_json(&json!({
            "blob": target.blob,
            "restored": chosen,
            "etag": pushed.stat.etag.0,
            "previous_etag": pushed.previous.0,
            "replaced_version": replaced,
            "new_version": kept.as_ref().ok(),
        }));
    } else {
        println!(
            "restored {} to version {} ({}); the replaced version is kept as {replaced}",
            target.blob,
            chosen.id,
            format_time(chosen.time)
        );
    }
    kept.context("restored, but the new version was not kept in history")?;
    Ok(0)
}
