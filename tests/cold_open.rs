//! A cold open (an empty cache) takes the remote straight into the cache: each byte
//! is written once and no side file is left. A process killed during that download
//! leaves a cache marked in flight, which the next open downloads again whole: it is
//! never served half written, never uploaded as local commits.

use common::child;
use common::*;

use std::time::Duration;

/// Entry point of every child process; returns at once in a normal test run.
#[test]
fn child_main() {
    child::child_main(&[("cold_open", cold_open)]);
}

/// `cold_open`: open the database (a cold cache: the open downloads it) and read it.
fn cold_open(uri: &str) {
    child::say("OPENING");
    let c = open(uri);
    child::say(&format!("OPENED {}", count(&c, "t")));
    child::sleep_while_parent_alive(Duration::from_secs(60));
}

/// Rows of [`ROW`] random bytes in the test database.
const ROWS: i64 = 3000;
const ROW: i64 = 4000;

/// Database `a.db` of about 12 MiB (three of the Azure SDK's 4 MiB download
/// partitions), created on host `h1`. Returns its size in bytes.
fn build(w: &World) -> u64 {
    let c = w.open("h1", "a.db");
    c.execute_batch(&format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO t SELECT i, randomblob({ROW}) FROM n;"
    ))
    .unwrap();
    drop(c);
    std::fs::metadata(w.remote_copy("a.db")).unwrap().len()
}

/// Bytes this thread has written through system calls so far (`wchar` of
/// /proc/thread-self/io): the tests of this file run on threads of one process.
fn bytes_written_by_this_thread() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .expect("wchar in /proc/thread-self/io")
        .trim()
        .parse()
        .unwrap()
}

fn remote_etag(w: &World) -> String {
    w.with_backend(|b| b.stat("a.db").unwrap().expect("the blob exists").etag.0)
}

/// The cold open of host `h2`, in both transfer modes: the bytes written are the
/// database once (plus the sidecar), not twice (a side file, then the cache).
fn writes_each_byte_once(w: &World) {
    let size = build(w);
    for (host, extra) in [("h2", "&sync=delta"), ("h3", "&sync=full")] {
        let before = bytes_written_by_this_thread();
        let c = w.open_with(host, "a.db", extra);
        let written = bytes_written_by_this_thread() - before;
        assert_eq!(count(&c, "t"), ROWS, "{extra}");
        assert!(
            written >= size && written < size + size / 10,
            "{extra}: a cold open of {size} bytes wrote {written} bytes ({:.2}x)",
            written as f64 / size as f64
        );
        let s = status(&c);
        assert_eq!(s["in_flight"], "none", "{extra}: {s}");
        assert_eq!(s["etag"], remote_etag(w), "{extra}: {s}");
        assert_eq!(uploads(&s), 0, "{extra}: {s}");
        let cache_dir = w.cache(host, "a.db").parent().unwrap().to_path_buf();
        assert_eq!(
            files_with(&cache_dir, "-managedblob.download-"),
            Vec::<std::path::PathBuf>::new(),
            "{extra}: no side file"
        );
        assert_eq!(integrity(&c), "ok");
    }
}

#[test]
fn local_cold_open_writes_each_byte_once() {
    writes_each_byte_once(&World::local());
}

#[cfg(feature = "azure")]
#[test]
fn azurite_cold_open_writes_each_byte_once() {
    if let Some(w) = World::azurite() {
        writes_each_byte_once(&w);
    }
}

/// The start of the byte range a GET asks for (`x-ms-range` or `range`).
#[cfg(feature = "azure")]
fn range_start(r: &common::http_proxy::Request) -> Option<u64> {
    let range = r.header("x-ms-range").or_else(|| r.header("range"))?;
    range
        .strip_prefix("bytes=")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// A child opens a cold cache through a proxy that lets the first 4 MiB of the
/// download through and holds the rest back; it is killed with part of the
/// database in its cache. The next open downloads it again: the whole remote, the
/// remote untouched (nothing uploaded), the sidecar clean.
#[cfg(feature = "azure")]
#[test]
fn a_process_killed_during_the_cold_download_leaves_a_cache_the_next_open_downloads_again() {
    use common::child::Proc;
    use common::http_proxy::{Fate, HttpProxy};
    use std::time::Instant;
    let Some(w) = World::azurite() else { return };
    let size = build(&w);
    let etag = remote_etag(&w);

    // The remote URL, through the proxy.
    let direct = w.remote_value();
    let rest = direct.strip_prefix("http://127.0.0.1:").unwrap();
    let (port, path) = rest.split_once('/').unwrap();
    let proxy = HttpProxy::start(([127, 0, 0, 1], port.parse().unwrap()).into());
    proxy.set_rule(|r| match range_start(r) {
        Some(start) if r.method == "GET" && start > 0 => Fate::Slow(Duration::from_secs(90)),
        _ => Fate::Forward,
    });
    let via_proxy = format!("http://{}/{path}", proxy.addr);
    let cache = w.cache("h2", "a.db");
    let mut child = Proc::spawn(
        "cold",
        "cold_open",
        &uri_with_remote(&cache, &via_proxy, ""),
        &[],
    );
    child.expect("OPENING", Duration::from_secs(30));

    // Wait until the download has written into the cache, then kill it there.
    let deadline = Instant::now() + Duration::from_secs(60);
    let torn = loop {
        let marked = sidecar_of(&cache).is_some_and(|s| s["in_flight"] == "download");
        let len = std::fs::metadata(&cache).map_or(0, |m| m.len());
        if marked && len > 0 {
            break len;
        }
        assert!(
            Instant::now() < deadline,
            "the cold download never wrote into the cache under an in-flight marker \
             (sidecar {:?}, cache {len} bytes); child output:\n{}",
            sidecar_of(&cache),
            child.output()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    child.sigkill();
    assert!(
        torn < size,
        "killed with {torn} of {size} bytes in the cache"
    );
    assert_eq!(sidecar(&cache)["in_flight"], "download");
    assert!(files_with(cache.parent().unwrap(), "-managedblob.download-").is_empty());

    // The next open (direct) downloads it again.
    let c = w.open("h2", "a.db");
    assert_eq!(count(&c, "t"), ROWS);
    assert_eq!(integrity(&c), "ok");
    let s = status(&c);
    assert_eq!(s["in_flight"], "none", "{s}");
    assert_eq!(s["dirty"], false, "{s}");
    assert_eq!(s["etag"], etag, "{s}");
    assert_eq!(uploads(&s), 0, "never uploaded as a local change: {s}");
    assert_eq!(std::fs::metadata(&cache).unwrap().len(), size);
    drop(c);
    assert_eq!(remote_etag(&w), etag, "the remote was not written");
    let c = w.open("h1", "a.db");
    assert_eq!(count(&c, "t"), ROWS);
    drop(proxy);
}
