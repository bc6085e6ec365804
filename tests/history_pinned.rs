//! Reading a kept version without restoring it: `as_of=` or `version=` in the URI
//! opens that version read-only, from its own file beside the cache, while the
//! cache itself goes on as before. On the local backend and Azurite.

use std::time::Duration;

use common::{backend_tests, World};
use managedblob::internal::backend::history::format_time;
use managedblob::internal::backend::VersionInfo;
use rusqlite::{Connection, OpenFlags};

fn rows(c: &Connection) -> i64 {
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

/// A database with history on and versions holding 0, 1, 2 and 3 rows; the cache's
/// connection stays open.
fn four_versions(world: &World) -> (Connection, Vec<VersionInfo>) {
    let c = world.open_with("h1", "p.db", "&history=10");
    c.execute_batch("CREATE TABLE t(x)").unwrap();
    for i in 0..3 {
        // Apart by more than the millisecond precision of the times below.
        std::thread::sleep(Duration::from_millis(20));
        c.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
    }
    let kept = world.with_backend(|b| b.history().unwrap().versions("p.db").unwrap());
    assert_eq!(kept.len(), 4);
    (c, kept)
}

fn open_pinned(world: &World, host: &str, extra: &str) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        world.uri(host, "p.db", extra),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
}

fn pinned_opens_read_the_version(world: &World) {
    let (main, kept) = four_versions(world);
    let between = kept[1].time + (kept[2].time.duration_since(kept[1].time).unwrap() / 2);
    let as_of = open_pinned(world, "h1", &format!("&as_of={}", format_time(between))).unwrap();
    assert_eq!(
        rows(&as_of),
        1,
        "as_of between two commits gives the earlier"
    );
    let by_id = open_pinned(world, "h1", &format!("&version={}", kept[2].id)).unwrap();
    assert_eq!(rows(&by_id), 2);
    let check: String = by_id
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");

    // Read-only, whatever the flags.
    let rw = Connection::open_with_flags(
        world.uri("h1", "p.db", &format!("&version={}", kept[2].id)),
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let refused = rw.execute("INSERT INTO t VALUES (9)", []).unwrap_err();
    assert_eq!(
        refused.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly),
        "{refused}"
    );

    // The cache is untouched and still the writable newest version, even while a
    // pinned reader is open on the same path.
    main.execute("INSERT INTO t VALUES (3)", []).unwrap();
    assert_eq!(rows(&main), 4);
    assert_eq!(rows(&by_id), 2);
    let cache = world.cache("h1", "p.db");
    let beside = cache
        .parent()
        .unwrap()
        .read_dir()
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().contains("-managedblob.version-")
        })
        .count();
    assert_eq!(beside, 2, "one file per version read, beside the cache");

    // Another host with no cache at all reads a version too.
    let fresh = open_pinned(world, "h2", &format!("&version={}", kept[3].id)).unwrap();
    assert_eq!(rows(&fresh), 3);
}

fn pinned_open_errors_name_the_cause(world: &World) {
    let (_main, kept) = four_versions(world);
    let early = format_time(kept[0].time - Duration::from_secs(3600));
    let e = open_pinned(world, "h3", &format!("&as_of={early}"))
        .and_then(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no kept version as of"), "{e}");
    let e = open_pinned(world, "h3", "&as_of=yesterday")
        .and_then(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'as_of'"), "{e}");
}

backend_tests!(
    pinned_opens_read_the_version,
    pinned_open_errors_name_the_cause
);
