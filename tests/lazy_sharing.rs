//! `fetch=lazy` with several processes sharing one lazy cache (docs/ARCHITECTURE.md,
//! "Lazy fetch": the residency record's header, looked at in a mapping at each SHARED
//! lock, and eviction's two steps, mark and punch). Local remote only: what is
//! shared is the cache, not the remote.

use common::child::{self, Proc};
use common::*;
use rusqlite::Connection;
use std::time::Duration;

mod lazy;
use lazy::*;

/// Entry point of every child process; returns at once in a normal test run.
#[test]
fn child_main() {
    child::child_main(&[
        ("lazy_reader", lazy_reader),
        ("lazy_heads", lazy_heads),
        ("long_reader", long_reader),
    ]);
}

/// Bytes from inside every seventh row (past its first overflow page), as hex: a
/// read of chunks all over the database.
const SAMPLE: &str = "SELECT group_concat(hex(substr(b, 12000, 8)), '') FROM t WHERE id % 7 = 0";

/// `long_reader`: open the lazy cache with a tiny page cache (so that reading again
/// reads the file again), begin a read transaction, say the sample, and at the go
/// file `<GO_FILE>1` say it again in the same transaction; end it; at `<GO_FILE>2`
/// say it once more in a new transaction.
fn long_reader(uri: &str) {
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.execute_batch("PRAGMA cache_size = 1").unwrap();
    let sample = |c: &Connection| -> String {
        c.query_row(SAMPLE, [], |r| r.get(0))
            .unwrap_or_else(|e| format!("error {e}"))
    };
    c.execute_batch("BEGIN").unwrap();
    child::say(&format!("SAMPLE {}", sample(&c)));
    child::wait_for_file(
        &format!("{}1", child::env("GO_FILE")),
        Duration::from_secs(60),
    );
    child::say(&format!("SAMPLE {}", sample(&c)));
    c.execute_batch("COMMIT").unwrap();
    child::say("ENDED");
    child::wait_for_file(
        &format!("{}2", child::env("GO_FILE")),
        Duration::from_secs(60),
    );
    child::say(&format!("SAMPLE {}", sample(&c)));
}

/// `lazy_heads`: open the lazy cache, say the head of row `ROW_ID`, then at each go
/// file `<GO_FILE>1`, `<GO_FILE>2` ... (up to `ROUNDS`) say it again, each in a
/// read transaction of its own.
fn lazy_heads(uri: &str) {
    let c = open(uri);
    let id: i64 = child::env_num("ROW_ID");
    let say_head = |c: &Connection| match head(c, id) {
        Ok(h) => child::say(&format!("HEAD {h}")),
        Err(e) => child::say(&format!("HEAD error {e}")),
    };
    say_head(&c);
    let rounds: u32 = child::env_num("ROUNDS");
    for n in 1..=rounds {
        let go = format!("{}{n}", child::env("GO_FILE"));
        child::wait_for_file(&go, Duration::from_secs(60));
        say_head(&c);
    }
}

/// `lazy_reader`: open the lazy cache, check it whole, say so, and keep it open
/// until told to go (the file `<uri's cache>.go` appears).
fn lazy_reader(uri: &str) {
    let c = open(uri);
    child::say(&format!("CHECKED {}", integrity(&c)));
    child::wait_for_file(&child::env("GO_FILE"), Duration::from_secs(60));
    child::say(&format!("CHECKED {}", integrity(&c)));
}

/// Two processes share one lazy cache: chunks one fetched are not fetched again by
/// the other; the bounded one drops chunks while the other has the cache open (and
/// gives their space back while the other is between read transactions), and the
/// other, reading everything again, still reads right.
#[test]
fn processes_sharing_a_lazy_cache() {
    let w = World::local();
    let (h1, _) = build(&w);
    drop(h1);
    let c = lazy(&w, "h2", "&cache_max=1MiB");
    let go = w.path("go");
    let mut other = Proc::spawn(
        "other",
        "lazy_reader",
        &w.uri("h2", "a.db", "&fetch=lazy"),
        &[("GO_FILE", go.display().to_string())],
    );
    assert_eq!(
        other.expect("CHECKED", Duration::from_secs(60)),
        "CHECKED ok"
    );
    let before = reads(&c);
    assert_eq!(integrity(&c), "ok");
    assert!(
        reads(&c) - before <= 2,
        "{} chunks fetched again after the other process fetched them all",
        reads(&c) - before
    );
    for _ in 0..2 {
        assert_eq!(integrity(&c), "ok");
    }
    let s = status(&c);
    assert!(
        s["residence"]["chunks_evicted"].as_u64().unwrap() > 0,
        "{s}"
    );
    let cache = w.cache("h2", "a.db");
    assert!(
        allocated(&cache) <= 2 << 20,
        "bounded to 1 MiB, the cache takes {} on disk",
        allocated(&cache)
    );
    std::fs::write(&go, b"").unwrap();
    assert_eq!(
        other.expect("CHECKED", Duration::from_secs(60)),
        "CHECKED ok"
    );
    other.wait_success(Duration::from_secs(30));
    assert_eq!(integrity(&c), "ok");
    let s = status(&c);
    assert!(
        s["residence"]["chunks_evicted"].as_u64().unwrap() > 0,
        "{s}"
    );
}

/// Two processes share one lazy cache; one of them takes in another host's commit
/// (a new base: the changed chunks go absent, their old bytes stay in the cache)
/// while the other has the cache open between read transactions and never checks
/// the remote itself (`staleness_ms` long). The other's next read transaction must
/// see the record's header move (a compare in its mapping of the header page, not
/// a read) and read the new row, never the stale bytes.
#[test]
fn a_base_moved_by_a_process_sharing_the_cache_is_seen_by_the_other() {
    let w = World::local();
    let (h1, _) = build(&w);
    let c = lazy(&w, "h2", "&staleness_ms=0");
    let go = w.path("go");
    let mut other = Proc::spawn(
        "other",
        "lazy_heads",
        &w.uri("h2", "a.db", "&fetch=lazy&staleness_ms=600000"),
        &[
            ("GO_FILE", go.display().to_string()),
            ("ROW_ID", "500".to_string()),
            ("ROUNDS", "1".to_string()),
        ],
    );
    let old = head(&h1, 500).unwrap();
    assert_eq!(
        other.expect("HEAD", Duration::from_secs(60)),
        format!("HEAD {old}")
    );
    h1.execute("UPDATE t SET b = zeroblob(?1) WHERE id = 500", [ROW])
        .unwrap();
    // This process takes the new version in (reading another row, so that the
    // changed chunk stays absent here: its old bytes are still in the cache).
    assert_eq!(head(&c, 1).unwrap(), head(&h1, 1).unwrap());
    let s = status(&c);
    assert!(s["etag"].is_string(), "{s}");
    assert_eq!(s["etag"], status(&h1)["etag"], "{s}");
    std::fs::write(format!("{}1", go.display()), b"").unwrap();
    assert_eq!(
        other.expect("HEAD", Duration::from_secs(60)),
        "HEAD 0000000000000000",
        "the other process read stale bytes of the old base"
    );
    other.wait_success(Duration::from_secs(30));
}

/// Two processes read one lazy cache bounded to 1 MiB (about 16 of its 260 chunks):
/// one holds a long read transaction while the other reads the whole database
/// again and again. The other drops chunks meanwhile (marks them absent), the
/// long transaction still reads right (their bytes stay until no read transaction
/// is open anywhere), and once it ended the space is given back: the cache file's
/// allocated blocks stay near the bound. Then the long reader's next transaction
/// fetches what was dropped and reads right again.
#[test]
fn processes_sharing_a_bounded_cache_evict_around_each_others_reads() {
    let w = World::local();
    let (h1, size) = build(&w);
    let want: String = h1.query_row(SAMPLE, [], |r| r.get(0)).unwrap();
    let bounded = "&fetch=lazy&cache_max=1MiB";
    let c = lazy(&w, "h2", "&cache_max=1MiB");
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let go = w.path("go");
    let mut other = Proc::spawn(
        "other",
        "long_reader",
        &w.uri("h2", "a.db", bounded),
        &[("GO_FILE", go.display().to_string())],
    );
    let sample = |p: &mut Proc| p.expect("SAMPLE", Duration::from_secs(60));
    assert_eq!(sample(&mut other), format!("SAMPLE {want}"));
    for _ in 0..2 {
        assert_eq!(integrity(&c), "ok");
    }
    let s = status(&c);
    assert!(
        s["residence"]["chunks_evicted"].as_u64().unwrap() > 0,
        "nothing dropped while another process has the cache open: {s}"
    );
    std::fs::write(format!("{}1", go.display()), b"").unwrap();
    assert_eq!(
        sample(&mut other),
        format!("SAMPLE {want}"),
        "the long read transaction read chunks dropped from under it"
    );
    other.expect("ENDED", Duration::from_secs(60));
    // A read transaction here ends with none open anywhere: the space goes back.
    assert_eq!(head(&c, 3).unwrap(), head(&h1, 3).unwrap());
    let cache = w.cache("h2", "a.db");
    assert!(
        allocated(&cache) <= 2 << 20,
        "the cache of {size} bytes bounded to 1 MiB takes {} on disk",
        allocated(&cache)
    );
    std::fs::write(format!("{}2", go.display()), b"").unwrap();
    assert_eq!(sample(&mut other), format!("SAMPLE {want}"));
    other.wait_success(Duration::from_secs(30));
    assert_eq!(integrity(&c), "ok");
}
