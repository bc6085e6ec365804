//! `managedblob break-lease` unblocks writers held off by a SIGKILLed writer's lease.
//!
//! On a local remote the backend itself reclaims the lease of a dead process of the
//! same host, so the test moves the lease record to "another host" (a writer on
//! another machine that died: nobody can prove it dead). On Azurite a killed writer's
//! lease simply stays until it expires.

mod common;

use std::path::Path;

use common::child::{self, Job};
use common::{cli, json, json_of, stderr, stdout, Remote};
use rusqlite::ErrorCode;

#[test]
fn child_process() {
    child::run_if_asked();
}

/// A write from a connection of its own: Ok, or the SQLite error code.
fn try_write(remote: &Remote, cache: &Path) -> Result<(), Option<ErrorCode>> {
    let conn = remote.open(cache, "app.db");
    conn.execute("INSERT INTO t(body) VALUES (x'01')", [])
        .map(|_| ())
        .map_err(|e| e.sqlite_error_code())
}

fn kill_writer_holding_the_lease(remote: &Remote, work: &Path) -> u32 {
    remote.seed("app.db", 10);
    let mut writer = child::spawn(Job::HoldLease, remote, &work.join("writer.db"), "app.db");
    let pid = writer.id();
    writer.kill().unwrap(); // SIGKILL
    writer.wait().unwrap();
    pid
}

#[test]
fn local_break_lease_unblocks_writers_after_a_killed_writer_on_another_host() {
    let remote = Remote::local();
    let work = tempfile::tempdir().unwrap();
    let pid = kill_writer_holding_the_lease(&remote, work.path());
    let target = remote.shorthand("app.db");

    // Same host: provably dead, and the next writer would reclaim it.
    let status = json(&cli().args(["--json", "status", &target]).output().unwrap());
    assert_eq!(status["lease"]["state"], "leased");
    assert_eq!(status["lease"]["holder_dead"], true, "{status}");

    // Make it another host's writer: then only expiry or break-lease ends it.
    let record_path = remote.dir().join(".app.db.mb-lease");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    assert_eq!(record["pid"], pid);
    record["host"] = "another-host".into();
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();

    let cache = work.path().join("other.db");
    assert_eq!(
        try_write(&remote, &cache),
        Err(Some(ErrorCode::DatabaseBusy))
    );
    let status = json(&cli().args(["--json", "status", &target]).output().unwrap());
    assert_eq!(
        status["lease"]["holder"],
        format!("pid {pid} on another-host")
    );
    assert_eq!(status["lease"]["holder_dead"], false);

    // No terminal to ask on and no --yes: refused, lease kept.
    let out = cli().args(["break-lease", &target]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("pass --yes"), "{}", stderr(&out));
    assert_eq!(
        try_write(&remote, &cache),
        Err(Some(ErrorCode::DatabaseBusy))
    );

    let out = cli()
        .args(["break-lease", "--yes", &target])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "broke the lease on blob app.db (held by pid {pid} on another-host, until "
        )),
        "{}",
        stdout(&out)
    );
    assert_eq!(try_write(&remote, &cache), Ok(()));
    let status = json(&cli().args(["--json", "status", &target]).output().unwrap());
    assert_eq!(status["lease"]["state"], "available");
}

#[test]
fn azurite_break_lease_unblocks_writers_after_a_killed_writer() {
    let Some(remote) = Remote::azurite() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    kill_writer_holding_the_lease(&remote, work.path());
    let cache = work.path().join("other.db");
    assert_eq!(
        try_write(&remote, &cache),
        Err(Some(ErrorCode::DatabaseBusy))
    );
    let r = remote.setting.as_str();
    let status = json_of(cli().args(["--json", "status", "--remote", r, "--blob", "app.db"]));
    assert_eq!(status["lease"]["state"], "leased", "{status}");
    assert_eq!(status["lease"]["duration"], "fixed");
    let out = cli()
        .args(["break-lease", "--yes", "--remote", r, "--blob", "app.db"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("broke the lease on blob app.db (held by an unknown holder"));
    assert_eq!(try_write(&remote, &cache), Ok(()));
}
