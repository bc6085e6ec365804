//! Regression tests for bugs found in review: each test failed before its fix and
//! is named after what it protects.

use common::memworld::MemWorld;
use common::*;

use std::time::Duration;

/// Bug: two hosts creating the same new database raced at COMMIT: the loser got a
/// commit-time SQLITE_BUSY, which SQLite answers by keeping the transaction open for
/// a COMMIT retry that could never succeed. Now the first writer creates the blob
/// empty and takes its lease before writing, so the other host is refused at its
/// first write (busy_timeout applies) and the first COMMIT goes through. (A
/// commit-time BUSY, should one still happen, is SQLITE_BUSY_SNAPSHOT, which makes
/// SQLite roll back: see error.rs.)
#[test]
fn the_first_writer_of_a_new_database_holds_the_lease_so_no_create_race_at_commit() {
    let w = World::new();
    let a = w.open("h1", "a.db");
    a.execute_batch("BEGIN; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    // Another host tries to create the database meanwhile: refused, not raced.
    let b = w.open("h2", "a.db");
    b.busy_timeout(Duration::from_millis(200)).unwrap();
    let err = b.execute_batch("CREATE TABLE u(y);").unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy),
        "{err}"
    );
    a.execute_batch("COMMIT").unwrap();
    assert!(a.is_autocommit());
    b.busy_timeout(Duration::from_secs(5)).unwrap();
    b.execute_batch("CREATE TABLE u(y);").unwrap();
    let tables: i64 = w.read_remote("a.db", |r| {
        r.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap()
    });
    assert_eq!(tables, 2, "both hosts' tables, one after the other");
}

/// A memory world with quick retries, where host h1 (with `extra` settings) ran
/// `sql`; its connection stays open.
fn world_where_h1_ran(tag: &str, extra: &str, sql: &str) -> (MemWorld, rusqlite::Connection) {
    let m = MemWorld::with_defaults(tag, "&retry_base_ms=1");
    let c = m.open("h1", extra);
    c.execute_batch(sql).unwrap();
    // What the tests do next (another process's commit on this cache, host 2's
    // write) needs the lease: the one kept warm after this write goes back first.
    wait::until_lease_released(&c);
    (m, c)
}

/// The remote still holds the published version E2 (201 rows) that
/// [`leave_a_commit_crashed_after_its_upload`] left, or a later one built on it:
/// its row count.
fn published_version_kept(m: &MemWorld) -> i64 {
    let remote_rows: i64 = m.remote_query("SELECT count(*) FROM t");
    assert!(
        remote_rows >= 201,
        "the published version E2 (201 rows) was overwritten by a cache that did not start \
         from it: the remote now has {remote_rows} rows"
    );
    remote_rows
}

/// SQL creating table `t(x)` with `n` rows of about 200 bytes: `<label> 000...<i>`.
fn padded_rows(n: u32, label: &str) -> String {
    format!(
        "CREATE TABLE t(x);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
         INSERT INTO t SELECT printf('{label} %0200d', i) FROM n;"
    )
}

fn counter(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[24..28].try_into().unwrap())
}

/// Bug: image::adapt_header bumps the change counter only when it *equals* the old
/// cache's. After a conflict, the downloaded counter can be lower than the cache's and
/// equal to the one another connection's page cache remembers: that connection keeps
/// its stale pages, reads the discarded local version, and its next write publishes
/// a mix over the remote's version (a lost update).
#[test]
fn an_install_never_lowers_the_change_counter_so_no_connection_keeps_stale_pages() {
    install_never_lowers_the_change_counter(
        "&sync=full",
        managedblob::internal::backend::memory::Op::Upload,
    );
}

#[test]
fn a_chunk_install_never_lowers_the_change_counter_either() {
    install_never_lowers_the_change_counter(
        "",
        managedblob::internal::backend::memory::Op::CommitBlocks,
    );
}

fn install_never_lowers_the_change_counter(
    extra: &str,
    publish: managedblob::internal::backend::memory::Op,
) {
    let (m, y) = world_where_h1_ran(
        "r2",
        &format!("&staleness_ms=0{extra}"),
        "CREATE TABLE t(x TEXT); INSERT INTO t VALUES ('base');",
    );
    let base = m.backend.get("m.db").unwrap();
    let x = m.open("h1", &format!("&staleness_ms=0{extra}"));
    pragma(&y, "PRAGMA managedblob_batch=begin").unwrap();
    y.execute("UPDATE t SET x = 'local1'", []).unwrap();
    let seen: String = x.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(seen, "local1");
    y.execute("UPDATE t SET x = 'local2'", []).unwrap();
    // The batch end's upload fails (remote unreachable): the cache stays dirty and
    // the lease is released.
    m.backend.fail_next(
        publish,
        managedblob::internal::backend::BackendErrorKind::Transient,
        100,
    );
    assert!(pragma(&y, "PRAGMA managedblob_batch=end").is_err());
    m.backend.fail_next(
        publish,
        managedblob::internal::backend::BackendErrorKind::Transient,
        0,
    );
    // Another host commits one version on top of the base.
    let h2 = m.open("h2", extra);
    h2.execute("UPDATE t SET x = 'remote'", []).unwrap();
    let theirs = m.backend.get("m.db").unwrap();
    assert_eq!(counter(&theirs), counter(&base) + 1);
    let before = std::fs::read(m.cache("h1")).unwrap();
    // x's next read takes the remote (conflict copy made) ...
    let now: String = x.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
    let after = std::fs::read(m.cache("h1")).unwrap();
    assert!(
        counter(&after) > counter(&before),
        "the change counter only grows: {} -> {}",
        counter(&before),
        counter(&after)
    );
    // ... and x then writes.
    x.execute("INSERT INTO t VALUES ('x-wrote')", []).unwrap();
    let remote_rows = m.remote_query::<String>("SELECT group_concat(x, ',') FROM t");
    assert_eq!(
        now, "remote",
        "x read a discarded local version; remote now holds [{remote_rows}]"
    );
}

/// Leave the files of a process that crashed after uploading E2 (= E1 + 200 'T'
/// rows) and before SQLite deleted its journal: a spilled transaction's db file and
/// hot journal in the cache of host h1, and the sidecar commit_locked wrote.
fn leave_a_commit_crashed_after_its_upload(m: &MemWorld) {
    use managedblob::internal::backend::Backend;
    let e1 = m.backend.get("m.db").unwrap();
    let cache = m.cache("h1");

    // The crashed process: it had uploaded E2 (= E1 + 200 'T' rows) and died before
    // SQLite deleted its journal. Reproduce its files: a spilled transaction's db file
    // and hot journal, and the sidecar commit_locked wrote.
    let scratch = m.dir.path().join("scratch.db");
    std::fs::write(&scratch, &e1).unwrap();
    let s = rusqlite::Connection::open(&scratch).unwrap();
    s.execute_batch("PRAGMA cache_size=1; BEGIN;").unwrap();
    for _ in 0..200 {
        s.execute("INSERT INTO t VALUES (hex(randomblob(300)) || 'T')", [])
            .unwrap();
    }
    let journal = {
        let mut p = scratch.as_os_str().to_owned();
        p.push("-journal");
        std::path::PathBuf::from(p)
    };
    assert!(journal.exists(), "the transaction spilled");
    std::fs::write(&cache, std::fs::read(&scratch).unwrap()).unwrap();
    let mut cj = cache.as_os_str().to_owned();
    cj.push("-journal");
    std::fs::write(
        std::path::PathBuf::from(cj),
        std::fs::read(&journal).unwrap(),
    )
    .unwrap();
    s.execute_batch("COMMIT").unwrap();
    m.backend.put("m.db", &std::fs::read(&scratch).unwrap()); // E2, published
    let e2 = m.backend.stat("m.db").unwrap().unwrap().etag;
    let sp = managedblob::internal::sidecar::path_for(&cache);
    let mut sc = managedblob::internal::sidecar::load(&sp).unwrap().unwrap();
    sc.base = Some(e2.clone());
    sc.in_flight = managedblob::internal::sidecar::InFlight::Commit;
    sc.dirty = false;
    managedblob::internal::sidecar::store(&sp, &sc).unwrap();
    assert_eq!(
        m.remote_query::<String>("SELECT count(*) || '' FROM t"),
        "201"
    );
}

/// Bug: after a crash between a commit's upload and the end of SQLite's local
/// commit (sidecar in_flight=commit, hot journal, remote = the uploaded version E2),
/// a surviving process sharing the cache whose resync download fails transiently
/// swallows the error in on_shared ("serve the local copy"); SQLite then rolls the
/// hot journal back (the cache returns to E1), and begin_write ignores in_flight:
/// the next write uploads E1+new with If-Match E2, erasing the published E2.
#[test]
fn a_transient_failure_while_a_commit_is_resynced_never_erases_the_published_version() {
    use managedblob::internal::backend::memory::Op;
    use managedblob::internal::backend::BackendErrorKind;
    // The surviving process: its store is attached to the cache.
    let (m, y) = world_where_h1_ran(
        "r3",
        "&staleness_ms=0&retry_attempts=1",
        "CREATE TABLE t(x TEXT); INSERT INTO t VALUES ('v1');",
    );
    leave_a_commit_crashed_after_its_upload(&m);

    // The remote is briefly unreachable for downloads.
    m.backend
        .fail_next(Op::Download, BackendErrorKind::Transient, 1000);
    y.busy_timeout(Duration::from_millis(300)).unwrap();
    let read = y.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0));
    assert!(
        read.is_err(),
        "a cache whose commit is in flight is not served while its resync fails: {read:?}"
    );
    let write = y.execute("INSERT INTO t VALUES ('after')", []);
    assert!(write.is_err(), "no write before the cache is resynced");
    assert!(y.is_autocommit());
    published_version_kept(&m);
    // The remote answers again: the cache is resynced to E2 and the write lands on it.
    m.backend
        .fail_next(Op::Download, BackendErrorKind::Transient, 0);
    y.busy_timeout(Duration::from_secs(10)).unwrap();
    let n: i64 = y
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 201, "the cache took the published version E2");
    y.execute("INSERT INTO t VALUES ('after')", []).unwrap();
    assert_eq!(published_version_kept(&m), 202);
}

/// Variant of the previous one without any fault: within staleness_ms the survivor never looks at
/// the sidecar; its SQLite rolls the hot journal back itself, and begin_write ignores
/// in_flight=commit, so the next write uploads E1+new with If-Match E2.
#[test]
fn a_crash_mid_commit_in_another_process_blocks_writes_until_resynced() {
    use managedblob::internal::backend::memory::Op;
    // The surviving process: its store is attached to the cache.
    let (m, y) = world_where_h1_ran(
        "r3b",
        "&staleness_ms=60000",
        "CREATE TABLE t(x TEXT); INSERT INTO t VALUES ('v1');",
    );
    leave_a_commit_crashed_after_its_upload(&m);

    // No fault injected: the survivor is simply inside its staleness window.
    assert_eq!(m.backend.calls(Op::Download), 0);
    let n: i64 = y
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert!(
        n == 1 || n == 201,
        "a read sees E1 (the hot journal rolled back, within staleness_ms) or E2, never a \
         half: {n} rows"
    );
    // The write waits (SQLITE_BUSY, retried by the busy handler) until the next read
    // has resynced the cache, then lands on top of the published version.
    y.execute("INSERT INTO t VALUES ('after')", []).unwrap();
    assert_eq!(published_version_kept(&m), 202);
}

/// Bug: PRAGMA managedblob_flush (and =end of a batch) run inside a write
/// transaction whose pages already spilled into the cache (EXCLUSIVE) uploads the
/// uncommitted file; after ROLLBACK the remote holds a version nobody committed and
/// the sidecar says the (rolled back) cache equals it.
#[test]
fn flush_inside_a_write_transaction_is_refused_and_publishes_nothing_uncommitted() {
    let (m, c) = world_where_h1_ran("r4", "", &padded_rows(500, "committed"));
    pragma(&c, "PRAGMA managedblob_batch=begin").unwrap();
    c.execute("INSERT INTO t VALUES ('in batch')", []).unwrap();
    c.execute_batch("PRAGMA cache_size=2; BEGIN; UPDATE t SET x = 'UNCOMMITTED' || x;")
        .unwrap();
    let flushed = pragma(&c, "PRAGMA managedblob_flush");
    assert!(flushed.is_err(), "refused inside a write transaction");
    c.execute_batch("ROLLBACK").unwrap();
    pragma(&c, "PRAGMA managedblob_batch=end").unwrap();
    let local: i64 = c
        .query_row(
            "SELECT count(*) FROM t WHERE x LIKE 'UNCOMMITTED%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(local, 0);
    let s = status(&c);
    let f = m.dir.path().join("remote-copy.db");
    std::fs::write(&f, m.backend.get("m.db").unwrap()).unwrap();
    let r = rusqlite::Connection::open(&f).unwrap();
    let check: String = r
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap_or_else(|e| format!("error: {e}"));
    let n = r
        .query_row(
            "SELECT count(*) FROM t WHERE x LIKE 'UNCOMMITTED%'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n.to_string())
        .unwrap_or_else(|e| format!("error: {e}"));
    assert!(
        check == "ok" && n == "0",
        "remote after ROLLBACK: integrity {check:?}, rows never committed: {n}; \
         status (dirty=false: the batch end uploaded nothing to repair it) {s}"
    );
}

/// does a warm cache open while the remote is unreachable?
#[test]
fn a_warm_cache_opens_while_the_remote_is_unreachable() {
    let m = MemWorld::with_defaults("r5", "&retry_base_ms=1");
    m.one_row_then_offline();
    let c = rusqlite::Connection::open_with_flags(m.uri("h1", "&retry_attempts=1"), flags())
        .unwrap_or_else(|e| panic!("offline open of a warm cache fails: {e}"));
    assert_eq!(count(&c, "t"), 1, "reads are served from the cache");
    let s = status(&c);
    assert!(
        s["last_error"].as_str().unwrap_or("").contains("injected"),
        "the outage is reported: {s}"
    );
}

/// Bug: PRAGMA managedblob_batch=begin inside an open read transaction refreshes
/// the cache under that transaction's snapshot (it upgrades the connection's own
/// SHARED lock to EXCLUSIVE and rewrites the file). The transaction keeps using its
/// cached pages, and its write publishes them over the other host's commit.
#[test]
fn batch_begin_inside_a_read_transaction_never_rewrites_its_snapshot() {
    let (m, c) = world_where_h1_ran(
        "r6",
        "&staleness_ms=600000",
        "CREATE TABLE t(x TEXT); INSERT INTO t VALUES ('a');",
    );
    let h2 = m.open("h2", "");
    h2.execute("UPDATE t SET x = 'b'", []).unwrap(); // acknowledged on host 2
                                                     // c's write must meet the moved remote, not host 2's lease kept warm.
    wait::until_lease_released(&h2);
    c.execute_batch("BEGIN").unwrap();
    let seen: String = c.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(seen, "a", "stale read within staleness_ms, as documented");
    let began = pragma(&c, "PRAGMA managedblob_batch=begin");
    assert!(began.is_err(), "refused inside a transaction");
    assert_eq!(status(&c)["batch_depth"], 0);
    // The read transaction's write on its stale snapshot: SQLITE_BUSY, no upload.
    let write = c.execute("UPDATE t SET x = x || '+c'", []);
    let err = write.expect_err("a write on a stale snapshot");
    assert!(is_busy(&err), "{err}");
    c.execute_batch("COMMIT").unwrap();
    assert!(
        pragma(&c, "PRAGMA managedblob_batch=end").is_err(),
        "no batch was begun"
    );
    let remote = m.remote_query::<String>("SELECT group_concat(x) FROM t");
    assert_eq!(remote, "b", "host 2's acknowledged update, nothing over it");
    let local: String = c
        .query_row("SELECT group_concat(x) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        local, remote,
        "the refused write forced a check: the next read takes the remote's version"
    );
    let s = status(&c);
    assert_eq!(s["dirty"], false, "{s}");
}

/// Bug: with the lease lingering after a commit (`lease_linger_ms`), `batch=begin`
/// inside a read transaction joined the warm lease instead of being refused, so the
/// same statement succeeded or failed depending on how long ago the last commit was.
/// Now a read transaction refuses it either way; outside a transaction it still takes
/// the warm lease without asking the remote again.
#[test]
fn batch_begin_in_a_read_transaction_is_refused_while_the_lease_lingers() {
    let m = MemWorld::with_defaults("r6w", "&retry_base_ms=1");
    let c = m.open("h1", "&lease_linger_ms=60000");
    c.execute_batch("CREATE TABLE t(x TEXT); INSERT INTO t VALUES ('a');")
        .unwrap();
    assert_eq!(status(&c)["lease_held"], true, "the lease lingers");
    c.execute_batch("BEGIN").unwrap();
    let _: String = c.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
    let began = pragma(&c, "PRAGMA managedblob_batch=begin");
    let err = began.expect_err("refused inside a read transaction");
    assert!(err.to_string().contains("inside a transaction"), "{err}");
    assert_eq!(status(&c)["batch_depth"], 0);
    c.execute_batch("COMMIT").unwrap();

    let acquires = status(&c)["requests"]["lease_acquire"].clone();
    pragma(&c, "PRAGMA managedblob_batch=begin").unwrap();
    c.execute("INSERT INTO t VALUES ('b')", []).unwrap();
    pragma(&c, "PRAGMA managedblob_batch=end").unwrap();
    let s = status(&c);
    assert_eq!(
        s["requests"]["lease_acquire"], acquires,
        "the warm lease, {s}"
    );
    assert_eq!(s["batch_depth"], 0, "{s}");
    assert_eq!(s["dirty"], false, "{s}");
}

/// Bug: the download side file was one fixed path for every process sharing the
/// cache, so one process could install another's half-written download. Now each
/// process has its own, and files left by dead processes are removed at open.
#[test]
fn a_stray_download_file_is_never_installed() {
    let (m, y) = world_where_h1_ran("r7", "&staleness_ms=600000", &padded_rows(400, "row"));
    let h2 = m.open("h2", "");
    h2.execute("UPDATE t SET x = upper(x) || 'X'", []).unwrap();
    let e2 = m.backend.get("m.db").unwrap();
    let cache = m.cache("h1");
    // Half-written downloads of the new version, as other processes would leave them:
    // the old shared name, and a dead process's own name.
    let stray_shared = format!("{}-managedblob.download", cache.display());
    let stray_dead = format!(
        "{}-managedblob.download-999999999-00000000",
        cache.display()
    );
    std::fs::write(&stray_shared, &e2[..e2.len() / 2]).unwrap();
    std::fs::write(&stray_dead, &e2[..e2.len() / 2]).unwrap();
    // Another local reader keeps the refresh from installing (SQLITE_BUSY).
    let reader = rusqlite::Connection::open(&cache).unwrap();
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM t;")
        .unwrap();
    assert!(pragma(&y, "PRAGMA managedblob_refresh").is_err());
    reader.execute_batch("COMMIT").unwrap();
    let mixed: (i64, i64) = y
        .query_row("SELECT sum(x LIKE '%X'), count(*) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        mixed,
        (400, 400),
        "the whole new version, status {}",
        status(&y)
    );
    let ok: String = y
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    // A new process-level store for another cache path cleans up after dead pids.
    drop((y, h2));
    let _again = m.open("h1", "");
    assert!(
        !std::path::Path::new(&stray_dead).exists(),
        "a dead process's download is removed"
    );
}

/// Bug: Store::upload only recognises "my first attempt landed" for
/// ConditionFailed. For the blob-creating upload (If-None-Match:*) the retry fails
/// with AlreadyExists, which commit_locked maps to BUSY: the COMMIT fails although
/// its content is now the remote, and the next open shows the "failed" row.
#[test]
fn a_lost_reply_on_the_creating_upload_is_recognised() {
    let m = MemWorld::with_defaults("r8", "&retry_base_ms=1");
    let c = m.open("h1", "");
    m.backend.land_then_fail_next_upload();
    let r = c.execute_batch("CREATE TABLE t(x)");
    let remote = m.backend.get("m.db").map(|_| {
        m.remote_query::<String>("SELECT 'tables: ' || group_concat(name) FROM sqlite_master")
    });
    let local_tables: i64 = c
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap_or(-1);
    assert_eq!(local_tables, 1, "the local commit stands");
    assert!(
        r.is_ok(),
        "COMMIT reported {r:?} but the remote holds {remote:?}; status {}",
        status(&c)
    );
}

/// a local WAL-mode database as the seed of an empty remote.
#[test]
fn a_local_wal_mode_database_seeds_an_empty_remote() {
    let w = World::new();
    let cache = w.cache("h1", "seed.db");
    {
        let p = rusqlite::Connection::open(&cache).unwrap();
        p.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (5);")
            .unwrap();
    }
    assert_eq!(
        std::fs::read(&cache).unwrap()[18],
        2,
        "the fixture is in WAL mode"
    );
    let c = w.open("h1", "seed.db");
    assert_eq!(count(&c, "t"), 1);
    c.execute("INSERT INTO t VALUES (6)", []).unwrap();
    let n: i64 = read_remote(&w.remote_blob("seed.db"), |r| {
        r.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    });
    assert_eq!(n, 2);
}

/// mode=ro is per connection in SQLite but stored per Store (per cache).
#[test]
fn a_read_only_connection_does_not_make_the_cache_read_only() {
    let (w, c) = World::with_one_row();
    drop(c);
    let ro = w.open_with("h1", "a.db", "&mode=ro");
    assert_eq!(count(&ro, "t"), 1);
    let rw = w.open("h1", "a.db");
    let r = rw.execute("INSERT INTO t VALUES (2)", []);
    assert!(
        r.is_ok(),
        "a read-write connection cannot write while a mode=ro one is open: {r:?}"
    );
}
