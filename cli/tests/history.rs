//! `versions`, `export --as-of | --version` and `restore`, on a local remote and on
//! Azurite, with the `history` setting on: each commit listed; `--as-of` between two
//! commits gives the earlier one; a restore publishes the old content as the newest
//! version, another host opens it, and the replaced version stays in history.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{cli, json, json_of, stderr, Remote};
use managedblob::internal::backend::history::{format_time, parse_time};
use serde_json::Value;

/// The `versions --json` listing of `blob`.
fn versions(remote: &Remote, blob: &str) -> Vec<Value> {
    let listed = json_of(cli().args([
        "--json",
        "versions",
        "--remote",
        &remote.setting,
        "--blob",
        blob,
    ]));
    listed["versions"].as_array().unwrap().clone()
}

/// Rows of table `t` in the plain SQLite file `path` (checked for integrity first).
fn rows_in(path: &Path) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

/// A database `blob` with history on, after `commits` one-row commits (one version
/// each, plus the table's creation); the versions, oldest first.
fn committed(remote: &Remote, blob: &str, commits: u32) -> (tempfile::TempDir, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let conn = remote.open_with(&dir.path().join(blob), blob, "&history=100");
    conn.execute_batch("CREATE TABLE t(x)").unwrap();
    for i in 0..commits {
        // Apart by more than the listing's millisecond precision.
        std::thread::sleep(Duration::from_millis(20));
        conn.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
    }
    drop(conn);
    let listed = versions(remote, blob);
    (dir, listed)
}

fn export(remote: &Remote, blob: &str, pick: &[&str], out: &Path) -> std::process::Output {
    cli()
        .args([
            "--json",
            "export",
            "--remote",
            &remote.setting,
            "--blob",
            blob,
        ])
        .args(pick)
        .arg(out)
        .output()
        .unwrap()
}

fn versions_lists_every_commit(remote: &Remote) {
    let (_dir, listed) = committed(remote, "v.db", 3);
    assert_eq!(listed.len(), 4, "{listed:?}");
    for v in &listed {
        assert!(v["size"].as_u64().unwrap() > 0);
        assert!(v["unique_bytes"].as_u64().is_some());
        assert!(parse_time(v["time"].as_str().unwrap()).is_some(), "{v}");
    }
    let text = cli()
        .args(["versions", "--remote", &remote.setting, "--blob", "v.db"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        listed
            .iter()
            .all(|v| shown.contains(v["id"].as_str().unwrap())),
        "{shown}"
    );
}

fn export_as_of_between_two_commits_gives_the_earlier(remote: &Remote) {
    let (dir, listed) = committed(remote, "a.db", 3);
    let time = |i: usize| parse_time(listed[i]["time"].as_str().unwrap()).unwrap();
    // Between the commit of row 1 (version 2) and that of row 2 (version 3).
    let between = time(2) + (time(3).duration_since(time(2)).unwrap() / 2);
    let out = dir.path().join("asof.db");
    let done = export(remote, "a.db", &["--as-of", &format_time(between)], &out);
    assert!(done.status.success(), "{}", stderr(&done));
    assert_eq!(json(&done)["version"]["id"], listed[2]["id"]);
    assert_eq!(rows_in(&out), 2);

    let by_id = dir.path().join("byid.db");
    let id = listed[1]["id"].as_str().unwrap();
    assert!(export(remote, "a.db", &["--version", id], &by_id)
        .status
        .success());
    assert_eq!(rows_in(&by_id), 1);

    let too_early = export(
        remote,
        "a.db",
        &["--as-of", "2000-01-01T00:00:00Z"],
        &dir.path().join("x.db"),
    );
    assert!(!too_early.status.success());
    let error = json(&too_early)["error"].as_str().unwrap().to_string();
    assert!(error.contains("no version as of"), "{error}");
}

fn restore_then_open_on_another_host(remote: &Remote) {
    let (_dir, listed) = committed(remote, "r.db", 3);
    let first_row = listed[1]["id"].as_str().unwrap().to_string();
    let newest = listed[3]["id"].as_str().unwrap().to_string();
    let restored = json_of(
        cli()
            .args([
                "--json",
                "restore",
                "--remote",
                &remote.setting,
                "--blob",
                "r.db",
            ])
            .args(["--version", &first_row]),
    );
    assert_eq!(restored["restored"]["id"], first_row.as_str(), "{restored}");

    // Another host sees the restored content.
    let host2 = tempfile::tempdir().unwrap();
    let conn = remote.open(&host2.path().join("r.db"), "r.db");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);

    // The replaced version stays in history, and the restore is the newest version.
    let after = versions(remote, "r.db");
    let ids: Vec<&str> = after.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&newest.as_str()), "{ids:?}");
    let work = tempfile::tempdir().unwrap();
    let old = work.path().join("old.db");
    assert!(export(remote, "r.db", &["--version", &newest], &old)
        .status
        .success());
    assert_eq!(rows_in(&old), 3);
    let latest = work.path().join("latest.db");
    let id = ids.last().unwrap();
    assert!(export(remote, "r.db", &["--version", id], &latest)
        .status
        .success());
    assert_eq!(rows_in(&latest), 1);
}

fn restore_needs_a_version(remote: &Remote) {
    let (_dir, _) = committed(remote, "n.db", 1);
    let out = cli()
        .args(["restore", "--remote", &remote.setting, "--blob", "n.db"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--as-of"), "{}", stderr(&out));
    let both = cli()
        .args(["restore", "--remote", &remote.setting, "--blob", "n.db"])
        .args(["--version", "x", "--as-of", "2026-01-01T00:00:00Z"])
        .output()
        .unwrap();
    assert!(
        !both.status.success(),
        "--version and --as-of exclude each other"
    );
}

on_each_remote!(
    versions_lists_every_commit,
    export_as_of_between_two_commits_gives_the_earlier,
    restore_then_open_on_another_host,
    restore_needs_a_version,
);
