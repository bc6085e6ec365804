//! `PRAGMA journal_mode=WAL` and `=OFF` on a managed database: no error, the mode in
//! force comes back (as SQLite does when a mode cannot be set), and an info log says
//! why.

use common::{with_log, World};

fn journal_mode(c: &rusqlite::Connection, sql: &str) -> String {
    c.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn wal_and_off_answer_the_mode_in_force_and_log_why() {
    let world = World::with_remote_dir();
    let c = world.open("h1", "a.db");
    let (mode, log) = with_log(|| journal_mode(&c, "PRAGMA journal_mode=WAL"));
    assert_eq!(mode, "delete");
    assert!(log.contains("INFO"), "{log}");
    assert!(log.contains("journal_mode=WAL"), "{log}");
    assert!(
        log.contains("a WAL commit never reaches the remote"),
        "{log}"
    );

    let (mode, log) = with_log(|| journal_mode(&c, "PRAGMA journal_mode=off"));
    assert_eq!(mode, "delete");
    assert!(log.contains("journal_mode=OFF"), "{log}");
    assert!(log.contains("could not be rolled back"), "{log}");
}

#[test]
fn the_mode_in_force_is_the_one_set_before() {
    let world = World::with_remote_dir();
    let c = world.open("h1", "a.db");
    assert_eq!(journal_mode(&c, "PRAGMA journal_mode=TRUNCATE"), "truncate");
    for asked in ["WAL", "'wal'", "w", "OFF", "o", "main.journal_mode=wal"] {
        let sql = if asked.contains('.') {
            format!("PRAGMA {asked}")
        } else {
            format!("PRAGMA journal_mode={asked}")
        };
        assert_eq!(journal_mode(&c, &sql), "truncate", "{sql}");
    }
    assert_eq!(journal_mode(&c, "PRAGMA journal_mode"), "truncate");
    // A prepared statement asks again each time it runs.
    let mut stmt = c.prepare("PRAGMA journal_mode=WAL").unwrap();
    for _ in 0..2 {
        let mode: String = stmt.query_row([], |r| r.get(0)).unwrap();
        assert_eq!(mode, "truncate");
    }
}

#[test]
fn after_asking_for_wal_commits_still_reach_the_remote() {
    let world = World::with_remote_dir();
    let a = world.open("h1", "a.db");
    assert_eq!(journal_mode(&a, "PRAGMA journal_mode=WAL"), "delete");
    a.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
        .unwrap();
    assert!(!world.path("h1/a.db-wal").exists(), "no WAL file");
    let b = world.open("h2", "a.db");
    let n: i64 = b
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
    // The remote blob is a rollback-journal database (file format bytes 18 and 19 are 1).
    let blob = std::fs::read(world.remote().join("a.db")).unwrap();
    assert_eq!(&blob[18..20], &[1, 1]);
}

#[test]
fn other_modes_still_change() {
    let world = World::with_remote_dir();
    let c = world.open("h1", "a.db");
    for mode in ["persist", "memory", "truncate", "delete"] {
        assert_eq!(
            journal_mode(&c, &format!("PRAGMA journal_mode={mode}")),
            mode
        );
    }
}
