//! `register()` and `register_with(Options)`.

mod common;
use common::*;

#[test]
fn register_is_idempotent() {
    managedblob::register().unwrap();
    managedblob::register().unwrap();
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
