//! Issue 11, item 6, side by side: one-row autocommits into a 4 MiB and a 512 MiB
//! database on the local backend, alternating between the two so that both see the
//! same machine, with medians per size and their ratio (the goal: within 2x).
//!
//! `cargo run --release --example commit_scaling -- [commits] [settle seconds] [dir]`
//! (defaults 40, 0 and a temp dir). The settle pause between building the databases
//! and the commits matters on ext4 without a journal: for 30 s after files are deleted
//! (the first upload stages every chunk of the 512 MiB database as a file, then
//! removes them) the kernel's inode allocator skips over the deleted inodes, which
//! slows every file creation (a commit makes a few) on both databases alike.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

/// A database of about `mib` MiB (rows of 1000 random bytes) in `dir`, its remote a
/// directory beside it, built in one transaction (the first upload).
fn build(dir: &Path, mib: u64) -> Connection {
    let remote = dir.join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    let uri = format!(
        "file:{}?vfs=managedblob&remote={}",
        dir.join("cache.db").display(),
        remote.display()
    );
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI;
    let c = Connection::open_with_flags(uri, flags).unwrap();
    c.execute_batch(&format!(
        "PRAGMA cache_size = -65536;
         BEGIN;
         CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
         INSERT INTO t(b) SELECT randomblob(1000) FROM n;
         COMMIT;",
        mib * 1024
    ))
    .unwrap();
    one_row(&c);
    c
}

fn one_row(c: &Connection) {
    c.execute("INSERT INTO t(b) VALUES (randomblob(1000))", [])
        .unwrap();
}

fn median_ms(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let commits: usize = args.get(1).map_or(40, |a| a.parse().expect("commits"));
    let settle: u64 = args
        .get(2)
        .map_or(0, |a| a.parse().expect("settle seconds"));
    let tmp =
        tempfile::tempdir_in(args.get(3).map_or_else(std::env::temp_dir, Into::into)).unwrap();
    managedblob::register().unwrap();
    let sizes = [4, 512];
    let dbs: Vec<Connection> = sizes
        .iter()
        .map(|mib| {
            let dir = tmp.path().join(format!("{mib}"));
            std::fs::create_dir_all(&dir).unwrap();
            build(&dir, *mib)
        })
        .collect();
    std::thread::sleep(Duration::from_secs(settle));
    let mut times = vec![Vec::new(); sizes.len()];
    for _ in 0..commits {
        for (c, t) in dbs.iter().zip(&mut times) {
            let start = Instant::now();
            one_row(c);
            t.push(start.elapsed());
        }
    }
    let small = median_ms(&mut times[0]);
    let large = median_ms(&mut times[1]);
    println!(
        "one-row commit, local backend, {commits} each, settled {settle} s: \
         4 MiB {small:.2} ms, 512 MiB {large:.2} ms (median): {:.2}x",
        large / small
    );
}
