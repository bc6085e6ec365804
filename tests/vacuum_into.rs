//! `VACUUM INTO` and `ATTACH` from a managed connection: a plain path is a plain local
//! file (even with `MANAGEDBLOB_REMOTE` set); a managed target names `vfs=managedblob`
//! and its remote in its URI.

use common::{flags, plain_rows, World};
use rusqlite::{Connection, OpenFlags};

/// A fresh world whose `a.db` (cache `h1`) holds rows 1, 2 and 3, and its connection.
fn seeded() -> (World, Connection) {
    let world = World::with_remote_dir();
    let c = world.open("h1", "a.db");
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);")
        .unwrap();
    (world, c)
}

fn remote_blobs(world: &World) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(world.remote())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".db"))
        .collect();
    names.sort();
    names
}

/// `VACUUM INTO target` on `c`.
fn vacuum_into(c: &Connection, target: &dyn std::fmt::Display) -> rusqlite::Result<usize> {
    c.execute(&format!("VACUUM INTO '{target}'"), [])
}

/// The remote holds the source database `a.db` and nothing else.
fn assert_only_the_source_on_the_remote(world: &World) {
    assert_eq!(remote_blobs(world), vec!["a.db".to_string()]);
}

#[test]
fn vacuum_into_a_plain_path_writes_a_plain_local_file() {
    let (world, c) = seeded();
    let copy = world.path("copy.db");
    vacuum_into(&c, &copy.display()).unwrap();
    assert_eq!(plain_rows(&copy), vec![1, 2, 3]);
    assert_only_the_source_on_the_remote(&world);
    // A plain file has no sidecar of ours next to it.
    let beside: Vec<_> = std::fs::read_dir(world.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("copy.db"))
        .collect();
    assert_eq!(beside, vec!["copy.db".to_string()]);
}

#[test]
fn vacuum_into_a_plain_path_is_plain_even_with_a_remote_in_the_environment() {
    let (world, c) = seeded();
    // Every other test here gives its remotes in URIs or expects plain files, so the
    // variable changes nothing for them.
    std::env::set_var("MANAGEDBLOB_REMOTE", world.remote());
    let copy = world.path("env-copy.db");
    let done = vacuum_into(&c, &copy.display());
    std::env::remove_var("MANAGEDBLOB_REMOTE");
    done.unwrap();
    assert_eq!(plain_rows(&copy), vec![1, 2, 3]);
    assert_only_the_source_on_the_remote(&world);
}

#[test]
fn vacuum_into_a_managed_uri_publishes_to_its_own_remote() {
    let (world, c) = seeded();
    let other_remote = world.path("other-remote");
    std::fs::create_dir(&other_remote).unwrap();
    let target = format!(
        "file:{}?vfs=managedblob&remote={}",
        world.path("managed-copy.db").display(),
        other_remote.display()
    );
    vacuum_into(&c, &target).unwrap();
    assert_eq!(
        plain_rows(&other_remote.join("managed-copy.db")),
        vec![1, 2, 3]
    );
    assert_only_the_source_on_the_remote(&world);
}

#[test]
fn vacuum_into_an_existing_file_fails_as_sqlite_does() {
    let (world, c) = seeded();
    let copy = world.path("copy.db");
    vacuum_into(&c, &copy.display()).unwrap();
    let err = vacuum_into(&c, &copy.display()).unwrap_err().to_string();
    assert!(err.contains("output file already exists"), "{err}");
}

#[test]
fn attach_with_a_managed_uri_is_managed() {
    let (world, c) = seeded();
    c.execute(
        &format!("ATTACH '{}' AS o", world.uri("h1", "b.db", "")),
        [],
    )
    .unwrap();
    c.execute_batch("CREATE TABLE o.t(x); INSERT INTO o.t VALUES (7);")
        .unwrap();
    assert_eq!(plain_rows(&world.remote().join("b.db")), vec![7]);
    let other = world.open("h2", "b.db");
    let n: i64 = other
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn attach_of_a_plain_path_is_a_plain_local_file() {
    let (world, c) = seeded();
    let plain = world.path("plain.db");
    c.execute(&format!("ATTACH '{}' AS p", plain.display()), [])
        .unwrap();
    c.execute_batch("CREATE TABLE p.t(x); INSERT INTO p.t SELECT x FROM main.t;")
        .unwrap();
    c.execute("DETACH p", []).unwrap();
    assert_eq!(plain_rows(&plain), vec![1, 2, 3]);
    assert_only_the_source_on_the_remote(&world);
}

#[test]
fn the_vfs_by_name_with_a_plain_filename_fails_with_the_cause() {
    let world = World::with_remote_dir();
    let path = world.path("named.db");
    let err = Connection::open_with_flags_and_vfs(&path, flags(), "managedblob")
        .expect_err("the open fails")
        .to_string();
    assert!(
        err.contains("names neither vfs=managedblob nor remote="),
        "{err}"
    );
    // With the remote in its URI, the VFS by name is enough.
    let uri = format!(
        "file:{}?remote={}",
        world.path("named2.db").display(),
        world.remote().display()
    );
    let c = Connection::open_with_flags_and_vfs(&uri, flags(), "managedblob").unwrap();
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (4);")
        .unwrap();
    assert_eq!(plain_rows(&world.remote().join("named2.db")), vec![4]);
    // An in-memory database with the VFS by name opens no file and is left alone.
    Connection::open_with_flags_and_vfs(":memory:", OpenFlags::default(), "managedblob").unwrap();
}
