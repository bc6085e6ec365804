//! What the lazy-fetch tests share (`tests/lazy_fetch.rs`, `tests/lazy_sharing.rs`):
//! the database they read and a few questions about a lazy cache.
#![allow(dead_code)]

use common::*;
use rusqlite::Connection;
use serde_json::Value;

/// Rows of [`ROW`] random bytes: about 16.5 MiB, some 260 chunks of 64 KiB.
pub const ROWS: i64 = 1000;
pub const ROW: i64 = 16384;

/// `a.db`, written by host `h1` (a full cache). Returns its size.
pub fn build(w: &World) -> (Connection, u64) {
    let c = w.open("h1", "a.db");
    c.execute_batch(&format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO t SELECT i, randomblob({ROW}) FROM n;"
    ))
    .unwrap();
    let size: i64 = c
        .query_row(
            "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (c, size as u64)
}

pub fn lazy(w: &World, host: &str, extra: &str) -> Connection {
    w.open_with(host, "a.db", &format!("&fetch=lazy{extra}"))
}

pub fn reads(c: &Connection) -> u64 {
    requests(c, "read_range")
}

pub fn residence(s: &Value) -> (u64, u64) {
    let r = &s["residence"];
    (
        r["chunks_present"]
            .as_u64()
            .unwrap_or_else(|| panic!("{s}")),
        r["chunks_total"].as_u64().unwrap_or_else(|| panic!("{s}")),
    )
}

pub fn head(c: &Connection, id: i64) -> rusqlite::Result<String> {
    c.query_row(
        "SELECT hex(substr(b, 1, 8)) FROM t WHERE id = ?1",
        [id],
        |r| r.get(0),
    )
}

/// Bytes of disk the file takes (a sparse file takes less than its length).
pub fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}
