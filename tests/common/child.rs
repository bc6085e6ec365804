//! Child processes for the multi-process tests: the test binary re-executed with
//! `--exact child_main --nocapture --test-threads=1` and `MB_CHILD_ROLE` (plus
//! `MB_URI` and a few more `MB_*` variables) in the environment.
//!
//! Each test file that spawns children has a `#[test] fn child_main()` that calls
//! [`child_main`] with its roles; it does nothing in a normal test run. A child talks
//! to its parent through stdout lines that contain `MB:<message>` (the test harness
//! may print its own text on the same line); the parent reads them through [`Proc`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const ROLE: &str = "MB_CHILD_ROLE";
const MARK: &str = "MB:";

/// A child role: its name and what it does with the URI it is given.
pub type Role = (&'static str, fn(&str));

// ---------------------------------------------------------------------------
// The child side

/// Entry point of every child process: run the role named in the environment with
/// `MB_URI`. Returns at once in a normal test run (no role set).
pub fn child_main(roles: &[Role]) {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    parent_alive();
    managedblob::register().expect("register");
    let uri = std::env::var("MB_URI").unwrap_or_default();
    let (_, run) = roles
        .iter()
        .find(|(name, _)| *name == role)
        .unwrap_or_else(|| panic!("unknown child role {role}"));
    run(&uri);
}

/// A variable the parent set for this child.
pub fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("child needs {key}"))
}

/// A number the parent set for this child.
pub fn env_num<T: FromStr>(key: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    env(key).parse().unwrap_or_else(|e| panic!("{key}: {e:?}"))
}

/// A setting from the environment, or its default.
pub fn setting<T: FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// Whether the parent that spawned this child is still there (an orphan is
/// re-parented), so a child never outlives an interrupted test run for long.
pub fn parent_alive() -> bool {
    static PARENT: std::sync::OnceLock<libc::pid_t> = std::sync::OnceLock::new();
    // SAFETY: getppid has no preconditions and touches no memory.
    let now = unsafe { libc::getppid() };
    *PARENT.get_or_init(|| now) == now
}

/// Sleep up to `limit`, waking early (and failing) if the parent went away.
pub fn sleep_while_parent_alive(limit: Duration) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        assert!(parent_alive(), "the parent test process went away");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Tell the parent something: one stdout line, flushed now.
pub fn say(msg: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{MARK}{msg}").unwrap();
    out.flush().unwrap();
}

/// Wait until `path` exists (the parent's go signal), failing if the parent left.
pub fn wait_for_file(path: &str, limit: Duration) {
    let until = Instant::now() + limit;
    while !Path::new(path).exists() {
        assert!(parent_alive(), "the parent test process went away");
        assert!(Instant::now() < until, "no go file {path} after {limit:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Sleep a random number of milliseconds in `range`.
pub fn pause_ms(range: std::ops::Range<u64>) {
    thread::sleep(Duration::from_millis(fastrand::u64(range)));
}

// ---------------------------------------------------------------------------
// The parent side

/// A child process running one role, with its marker lines on a channel.
pub struct Proc {
    pub name: String,
    child: Child,
    marks: Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Start this test binary as a child running `role` on `uri`, with `vars` set.
    pub fn spawn(name: &str, role: &str, uri: &str, vars: &[(&str, String)]) -> Proc {
        Proc::spawn_without(name, role, uri, vars, &[])
    }

    /// [`Proc::spawn`], with the variables `removed` taken out of its environment.
    pub fn spawn_without(
        name: &str,
        role: &str,
        uri: &str,
        vars: &[(&str, String)],
        removed: &[&str],
    ) -> Proc {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        for var in removed {
            cmd.env_remove(var);
        }
        cmd.args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env("MB_URI", uri)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let (tx, marks) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let all = stdout.clone();
        let out_reader = thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(MARK) {
                    let _ = tx.send(line[at + MARK.len()..].to_string());
                }
                let mut all = all.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut err = child.stderr.take().unwrap();
        let all = stderr.clone();
        let err_reader = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                all.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proc {
            name: name.to_string(),
            child,
            marks,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
            status: None,
        }
    }

    pub fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).unwrap()
    }

    /// What the child printed so far, for failure messages (the tail of long logs).
    pub fn output(&self) -> String {
        // Give the reader threads a moment to catch up with a dead child.
        thread::sleep(Duration::from_millis(50));
        let tail = |s: &str| {
            let start = s.len().saturating_sub(6000);
            let start = (start..s.len())
                .find(|i| s.is_char_boundary(*i))
                .unwrap_or(s.len());
            s[start..].to_string()
        };
        format!(
            "--- {} (pid {}) status {:?}\n--- stdout (tail):\n{}\n--- stderr (tail):\n{}",
            self.name,
            self.child.id(),
            self.status,
            tail(&self.stdout.lock().unwrap()),
            tail(&self.stderr.lock().unwrap())
        )
    }

    /// The next marker message, waiting at most `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<String> {
        match self.marks.recv_timeout(timeout) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // Stdout closed: the child ended.
                self.status = self.child.wait().ok();
                None
            }
        }
    }

    /// Wait for the marker message that starts with `prefix` (others are skipped).
    pub fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(m) if m.starts_with(prefix) => return m,
                Some(m) if m.starts_with("ERR") => {
                    panic!("{} reported {m}\n{}", self.name, self.output())
                }
                Some(_) => {}
                None => panic!(
                    "{} did not say {prefix} within {timeout:?}\n{}",
                    self.name,
                    self.output()
                ),
            }
        }
    }

    /// Send `sig` to the child.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) touches no memory; the pid is our child, not yet reaped,
        // so it cannot have been reused by another process.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(
            rc,
            0,
            "signal {sig} to {}: {}",
            self.name,
            std::io::Error::last_os_error()
        );
    }

    /// SIGKILL the child and reap it.
    pub fn sigkill(&mut self) {
        self.signal(libc::SIGKILL);
        let status = self.child.wait().expect("wait");
        self.status = Some(status);
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{} was not killed by SIGKILL: {status:?}\n{}",
            self.name,
            self.output()
        );
    }

    /// Wait for the child to exit, and require success.
    pub fn wait_success(&mut self, timeout: Duration) {
        let status = self.wait_exit(timeout);
        assert!(status.success(), "{} failed\n{}", self.name, self.output());
    }

    /// Wait for the child to exit (killing it after `timeout`), and say how it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} still running after {timeout:?}; killed\n{}",
                    self.name,
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        self.status = Some(status);
        status
    }

    /// Wait for the child to exit and require success; then all it printed:
    /// (stdout, stderr).
    pub fn finish(mut self, timeout: Duration) -> (String, String) {
        self.wait_success(timeout);
        for reader in std::mem::take(&mut self.readers) {
            reader.join().expect("output reader");
        }
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (out, err)
    }

    /// Every marker message still queued (the child must have ended).
    pub fn drain(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(m) = self.marks.recv_timeout(Duration::from_secs(5)) {
            out.push(m);
        }
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            if let Ok(None) = self.child.try_wait() {
                // A stopped child must be continued to die of SIGKILL promptly.
                let _ = self.child.kill();
                // SAFETY: as in signal(); the child is not reaped yet.
                unsafe { libc::kill(self.pid(), libc::SIGCONT) };
            }
            let _ = self.child.wait();
        }
    }
}

/// Split a marker message `<head> status=<json>` into its head and status.
pub fn split_status(message: &str) -> (&str, serde_json::Value) {
    let (head, json) = message
        .split_once(" status=")
        .unwrap_or_else(|| panic!("{message:?} carries no status"));
    (head, serde_json::from_str(json).expect("status JSON"))
}
