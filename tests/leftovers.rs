//! What killed processes leave behind is swept by the VFS itself: upload temps and
//! staged blocks in the remote (proved abandoned by the blob's lease), sidecar temps
//! and download side files beside the cache (nobody has them open; their pid is
//! gone), at open and, for the remote, after every commit.

use common::*;

use std::path::{Path, PathBuf};

/// A pid that no process has: a child that already exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Plant what a writer killed mid-upload leaves in the remote.
fn plant_in_remote(remote: &Path) -> Vec<PathBuf> {
    let tmp = remote.join(".a.db.mb-tmp-0badc0de");
    std::fs::write(&tmp, vec![7u8; 100_000]).unwrap();
    let staged = remote.join(".a.db.mb-staged");
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::write(staged.join("block-0"), vec![7u8; 65_536]).unwrap();
    vec![tmp, staged]
}

/// Plant what a process killed while saving its sidecar or downloading leaves
/// beside the cache.
fn plant_beside_cache(cache: &Path) -> Vec<PathBuf> {
    let name = cache.file_name().unwrap().to_string_lossy().into_owned();
    let dir = cache.parent().unwrap();
    let paths = vec![
        dir.join(format!("{name}-managedblob.json.tmp-00c0ffee")),
        dir.join(format!(
            "{name}-managedblob.download-{}-00000001",
            dead_pid()
        )),
    ];
    for p in &paths {
        std::fs::write(p, b"left behind").unwrap();
    }
    paths
}

fn remaining(paths: &[PathBuf]) -> Vec<&PathBuf> {
    paths.iter().filter(|p| p.exists()).collect()
}

#[test]
fn leftovers_of_killed_processes_are_swept_at_open() {
    let (w, c) = World::with_one_row();
    drop(c);
    let cache = w.cache("h1", "a.db");
    let mut planted = plant_in_remote(&w.remote());
    planted.extend(plant_beside_cache(&cache));
    let c = w.open("h1", "a.db");
    assert_eq!(count(&c, "t"), 1);
    assert!(remaining(&planted).is_empty(), "{:?}", remaining(&planted));
}

#[test]
fn leftovers_in_the_remote_are_swept_after_a_commit() {
    let (w, c) = World::with_one_row();
    let planted = plant_in_remote(&w.remote());
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert!(remaining(&planted).is_empty(), "{:?}", remaining(&planted));
}

#[test]
fn leftovers_of_a_live_writer_are_kept() {
    let (w, c) = World::with_one_row();
    // This connection holds the lease (a batch) while another cache opens.
    pragma(&c, "PRAGMA managedblob_batch=begin").unwrap();
    let planted = plant_in_remote(&w.remote());
    let other = w.open("h2", "a.db");
    assert_eq!(count(&other, "t"), 1);
    assert_eq!(
        remaining(&planted).len(),
        2,
        "swept under a live writer's lease"
    );
    pragma(&c, "PRAGMA managedblob_batch=end").unwrap();
}
