//! The literal form with the library preloaded: `LD_PRELOAD=libmanagedblob.so
//! MANAGEDBLOB_REMOTE=... sqlite3 'file:corpus.db?vfs=managedblob'` in Debian's stock
//! /usr/bin/sqlite3 (3.40.1), which links the shared libsqlite3. The library registers
//! the VFS when it is loaded; a later `.load` of it is harmless.
//!
//! Skipped (printing why) when the extension or /usr/bin/sqlite3 is missing, unless
//! `CI` is set: then it fails. Never calls `managedblob::register()`.

use std::path::{Path, PathBuf};

use common::{command_in, extension, missing, plain_rows, run, Output};

const SQLITE3: &str = "/usr/bin/sqlite3";

struct Shell {
    dir: tempfile::TempDir,
    extension: PathBuf,
}

impl Shell {
    fn new() -> Option<Shell> {
        let extension = extension()?;
        if !Path::new(SQLITE3).is_file() {
            return missing(&format!("{SQLITE3} is not installed"));
        }
        let dir = tempfile::tempdir().unwrap();
        for sub in ["remote", "h1", "h2"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        Some(Shell {
            dir,
            extension: std::fs::canonicalize(extension).unwrap(),
        })
    }

    fn remote(&self) -> PathBuf {
        self.dir.path().join("remote")
    }

    /// `sqlite3 <args>` with the library preloaded (or not) and MANAGEDBLOB_REMOTE set,
    /// reading `sql` from stdin.
    fn sqlite3(&self, preload: bool, args: &[&str], sql: &str) -> Output {
        let mut cmd = command_in(self.dir.path(), SQLITE3);
        cmd.env("MANAGEDBLOB_REMOTE", self.remote()).args(args);
        if preload {
            cmd.env("LD_PRELOAD", &self.extension);
        }
        run(cmd, sql)
    }

    fn ok(&self, args: &[&str], sql: &str) -> String {
        let out = self.sqlite3(true, args, sql);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "sqlite3 {args:?}: {out:#?}"
        );
        out.stdout
    }
}

#[test]
fn the_literal_form_works_with_the_library_preloaded() {
    let Some(shell) = Shell::new() else { return };
    let out = shell.ok(
        &["file:h1/corpus.db?vfs=managedblob"],
        "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);\nPRAGMA managedblob_status;\n",
    );
    assert!(out.contains("\"blob\":\"corpus.db\""), "{out}");
    assert_eq!(plain_rows(&shell.remote().join("corpus.db")), vec![1, 2]);
    // Another cache (another host) sees the commit.
    let out = shell.ok(
        &[
            "file:h2/corpus.db?vfs=managedblob",
            "SELECT group_concat(x) FROM t",
        ],
        "",
    );
    assert_eq!(out.trim(), "1,2");
}

#[test]
fn without_the_preload_the_same_form_finds_no_vfs() {
    let Some(shell) = Shell::new() else { return };
    let out = shell.sqlite3(false, &["file:h1/corpus.db?vfs=managedblob"], "SELECT 1;\n");
    assert!(out.stderr.contains("no such vfs: managedblob"), "{out:#?}");
}

#[test]
fn loading_it_again_is_harmless() {
    let Some(shell) = Shell::new() else { return };
    let load = format!(".load {}\n", shell.extension.display());
    let out = shell.ok(
        &["file:h1/corpus.db?vfs=managedblob"],
        &format!(
            "CREATE TABLE t(x);\n{load}INSERT INTO t VALUES (3);\n{load}SELECT count(*) FROM t;\n"
        ),
    );
    assert_eq!(out.trim(), "1");
    assert_eq!(plain_rows(&shell.remote().join("corpus.db")), vec![3]);
}

#[test]
fn the_shell_sees_the_mode_in_force_for_wal_and_a_plain_vacuum_into() {
    let Some(shell) = Shell::new() else { return };
    let out = shell.ok(
        &["file:h1/corpus.db?vfs=managedblob"],
        "PRAGMA journal_mode=WAL;\nCREATE TABLE t(x); INSERT INTO t VALUES (5);\n\
         VACUUM INTO 'copy.db';\n",
    );
    assert_eq!(out.trim(), "delete");
    assert_eq!(plain_rows(&shell.dir.path().join("copy.db")), vec![5]);
    assert!(!shell.remote().join("copy.db").exists());
}

#[test]
fn debians_python_finds_the_vfs_with_the_library_preloaded() {
    let Some(shell) = Shell::new() else { return };
    const PYTHON3: &str = "/usr/bin/python3";
    if !Path::new(PYTHON3).is_file() {
        missing::<()>(&format!("{PYTHON3} is not installed"));
        return;
    }
    shell.ok(
        &["file:h1/corpus.db?vfs=managedblob"],
        "CREATE TABLE t(x); INSERT INTO t VALUES (8);\n",
    );
    // Python loads its libsqlite3 privately (RTLD_LOCAL), and never loads the extension.
    let mut cmd = command_in(shell.dir.path(), PYTHON3);
    cmd.env("MANAGEDBLOB_REMOTE", shell.remote())
        .env("LD_PRELOAD", &shell.extension)
        .args([
            "-c",
            "import sqlite3\n\
             c = sqlite3.connect('file:h2/corpus.db?vfs=managedblob', uri=True)\n\
             print(c.execute('SELECT x FROM t').fetchall())",
        ]);
    let out = run(cmd, "");
    assert!(out.status.success(), "{out:#?}");
    assert_eq!(out.stdout.trim(), "[(8,)]");
}
