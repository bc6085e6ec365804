//! The loadable extension (`loadable/`, `libmanagedblob.so`) driven from the outside:
//! Debian's sqlite3 shell (/usr/bin/sqlite3), Debian's Python sqlite3 module
//! (/usr/bin/python3) and a rusqlite app with a bundled, newer SQLite, each against a
//! local-backend remote in a temp dir. See docs/LOADABLE.md for the forms tested here.
//!
//! The extension is taken from `$MANAGEDBLOB_EXTENSION`, else
//! `loadable/target/release/libmanagedblob.so`, else `loadable/target/debug/...`.
//! When it, /usr/bin/sqlite3 or /usr/bin/python3 is missing, a test prints why and
//! passes, unless `CI` is set: then it fails.
//!
//! This file never calls `managedblob::register()` (nor uses `common::World`, which
//! does): every `managedblob` VFS seen here must come from the extension.
//!
//! With the `azure` feature, the shell also runs against an Azurite container (the
//! extension is built with the `azure` feature), named by its URL with an account SAS
//! in the `remote` URI parameter; skipped when Azurite is not installed, unless CI is
//! set.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{extension, missing, spawn_piped};
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

const SQLITE3: &str = "/usr/bin/sqlite3";
const PYTHON3: &str = "/usr/bin/python3";
/// No child may run longer than this; a hang (say, a lease never released) fails the test.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Prerequisites

fn program(path: &str) -> Option<()> {
    if Path::new(path).is_file() {
        Some(())
    } else {
        missing(&format!("{path} is not installed"))
    }
}

// ---------------------------------------------------------------------------
// A temp dir laid out like the documentation's examples

/// A temp dir holding `libmanagedblob.so` (a link to the built one, so the shell can
/// `.load ./libmanagedblob` exactly as documented), a `remote/` directory and one
/// directory per host cache. Children run with it as their working directory and HOME
/// (so no ~/.sqliterc changes the output), without any MANAGEDBLOB_* variable.
struct Place {
    dir: tempfile::TempDir,
    extension: PathBuf,
}

impl Place {
    fn new(extension: &Path) -> Place {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("remote")).unwrap();
        for host in ["h1", "h2"] {
            std::fs::create_dir(dir.path().join(host)).unwrap();
        }
        std::os::unix::fs::symlink(extension, dir.path().join("libmanagedblob.so")).unwrap();
        Place {
            dir,
            extension: extension.to_path_buf(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remote_blob(&self, name: &str) -> PathBuf {
        self.path().join("remote").join(name)
    }

    /// The documented `.open` argument, relative to the working directory.
    fn uri(&self, host: &str, db: &str, extra: &str) -> String {
        format!("file:{host}/{db}?vfs=managedblob&remote=remote{extra}")
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.path()).env("HOME", self.path());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MANAGEDBLOB_") {
                c.env_remove(key);
            }
        }
        c
    }

    /// `sqlite3 -cmd <load> -cmd <open>`.
    fn sqlite3(&self, load: &str, open: &str) -> Command {
        let mut c = self.command(SQLITE3);
        c.arg("-cmd").arg(load).arg("-cmd").arg(open);
        c
    }

    /// `sqlite3 -cmd '.load ./libmanagedblob' -cmd ".open '<uri>'"` reading `script`
    /// from standard input.
    fn shell(&self, uri: &str, script: &str) -> Output {
        run(
            self.sqlite3(".load ./libmanagedblob", &format!(".open '{uri}'")),
            script,
        )
    }

    /// [`Place::shell`] on host h1's cache of corpus.db.
    fn shell_on_h1(&self, script: &str) -> Output {
        self.shell(&self.uri("h1", "corpus.db", ""), script)
    }

    /// [`Place::python`] on `script` after [`PY_LOAD`] and its `load()`.
    fn python_with_managedblob(&self, script: &str) -> Output {
        self.python(&format!("{PY_LOAD}\nload()\n{script}"))
    }

    /// Run a Python script with Debian's python3 (-I: no user site, no PYTHON* vars);
    /// it gets the extension's absolute path as argv[1].
    fn python(&self, script: &str) -> Output {
        let file = self.path().join("script.py");
        std::fs::write(&file, script).unwrap();
        let mut c = self.command(PYTHON3);
        c.arg("-I").arg(&file).arg(&self.extension);
        run(c, "")
    }
}

#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    #[track_caller]
    fn assert_clean(&self) -> &Self {
        assert!(
            self.code == Some(0) && self.stderr.trim().is_empty(),
            "expected a clean run: {self:#?}"
        );
        self
    }
}

/// Run `command` with `stdin` as its standard input; kill it after CHILD_TIMEOUT.
fn run(mut command: Command, stdin: &str) -> Output {
    let mut child = spawn_piped(&mut command);
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} ran longer than {CHILD_TIMEOUT:?}; stderr so far: {}",
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    writer.join().unwrap();
    Output {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Open the remote blob with plain SQLite (no VFS) and count the rows of `table`.
fn remote_count(blob: &Path, table: &str) -> i64 {
    let c = Connection::open_with_flags(blob, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open the remote blob {}: {e}", blob.display()));
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

macro_rules! prerequisites {
    ($($program:expr),*) => {{
        let Some(extension) = extension() else { return };
        $( let Some(()) = program($program) else { return }; )*
        Place::new(&extension)
    }};
}

// ---------------------------------------------------------------------------
// The sqlite3 shell

#[test]
fn shell_loads_opens_the_uri_and_writes_through_to_the_remote() {
    let place = prerequisites!(SQLITE3);
    let out = place.shell_on_h1(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT);\n\
         INSERT INTO t(body) VALUES ('one'), ('two');\n\
         SELECT id, body FROM t ORDER BY id;\n\
         PRAGMA database_list;\n",
    );
    out.assert_clean();
    let lines = out.lines();
    assert_eq!(&lines[..2], ["1|one", "2|two"], "{out:#?}");
    // The main database is the cache file, opened through the URI.
    assert!(
        lines[2].starts_with("0|main|") && lines[2].ends_with("/h1/corpus.db"),
        "{out:#?}"
    );
    assert_eq!(remote_count(&place.remote_blob("corpus.db"), "t"), 2);
}

#[test]
fn shell_load_accepts_an_absolute_path_with_the_suffix() {
    let place = prerequisites!(SQLITE3);
    let c = place.sqlite3(
        &format!(".load {}", place.extension.display()),
        &format!(".open {}", place.uri("h1", "abs.db", "")),
    );
    let out = run(
        c,
        "CREATE TABLE t(x);\nINSERT INTO t VALUES (7);\nSELECT x FROM t;\n",
    );
    out.assert_clean();
    assert_eq!(out.lines(), ["7"]);
    assert_eq!(remote_count(&place.remote_blob("abs.db"), "t"), 1);
}

#[test]
fn shell_one_shot_form_runs_sql_arguments_on_the_managed_database() {
    // `:memory:` is a placeholder FILENAME that `.load` opens; the SQL arguments run
    // after the -cmd options, on the database `.open` switched to.
    let place = prerequisites!(SQLITE3);
    let mut c = place.sqlite3(
        ".load ./libmanagedblob",
        &format!(".open '{}'", place.uri("h1", "corpus.db", "")),
    );
    c.arg(":memory:")
        .arg("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)")
        .arg("SELECT sum(x) FROM t")
        .arg("PRAGMA managedblob_status");
    let out = run(c, "");
    out.assert_clean();
    let lines = out.lines();
    assert_eq!(lines[0], "3", "{out:#?}");
    assert_eq!(common::uploads(&json(lines[1])), 2, "{out:#?}");
    assert_eq!(remote_count(&place.remote_blob("corpus.db"), "t"), 2);
}

#[test]
fn shell_pragmas_answer_one_readable_row_each() {
    let place = prerequisites!(SQLITE3);
    let out = place.shell_on_h1(
        "CREATE TABLE t(x);\n\
         PRAGMA managedblob_batch=begin;\n\
         INSERT INTO t VALUES (1);\n\
         INSERT INTO t VALUES (2);\n\
         INSERT INTO t VALUES (3);\n\
         PRAGMA managedblob_batch=end;\n\
         PRAGMA managedblob_flush;\n\
         PRAGMA managedblob_refresh;\n\
         PRAGMA managedblob_status;\n",
    );
    out.assert_clean();
    let lines = out.lines();
    assert_eq!(&lines[..4], ["begin", "end", "ok", "ok"], "{out:#?}");
    assert_eq!(lines.len(), 5, "{out:#?}");
    let status = json(lines[4]);
    // CREATE TABLE uploaded once, the three-insert batch once more.
    assert_eq!(common::uploads(&status), 2, "{status}");
    assert_eq!(status["dirty"], false, "{status}");
    assert_eq!(status["batch_depth"], 0, "{status}");
    assert_eq!(status["lease_held"], false, "{status}");
    assert_eq!(status["blob"], "corpus.db", "{status}");
    assert_eq!(remote_count(&place.remote_blob("corpus.db"), "t"), 3);
}

#[test]
fn shell_pragma_errors_reach_stderr() {
    let place = prerequisites!(SQLITE3);
    let out = place.shell_on_h1("PRAGMA journal_mode=WAL;\nPRAGMA managedblob_batch=later;\n");
    assert!(
        out.stderr
            .contains("managedblob_batch takes 'begin' or 'end', got 'later'"),
        "{out:#?}"
    );
    // WAL cannot be set on a managed database: the shell shows the mode in force.
    assert_eq!(out.lines().first(), Some(&"delete"), "{out:#?}");
}

#[test]
fn second_shell_on_another_cache_reads_the_first_ones_commits() {
    let place = prerequisites!(SQLITE3);
    place
        .shell_on_h1("CREATE TABLE t(x);\nINSERT INTO t VALUES (1), (2), (3);\n")
        .assert_clean();

    // Host 2 reads, then (while its connection stays open) host 1 commits twice more
    // from another process, then host 2 reads again: staleness_ms=0 makes it check the
    // remote at its next read.
    // (The writer must not read the reading shell's standard input: it gets its own.)
    let writer = format!(
        "printf 'INSERT INTO t VALUES (4);\\nINSERT INTO t VALUES (5);\\n' | \
         {SQLITE3} -cmd '.load ./libmanagedblob' -cmd \".open '{}'\"\n",
        place.uri("h1", "corpus.db", "")
    );
    std::fs::write(place.path().join("writer.sh"), writer).unwrap();
    let out = place.shell(
        &place.uri("h2", "corpus.db", "&staleness_ms=0"),
        "SELECT count(*), sum(x) FROM t;\n\
         .shell sh writer.sh\n\
         SELECT count(*), sum(x) FROM t;\n\
         PRAGMA managedblob_status;\n",
    );
    out.assert_clean();
    let lines = out.lines();
    assert_eq!(&lines[..2], ["3|6", "5|15"], "{out:#?}");
    let status = json(lines[2]);
    assert_eq!(common::fetches(&status), 2, "{status}");
    assert_eq!(common::uploads(&status), 0, "{status}");
    assert!(place.path().join("h2/corpus.db").is_file());
}

#[test]
fn shell_reports_a_missing_remote_by_name() {
    let place = prerequisites!(SQLITE3);
    let out = place.shell("file:h1/corpus.db?vfs=managedblob", "CREATE TABLE t(x);\n");
    let expected = "Error: unable to open database \"file:h1/corpus.db?vfs=managedblob\": \
                    automatic extension loading failed: managedblob: setting 'remote' is missing";
    assert!(out.stderr.contains(expected), "{out:#?}");
    assert!(out.stderr.contains("MANAGEDBLOB_REMOTE"), "{out:#?}");
    // The stock shell then goes on in an in-memory database and exits 0 (documented):
    // the CREATE TABLE succeeded there, and nothing reached the remote.
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(!place.remote_blob("corpus.db").exists());
}

#[test]
fn shell_reports_a_wrong_remote_by_name() {
    let place = prerequisites!(SQLITE3);
    let out = place.shell(
        "file:h1/corpus.db?vfs=managedblob&remote=s3://bucket/dir",
        "SELECT 1;\n",
    );
    assert!(
        out.stderr.contains(
            "automatic extension loading failed: managedblob: setting 'remote' (URI parameter \
             'remote') is invalid: unknown scheme 's3://'"
        ),
        "{out:#?}"
    );
}

/// The memory backend is a test double compiled only with the `testing` feature; the
/// extension, a release artifact, is built without it and says so.
#[test]
fn shell_refuses_a_memory_remote_the_release_build_does_not_have() {
    let place = prerequisites!(SQLITE3);
    let out = place.shell(
        "file:h1/corpus.db?vfs=managedblob&remote=memory:shared",
        "SELECT 1;\n",
    );
    assert!(
        out.stderr.contains(
            "managedblob: setting 'remote' (URI parameter 'remote') is invalid: memory: \
             remotes are managedblob's in-memory test double, built only for its own tests \
             (the `testing` cargo feature)"
        ),
        "{out:#?}"
    );
    assert!(!place.path().join("h1/corpus.db").exists(), "{out:#?}");
}

#[test]
fn shell_cannot_open_the_database_argument_before_load() {
    // The shell opens its FILENAME argument before it runs -cmd, so the VFS does not
    // exist yet: this form does not work (documented).
    let place = prerequisites!(SQLITE3);
    let mut c = place.command(SQLITE3);
    c.arg("-cmd")
        .arg(".load ./libmanagedblob")
        .arg(place.uri("h1", "corpus.db", ""));
    let out = run(c, "SELECT 1;\n");
    assert!(out.stderr.contains("no such vfs: managedblob"), "{out:#?}");
    assert_ne!(out.code, Some(0), "{out:#?}");
}

// ---------------------------------------------------------------------------
// Python's sqlite3 module

const PY_LOAD: &str = r#"
import json, sqlite3, sys

def load():
    boot = sqlite3.connect(":memory:")
    boot.enable_load_extension(True)
    boot.load_extension(sys.argv[1])
    boot.close()  # the VFS stays registered after the loading connection closes

def status(c):
    return json.loads(c.execute("PRAGMA managedblob_status").fetchone()[0])
"#;

#[test]
fn python_batch_uploads_once() {
    let place = prerequisites!(PYTHON3);
    let script = format!(
        r#"
c = sqlite3.connect("{uri}", uri=True, isolation_level=None)
c.execute("CREATE TABLE t(x)")
before = status(c)
assert c.execute("PRAGMA managedblob_batch=begin").fetchone() == ("begin",)
for i in range(10):
    c.execute("INSERT INTO t VALUES (?)", (i,))
mid = status(c)
assert c.execute("PRAGMA managedblob_batch=end").fetchone() == ("end",)
after = status(c)
print(json.dumps({{"before": before, "mid": mid, "after": after}}))
print(c.execute("SELECT count(*) FROM t").fetchone()[0])
c.close()
"#,
        uri = place.uri("h1", "corpus.db", "")
    );
    let out = place.python_with_managedblob(&script);
    out.assert_clean();
    let lines = out.lines();
    let report = json(lines[0]);
    assert_eq!(common::uploads(&report["before"]), 1, "{report}");
    // Inside the batch the commits stay local, under the lease.
    assert_eq!(common::uploads(&report["mid"]), 1, "{report}");
    assert_eq!(report["mid"]["dirty"], true, "{report}");
    assert_eq!(report["mid"]["batch_depth"], 1, "{report}");
    assert_eq!(report["mid"]["lease_held"], true, "{report}");
    // The end uploads once for ten commits.
    assert_eq!(common::uploads(&report["after"]), 2, "{report}");
    assert_eq!(report["after"]["dirty"], false, "{report}");
    assert_eq!(report["after"]["lease_held"], false, "{report}");
    assert_eq!(lines[1], "10");
    assert_eq!(remote_count(&place.remote_blob("corpus.db"), "t"), 10);
}

#[test]
fn python_reads_what_the_shell_wrote() {
    let place = prerequisites!(SQLITE3, PYTHON3);
    place
        .shell_on_h1("CREATE TABLE t(x);\nINSERT INTO t VALUES ('from the shell');\n")
        .assert_clean();
    let script = format!(
        r#"
c = sqlite3.connect("{uri}", uri=True)
print(c.execute("SELECT x FROM t").fetchone()[0])
requests = status(c)["requests"]
print(requests.get("versions_down", requests["download"]))
"#,
        uri = place.uri("h2", "corpus.db", "")
    );
    let out = place.python_with_managedblob(&script);
    out.assert_clean();
    assert_eq!(out.lines(), ["from the shell", "1"]);
}

#[test]
fn python_missing_or_wrong_remote_raises_with_our_message() {
    let place = prerequisites!(PYTHON3);
    let script = r#"
for uri in ["file:h1/a.db?vfs=managedblob", "file:h1/b.db?vfs=managedblob&remote=ftp://host/dir"]:
    try:
        sqlite3.connect(uri, uri=True)
        print("opened", uri)
    except sqlite3.Error as e:
        print(type(e).__name__ + ": " + str(e))
"#;
    let out = place.python_with_managedblob(script);
    out.assert_clean();
    let lines = out.lines();
    assert!(
        lines[0].starts_with(
            "OperationalError: automatic extension loading failed: managedblob: setting \
             'remote' is missing"
        ),
        "{out:#?}"
    );
    assert!(
        lines[1].starts_with(
            "OperationalError: automatic extension loading failed: managedblob: setting \
             'remote' (URI parameter 'remote') is invalid: unknown scheme 'ftp://'"
        ),
        "{out:#?}"
    );
}

// ---------------------------------------------------------------------------
// A rusqlite app with a bundled (newer) SQLite

#[test]
fn rusqlite_app_with_bundled_sqlite_loads_the_extension() {
    let Some(extension) = extension() else { return };
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("remote");
    std::fs::create_dir(&remote).unwrap();
    {
        let boot = Connection::open_in_memory().unwrap();
        // SAFETY: the library is this project's own extension, and no SQL runs on `boot`
        // while loading is enabled (the guard disables it again).
        unsafe {
            let _guard = rusqlite::LoadExtensionGuard::new(&boot).unwrap();
            boot.load_extension(&extension, None::<&str>)
                .unwrap_or_else(|e| panic!("load {}: {e}", extension.display()));
        }
    }
    let uri = format!(
        "file:{}?vfs=managedblob&remote={}",
        dir.path().join("app.db").display(),
        remote.display()
    );
    let c = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
        .unwrap();
    let status: String = c
        .query_row("PRAGMA managedblob_status", [], |r| r.get(0))
        .unwrap();
    assert_eq!(common::uploads(&json(&status)), 2, "{status}");
    drop(c);
    assert_eq!(remote_count(&remote.join("app.db"), "t"), 2);

    let e = Connection::open_with_flags(
        format!("file:{}?vfs=managedblob", dir.path().join("b.db").display()),
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("managedblob: setting 'remote' is missing"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// The sqlite3 shell against Azurite

/// Two shells on two caches, one Azurite container: the first creates, inserts and
/// selects, and reports its status; the second reads those commits, and a commit
/// another shell makes while it is open. The remote URI parameter is the container URL
/// with an account SAS, URL-encoded (`&` as `%26`, ...), so no variable is needed.
#[cfg(feature = "azure")]
#[test]
fn shell_on_azurite_writes_and_a_second_shell_on_another_cache_reads_it() {
    use managedblob::internal::backend::Backend;
    let place = prerequisites!(SQLITE3);
    let Some(azurite) = common::azurite::shared() else {
        return;
    };
    let container = azurite.fresh(Default::default());
    let remote = azurite.container_url_with_sas(container.url().container());
    let signature = remote.rsplit("sig=").next().unwrap().to_string();
    let uri = |host: &str, extra: &str| {
        format!(
            "file:{host}/corpus.db?vfs=managedblob&remote={}{extra}",
            common::uri_escape(&remote)
        )
    };

    // A long linger: the status below sees the lease kept warm after the commits,
    // whatever the pace; the shell's exit gives it back.
    let out = place.shell(
        &uri("h1", "&lease_linger_ms=60000"),
        "CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT);\n\
         INSERT INTO t(body) VALUES ('one'), ('two'), ('three');\n\
         SELECT id, body FROM t ORDER BY id;\n\
         PRAGMA managedblob_status;\n",
    );
    out.assert_clean();
    let lines = out.lines();
    assert_eq!(&lines[..3], ["1|one", "2|two", "3|three"], "{out:#?}");
    let status = json(lines[3]);
    let remote_shown = status["remote"].as_str().unwrap_or_default();
    assert!(
        remote_shown.starts_with("azure:http://127.0.0.1:")
            && remote_shown.ends_with(container.url().container()),
        "{status}"
    );
    assert!(!lines[3].contains(&signature), "the SAS is shown: {status}");
    assert_eq!(status["blob"], "corpus.db", "{status}");
    assert_eq!(status["dirty"], false, "{status}");
    assert_eq!(
        status["lease_held"], true,
        "kept warm for the next write: {status}"
    );
    assert_eq!(status["last_error"], Value::Null, "{status}");
    // Two autocommit transactions, two new versions (whole or by blocks).
    assert_eq!(common::uploads(&status), 2, "{status}");

    // The blob is a plain SQLite database.
    let mut bytes = Vec::new();
    container
        .download("corpus.db", &mut bytes)
        .expect("download the blob");
    let copy = place.path().join("downloaded.db");
    std::fs::write(&copy, &bytes).unwrap();
    assert_eq!(remote_count(&copy, "t"), 3);

    // Host 2 reads; host 1 commits twice more from another shell while host 2's
    // connection stays open; host 2 (staleness_ms=0) reads those too.
    // (The writer must not read the reading shell's standard input: it gets its own.)
    let writer = format!(
        "{SQLITE3} -cmd '.load ./libmanagedblob' -cmd \".open '{}'\" <<'SQL'\n\
         INSERT INTO t(body) VALUES ('four');\n\
         INSERT INTO t(body) VALUES ('five');\n\
         SQL\n",
        uri("h1", "")
    );
    std::fs::write(place.path().join("writer.sh"), writer).unwrap();
    let out = place.shell(
        &uri("h2", "&staleness_ms=0"),
        "SELECT count(*), group_concat(body, ',') FROM t;\n\
         .shell sh writer.sh\n\
         SELECT count(*), group_concat(body, ',') FROM t;\n\
         PRAGMA managedblob_status;\n",
    );
    out.assert_clean();
    let lines = out.lines();
    assert_eq!(
        &lines[..2],
        ["3|one,two,three", "5|one,two,three,four,five"],
        "{out:#?}"
    );
    let status = json(lines[2]);
    assert_eq!(common::uploads(&status), 0, "{status}");
    assert_eq!(common::fetches(&status), 2, "{status}");
    assert!(place.path().join("h2/corpus.db").is_file());
    assert!(
        !out.stdout.contains(&signature) && !out.stderr.contains(&signature),
        "{out:#?}"
    );
}
