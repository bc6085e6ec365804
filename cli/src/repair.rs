//! `break-lease` (for a writer that died holding the lease where nobody can prove
//! it dead) and `sweep` (what killed processes left behind).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use managedblob::internal::config::parse_remote;
use managedblob::internal::ops::{self, sweep::SweepReport, LeaseState};
use serde_json::json;

use crate::address::Target;
use crate::output::{bytes, print_json};

pub fn break_lease(target: &Target, yes: bool, json: bool) -> Result<u8> {
    let Some(details) = ops::blob_details(&target.spec, &target.blob)? else {
        return Err(target.missing_blob());
    };
    let lease = details.lease;
    if !matches!(lease.state, LeaseState::Leased | LeaseState::Breaking) {
        if json {
            print_json(&json!({ "blob": target.blob, "broken": false, "lease": lease }));
        } else {
            println!("blob {} has no lease to break", target.blob);
        }
        return Ok(0);
    }
    let holder = lease
        .holder
        .clone()
        .unwrap_or_else(|| "an unknown holder (the store does not record who)".into());
    if !yes {
        confirm(&format!(
            "Break the lease on blob {} of {}, held by {holder}? A live writer holding it \
             will fail its next upload. [y/N] ",
            target.blob,
            target.shown_remote()
        ))?;
    }
    target.backend()?.break_lease(&target.blob)?;
    if json {
        print_json(&json!({ "blob": target.blob, "broken": true, "lease": lease }));
    } else {
        let until = lease
            .expires
            .as_deref()
            .map(|e| format!(", until {e}"))
            .unwrap_or_default();
        println!(
            "broke the lease on blob {} (held by {holder}{until})",
            target.blob
        );
    }
    Ok(0)
}

/// Ask on the terminal; refuse when there is none to ask on.
fn confirm(question: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to break a lease without confirmation: pass --yes (stdin is not a terminal to ask on)");
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => bail!("not confirmed; the lease is left alone"),
    }
}

pub fn sweep(remote: Option<&str>, caches: &[PathBuf], dry_run: bool, json: bool) -> Result<u8> {
    if remote.is_none() && caches.is_empty() {
        bail!("nothing to sweep: give --remote <dir|container URL> and/or --cache <path>");
    }
    let mut report = SweepReport::default();
    if let Some(remote) = remote {
        let spec = parse_remote(remote).map_err(|why| anyhow!("--remote is invalid: {why}"))?;
        merge(&mut report, ops::sweep::sweep_remote(&spec, dry_run)?);
    }
    for cache in caches {
        merge(&mut report, ops::sweep::sweep_cache(cache, dry_run)?);
    }
    if json {
        print_json(&json!({
            "dry_run": dry_run,
            "files": report.found.len(),
            "bytes": report.bytes(),
            "found": report.found,
            "skipped": report.skipped,
            "notes": report.notes,
        }));
        return Ok(0);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} leftover(s), {}",
        report.found.len(),
        bytes(report.bytes())
    );
    for l in &report.found {
        println!("  {:>12}  {}  ({})", l.bytes, l.path.display(), l.what);
    }
    for s in &report.skipped {
        println!("  kept  {}: {}", s.path.display(), s.why);
    }
    for note in &report.notes {
        println!("  note: {note}");
    }
    Ok(0)
}

fn merge(into: &mut SweepReport, from: SweepReport) {
    into.found.extend(from.found);
    into.skipped.extend(from.skipped);
    into.notes.extend(from.notes);
}
