//! `managedblob verify`: the remote's bytes match their block ids, the block list
//! covers the size, `PRAGMA integrity_check` passes on the assembled database, and
//! (with --cache) the cache equals the remote at the cache's version.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use managedblob::internal::delta::ChunkId;
use managedblob::internal::ops;
use serde::Serialize;

use crate::address::{Heading, Target};
use crate::blocks::{chunks, Format};
use crate::output::{print_json, Table};
use crate::EXIT_VERIFY_FAILED;

/// How often the blob may move between reading its block list and downloading it.
const ATTEMPTS: u32 = 3;

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    heading: Heading,
    ok: bool,
    checks: Vec<Check>,
}

#[derive(Serialize)]
struct Check {
    check: &'static str,
    /// `ok`, `failed` or `skipped`.
    result: &'static str,
    detail: String,
}

impl Check {
    fn new(check: &'static str, result: std::result::Result<String, Outcome>) -> Check {
        let (result, detail) = match result {
            Ok(detail) => ("ok", detail),
            Err(Outcome::Failed(detail)) => ("failed", detail),
            Err(Outcome::Skipped(detail)) => ("skipped", detail),
        };
        Check {
            check,
            result,
            detail,
        }
    }
}

enum Outcome {
    Failed(String),
    Skipped(String),
}

pub fn run(target: &Target, json: bool) -> Result<u8> {
    let backend = target.backend()?;
    let image = tempfile::NamedTempFile::new().context("creating a temp file for the download")?;
    let mut attempt = 0;
    let (stat, list) = loop {
        attempt += 1;
        let Some((listed, list)) = ops::recorded_blocks(&target.spec, &target.blob)? else {
            return Err(target.missing_blob());
        };
        let mut sink = image.reopen()?;
        sink.set_len(0)?;
        let got = backend.download(&target.blob, &mut sink)?;
        if got.etag == listed.etag {
            break (got, list);
        }
        if attempt == ATTEMPTS {
            bail!(
                "blob {} changed {ATTEMPTS} times while being verified; try again when it is quiet",
                target.blob
            );
        }
    };
    let file = File::open(image.path())?;
    let page_size = page_size(&file);
    let (format, chunks) = chunks(&list);

    let mut checks = Vec::new();
    let covered: u64 = chunks.iter().map(|c| c.2).sum();
    checks.push(Check::new(
        "block list",
        match format {
            Format::Managedblob if covered == stat.size => Ok(format!(
                "{} chunk(s) cover all {} bytes",
                chunks.len(),
                stat.size
            )),
            Format::Managedblob => Err(Outcome::Failed(format!(
                "the block list covers {covered} bytes but the blob has {}",
                stat.size
            ))),
            Format::Foreign => Err(Outcome::Skipped(
                "a foreign block list (not written by managedblob): no chunk ids to check".into(),
            )),
            Format::Whole => Err(Outcome::Skipped(
                "no block list (the blob was written in one piece)".into(),
            )),
        },
    ));
    if format == Format::Managedblob {
        checks.push(Check::new(
            "chunk hashes",
            check_chunks(&file, &chunks, page_size),
        ));
    }
    checks.push(Check::new("integrity_check", integrity(image.path())));
    if let Some(cache) = &target.cache {
        checks.push(Check::new(
            "cache",
            check_cache(target, cache, &file, &stat.etag.0, page_size),
        ));
    }
    let report = Report {
        heading: target.heading(&stat),
        ok: checks.iter().all(|c| c.result != "failed"),
        checks,
    };
    if json {
        print_json(&serde_json::to_value(&report)?);
    } else {
        print_table(&report);
    }
    Ok(if report.ok { 0 } else { EXIT_VERIFY_FAILED })
}

/// Every chunk's bytes hash to its block id; names the first that does not.
fn check_chunks(
    file: &File,
    chunks: &[(ChunkId, u64, u64)],
    page_size: u64,
) -> std::result::Result<String, Outcome> {
    let mut buffer = Vec::new();
    for (i, (id, offset, size)) in chunks.iter().enumerate() {
        buffer.resize(*size as usize, 0);
        file.read_exact_at(&mut buffer, *offset)
            .map_err(|e| Outcome::Failed(format!("reading chunk {i}: {e}")))?;
        if ChunkId::new(i as u32, &buffer) != *id {
            return Err(Outcome::Failed(format!(
                "chunk {i} (bytes {offset}..{}, pages {}..={}) does not match its block id",
                offset + size,
                offset / page_size + 1,
                (offset + size).div_ceil(page_size)
            )));
        }
    }
    Ok(format!("{} chunk(s) match their block ids", chunks.len()))
}

/// `PRAGMA integrity_check` on the downloaded image (a plain file, no VFS).
fn integrity(path: &Path) -> std::result::Result<String, Outcome> {
    let mut header = [0u8; 16];
    let read = File::open(path)
        .and_then(|mut f| f.read(&mut header))
        .map_err(|e| Outcome::Failed(e.to_string()))?;
    if read == 0 {
        return Err(Outcome::Skipped("the blob is empty".into()));
    }
    if &header[..read] != b"SQLite format 3\0" {
        return Err(Outcome::Failed(
            "the blob is not a SQLite database (no SQLite header)".into(),
        ));
    }
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Outcome::Failed(e.to_string()))?;
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .map_err(|e| Outcome::Failed(e.to_string()))?;
    let rows: Vec<String> = stmt
        .query_map([], |row| row.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| Outcome::Failed(e.to_string()))?;
    match rows.as_slice() {
        [only] if only == "ok" => Ok("ok".into()),
        [first, ..] => Err(Outcome::Failed(format!(
            "{first} ({} problem(s))",
            rows.len()
        ))),
        [] => Err(Outcome::Failed("no answer".into())),
    }
}

/// The cache equals the remote, when the cache is at the remote's version.
fn check_cache(
    target: &Target,
    cache: &Path,
    remote: &File,
    remote_etag: &str,
    page_size: u64,
) -> std::result::Result<String, Outcome> {
    let Some(sidecar) = &target.sidecar else {
        return Err(Outcome::Skipped(format!(
            "{} has no sidecar",
            cache.display()
        )));
    };
    if sidecar.dirty {
        return Err(Outcome::Skipped(
            "the cache holds commits not uploaded yet; nothing to compare with".into(),
        ));
    }
    let base = sidecar
        .base
        .as_ref()
        .map(|e| e.0.as_str())
        .unwrap_or("none");
    if base != remote_etag {
        return Err(Outcome::Skipped(format!(
            "the cache is at version {base}, the remote at {remote_etag}: pull first"
        )));
    }
    let local =
        File::open(cache).map_err(|e| Outcome::Failed(format!("{}: {e}", cache.display())))?;
    let (local_len, remote_len) = (
        local.metadata().map(|m| m.len()).unwrap_or(0),
        remote.metadata().map(|m| m.len()).unwrap_or(0),
    );
    let mut a = vec![0u8; page_size as usize];
    let mut b = vec![0u8; page_size as usize];
    let pages = local_len.min(remote_len).div_ceil(page_size);
    for page in 0..pages {
        let offset = page * page_size;
        let n = (local_len.min(remote_len) - offset).min(page_size) as usize;
        local
            .read_exact_at(&mut a[..n], offset)
            .and_then(|()| remote.read_exact_at(&mut b[..n], offset))
            .map_err(|e| Outcome::Failed(e.to_string()))?;
        if page == 0 {
            // Each cache keeps its own change counter (the remote's may lag behind
            // the pages it describes on Azure): compare the content SQLite reads.
            managedblob::internal::delta::ignore_change_counter(&b[..n], &mut a[..n]);
        }
        if a[..n] != b[..n] {
            let at = a[..n]
                .iter()
                .zip(&b[..n])
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            return Err(Outcome::Failed(format!(
                "page {} (byte {}) of the cache differs from the remote at version {remote_etag}",
                page + 1,
                offset + at as u64
            )));
        }
    }
    if local_len != remote_len {
        return Err(Outcome::Failed(format!(
            "the cache has {local_len} bytes, the remote {remote_len}"
        )));
    }
    Ok(format!(
        "{} equals the remote at version {remote_etag}",
        cache.display()
    ))
}

/// The database's page size from its header (4096 when there is none).
fn page_size(file: &File) -> u64 {
    let mut raw = [0u8; 2];
    if file.read_exact_at(&mut raw, 16).is_err() {
        return 4096;
    }
    match u16::from_be_bytes(raw) {
        1 => 65536,
        n if n >= 512 && n.is_power_of_two() => u64::from(n),
        _ => 4096,
    }
}

fn print_table(r: &Report) {
    let mut t = Table::default();
    t.section(&format!(
        "verify {} blob {} (etag {}, {} bytes)",
        r.heading.remote, r.heading.blob, r.heading.etag, r.heading.size
    ));
    for c in &r.checks {
        let result = match c.result {
            "ok" => "ok",
            "failed" => "FAILED",
            _ => "skipped",
        };
        t.row(c.check, format!("{result}: {}", c.detail));
    }
    t.print();
    match r.checks.iter().find(|c| c.result == "failed") {
        Some(first) => println!("verify FAILED: {}: {}", first.check, first.detail),
        None => println!("verify ok"),
    }
}
