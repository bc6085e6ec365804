//! `register()` and `register_with(Options)`.

use common::*;

/// A second `register()` succeeds and changes nothing: connections opened before it
/// keep working on the same store, and one opened after it shares that store (one
/// cache, one set of counters), not a second registration's.
#[test]
fn register_is_idempotent() {
    let (w, before) = World::with_one_row(); // registers
    let s = status(&before);
    assert_eq!(uploads(&s), 2, "CREATE and INSERT, one upload each: {s}");
    managedblob::register().unwrap();
    managedblob::register().unwrap();
    before.execute("INSERT INTO t VALUES (2)", []).unwrap();
    let after = open(&w.uri("h1", "a.db", ""));
    assert_eq!(count(&after, "t"), 2);
    let s = status(&after);
    assert_eq!(
        uploads(&s),
        3,
        "the new connection shares the first one's store: {s}"
    );
    assert_eq!(s["requests"]["versions_down"], 0, "nothing downloaded: {s}");
}

#[test]
fn options_give_defaults_that_the_uri_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("remote");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&remote).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let options = managedblob::Options::new()
        .vfs_name("managedblob-test-options")
        .remote(remote.to_str().unwrap())
        .staleness_ms(0);
    managedblob::register_with(options.clone()).unwrap();
    managedblob::register_with(options).unwrap();

    // No remote in the URI: the registered default applies.
    let c = open(&format!(
        "file:{}?vfs=managedblob-test-options",
        dir.path().join("a.db").display()
    ));
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    assert!(remote.join("a.db").exists());
    // The URI wins over the registered default.
    let c = open(&format!(
        "file:{}?vfs=managedblob-test-options&remote={}",
        dir.path().join("b.db").display(),
        other.display()
    ));
    c.execute("CREATE TABLE t(x)", []).unwrap();
    assert!(other.join("b.db").exists());
    assert!(!remote.join("b.db").exists());
}

#[test]
fn registering_a_name_again_with_other_options_is_an_error() {
    managedblob::register_with(managedblob::Options::new().vfs_name("managedblob-test-twice"))
        .unwrap();
    let err = managedblob::register_with(
        managedblob::Options::new()
            .vfs_name("managedblob-test-twice")
            .lease_secs(20),
    )
    .unwrap_err();
    assert!(err.to_string().contains("already registered"), "{err}");
}

/// A failed open reads as the open's own error in a Rust application: `managedblob:
/// ...` with the open's code, without the "automatic extension loading failed: "
/// SQLite puts before an auto-extension's error (issue 25, item 8). The loadable
/// extension keeps that prefix (tests/loadable_cli.rs): it has no sqlite3_set_errmsg.
#[test]
fn a_failed_open_says_managedblob_without_sqlites_prefix() {
    managedblob::register().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
        | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let uri = format!(
        "file:{}?vfs=managedblob&remote=s3://bucket/dir",
        dir.path().join("a.db").display()
    );
    let e = rusqlite::Connection::open_with_flags(&uri, flags).unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with(
            "managedblob: setting 'remote' (URI parameter 'remote') is invalid: unknown \
             scheme 's3://'"
        ),
        "{text}"
    );
    // SQLITE_ERROR, not SQLITE_CANTOPEN, whose message drivers extend with the URI.
    assert_eq!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::Unknown),
        "{e:?}"
    );
    assert!(
        !dir.path().join("a.db").exists(),
        "a failed open leaves no cache"
    );

    // The VFS given by name with a plain filename: refused, with the same form.
    let plain = dir.path().join("plain.db");
    let e = rusqlite::Connection::open_with_flags_and_vfs(&plain, flags, managedblob::VFS_NAME)
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with(
            "managedblob: the database was opened with the managedblob VFS given by name"
        ),
        "{text}"
    );
    assert_eq!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::Unknown),
        "{e:?}"
    );
}
