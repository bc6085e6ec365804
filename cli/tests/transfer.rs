//! `pull`, `export` and `push`: a round trip byte for byte, on a local remote and on
//! Azurite, and push's rules for replacing a blob.

mod common;

use std::path::Path;

use common::{cli, json_of, stderr, Remote};

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A plain SQLite file (no VFS) with `rows` rows.
fn plain_database(path: &Path, rows: u32) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS p(id INTEGER PRIMARY KEY, body BLOB)")
        .unwrap();
    for _ in 0..rows {
        conn.execute("INSERT INTO p(body) VALUES (randomblob(900))", [])
            .unwrap();
    }
}

fn pull_export_push_round_trip(remote: &Remote) {
    let work = tempfile::tempdir().unwrap();
    let r = remote.setting.as_str();

    // pull (cold) then export: both are the remote's version, byte for byte.
    remote.seed("app.db", 200);
    let cache = work.path().join("cache.db");
    let pulled = json_of(
        cli()
            .args([
                "--json", "pull", "--remote", r, "--blob", "app.db", "--cache",
            ])
            .arg(&cache),
    );
    assert_eq!(pulled["previous_etag"], serde_json::Value::Null);
    assert!(pulled["bytes_down"].as_u64().unwrap() > 200_000, "{pulled}");
    let out = work.path().join("export.db");
    let exported = json_of(
        cli()
            .args(["--json", "export", "--remote", r, "--blob", "app.db"])
            .arg(&out),
    );
    assert_eq!(exported["etag"], pulled["etag"]);
    assert_eq!(read(&out), read(&cache), "pulled cache == exported copy");
    // The same with the REMOTE/BLOB shorthand before OUT.
    let short = work.path().join("short.db");
    let by_shorthand = json_of(
        cli()
            .args(["--json", "export", &remote.shorthand("app.db")])
            .arg(&short),
    );
    assert_eq!(by_shorthand["etag"], pulled["etag"]);
    assert_eq!(
        read(&short),
        read(&cache),
        "REMOTE/BLOB OUT == --remote --blob OUT"
    );
    assert!(!work.path().join("export.db-managedblob.json").exists());
    cli()
        .args(["export", "--remote", r, "--blob", "app.db"])
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicates::str::contains("exists: pass --force"));

    // pull (warm) after another writer's commit.
    remote.seed("app.db", 5);
    let warm = json_of(
        cli()
            .args(["--json", "pull", "--cache"])
            .arg(&cache)
            .args(["--remote", r]),
    );
    assert_eq!(warm["previous_etag"], pulled["etag"]);
    assert_ne!(warm["etag"], pulled["etag"]);
    cli()
        .args(["export", "--force", "--remote", r, "--blob", "app.db"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(read(&out), read(&cache), "warm pull == export");

    // push a plain file as a new blob, export it: the same bytes.
    let plain = work.path().join("plain.db");
    plain_database(&plain, 150);
    let pushed = json_of(
        cli()
            .args(["--json", "push", "--remote", r, "--blob", "new.db"])
            .arg(&plain),
    );
    assert_eq!(pushed["chunks_sent"], pushed["chunks"]);
    let back = work.path().join("back.db");
    cli()
        .args(["export", "--remote", r, "--blob", "new.db"])
        .arg(&back)
        .assert()
        .success();
    assert_eq!(
        read(&back),
        read(&plain),
        "push then export is byte for byte"
    );

    // The blob exists now: push refuses without --if-match or --force.
    plain_database(&plain, 20);
    let etag = pushed["etag"].as_str().unwrap();
    cli()
        .args(["push", "--remote", r, "--blob", "new.db"])
        .arg(&plain)
        .assert()
        .failure()
        .stderr(predicates::str::contains(format!(
            "blob new.db exists (etag {etag}): pass --if-match {etag}"
        )));
    cli()
        .args([
            "push",
            "--remote",
            r,
            "--blob",
            "new.db",
            "--if-match",
            "stale",
        ])
        .arg(&plain)
        .assert()
        .failure()
        .stderr(predicates::str::contains("not stale; nothing pushed"));
    let replaced = json_of(
        cli()
            .args([
                "--json",
                "push",
                "--remote",
                r,
                "--blob",
                "new.db",
                "--if-match",
                etag,
            ])
            .arg(&plain),
    );
    assert_eq!(replaced["previous_etag"], etag);
    assert!(
        replaced["chunks_sent"].as_u64() < replaced["chunks"].as_u64(),
        "unchanged chunks are not sent again: {replaced}"
    );
    cli()
        .args(["export", "--force", "--remote", r, "--blob", "new.db"])
        .arg(&back)
        .assert()
        .success();
    assert_eq!(read(&back), read(&plain));

    // The pushed blob is in block-list form and opens through the VFS.
    let status = json_of(cli().args(["--json", "status", "--remote", r, "--blob", "new.db"]));
    assert_eq!(status["format"], "managedblob", "{status}");
    let conn = remote.open(&work.path().join("new.db"), "new.db");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM p", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 170);
    conn.execute("INSERT INTO p(body) VALUES (x'00')", [])
        .unwrap();

    // --force replaces whatever is there.
    cli()
        .args(["push", "--force", "--remote", r, "--blob", "new.db"])
        .arg(&plain)
        .assert()
        .success();
}

/// The last `--progress lines` line of `pull`: (bytes done, total).
fn pull_progress(out: &std::process::Output) -> (u64, u64) {
    let err = stderr(out);
    let last = err
        .lines()
        .rfind(|l| l.starts_with("pull: "))
        .unwrap_or_else(|| panic!("no progress line: {err}"));
    let counts = last
        .rsplit_once('(')
        .and_then(|(_, c)| c.strip_suffix(" bytes)"))
        .and_then(|c| c.split_once('/'))
        .unwrap_or_else(|| panic!("not a progress line: {last}"));
    (counts.0.parse().unwrap(), counts.1.parse().unwrap())
}

/// The first pull into an empty cache streams the blob into the cache file itself
/// (no side file): its progress counts those bytes up to the total (it stayed at
/// 0 B before). The cache's missing directories are made, mode 0700.
fn a_cold_pull_counts_its_bytes_into_a_new_directory(remote: &Remote) {
    use std::os::unix::fs::PermissionsExt;
    remote.seed("big.db", 3000);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("new/dir/big.db");
    let pull = || {
        cli()
            .args(["--progress", "lines", "pull", "--remote", &remote.setting])
            .args(["--blob", "big.db", "--cache"])
            .arg(&cache)
            .output()
            .unwrap()
    };
    let out = pull();
    assert!(out.status.success(), "{}", stderr(&out));
    let size = std::fs::metadata(&cache).unwrap().len();
    assert!(size > 3_000_000, "{size}");
    assert_eq!(pull_progress(&out), (size, size), "{}", stderr(&out));
    for dir in ["new", "new/dir"] {
        let mode = std::fs::metadata(work.path().join(dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{dir}");
    }
    // A current cache downloads nothing, and its progress says so.
    let again = pull();
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(pull_progress(&again), (0, size));
}

on_each_remote!(
    pull_export_push_round_trip,
    a_cold_pull_counts_its_bytes_into_a_new_directory
);

#[test]
fn push_refuses_a_file_that_is_not_sqlite() {
    let remote = Remote::local();
    let work = tempfile::tempdir().unwrap();
    let text = work.path().join("notes.txt");
    std::fs::write(&text, "hello, not a database").unwrap();
    let out = cli()
        .args(["push", "--remote", &remote.setting, "--blob", "x.db"])
        .arg(&text)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("is not a SQLite database (no SQLite header)"),
        "{err}"
    );
    assert!(!remote.dir().join("x.db").exists(), "nothing created");
}
