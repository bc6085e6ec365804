//! Helpers for the FFI-facing tests (journal mode, VACUUM INTO, LD_PRELOAD, the
//! loadable extension in a shell): log capture, plain reads of a database file, the
//! built extension, and child processes with a clean environment.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

/// A plain SQLite file's rows of `SELECT x FROM t ORDER BY x`.
pub fn plain_rows(path: &Path) -> Vec<i64> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = c.prepare("SELECT x FROM t ORDER BY x").unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.map(|r| r.unwrap()).collect()
}

/// Run `f` with tracing output at `info` and above going to a buffer (on this
/// thread), and return what `f` returned and what was logged.
pub fn with_log<T>(f: impl FnOnce() -> T) -> (T, String) {
    let buf = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(buf.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (out, text)
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

/// Print why a test cannot run and return None; under CI, fail instead.
pub fn missing<T>(what: &str) -> Option<T> {
    if std::env::var_os("CI").is_some() {
        panic!("{what}; CI is set, so this is a failure, not a skip");
    }
    eprintln!("SKIPPED: {what}");
    None
}

/// The built loadable extension: `$MANAGEDBLOB_EXTENSION`, else
/// `loadable/target/{release,debug}/libmanagedblob.so`.
pub fn extension() -> Option<PathBuf> {
    let hint = "build it with `cargo build --release --manifest-path loadable/Cargo.toml` \
                (needs libclang-dev), or point MANAGEDBLOB_EXTENSION at it";
    if let Some(p) = std::env::var_os("MANAGEDBLOB_EXTENSION") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Some(p)
        } else {
            missing(&format!(
                "MANAGEDBLOB_EXTENSION={} is not a file; {hint}",
                p.display()
            ))
        };
    }
    let root = crate::repo_root().join("loadable/target");
    let built = ["release", "debug"]
        .iter()
        .map(|profile| root.join(profile).join("libmanagedblob.so"))
        .find(|p| p.is_file());
    match built {
        Some(p) => {
            eprintln!("using the extension at {}", p.display());
            Some(p)
        }
        None => missing(&format!(
            "the loadable extension is not built ({} has no release/ or debug/libmanagedblob.so); \
             {hint}",
            root.display()
        )),
    }
}

/// What a child process printed.
#[derive(Debug)]
pub struct Output {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A command run in `dir` (also its HOME, so no ~/.sqliterc applies) without any
/// inherited `MANAGEDBLOB_*` or `LD_PRELOAD` variable.
pub fn command_in(dir: &Path, program: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    cmd.current_dir(dir)
        .env("HOME", dir)
        .env_remove("LD_PRELOAD");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MANAGEDBLOB_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Start `cmd` with its standard input, output and error piped.
pub fn spawn_piped(cmd: &mut std::process::Command) -> std::process::Child {
    use std::process::Stdio;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// Run `cmd` with `stdin` as its input.
pub fn run(mut cmd: std::process::Command, stdin: &str) -> Output {
    let mut child = spawn_piped(&mut cmd);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
