//! `managedblob status` before and after a commit, on a local remote and on Azurite.

mod common;

use common::{cli, json_of, Remote};

fn status_before_and_after_a_commit(remote: &Remote) {
    let (_cache_dir, cache, conn) = remote.seeded_cache("app.db", 50);

    let before = remote.status_json(&cache);
    assert_eq!(before["blob"], "app.db");
    assert_eq!(before["format"], "managedblob", "{before}");
    assert!(before["chunks"].as_u64().unwrap() >= 1);
    assert_eq!(before["lease"]["state"], "available");
    assert_eq!(before["cache"]["staleness"], "current");
    assert_eq!(before["cache"]["etag"], before["etag"]);
    assert_eq!(before["cache"]["dirty"], false);

    conn.execute("INSERT INTO t(body) VALUES (randomblob(70000))", [])
        .unwrap();
    let after = json_of(
        cli()
            .args(["--json", "status", "--cache"])
            .arg(&cache)
            .args(["--remote", &remote.setting]),
    );
    assert_ne!(
        after["etag"], before["etag"],
        "a commit publishes a new version"
    );
    assert!(after["size"].as_u64() > before["size"].as_u64());
    assert_eq!(after["cache"]["etag"], after["etag"]);
    assert_eq!(after["cache"]["staleness"], "current");
    assert!(after["cache"]["generation"].as_u64() > before["cache"]["generation"].as_u64());

    // Another writer commits: this cache is now behind.
    remote.seed("app.db", 1);
    let behind = remote.status_json(&cache);
    assert_eq!(behind["cache"]["staleness"], "behind", "{behind}");

    // The human table says the same things.
    let table = cli()
        .args(["status", "--remote", &remote.setting, "--blob", "app.db"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&table.get_output().stdout).into_owned();
    assert!(text.contains("managedblob block list"), "{text}");
    assert!(text.contains(behind["etag"].as_str().unwrap()), "{text}");
    assert!(
        text.contains("lease") && text.contains("available"),
        "{text}"
    );
}

on_each_remote!(status_before_and_after_a_commit);

#[test]
fn status_shows_a_lease_holder_on_a_local_remote() {
    let remote = Remote::local();
    remote.seed("app.db", 1);
    let cache_dir = tempfile::tempdir().unwrap();
    let conn = remote.open(&cache_dir.path().join("app.db"), "app.db");
    conn.execute_batch("PRAGMA managedblob_batch=begin")
        .unwrap();
    let held = json_of(
        cli()
            .args(["--json", "status"])
            .arg(format!("{}/app.db", remote.setting)),
    );
    assert_eq!(held["lease"]["state"], "leased", "{held}");
    let holder = held["lease"]["holder"].as_str().unwrap();
    assert!(
        holder.starts_with(&format!("pid {} on ", std::process::id())),
        "{holder}"
    );
    assert_eq!(held["lease"]["holder_dead"], false);
    assert!(held["lease"]["expires"].as_str().unwrap().ends_with('Z'));
    conn.execute_batch("PRAGMA managedblob_batch=end").unwrap();
}
