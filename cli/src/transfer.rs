//! `pull` (a cache brought up to date through the VFS), `export` (a plain copy of
//! the remote) and `push` (a plain file published as the blob, in block-list form,
//! under the lease, conditional on the version it checked).

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use managedblob::internal::backend::{Backend, BackendErrorKind, BlockId, Condition, Lease};
use managedblob::internal::delta::{chunk_size_for, ChunkId};
use managedblob::internal::residency;
use serde_json::json;

use crate::address::Target;
use crate::output::{bytes, print_json, progress};

/// When `push` may replace an existing blob.
pub enum Replace {
    /// Only when there is none.
    Never,
    /// Only when it is at this version.
    IfMatch(String),
    /// Whatever its version.
    Always,
}

/// The lease `push` holds while it stages and commits, renewed every third of it.
const PUSH_LEASE: Duration = Duration::from_secs(60);

pub fn pull(target: &Target, json: bool) -> Result<u8> {
    let cache = target
        .cache
        .as_ref()
        .context("pull needs --cache <path> (the cache to bring up to date)")?;
    let backend = target.backend()?;
    let Some(stat) = backend.stat(&target.blob)? else {
        return Err(target.missing_blob());
    };
    let before = target.sidecar.as_ref().and_then(|s| s.base.clone());
    // An empty cache takes the blob straight into the cache file (no side file), so
    // its length is the download's progress.
    let cold = std::fs::metadata(cache).map_or(true, |m| m.len() == 0);
    let bar = Arc::new(progress(stat.size, "pull"));
    let watching = Arc::new(AtomicBool::new(bar.is_shown()));
    let watcher = {
        let (bar, watching, cache) = (bar.clone(), watching.clone(), cache.clone());
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) {
                let done = download_progress(&cache, cold).min(stat.size);
                bar.set_position(bar.position().max(done));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let opened = open_managed(target, cache).and_then(|conn| {
        // A read transaction: the open's freshness check and download, exactly as
        // for an application.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })?;
        managed_status(&conn)
    });
    watching.store(false, Ordering::Relaxed);
    let _ = watcher.join();
    if opened.is_ok() {
        // What the download wrote since the last look (all of a cold one).
        let done = download_progress(cache, cold).min(stat.size);
        bar.set_position(bar.position().max(done));
    }
    if let Ok(bar) = Arc::try_unwrap(bar) {
        bar.finish();
    }
    let status = opened?;
    let etag = status["etag"].as_str().unwrap_or_default().to_string();
    let down = status["requests"]["bytes_down"].as_u64().unwrap_or(0);
    if json {
        print_json(&json!({
            "cache": cache.display().to_string(),
            "blob": target.blob,
            "etag": etag,
            "previous_etag": before.as_ref().map(|e| e.0.clone()),
            "bytes_down": down,
            "generation": status["generation"],
        }));
    } else if before.as_ref().map(|e| e.0.as_str()) == Some(etag.as_str()) {
        println!("{} is current (etag {etag})", cache.display());
    } else {
        println!(
            "pulled {} into {} (etag {etag}, {} down)",
            target.blob,
            cache.display(),
            bytes(down)
        );
    }
    Ok(0)
}

/// `pull --all`: open the cache lazily and fetch every chunk it lacks, in one read
/// transaction (`PRAGMA managedblob_fetch_all`); the bar follows the residency
/// record's present bytes. A full cache (no residency record) is pulled as usual.
pub fn pull_all(target: &Target, json: bool) -> Result<u8> {
    let cache = target
        .cache
        .as_ref()
        .context("pull --all needs --cache <path> (the cache to fill)")?;
    let empty = std::fs::metadata(cache).map_or(true, |m| m.len() == 0);
    if !empty && residency::summary(cache)?.is_none() {
        return pull(target, json);
    }
    let backend = target.backend()?;
    let Some(stat) = backend.stat(&target.blob)? else {
        return Err(target.missing_blob());
    };
    let before = target.sidecar.as_ref().and_then(|s| s.base.clone());
    let conn = open_managed_uri(&format!("{}&fetch=lazy", target.vfs_uri(cache)), cache)?;
    // The read transaction the fetch runs in: the open's check and (lazy) install.
    conn.execute_batch("BEGIN")?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;
    let start = managed_status(&conn)?;
    let total = start["residence"]["chunks_total"].as_u64();
    let size = std::fs::metadata(cache).map_or(stat.size, |m| m.len());
    let bar = Arc::new(progress(size, "pull"));
    let watching = Arc::new(AtomicBool::new(bar.is_shown()));
    let watcher = {
        let (bar, watching, cache) = (bar.clone(), watching.clone(), cache.clone());
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) {
                if let Ok(Some(r)) = residency::summary(&cache) {
                    bar.set_position(bar.position().max(r.resident_bytes));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let fetched = conn
        .query_row("PRAGMA managedblob_fetch_all", [], |r| {
            r.get::<_, String>(0)
        })
        .context("fetching every chunk");
    watching.store(false, Ordering::Relaxed);
    let _ = watcher.join();
    let status = fetched.and_then(|_| {
        conn.execute_batch("COMMIT")?;
        managed_status(&conn)
    });
    if let (Ok(s), Ok(bar)) = (&status, Arc::try_unwrap(bar)) {
        let resident = s["residence"]["resident_bytes"].as_u64().unwrap_or(size);
        bar.set_position(bar.position().max(resident));
        bar.finish();
    }
    let s = status?;
    let r = &s["residence"];
    if total.is_some() && r["chunks_present"] != r["chunks_total"] {
        bail!(
            "{} still lacks chunks after the fetch ({} of {} present)",
            cache.display(),
            r["chunks_present"],
            r["chunks_total"]
        );
    }
    let etag = s["etag"].as_str().unwrap_or_default().to_string();
    let down = s["requests"]["bytes_down"].as_u64().unwrap_or(0);
    if json {
        print_json(&json!({
            "cache": cache.display().to_string(),
            "blob": target.blob,
            "etag": etag,
            "previous_etag": before.as_ref().map(|e| e.0.clone()),
            "bytes_down": down,
            "generation": s["generation"],
            "chunks_present": r["chunks_present"],
            "chunks_total": r["chunks_total"],
            "chunks_fetched": r["chunks_fetched"],
            "resident_bytes": r["resident_bytes"],
        }));
    } else {
        println!(
            "pulled every chunk of {} into {} (etag {etag}, {} of {} chunks present, {} \
             fetched, {} down)",
            target.blob,
            cache.display(),
            r["chunks_present"],
            r["chunks_total"],
            r["chunks_fetched"],
            bytes(down)
        );
    }
    Ok(0)
}

pub fn export(target: &Target, out: &Path, force: bool, json: bool) -> Result<u8> {
    refuse_existing(out, force)?;
    let backend = target.backend()?;
    let Some(stat) = backend.stat(&target.blob)? else {
        return Err(target.missing_blob());
    };
    let mut got = None;
    write_copy(out, &target.blob, stat.size, |sink| {
        got = Some(backend.download(&target.blob, sink)?);
        Ok(())
    })?;
    let got = got.expect("written");
    if json {
        print_json(&json!({
            "blob": target.blob,
            "etag": got.etag.0,
            "size": got.size,
            "out": out.display().to_string(),
        }));
    } else {
        println!(
            "exported {} (etag {}, {}) to {}",
            target.blob,
            got.etag,
            bytes(got.size),
            out.display()
        );
    }
    Ok(0)
}

/// Refuse to replace `out` unless `force`.
pub fn refuse_existing(out: &Path, force: bool) -> Result<()> {
    if out.exists() && !force {
        bail!("{} exists: pass --force to replace it", out.display());
    }
    Ok(())
}

/// Write a plain SQLite copy of `blob` (`size` bytes, written by `fill`) to `out`:
/// a temp file beside it, checked for the SQLite header, fsynced, then renamed.
pub fn write_copy(
    out: &Path,
    blob: &str,
    size: u64,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut part = tempfile::Builder::new()
        .prefix(".managedblob-export-")
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    let bar = progress(size, "export");
    {
        let mut sink = bar.wrap_write(std::io::BufWriter::new(part.as_file_mut()));
        fill(&mut sink)?;
        sink.flush()?;
    }
    bar.finish();
    let mut header = [0u8; 16];
    let read = part.as_file().read_at(&mut header, 0)?;
    if &header[..read] != b"SQLite format 3\0" {
        bail!("blob {blob} is not a SQLite database (no SQLite header); nothing written");
    }
    part.as_file().sync_all()?;
    part.persist(out)
        .map_err(|e| anyhow!("writing {}: {}", out.display(), e.error))?;
    Ok(())
}

pub fn push(target: &Target, file: &Path, rule: &Replace, json: bool) -> Result<u8> {
    let pushed = publish_file(target, file, rule)?;
    let (stat, staged, chunks) = (&pushed.stat, pushed.chunks_sent, pushed.chunks);
    if json {
        print_json(&json!({
            "blob": target.blob,
            "etag": stat.etag.0,
            "previous_etag": pushed.previous.0,
            "size": stat.size,
            "chunks": chunks,
            "chunks_sent": staged,
        }));
    } else {
        println!(
            "pushed {} as {} (etag {}, {}, {chunks} chunk(s), {staged} sent)",
            file.display(),
            target.blob,
            stat.etag,
            bytes(stat.size)
        );
    }
    Ok(0)
}

/// What [`publish_file`] did.
pub struct Pushed {
    pub stat: managedblob::internal::backend::BlobStat,
    /// The version it replaced (the empty blob it created, for a new one).
    pub previous: managedblob::internal::backend::Etag,
    pub chunks: usize,
    pub chunks_sent: usize,
}

/// Publish the SQLite file `file` as the blob when `rule` allows, under the lease,
/// conditional on the version the lease pinned.
pub fn publish_file(target: &Target, file: &Path, rule: &Replace) -> Result<Pushed> {
    // Hold a read transaction on the source while reading it: no writer of it can
    // change it under us.
    let source = check_database(file)?;
    source.execute_batch("BEGIN")?;
    source.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;
    let len = std::fs::metadata(file)?.len();
    let backend = target.backend()?;
    let current = backend.stat(&target.blob)?;
    check_rule(target, rule, current.as_ref().map(|s| s.etag.0.as_str()))?;
    let created = match current {
        Some(_) => None,
        None => match backend.upload(
            &target.blob,
            &mut std::io::empty(),
            0,
            &Condition::Create,
            None,
        ) {
            Ok(stat) => Some(stat.etag),
            Err(e) if e.kind == BackendErrorKind::AlreadyExists => {
                bail!(
                    "blob {} was created by somebody else meanwhile; nothing pushed",
                    target.blob
                )
            }
            Err(e) => return Err(e.into()),
        },
    };
    let lease = backend
        .acquire_lease(&target.blob, PUSH_LEASE)
        .map_err(|e| match e.kind {
            BackendErrorKind::LeaseHeld => anyhow!(
            "{e}; a writer is active: try again later (or `managedblob break-lease` for a dead one)"
        ),
            _ => e.into(),
        })?;
    let result = (|| {
        // The version we replace, pinned by the lease.
        let pinned = lease.etag.clone();
        match &created {
            Some(ours) if *ours != pinned => bail!(
                "blob {} changed while being created; nothing pushed",
                target.blob
            ),
            Some(_) => {}
            None => check_rule(target, rule, Some(&pinned.0))?,
        }
        upload_chunks(backend.as_ref(), &target.blob, file, len, &lease)
    })();
    let _ = backend.release_lease(&target.blob, &lease.id);
    let (stat, chunks_sent, chunks) = result?;
    Ok(Pushed {
        stat,
        previous: lease.etag,
        chunks,
        chunks_sent,
    })
}

/// Whether `rule` allows replacing the blob at version `etag` (`None`: no blob).
fn check_rule(target: &Target, rule: &Replace, etag: Option<&str>) -> Result<()> {
    match (rule, etag) {
        (Replace::Never, Some(etag)) => bail!(
            "blob {} exists (etag {etag}): pass --if-match {etag} to replace that version, or --force",
            target.blob
        ),
        (Replace::IfMatch(want), None) => bail!(
            "blob {} does not exist, so --if-match {want} cannot hold",
            target.blob
        ),
        (Replace::IfMatch(want), Some(etag)) if want != etag => bail!(
            "blob {} is at version {etag}, not {want}; nothing pushed",
            target.blob
        ),
        _ => Ok(()),
    }
}

/// Stage the chunks of `file` the blob does not hold yet and commit the block list
/// under the lease, If-Match the leased version. Returns (new version, chunks
/// sent, chunks).
fn upload_chunks(
    backend: &dyn Backend,
    blob: &str,
    file: &Path,
    len: u64,
    lease: &Lease,
) -> Result<(managedblob::internal::backend::BlobStat, usize, usize)> {
    let condition = Condition::Match(lease.etag.clone());
    let Some(blocks) = backend.blocks() else {
        let mut source = File::open(file)?;
        let stat = backend.upload(blob, &mut source, len, &condition, Some(&lease.id))?;
        return Ok((stat, 1, 1));
    };
    let have: Vec<BlockId> = blocks
        .block_list(blob)?
        .map(|(_, list)| list.into_iter().map(|(id, _)| id).collect())
        .unwrap_or_default();
    let chunk = chunk_size_for(len);
    let mut source = File::open(file)?;
    let bar = progress(len, "push");
    let mut ids = Vec::new();
    let mut sent = 0;
    let mut renewed = Instant::now();
    let mut offset = 0;
    while offset < len {
        let size = chunk.min(len - offset);
        let mut data = vec![0u8; size as usize];
        source.read_exact(&mut data)?;
        let id = ChunkId::new(ids.len() as u32, &data).as_bytes().to_vec();
        if !have.contains(&id) {
            if renewed.elapsed() > PUSH_LEASE / 3 {
                backend.renew_lease(blob, &lease.id, PUSH_LEASE)?;
                renewed = Instant::now();
            }
            blocks.stage_block(blob, &id, data, Some(&lease.id))?;
            sent += 1;
        }
        ids.push(id);
        offset += size;
        bar.set_position(offset);
    }
    bar.finish();
    let stat = blocks.commit_blocks(blob, &ids, &condition, Some(&lease.id))?;
    Ok((stat, sent, ids.len()))
}

/// Open `file` as a plain SQLite database and check it is one.
fn check_database(file: &Path) -> Result<rusqlite::Connection> {
    let mut header = [0u8; 16];
    let read = File::open(file)
        .with_context(|| format!("opening {}", file.display()))?
        .read(&mut header)?;
    if &header[..read] != b"SQLite format 3\0" {
        bail!(
            "{} is not a SQLite database (no SQLite header)",
            file.display()
        );
    }
    for (suffix, what) in [
        ("-journal", "a hot journal (an interrupted transaction)"),
        ("-wal", "a write-ahead log"),
    ] {
        let mut side = file.as_os_str().to_owned();
        side.push(suffix);
        if std::fs::metadata(&side).is_ok_and(|m| m.len() > 0) {
            bail!(
                "{} has {what} beside it: open it with sqlite3 once (and `PRAGMA journal_mode=DELETE`) so it is one self-contained file",
                file.display()
            );
        }
    }
    let conn =
        rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .with_context(|| format!("{} is not a usable SQLite database", file.display()))?;
    if check != "ok" {
        bail!("{} fails PRAGMA quick_check: {check}", file.display());
    }
    Ok(conn)
}

/// A connection to `cache` through the VFS.
fn open_managed(target: &Target, cache: &Path) -> Result<rusqlite::Connection> {
    open_managed_uri(&target.vfs_uri(cache), cache)
}

/// A connection to `cache` through the VFS, by its URI.
fn open_managed_uri(uri: &str, cache: &Path) -> Result<rusqlite::Connection> {
    managedblob::register()?;
    let conn = rusqlite::Connection::open_with_flags(
        uri,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .with_context(|| format!("opening cache {}", cache.display()))?;
    Ok(conn)
}

fn managed_status(conn: &rusqlite::Connection) -> Result<serde_json::Value> {
    let text: String = conn.query_row("PRAGMA managedblob_status", [], |r| r.get(0))?;
    Ok(serde_json::from_str(&text)?)
}

/// Bytes a running pull has downloaded: this process's download side files beside
/// `cache`, and for a `cold` pull (an empty cache) the cache file itself.
fn download_progress(cache: &Path, cold: bool) -> u64 {
    let streamed = match cold {
        true => std::fs::metadata(cache).map_or(0, |m| m.len()),
        false => 0,
    };
    streamed + side_file_bytes(cache)
}

/// Bytes of this process's download side files beside `cache`.
fn side_file_bytes(cache: &Path) -> u64 {
    let (Some(dir), Some(name)) = (cache.parent(), cache.file_name()) else {
        return 0;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(
        "{}-managedblob.download-{}-",
        name.to_string_lossy(),
        std::process::id()
    );
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}
