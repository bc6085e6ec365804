//! The main job: two "hosts", each with its own cache, share one remote database.
//!
//!     cargo run --example two_hosts [-- <work dir>]
//!
//! The remote is a local directory (the embedded default). With
//! `MANAGEDBLOB_EXAMPLE_BACKEND=azure` it is the Azure container named by
//! `MANAGEDBLOB_EXAMPLE_URL` (`https://<account>.blob.core.windows.net/<container>`,
//! or Azurite's `http://127.0.0.1:10000/devstoreaccount1/<container>`), with
//! credentials from the usual places (a SAS in the URL,
//! AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY, or Entra ID); build with
//! `--features azure` for that.
//!
//! It prints what each step cost in remote requests and bytes: a cold open (the
//! cache is empty, the database is downloaded), a warm open (the etag matches,
//! nothing is downloaded), one autocommit insert, and a 100-commit batch that
//! uploads once.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

/// Percent-encode a URI parameter value (a SAS token holds `&` and `=`).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Open `cache` over `remote`. The two hosts take turns writing, each keeping its
/// connection open: with the default `lease_linger_ms` (1 s) each would wait out the
/// other's warm lease, and host A's batch would fail at `managedblob_batch=begin`
/// while host B's lease is warm. `lease_linger_ms=0` is the README's setting for
/// hosts that take turns: each commit gives the lease back at once.
fn open(cache: &Path, remote: &str) -> rusqlite::Result<Connection> {
    let uri = format!(
        "file:{}?vfs=managedblob&remote={}&lease_linger_ms=0",
        cache.display(),
        encode(remote)
    );
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI,
    )
}

fn status(c: &Connection) -> Value {
    let text: String = c
        .query_row("PRAGMA managedblob_status", [], |r| r.get(0))
        .expect("managedblob_status");
    serde_json::from_str(&text).expect("status is JSON")
}

/// The counters of a status report: requests, versions published, versions taken
/// in, bytes up, bytes down.
fn counters(s: &Value) -> [u64; 5] {
    let r = &s["requests"];
    let g = |k: &str| r[k].as_u64().unwrap_or(0);
    [
        g("total"),
        g("versions_up"),
        g("versions_down"),
        g("bytes_up"),
        g("bytes_down"),
    ]
}

fn row(step: &str, before: [u64; 5], after: [u64; 5]) {
    let d: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    println!(
        "| {step:<34} | {:>8} | {:>7} | {:>9} | {:>9} | {:>10} |",
        d[0], d[1], d[2], d[3], d[4]
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    managedblob::register()?;
    let work: PathBuf = match std::env::args().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("managedblob-demo-{}", std::process::id())),
    };
    let (host_a, host_b) = (work.join("host-a"), work.join("host-b"));
    for dir in [&host_a, &host_b] {
        std::fs::create_dir_all(dir)?;
    }
    let remote = match std::env::var("MANAGEDBLOB_EXAMPLE_BACKEND").as_deref() {
        Ok("azure") => std::env::var("MANAGEDBLOB_EXAMPLE_URL").map_err(|_| {
            "MANAGEDBLOB_EXAMPLE_BACKEND=azure needs MANAGEDBLOB_EXAMPLE_URL=<container URL>"
        })?,
        Ok("local") | Err(_) => {
            let dir = work.join("remote");
            std::fs::create_dir_all(&dir)?;
            dir.display().to_string()
        }
        Ok(other) => {
            return Err(format!("MANAGEDBLOB_EXAMPLE_BACKEND={other}: use local or azure").into())
        }
    };
    let cache_a = host_a.join("corpus.db");
    let cache_b = host_b.join("corpus.db");
    let shown = remote.split('?').next().unwrap_or_default();
    println!("remote:           {shown}");
    println!(
        "caches:           {} and {}\n",
        cache_a.display(),
        cache_b.display()
    );
    println!(
        "| {:<34} | {:>8} | {:>7} | {:>9} | {:>9} | {:>10} |",
        "step", "requests", "uploads", "downloads", "bytes up", "bytes down"
    );
    println!(
        "|{:-<36}|{:->10}|{:->9}|{:->11}|{:->11}|{:->12}|",
        "", "", "", "", "", ""
    );

    // Host A creates the database: one transaction, one upload.
    let a = open(&cache_a, &remote)?;
    let before = counters(&status(&a));
    a.execute_batch(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS docs(id INTEGER PRIMARY KEY, body TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
         INSERT INTO docs(body) SELECT printf('document %d ', i) || hex(randomblob(400)) FROM n;
         COMMIT;",
    )?;
    row(
        "host A: create + 2000 rows (1 txn)",
        before,
        counters(&status(&a)),
    );

    // Host B opens cold: its cache is empty, so the database is downloaded once.
    let b = open(&cache_b, &remote)?;
    let s = status(&b);
    row("host B: cold open", [0; 5], counters(&s));
    let n: i64 = b.query_row("SELECT count(*) FROM docs", [], |r| r.get(0))?;
    drop(b);

    // Host B opens again: the etag matches, nothing is downloaded.
    let b = open(&cache_b, &remote)?;
    row("host B: warm open", [0; 5], counters(&status(&b)));

    // One autocommit insert on host B: lease, conditional upload, release.
    let before = counters(&status(&b));
    b.execute("INSERT INTO docs(body) VALUES ('from host B')", [])?;
    row(
        "host B: one autocommit insert",
        before,
        counters(&status(&b)),
    );

    // A batch of 100 commits on host A: the lease is held throughout, one upload at the end.
    let before = counters(&status(&a));
    a.execute_batch("PRAGMA managedblob_batch=begin")?;
    for i in 0..100 {
        a.execute(
            "INSERT INTO docs(body) VALUES (?1)",
            [format!("batch row {i}")],
        )?;
    }
    a.execute_batch("PRAGMA managedblob_batch=end")?;
    row("host A: 100-commit batch", before, counters(&status(&a)));

    let total: i64 = a.query_row("SELECT count(*) FROM docs", [], |r| r.get(0))?;
    println!("\nhost B read {n} rows at its cold open; the remote now holds {total} rows.");
    println!("host A status: {}", status(&a));
    Ok(())
}
