//! `managedblob status`: the remote blob, its lease, and optionally a cache.

use std::path::Path;

use anyhow::Result;
use managedblob::internal::ops::{self, LeaseInfo};
use managedblob::internal::residency;
use managedblob::internal::sidecar::Sidecar;
use serde::Serialize;

use crate::address::{Heading, Target};
use crate::blocks::Format;
use crate::output::{bytes, print_json, Table};

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    heading: Heading,
    last_modified: Option<String>,
    /// `managedblob` (our block list), `foreign` (someone else's block list) or
    /// `whole` (no block list: written in one piece).
    format: &'static str,
    chunk_size: Option<u64>,
    chunks: Option<u64>,
    lease: LeaseInfo,
    cache: Option<CacheReport>,
}

#[derive(Serialize)]
pub struct CacheReport {
    path: String,
    size: Option<u64>,
    etag: Option<String>,
    dirty: bool,
    in_flight: managedblob::internal::sidecar::InFlight,
    generation: u64,
    conflicts: Vec<String>,
    /// `current`, `behind` (the remote moved on), `ahead` (local commits not
    /// uploaded), `diverged` (both), `unsynced` (never synced).
    staleness: &'static str,
    /// `lazy` (a residency record beside it: a sparse cache) or `full`.
    fetch: &'static str,
    /// A lazy cache's chunks, from its residency record (absent for a full cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    residency: Option<Residency>,
}

/// What a lazy cache holds, as its residency record says.
#[derive(Serialize)]
pub struct Residency {
    pub chunks_present: u64,
    pub chunks_total: u64,
    pub chunk_size: u64,
    /// Bytes of the present chunks.
    pub resident_bytes: u64,
}

/// The residency record beside `cache` (`None`: a full cache). A record of another
/// base than the sidecar's describes nothing: no chunk present, as the VFS reads it.
pub fn residency(cache: &Path, sidecar: Option<&Sidecar>) -> Option<Residency> {
    let found = residency::summary(cache).ok().flatten()?;
    let current = sidecar.and_then(|s| s.base.as_ref()).map(|e| e.0.as_str()) == Some(&found.etag);
    Some(Residency {
        chunks_present: if current { found.chunks_present } else { 0 },
        chunks_total: found.chunks_total,
        chunk_size: found.chunk_size,
        resident_bytes: if current { found.resident_bytes } else { 0 },
    })
}

pub fn run(target: &Target, json: bool) -> Result<u8> {
    let Some(details) = ops::blob_details(&target.spec, &target.blob)? else {
        return Err(target.missing_blob());
    };
    let backend = target.backend()?;
    let list = match backend.blocks() {
        Some(blocks) => blocks.block_list(&target.blob)?.map(|(_, l)| l),
        None => None,
    }
    .unwrap_or_default();
    let (format, chunks) = crate::blocks::chunks(&list);
    let ours = format == Format::Managedblob;
    let cache = match (&target.cache, &target.sidecar) {
        (Some(path), Some(sidecar)) => Some(cache_report(path, sidecar, &details.stat.etag.0)),
        _ => None,
    };
    let report = Report {
        heading: target.heading(&details.stat),
        last_modified: details.last_modified.clone(),
        format: format.name(),
        chunk_size: ours.then(|| chunks.iter().map(|c| c.2).max().unwrap_or(0)),
        chunks: ours.then_some(chunks.len() as u64),
        lease: details.lease,
        cache,
    };
    if json {
        print_json(&serde_json::to_value(&report)?);
    } else {
        print_table(&report);
    }
    Ok(0)
}

pub fn cache_report(path: &Path, sidecar: &Sidecar, remote_etag: &str) -> CacheReport {
    let at_remote = sidecar.base.as_ref().map(|e| e.0.as_str()) == Some(remote_etag);
    let staleness = match (sidecar.base.is_some(), sidecar.dirty, at_remote) {
        (false, _, _) => "unsynced",
        (true, false, true) => "current",
        (true, false, false) => "behind",
        (true, true, true) => "ahead",
        (true, true, false) => "diverged",
    };
    let residency = residency(path, Some(sidecar));
    CacheReport {
        fetch: if residency.is_some() { "lazy" } else { "full" },
        residency,
        path: path.display().to_string(),
        size: std::fs::metadata(path).ok().map(|m| m.len()),
        etag: sidecar.base.as_ref().map(|e| e.0.clone()),
        dirty: sidecar.dirty,
        in_flight: sidecar.in_flight,
        generation: sidecar.generation,
        conflicts: conflict_copies(path),
        staleness,
    }
}

/// `<cache>.conflict-<utc>[-n]` files beside the cache: commits the remote refused.
fn conflict_copies(cache: &Path) -> Vec<String> {
    let (Some(dir), Some(name)) = (cache.parent(), cache.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.conflict-", name.to_string_lossy());
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn print_table(r: &Report) {
    let mut t = Table::default();
    t.section(&format!(
        "remote {} blob {}",
        r.heading.remote, r.heading.blob
    ));
    t.row("etag", &r.heading.etag);
    t.row("size", bytes(r.heading.size));
    t.row(
        "last modified",
        r.last_modified.as_deref().unwrap_or("unknown"),
    );
    let format = match r.format {
        "managedblob" => "managedblob block list",
        "foreign" => "foreign block list (written by another tool)",
        _ => "whole blob (no block list)",
    };
    t.row("format", format);
    if let (Some(size), Some(count)) = (r.chunk_size, r.chunks) {
        t.row(
            "chunks",
            format!("{count} of {}", indicatif::BinaryBytes(size)),
        );
    }
    let lease = &r.lease;
    let mut state = serde_json::to_value(lease.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    if let Some(duration) = &lease.duration {
        state.push_str(&format!(" ({duration})"));
    }
    t.row("lease", state);
    if let Some(holder) = &lease.holder {
        let dead = if lease.holder_dead {
            " (dead: the next writer reclaims it)"
        } else {
            ""
        };
        t.row("holder", format!("{holder}{dead}"));
    }
    if let Some(expires) = &lease.expires {
        t.row("expires", expires);
    }
    if let Some(c) = &r.cache {
        t.section(&format!("cache {}", c.path));
        t.row("etag", c.etag.as_deref().unwrap_or("none"));
        t.row("size", c.size.map_or("missing".to_string(), bytes));
        t.row("staleness", c.staleness);
        t.row("dirty", c.dirty);
        t.row(
            "in flight",
            serde_json::to_value(c.in_flight)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        );
        t.row("generation", c.generation);
        t.row("fetch", c.fetch);
        if let Some(r) = &c.residency {
            t.row(
                "resident",
                format!(
                    "{} of {} chunks of {}: {}",
                    r.chunks_present,
                    r.chunks_total,
                    indicatif::BinaryBytes(r.chunk_size),
                    bytes(r.resident_bytes)
                ),
            );
        }
        t.row(
            "conflicts",
            if c.conflicts.is_empty() {
                "none".to_string()
            } else {
                c.conflicts.join(", ")
            },
        );
    }
    t.print();
}
