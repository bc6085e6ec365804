//! The cache's directory, as a new user meets it (README, "The cache directory"): an
//! open that may create the cache creates its missing directories, mode 0700; a
//! failed open takes them back; an open that may not create names the missing
//! directory; and an unopenable cache gives managedblob's message, naming the cache
//! file and never the `file:` URI (which may carry a SAS).

use common::*;

use std::os::unix::fs::PermissionsExt;

use rusqlite::{Connection, OpenFlags};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_missing_cache_directory_is_created_private() {
    let w = World::local();
    let cache = w.dir.path().join("h1/nested/corpus.db");
    let uri = uri(&cache, &w.remote(), "");
    let c = open(&uri);
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    assert!(cache.is_file());
    assert_eq!(mode(&w.dir.path().join("h1")), 0o700);
    assert_eq!(mode(&w.dir.path().join("h1/nested")), 0o700);
    assert_eq!(mode(&cache), 0o600);
    // The commit reached the remote, and a second host (another missing directory) reads it.
    let h2 = open(&common::uri(
        &w.dir.path().join("h2/corpus.db"),
        &w.remote(),
        "",
    ));
    assert_eq!(count(&h2, "t"), 1);
}

#[test]
fn a_failed_open_takes_the_directories_it_made_back() {
    let w = World::local();
    // The blob's path in the remote is a directory: the first sync of the empty cache
    // fails after the cache file was made.
    std::fs::create_dir_all(w.remote().join("corpus.db")).unwrap();
    let cache = w.dir.path().join("h1/nested/corpus.db");
    let e = open_error(&uri(&cache, &w.remote(), ""), "a blob that is a directory");
    println!("{e}");
    assert!(e.to_string().contains("managedblob"), "{e}");
    assert!(
        !w.dir.path().join("h1").exists(),
        "the failed open left its directories behind"
    );
}

#[test]
fn without_create_a_missing_directory_is_named() {
    let w = World::local();
    let cache = w.dir.path().join("nodir/corpus.db");
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI;
    let e = Connection::open_with_flags(uri(&cache, &w.remote(), ""), flags)
        .and_then(|c| {
            c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .expect_err("no cache and no CREATE");
    let text = e.to_string();
    println!("{text}");
    assert!(text.contains("unable to open database file"), "{text}");
    let dir = w.dir.path().join("nodir");
    assert!(
        text.contains(&format!("its directory {} does not exist", dir.display())),
        "{text}"
    );
    assert!(!dir.exists());
}

#[test]
fn a_directory_that_cannot_be_made_is_named_with_the_reason() {
    let w = World::local();
    std::fs::write(w.dir.path().join("plain"), b"a file").unwrap();
    let cache = w.dir.path().join("plain/sub/corpus.db");
    let text = open_error(&uri(&cache, &w.remote(), ""), "a file in the way").to_string();
    println!("{text}");
    assert!(text.contains("could not be created"), "{text}");
    assert!(text.contains("Not a directory"), "{text}");
}

/// The cache cannot be opened (its path is a directory) while the remote URL carries a
/// SAS: rusqlite adds the `file:` URI to a SQLITE_CANTOPEN message, so the VFS answers
/// with its own message instead, which names the cache file and not the URI.
#[cfg(feature = "azure")]
#[test]
fn an_unopenable_cache_is_named_without_the_uri() {
    const SECRET: &str = "CacheOpenSECRETsig";
    let w = World::local();
    let cache = w.dir.path().join("h1/corpus.db");
    std::fs::create_dir_all(&cache).unwrap();
    let remote =
        format!("http://127.0.0.1:9/devstoreaccount1/corpus?sv=2022-11-02&sig={SECRET}%2B%3D");
    let text = open_error(
        &uri_with_remote(&cache, &remote, ""),
        "a cache that is a directory",
    )
    .to_string();
    println!("{text}");
    assert!(
        text.contains(&format!(
            "unable to open database file {} (the cache)",
            cache.display()
        )),
        "{text}"
    );
    assert!(text.contains("Is a directory"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(!text.contains("file:"), "{text}");
}
