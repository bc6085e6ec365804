//! A lazy cache (`fetch=lazy`) through the command: `status --cache` shows what it
//! holds (its residency record), and `pull --all` fetches every chunk it lacks, on a
//! local remote and on Azurite.

mod common;

use std::path::Path;

use common::{cli, json_of, stderr, stdout, Remote};

/// Rows of about 1 KiB: some 10 chunks of 64 KiB.
const ROWS: u32 = 600;

/// What every row says, in order (a fingerprint of the data).
fn rows(remote: &Remote, cache: &Path, extra: &str) -> (i64, String) {
    let conn = remote.open_with(cache, "app.db", &format!("&lease_linger_ms=0{extra}"));
    conn.query_row(
        "SELECT count(*), group_concat(hex(substr(body, 1, 8)), '') FROM t",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

fn status(remote: &Remote, cache: &Path) -> serde_json::Value {
    let s = remote.status_json(cache);
    assert!(s["cache"]["residency"].is_object(), "{s}");
    s
}

fn present(s: &serde_json::Value) -> (u64, u64) {
    let r = &s["cache"]["residency"];
    (
        r["chunks_present"].as_u64().unwrap(),
        r["chunks_total"].as_u64().unwrap(),
    )
}

fn status_and_pull_all_of_a_lazy_cache(remote: &Remote) {
    remote.seed("app.db", ROWS);
    let work = tempfile::tempdir().unwrap();
    let (full, lazy) = (work.path().join("full.db"), work.path().join("app.db"));
    let want = rows(remote, &full, "");
    assert_eq!(want.0, i64::from(ROWS));
    // A point query on a lazy cache: a few chunks of many.
    {
        let conn = remote.open_with(&lazy, "app.db", "&lease_linger_ms=0&fetch=lazy");
        let _: i64 = conn
            .query_row("SELECT length(body) FROM t WHERE id = 500", [], |r| {
                r.get(0)
            })
            .unwrap();
    }

    let before = status(remote, &lazy);
    assert_eq!(before["cache"]["fetch"], "lazy", "{before}");
    let (some, total) = present(&before);
    assert!(total >= 8, "{before}");
    assert!((1..total).contains(&some), "{before}");
    let r = &before["cache"]["residency"];
    assert_eq!(r["chunk_size"], 65536, "{before}");
    assert_eq!(
        r["resident_bytes"].as_u64().unwrap(),
        some * 65536,
        "{before}"
    );
    let full_status = remote.status_json(&full);
    assert_eq!(full_status["cache"]["fetch"], "full", "{full_status}");
    assert!(full_status["cache"].get("residency").is_none());

    // The table says the same.
    let table = cli()
        .args(["status", "--remote", &remote.setting, "--cache"])
        .arg(&lazy)
        .output()
        .unwrap();
    let text = stdout(&table);
    assert!(
        text.contains(&format!("{some} of {total} chunks of 64.00 KiB:")),
        "{text}"
    );

    // pull --all fetches the rest, with a progress line up to the cache's size.
    let out = cli()
        .args(["--progress", "lines", "--json", "pull", "--all"])
        .args(["--remote", &remote.setting, "--cache"])
        .arg(&lazy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let pulled = common::json(&out);
    let size = std::fs::metadata(&lazy).unwrap().len();
    assert_eq!(pulled["chunks_present"], total, "{pulled}");
    assert_eq!(pulled["chunks_total"], total, "{pulled}");
    assert_eq!(pulled["chunks_fetched"], total - some, "{pulled}");
    assert_eq!(pulled["resident_bytes"], size, "{pulled}");
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("pull: ") && l.ends_with(&format!("({size}/{size} bytes)"))),
        "{err}"
    );

    let after = status(remote, &lazy);
    assert_eq!(present(&after), (total, total), "{after}");
    assert_eq!(after["cache"]["residency"]["resident_bytes"], size);
    assert_eq!(after["cache"]["staleness"], "current", "{after}");
    assert_eq!(rows(remote, &lazy, "&fetch=lazy"), want);

    // A current, whole cache: pull --all fetches nothing more.
    let again = json_of(
        cli()
            .args(["--json", "pull", "--all", "--remote", &remote.setting])
            .arg("--cache")
            .arg(&lazy),
    );
    assert_eq!(again["chunks_fetched"], 0, "{again}");
    assert_eq!(again["bytes_down"], 0, "{again}");
}

/// A cache that does not exist yet: `pull --all` makes a lazy cache with every chunk.
fn pull_all_into_a_new_cache(remote: &Remote) {
    remote.seed("app.db", ROWS);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("app.db");
    let out = cli()
        .args([
            "pull",
            "--all",
            "--remote",
            &remote.setting,
            "--blob",
            "app.db",
        ])
        .args(["--cache"])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("pulled every chunk"),
        "{}",
        stdout(&out)
    );
    let s = status(remote, &cache);
    let (present, total) = present(&s);
    assert_eq!(present, total, "{s}");
    assert_eq!(rows(remote, &cache, "&fetch=lazy").0, i64::from(ROWS));
}

on_each_remote!(
    status_and_pull_all_of_a_lazy_cache,
    pull_all_into_a_new_cache
);
