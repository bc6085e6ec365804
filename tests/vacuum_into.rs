//! `VACUUM INTO` and `ATTACH` from a managed connection: a plain path is a plain local
//! file (even with `MANAGEDBLOB_REMOTE` set); a managed target names `vfs=managedblob`
//! and its remote in its URI.

mod support;

use rusqlite::{Connection, OpenFlags};
use support::{flags, plain_rows, Place};

/// A fresh place whose `a.db` (cache `h1`) holds rows 1, 2 and 3, and its connection.
fn seeded() -> (Place, Connection) {
    let place = Place::new();
    let c = place.open("h1", "a.db");
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);")
        .unwrap();
    (place, c)
}

fn remote_blobs(place: &Place) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(place.remote())
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
fn assert_only_the_source_on_the_remote(place: &Place) {
    assert_eq!(remote_blobs(place), vec!["a.db".to_string()]);
}

#[test]
fn vacuum_into_a_plain_path_writes_a_plain_local_file() {
    let (place, c) = seeded();
    let copy = place.path("copy.db");
    vacuum_into(&c, &copy.display()).unwrap();
    assert_eq!(plain_rows(&copy), vec![1, 2, 3]);
    assert_only_the_source_on_the_remote(&place);
    // A plain file has no sidecar of ours next to it.
    let beside: Vec<_> = std::fs::read_dir(place.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("copy.db"))
        .collect();
    assert_eq!(beside, vec!["copy.db".to_string()]);
}

#[test]
fn vacuum_into_a_plain_path_is_plain_even_with_a_remote_in_the_environment() {
    let (place, c) = seeded();
    // Every other test here gives its remotes in URIs or expects plain files, so the
    // variable changes nothing for them.
    std::env::set_var("MANAGEDBLOB_REMOTE", place.remote());
    let copy = place.path("env-copy.db");
    let done = vacuum_into(&c, &copy.display());
    std::env::remove_var("MANAGEDBLOB_REMOTE");
    done.unwrap();
    assert_eq!(plain_rows(&copy), vec![1, 2, 3]);
    assert_only_the_source_on_the_remote(&place);
}

#[test]
fn vacuum_into_a_managed_uri_publishes_to_its_own_remote() {
    let (place, c) = seeded();
    let other_remote = place.path("other-remote");
    std::fs::create_dir(&other_remote).unwrap();
    let target = format!(
        "file:{}?vfs=managedblob&remote={}",
        place.path("managed-copy.db").display(),
        other_remote.display()
    );
    vacuum_into(&c, &target).unwrap();
    assert_eq!(
        plain_rows(&other_remote.join("managed-copy.db")),
        vec![1, 2, 3]
    );
    assert_only_the_source_on_the_remote(&place);
}

#[test]
fn vacuum_into_an_existing_file_fails_as_sqlite_does() {
    let (place, c) = seeded();
    let copy = place.path("copy.db");
    vacuum_into(&c, &copy.display()).unwrap();
    let err = vacuum_into(&c, &copy.display()).unwrap_err().to_string();
    assert!(err.contains("output file already exists"), "{err}");
}

#[test]
fn attach_with_a_managed_uri_is_managed() {
    let (place, c) = seeded();
    c.execute(&format!("ATTACH '{}' AS o", place.uri("h1", "b.db")), [])
        .unwrap();
    c.execute_batch("CREATE TABLE o.t(x); INSERT INTO o.t VALUES (7);")
        .unwrap();
    assert_eq!(plain_rows(&place.remote().join("b.db")), vec![7]);
    let other = place.open("h2", "b.db");
    let n: i64 = other
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn attach_of_a_plain_path_is_a_plain_local_file() {
    let (place, c) = seeded();
    let plain = place.path("plain.db");
    c.execute(&format!("ATTACH '{}' AS p", plain.display()), [])
        .unwrap();
    c.execute_batch("CREATE TABLE p.t(x); INSERT INTO p.t SELECT x FROM main.t;")
        .unwrap();
    c.execute("DETACH p", []).unwrap();
    assert_eq!(plain_rows(&plain), vec![1, 2, 3]);
    assert_only_the_source_on_the_remote(&place);
}

#[test]
fn the_vfs_by_name_with_a_plain_filename_fails_with_the_cause() {
    let place = Place::new();
    let path = place.path("named.db");
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
        place.path("named2.db").display(),
        place.remote().display()
    );
    let c = Connection::open_with_flags_and_vfs(&uri, flags(), "managedblob").unwrap();
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (4);")
        .unwrap();
    assert_eq!(plain_rows(&place.remote().join("named2.db")), vec![4]);
    // An in-memory database with the VFS by name opens no file and is left alone.
    Connection::open_with_flags_and_vfs(":memory:", OpenFlags::default(), "managedblob").unwrap();
}
