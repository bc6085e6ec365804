//! `managedblob create-container`: makes the remote a first open needs (an Azure
//! container, a local directory); one that exists is success, said so.

mod common;

use common::{cli, json_of, stdout, Remote};

#[test]
fn creates_a_local_remote_directory_once() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("srv").join("remote");
    let first = json_of(cli().args(["--json", "create-container"]).arg(&dir));
    assert_eq!(first["created"], true, "{first}");
    assert_eq!(first["remote"], format!("local:{}", dir.display()));
    assert!(dir.is_dir());
    let again = cli().arg("create-container").arg(&dir).output().unwrap();
    assert!(again.status.success(), "{again:?}");
    assert_eq!(
        stdout(&again),
        format!("local:{} already exists: nothing to do\n", dir.display())
    );
    // The directory is a usable remote: a push lands in it.
    let plain = work.path().join("plain.db");
    rusqlite::Connection::open(&plain)
        .unwrap()
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    cli()
        .args(["push", "--remote"])
        .arg(&dir)
        .args(["--blob", "a.db"])
        .arg(&plain)
        .assert()
        .success();
    assert!(dir.join("a.db").is_file());
}

#[test]
fn refuses_a_remote_that_cannot_be_a_container() {
    cli()
        .args(["create-container", "memory:x"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("lives inside one process"));
    cli()
        .arg("create-container")
        .assert()
        .failure()
        .stderr(predicates::str::contains("no remote given"));
}

#[test]
fn creates_an_azure_container_once() {
    let Some(existing) = Remote::azurite() else {
        return;
    };
    let az = existing.azurite.clone().unwrap();
    let container = common::azurite::random_container();
    let url = az.container_url_with_sas(&container);
    let identity = format!("azure:{}", az.container_url(&container));

    // Before: the container is missing, and a push says so.
    let plain = tempfile::tempdir().unwrap();
    let db = plain.path().join("plain.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    cli()
        .args(["push", "--remote", &url, "--blob", "a.db"])
        .arg(&db)
        .assert()
        .failure();

    let first = cli().args(["create-container", &url]).output().unwrap();
    assert!(first.status.success(), "{first:?}");
    assert_eq!(stdout(&first), format!("created {identity}\n"));
    let again = json_of(cli().args(["--json", "create-container", "--remote", &url]));
    assert_eq!(again["created"], false, "{again}");
    assert_eq!(again["remote"], identity);

    cli()
        .args(["push", "--remote", &url, "--blob", "a.db"])
        .arg(&db)
        .assert()
        .success();
}
