//! The status of a lazy cache (`residence` in `PRAGMA managedblob_status`): what it
//! holds (`chunks_present`, `resident_bytes`) and what this process's reads did
//! (`cache_hits`, `cache_misses`, `chunks_fetched`), on a real lazy workload, on the
//! local remote and on Azurite.

use common::*;
use rusqlite::Connection;
use serde_json::Value;

/// Rows of [`ROW`] random bytes: about 3 MiB, some 50 chunks of 64 KiB.
const ROWS: i64 = 200;
const ROW: i64 = 16000;

/// `a.db`, written by host `h1` (a full cache); the connection is kept open.
fn build(w: &World) -> Connection {
    let c = w.open("h1", "a.db");
    c.execute_batch(&format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO t SELECT i, randomblob({ROW}) FROM n;"
    ))
    .unwrap();
    c
}

fn head(c: &Connection, id: i64) -> String {
    c.query_row(
        "SELECT hex(substr(b, 1, 8)) FROM t WHERE id = ?1",
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

fn field(s: &Value, name: &str) -> u64 {
    s["residence"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no residence.{name}: {s}"))
}

/// `resident_bytes` is the sum of the present chunks' lengths: `chunk_size` each,
/// the last one (the database's end) shorter when it is present and short.
fn assert_resident_bytes(s: &Value, cache_len: u64) {
    let (present, size) = (field(s, "chunks_present"), field(s, "chunk_size"));
    let bytes = field(s, "resident_bytes");
    let last = cache_len - (field(s, "chunks_total") - 1) * size;
    assert!(
        bytes == present * size || bytes == (present - 1) * size + last,
        "{bytes} resident bytes for {present} chunks of {size} (last {last}): {s}"
    );
}

fn a_point_query_misses_once_then_hits(w: &World) {
    let h1 = build(w);
    let c = w.open_with("h2", "a.db", "&fetch=lazy");
    let len = std::fs::metadata(w.cache("h2", "a.db")).unwrap().len();
    let cold = status(&c);
    assert_eq!(
        field(&cold, "chunks_fetched"),
        1,
        "the open: chunk 0: {cold}"
    );
    assert_eq!(field(&cold, "chunks_present"), 1, "{cold}");
    assert_resident_bytes(&cold, len);

    // A point query on the cold cache: misses, and fetches what it read.
    assert_eq!(head(&c, 120), head(&h1, 120));
    let first = status(&c);
    let (misses, fetched) = (
        field(&first, "cache_misses"),
        field(&first, "chunks_fetched"),
    );
    assert!(misses > 0, "{first}");
    assert!(fetched > 1, "{first}");
    assert_eq!(
        fetched,
        requests(&c, "read_range"),
        "one ranged read per chunk: {first}"
    );
    assert!(
        field(&first, "chunks_present") < field(&first, "chunks_total"),
        "{first}"
    );
    assert_eq!(field(&first, "chunks_present"), fetched, "{first}");
    assert_resident_bytes(&first, len);

    // The same query again: every chunk it needs is present.
    assert_eq!(head(&c, 120), head(&h1, 120));
    let again = status(&c);
    assert!(
        field(&again, "cache_hits") > field(&first, "cache_hits"),
        "{again}"
    );
    assert_eq!(field(&again, "cache_misses"), misses, "{again}");
    assert_eq!(field(&again, "chunks_fetched"), fetched, "{again}");

    // A scan brings the rest: every chunk present, its bytes the whole file.
    let n: i64 = c
        .query_row("SELECT count(*) FROM t WHERE length(b) = ?1", [ROW], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, ROWS);
    let all = status(&c);
    assert_eq!(
        field(&all, "chunks_present"),
        field(&all, "chunks_total"),
        "{all}"
    );
    assert_eq!(field(&all, "resident_bytes"), len, "{all}");
    assert_eq!(
        field(&all, "chunks_fetched"),
        field(&all, "chunks_total"),
        "each chunk once: {all}"
    );
}

#[test]
fn local_a_point_query_misses_once_then_hits() {
    a_point_query_misses_once_then_hits(&World::local());
}

#[cfg(feature = "azure")]
#[test]
fn azurite_a_point_query_misses_once_then_hits() {
    if let Some(w) = World::azurite() {
        a_point_query_misses_once_then_hits(&w);
    }
}

/// `PRAGMA managedblob_fetch_all` is refused outside a read transaction; inside one
/// it makes every chunk present (the data the writer's), and on a full cache it does
/// nothing.
#[test]
fn fetch_all_fills_a_lazy_cache_inside_a_read_transaction() {
    let w = World::local();
    let h1 = build(&w);
    let c = w.open_with("h2", "a.db", "&fetch=lazy");
    let refused = pragma(&c, "PRAGMA managedblob_fetch_all").unwrap_err();
    assert!(
        refused.to_string().contains("read transaction"),
        "{refused}"
    );
    c.execute_batch("BEGIN").unwrap();
    let _: i64 = c
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        pragma(&c, "PRAGMA managedblob_fetch_all")
            .unwrap()
            .as_deref(),
        Some("ok")
    );
    c.execute_batch("COMMIT").unwrap();
    let s = status(&c);
    assert_eq!(
        field(&s, "chunks_present"),
        field(&s, "chunks_total"),
        "{s}"
    );
    assert_eq!(
        field(&s, "chunks_fetched"),
        field(&s, "chunks_total"),
        "{s}"
    );
    let reads = requests(&c, "read_range");
    assert_eq!(head(&c, 77), head(&h1, 77));
    assert_eq!(integrity(&c), "ok");
    assert_eq!(requests(&c, "read_range"), reads, "nothing left to fetch");
    h1.execute_batch("BEGIN").unwrap();
    let _: i64 = h1
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        pragma(&h1, "PRAGMA managedblob_fetch_all")
            .unwrap()
            .as_deref(),
        Some("ok"),
        "a full cache has nothing to fetch"
    );
    h1.execute_batch("COMMIT").unwrap();
}

/// The README's list of `residence` fields (Lazy fetch, "Status") is what a lazy
/// cache reports, without `cache_max` (`holes` is there only with it).
#[test]
fn residence_has_exactly_the_fields_the_readme_lists() {
    let w = World::local();
    let _h1 = build(&w);
    let c = w.open_with("h2", "a.db", "&fetch=lazy");
    let s = status(&c);
    let mut keys: Vec<String> = s["residence"]
        .as_object()
        .unwrap_or_else(|| panic!("{s}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    let mut want = vec![
        "chunks_present",
        "chunks_total",
        "chunk_size",
        "resident_bytes",
        "cache_hits",
        "cache_misses",
        "chunks_fetched",
        "chunks_evicted",
        "fetch_rounds",
    ];
    want.sort();
    assert_eq!(keys, want, "{s}");
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let listed = readme
        .split("- Status: `fetch`")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("README lists the residence fields");
    for key in want.iter().chain(&["holes"]) {
        assert!(
            listed.contains(&format!("`{key}`")),
            "README does not list {key}"
        );
    }
}
