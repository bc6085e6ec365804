//! `managedblob sweep`: removes what killed processes left, keeps what a live one
//! may still use, and `--dry-run` lists without removing.

mod common;

use std::path::{Path, PathBuf};

use common::child::{self, Job};
use common::{cli, json, Remote};

#[test]
fn child_process() {
    child::run_if_asked();
}

/// Every leftover-looking file under `dir` (recursively): upload temps, staged
/// blocks, companion temps, download side files, sidecar temps.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let leftover = name.contains(".mb-tmp-")
            || name.ends_with(".mb-staged")
            || (name.contains(".mb-") && name.ends_with(".tmp"))
            || name.contains("-managedblob.download-")
            || name.contains("-managedblob.json.tmp-")
            || name.contains("-managedblob.manifest.tmp-");
        if leftover {
            found.push(path);
        } else if path.is_dir() {
            found.extend(leftovers(&path));
        }
    }
    found
}

/// A pid that no longer exists.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn sweep_json(args: &[&str], caches: &[&Path]) -> serde_json::Value {
    let mut cmd = cli();
    cmd.args(["--json", "sweep"]).args(args);
    for cache in caches {
        cmd.arg("--cache").arg(cache);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    json(&out)
}

#[test]
fn sweep_removes_dead_owners_leftovers_and_keeps_live_ones() {
    let remote = Remote::local();
    let dir = remote.dir();
    let work = tempfile::tempdir().unwrap();
    remote.seed("app.db", 20);
    let cache = work.path().join("app.db");
    drop(remote.open(&cache, "app.db"));

    // What killed writers leave: an upload temp, staged blocks, a companion temp...
    std::fs::write(
        dir.join(".app.db.mb-tmp-0123456789abcdef0123456789abcdef"),
        vec![7u8; 1000],
    )
    .unwrap();
    std::fs::create_dir(dir.join(".app.db.mb-staged")).unwrap();
    std::fs::write(dir.join(".app.db.mb-staged/00ff"), vec![7u8; 2000]).unwrap();
    std::fs::write(dir.join(".app.db.mb-etag.tmp"), vec![7u8; 50]).unwrap();
    // ...a dead process's download side file and an abandoned sidecar temp...
    let side = work.path().join(format!(
        "app.db-managedblob.download-{}-0000abcd",
        dead_pid()
    ));
    std::fs::write(&side, vec![7u8; 3000]).unwrap();
    std::fs::write(
        work.path().join("app.db-managedblob.json.tmp-1234abcd"),
        vec![7u8; 100],
    )
    .unwrap();
    // ...and a download side file whose owner (this test) is alive: kept.
    let live = work.path().join(format!(
        "app.db-managedblob.download-{}-00000001",
        std::process::id()
    ));
    std::fs::write(&live, vec![7u8; 10]).unwrap();
    // A blob leased by a live writer: its upload temp may be in use, kept.
    remote.seed("busy.db", 1);
    let busy = remote.open(&work.path().join("busy.db"), "busy.db");
    busy.execute_batch("PRAGMA managedblob_batch=begin")
        .unwrap();
    let busy_tmp = dir.join(".busy.db.mb-tmp-ffffffffffffffffffffffffffffffff");
    std::fs::write(&busy_tmp, vec![7u8; 500]).unwrap();

    let r = remote.setting.as_str();
    let dry = sweep_json(&["--dry-run", "--remote", r], &[&cache]);
    assert_eq!(dry["files"], 5, "{dry}");
    assert_eq!(dry["bytes"], 1000 + 2000 + 50 + 3000 + 100);
    assert_eq!(leftovers(&dir).len(), 4, "a dry run removes nothing");
    assert_eq!(leftovers(work.path()).len(), 3, "a dry run removes nothing");

    let swept = sweep_json(&["--remote", r], &[&cache]);
    assert_eq!(swept["bytes"], dry["bytes"]);
    let kept: Vec<PathBuf> = leftovers(&dir)
        .into_iter()
        .chain(leftovers(work.path()))
        .collect();
    assert_eq!(
        kept,
        vec![busy_tmp.clone(), live.clone()],
        "only live owners' files are left"
    );
    let skipped = swept["skipped"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .any(|s| s["why"].as_str().unwrap().contains("is leased by pid")),
        "{swept}"
    );

    busy.execute_batch("PRAGMA managedblob_batch=end").unwrap();
    drop(busy);
    std::fs::remove_file(&live).unwrap();
    // REMOTE as the positional argument, as --remote.
    let again = sweep_json(&[r], &[&cache]);
    assert_eq!(
        again["bytes"], 500,
        "the temp of a writer that is gone now: {again}"
    );
    assert!(leftovers(&dir).is_empty());

    // The database is intact.
    cli()
        .arg("verify")
        .arg(remote.shorthand("app.db"))
        .assert()
        .success();
}

#[test]
fn sweep_after_killed_writers_leaves_nothing_behind() {
    let remote = Remote::local();
    let work = tempfile::tempdir().unwrap();
    remote.seed("app.db", 1);
    let mut caches = Vec::new();
    // MB_SWEEP_KILLS=200 for the soak's count; CI runs a short version.
    let kills: u64 = std::env::var("MB_SWEEP_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    for round in 0..kills {
        let cache = work.path().join(format!("w{}/app.db", round % 2));
        std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
        let mut writer = child::spawn(Job::CommitLoop, &remote, &cache, "app.db");
        // Let it get into its next commits, at a point that varies.
        std::thread::sleep(std::time::Duration::from_millis(fastrand::u64(0..150)));
        writer.kill().unwrap();
        writer.wait().unwrap();
        caches.push(cache);
    }
    caches.sort();
    caches.dedup();
    let cache_refs: Vec<&Path> = caches.iter().map(|c| c.as_path()).collect();
    let swept = sweep_json(&["--remote", &remote.setting], &cache_refs);
    eprintln!(
        "after {kills} kills: swept {} files, {} bytes",
        swept["files"], swept["bytes"]
    );
    assert_eq!(swept["skipped"], serde_json::json!([]), "{swept}");
    let mut left = leftovers(&remote.dir());
    left.extend(leftovers(work.path()));
    assert!(left.is_empty(), "left behind: {left:?}");
    cli()
        .arg("verify")
        .arg(remote.shorthand("app.db"))
        .assert()
        .success();
}
