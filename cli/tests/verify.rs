//! `managedblob verify` passes on a healthy database and names the first bad chunk
//! or page after one byte is flipped in a local remote's blob or in a cache.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{cli, json, json_of, stdout, Remote};

/// The exit code of a verify that found a problem.
const VERIFY_FAILED: i32 = 3;

fn flip_byte(path: &Path, offset: u64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    file.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x5a;
    file.write_all_at(&b, offset).unwrap();
}

/// A database of several chunks, and a cache of it at the remote's version.
fn setup(remote: &Remote) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, cache, conn) = remote.seeded_cache("app.db", 300);
    drop(conn);
    (dir, cache)
}

fn healthy_database_verifies(remote: &Remote, cache: &Path) -> serde_json::Value {
    let out = cli()
        .args(["--json", "verify", "--remote", &remote.setting, "--cache"])
        .arg(cache)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let report = json(&out);
    assert_eq!(report["ok"], true);
    let checks: Vec<(&str, &str)> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["check"].as_str().unwrap(), c["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        checks,
        [
            ("block list", "ok"),
            ("chunk hashes", "ok"),
            ("integrity_check", "ok"),
            ("cache", "ok")
        ],
        "{report}"
    );
    report
}

/// Run `verify`, which must fail with [`VERIFY_FAILED`] and a report naming `finding`.
fn assert_verify_fails(verify: &mut assert_cmd::Command, finding: &str) {
    let out = verify.output().unwrap();
    assert_eq!(out.status.code(), Some(VERIFY_FAILED), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains(finding), "{text}");
}

fn a_flipped_cache_byte_is_caught(remote: &Remote, cache: &Path) {
    // Page 3, byte 100 of it.
    flip_byte(cache, 2 * 4096 + 100);
    assert_verify_fails(
        cli()
            .args(["verify", "--remote", &remote.setting, "--cache"])
            .arg(cache),
        "verify FAILED: cache: page 3 (byte 8292) of the cache differs",
    );
}

#[test]
fn local_verify_catches_a_flipped_byte_in_the_remote_and_in_the_cache() {
    let remote = Remote::local();
    let (_dir, cache) = setup(&remote);
    let report = healthy_database_verifies(&remote, &cache);
    let size = report["size"].as_u64().unwrap();
    assert!(size > 3 * 65536, "several chunks: {size}");

    a_flipped_cache_byte_is_caught(&remote, &cache);

    // One byte in the third 64 KiB chunk of the remote's blob.
    flip_byte(&remote.dir().join("app.db"), 2 * 65536 + 777);
    assert_verify_fails(
        cli().arg("verify").arg(remote.shorthand("app.db")),
        "verify FAILED: chunk hashes: chunk 2 (bytes 131072..196608, pages 33..=48) does not match its block id",
    );
    let report = json_of(
        cli()
            .args(["--json", "verify"])
            .arg(remote.shorthand("app.db")),
    );
    assert_eq!(report["ok"], false);
    assert_eq!(report["checks"][1]["result"], "failed");
}

#[test]
fn azurite_verify_passes_and_catches_a_flipped_cache_byte() {
    let Some(remote) = Remote::azurite() else {
        return;
    };
    let (_dir, cache) = setup(&remote);
    healthy_database_verifies(&remote, &cache);
    a_flipped_cache_byte_is_caught(&remote, &cache);
}
