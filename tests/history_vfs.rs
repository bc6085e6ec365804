//! Version history through the VFS (the `history` setting): every acknowledged
//! commit of a randomized run (autocommits, batches, a VACUUM) is kept, restorable
//! byte for byte, and a plain SQLite file that passes `integrity_check`; retention
//! by count drops the oldest; a failed snapshot does not fail the commit. On the
//! memory, local and Azurite backends.

use common::memworld::MemWorld;
use common::{backend_tests, status, World};
use managedblob::internal::backend::{Backend, VersionInfo};
use rusqlite::Connection;

/// The content of every kept version of `blob`, oldest first.
fn kept_contents(backend: &dyn Backend, blob: &str) -> Vec<(VersionInfo, Vec<u8>)> {
    let history = backend.history().expect("this backend keeps versions");
    history
        .versions(blob)
        .unwrap()
        .into_iter()
        .map(|v| {
            let mut bytes = Vec::new();
            let size = history.download_version(blob, &v.id, &mut bytes).unwrap();
            assert_eq!(size, bytes.len() as u64);
            assert_eq!(v.size, size, "the listed size of {}", v.id);
            (v, bytes)
        })
        .collect()
}

/// `PRAGMA integrity_check` of a plain copy of `bytes`.
fn integrity(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("version.db");
    std::fs::write(&path, bytes).unwrap();
    let c = Connection::open(&path).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// A randomized run on `c`: each step is an autocommit, a batch or (once) a VACUUM;
/// after each acknowledged commit, `remote` gives the published bytes. Returns them.
fn randomized_run(c: &Connection, steps: usize, remote: &dyn Fn() -> Vec<u8>) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(13);
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
        .unwrap();
    let mut acknowledged = vec![remote()];
    let vacuum_at = steps / 2;
    for step in 0..steps {
        match rng.u8(0..4) {
            _ if step == vacuum_at => {
                c.execute("DELETE FROM t WHERE id % 3 = 0", []).unwrap();
                acknowledged.push(remote());
                c.execute_batch("VACUUM").unwrap();
            }
            0 => {
                c.execute(
                    "UPDATE t SET body = randomblob(300) WHERE id % 5 = ?1",
                    [rng.i64(0..5)],
                )
                .unwrap();
            }
            1 => {
                c.execute_batch("PRAGMA managedblob_batch=begin").unwrap();
                for _ in 0..rng.usize(2..20) {
                    c.execute(
                        "INSERT INTO t(body) VALUES (randomblob(?1))",
                        [rng.i64(10..5000)],
                    )
                    .unwrap();
                }
                c.execute_batch("PRAGMA managedblob_batch=end").unwrap();
            }
            _ => {
                c.execute(
                    "INSERT INTO t(body) VALUES (randomblob(?1))",
                    [rng.i64(10..20_000)],
                )
                .unwrap();
            }
        }
        acknowledged.push(remote());
    }
    acknowledged
}

/// Every acknowledged commit is one kept version, in order, byte for byte.
fn check_every_commit_kept(backend: &dyn Backend, blob: &str, acknowledged: &[Vec<u8>]) {
    let kept = kept_contents(backend, blob);
    let contents: Vec<&Vec<u8>> = kept.iter().map(|(_, b)| b).collect();
    let expected: Vec<&Vec<u8>> = acknowledged.iter().collect();
    assert_eq!(
        contents.len(),
        expected.len(),
        "one kept version per acknowledged commit"
    );
    for (i, (got, want)) in contents.iter().zip(&expected).enumerate() {
        assert!(got == want, "version {i} differs from commit {i}");
        assert_eq!(integrity(got), "ok", "version {i}");
    }
    for pair in kept.windows(2) {
        assert!(pair[0].0.time <= pair[1].0.time && pair[0].0.id < pair[1].0.id);
    }
}

fn every_acknowledged_commit_is_kept_and_restorable(world: &World) {
    let c = world.open_with("h1", "r.db", "&history=1000");
    let acknowledged = randomized_run(&c, 24, &|| world.remote_bytes("r.db").unwrap());
    world.with_backend(|b| check_every_commit_kept(b, "r.db", &acknowledged));
}

#[test]
fn memory_every_acknowledged_commit_is_kept_in_both_sync_modes() {
    for mode in ["delta", "full"] {
        let w = MemWorld::new(&format!("history-{mode}"));
        let c = w.open("h1", &format!("&sync={mode}&history=1000"));
        let acknowledged = randomized_run(&c, 16, &|| w.remote_bytes());
        check_every_commit_kept(w.backend.as_ref(), "m.db", &acknowledged);
    }
}

/// The newest three versions are kept; on the local backend, the garbage collection
/// left only chunks the kept manifests name.
fn retention_by_count_keeps_the_newest(world: &World) {
    let c = world.open_with("h1", "k.db", "&history=3");
    c.execute_batch("CREATE TABLE t(x)").unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..6 {
        c.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        acknowledged.push(world.remote_bytes("k.db").unwrap());
    }
    world.with_backend(|b| {
        let kept = kept_contents(b, "k.db");
        let contents: Vec<Vec<u8>> = kept.into_iter().map(|(_, bytes)| bytes).collect();
        assert_eq!(contents, acknowledged[3..], "the newest three are kept");
    });
    if world.is_local() {
        assert_only_named_chunks_stored(world);
    }
}

/// The local backend's version store holds exactly the chunks its kept manifests name.
fn assert_only_named_chunks_stored(world: &World) {
    let root = world.remote().join(".k.db.mb-versions");
    let named: std::collections::HashSet<String> = std::fs::read_dir(root.join("manifests"))
        .unwrap()
        .flat_map(|e| {
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
            m["chunks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c[0].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let stored: std::collections::HashSet<String> = std::fs::read_dir(root.join("chunks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(stored, named);
}

backend_tests!(
    every_acknowledged_commit_is_kept_and_restorable,
    retention_by_count_keeps_the_newest
);

/// HTTP requests the connection's database sent so far for its commits: all but
/// the store clock's looks at the waiter mark, which it makes beside the commits
/// while it keeps the lease warm (one per quarter linger, counted apart as
/// `waiter_mark`).
#[cfg(feature = "azure")]
fn http_total(c: &Connection) -> u64 {
    let http = &status(c)["requests"]["http"];
    http["total"].as_u64().unwrap() - http["waiter_mark"].as_u64().unwrap()
}

/// On Azure the retention counts its snapshots instead of listing them: once the
/// retention is full, a commit with `history=3` sends exactly three requests more
/// than the same commit with history off: the snapshot, the delete of the version
/// it drops, and one lease renewal (Azurite refuses a lease on Put Block after a
/// snapshot until it is renewed, so the store renews before keeping it warm).
#[cfg(feature = "azure")]
#[test]
fn azurite_history_costs_a_snapshot_and_a_delete_per_commit() {
    let Some(world) = World::azurite() else {
        return;
    };
    let per_commit = |blob: &str, history: &str| {
        let c = world.open_with("h1", blob, &format!("&history={history}"));
        c.execute_batch("CREATE TABLE t(x)").unwrap();
        for i in 0..5 {
            c.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        let before = http_total(&c);
        for i in 5..10 {
            c.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        (http_total(&c) - before, c)
    };
    let (off, _c_off) = per_commit("off.db", "off");
    let (on, _c_on) = per_commit("on.db", "3");
    assert_eq!(
        on,
        off + 3 * 5,
        "5 commits: history off {off} requests, on {on}"
    );
    world.with_backend(|b| {
        assert_eq!(b.history().unwrap().listing("on.db").unwrap().len(), 3);
    });
}

#[test]
fn history_off_keeps_nothing() {
    let world = World::local();
    let c = world.one_row("h1", "off.db");
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    world.with_backend(|b| {
        assert!(b.history().unwrap().versions("off.db").unwrap().is_empty());
    });
    assert!(!world.remote().join(".off.db.mb-versions").exists());
}

#[test]
fn a_failed_snapshot_does_not_fail_the_commit() {
    let w = MemWorld::new("history-fails");
    let c = w.one_row("h1", "&history=10");
    w.backend.fail_snapshots("m.db", true);
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    let s = status(&c);
    let error = s["last_error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("not kept in history"), "{s}");
    assert_eq!(w.remote_query::<i64>("SELECT count(*) FROM t"), 2);
    w.backend.fail_snapshots("m.db", false);
    c.execute("INSERT INTO t VALUES (3)", []).unwrap();
    let kept = kept_contents(w.backend.as_ref(), "m.db");
    assert_eq!(kept.last().unwrap().1, w.remote_bytes());
}
