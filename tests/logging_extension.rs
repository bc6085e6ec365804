//! `MANAGEDBLOB_LOG` / `MANAGEDBLOB_LOG_FILE` in the loadable extension, in Debian's
//! stock /usr/bin/sqlite3: loaded with `.load` and preloaded with `LD_PRELOAD`. The
//! extension installs its own subscriber from these variables (the library never
//! does); without them it prints nothing, whatever `RUST_LOG` says.
//!
//! Skipped (printing why) when the extension or /usr/bin/sqlite3 is missing, unless
//! `CI` is set: then it fails.

use std::path::{Path, PathBuf};

use common::{command_in, extension, missing, run, Output, World};

const SQLITE3: &str = "/usr/bin/sqlite3";

/// A line the debug filter lets through on every commit: the local backend's upload.
const DEBUG_LINE: &str = " DEBUG managedblob::backend::local";

/// A temp dir with a remote directory ([`World`]) and the extension, for shell runs.
struct Shell {
    world: World,
    extension: PathBuf,
}

impl Shell {
    fn new() -> Option<Shell> {
        let extension = std::fs::canonicalize(extension()?).unwrap();
        if !Path::new(SQLITE3).is_file() {
            return missing(&format!("{SQLITE3} is not installed"));
        }
        Some(Shell {
            world: World::with_remote_dir(),
            extension,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.world.path(name)
    }

    /// `sqlite3` with `.load` and `.open` of the managed database, running `sql`, with
    /// the extra environment `env`.
    fn loaded(&self, env: &[(&str, &Path)], sql: &str) -> Output {
        let mut cmd = command_in(self.world.dir.path(), SQLITE3);
        cmd.arg("-cmd")
            .arg(format!(".load {}", self.extension.display()))
            .arg("-cmd")
            .arg(".open 'file:corpus.db?vfs=managedblob&remote=remote'")
            .arg(":memory:")
            .envs(env.iter().copied());
        run(cmd, sql)
    }

    /// `sqlite3 'file:corpus.db?vfs=managedblob'` with the library preloaded.
    fn preloaded(&self, env: &[(&str, &Path)], sql: &str) -> Output {
        let mut cmd = command_in(self.world.dir.path(), SQLITE3);
        cmd.arg("file:corpus.db?vfs=managedblob")
            .env("LD_PRELOAD", &self.extension)
            .env("MANAGEDBLOB_REMOTE", self.world.remote())
            .envs(env.iter().copied());
        run(cmd, sql)
    }
}

const WRITE: &str = "CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES (1);\n\
                     SELECT count(*) FROM t;\n";

fn debug() -> (&'static str, &'static Path) {
    ("MANAGEDBLOB_LOG", Path::new("debug"))
}

#[test]
fn with_managedblob_log_debug_loaded_and_preloaded_log_to_stderr() {
    let Some(shell) = Shell::new() else { return };
    let loaded = shell.loaded(&[debug()], WRITE);
    let preloaded = shell.preloaded(&[debug()], WRITE);
    for (out, rows) in [(loaded, "1"), (preloaded, "2")] {
        assert!(out.status.success(), "{out:#?}");
        assert_eq!(out.stdout.trim(), rows, "{out:#?}");
        assert!(out.stderr.contains(DEBUG_LINE), "{out:#?}");
        assert!(out.stderr.contains("commit blocks"), "{out:#?}");
    }
}

#[test]
fn a_crate_filter_selects_managedblob() {
    let Some(shell) = Shell::new() else { return };
    let filter = ("MANAGEDBLOB_LOG", Path::new("managedblob=debug"));
    let out = shell.loaded(&[filter], WRITE);
    assert!(out.stderr.contains(DEBUG_LINE), "{out:#?}");
    let quiet = ("MANAGEDBLOB_LOG", Path::new("managedblob=error"));
    let out = shell.loaded(&[quiet], WRITE);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:#?}");
}

#[test]
fn managedblob_log_file_receives_the_lines_and_is_appended_to() {
    let Some(shell) = Shell::new() else { return };
    let log = shell.path("managedblob.log");
    let file = ("MANAGEDBLOB_LOG_FILE", log.as_path());
    let out = shell.loaded(&[debug(), file], WRITE);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:#?}");
    assert_eq!(out.stdout.trim(), "1");
    let first = std::fs::read_to_string(&log).unwrap();
    assert!(first.contains(DEBUG_LINE), "{first}");

    // A second process (preloaded this time) appends to the same file.
    let out = shell.preloaded(&[debug(), file], WRITE);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:#?}");
    assert_eq!(out.stdout.trim(), "2");
    let both = std::fs::read_to_string(&log).unwrap();
    assert!(both.starts_with(&first), "the file was not appended to");
    assert!(both[first.len()..].contains(DEBUG_LINE), "{both}");
}

#[test]
fn without_managedblob_log_nothing_is_logged_even_with_rust_log() {
    let Some(shell) = Shell::new() else { return };
    let rust_log = ("RUST_LOG", Path::new("trace"));
    let log = shell.path("managedblob.log");
    // The file alone does not turn logging on.
    let file = ("MANAGEDBLOB_LOG_FILE", log.as_path());
    for out in [
        shell.loaded(&[rust_log, file], WRITE),
        shell.preloaded(&[rust_log, file], WRITE),
    ] {
        assert!(out.status.success(), "{out:#?}");
        assert!(out.stderr.is_empty(), "{out:#?}");
    }
    assert!(!log.exists(), "a log file was made without MANAGEDBLOB_LOG");
}

#[test]
fn a_bad_filter_gives_one_line_and_the_database_still_opens() {
    let Some(shell) = Shell::new() else { return };
    let bad = ("MANAGEDBLOB_LOG", Path::new("managedblob=loud"));
    for out in [shell.loaded(&[bad], WRITE), shell.preloaded(&[bad], WRITE)] {
        assert!(out.status.success(), "{out:#?}");
        assert_eq!(out.stderr.lines().count(), 1, "{out:#?}");
        assert!(
            out.stderr
                .starts_with("managedblob: logging stays off: MANAGEDBLOB_LOG="),
            "{out:#?}"
        );
    }
    let rows = shell.loaded(&[], "SELECT count(*) FROM t;\n");
    assert_eq!(rows.stdout.trim(), "2", "both writes landed: {rows:#?}");
}

#[test]
fn an_unwritable_log_file_gives_one_line_and_the_database_still_opens() {
    let Some(shell) = Shell::new() else { return };
    let log = shell.path("no-such-dir").join("managedblob.log");
    let file = ("MANAGEDBLOB_LOG_FILE", log.as_path());
    let out = shell.loaded(&[debug(), file], WRITE);
    assert!(out.status.success(), "{out:#?}");
    assert_eq!(out.stdout.trim(), "1", "{out:#?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:#?}");
    assert!(
        out.stderr
            .starts_with("managedblob: logging stays off: cannot open MANAGEDBLOB_LOG_FILE="),
        "{out:#?}"
    );
}
