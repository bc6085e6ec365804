//! One process-wide tokio runtime for every Azure call, driven from synchronous code.
//!
//! The VFS is synchronous and may be called from anywhere: a plain thread, or the
//! worker thread of an application's own tokio runtime (an async web server calling
//! SQLite). `Runtime::block_on` panics in the latter ("Cannot start a runtime from
//! within a runtime"), so nothing here ever calls it. Instead every call is
//! `spawn`ed onto our runtime and the caller waits on a `std::sync::mpsc` channel,
//! which blocks the calling thread the way any synchronous I/O does and needs no
//! runtime context (tokio's own `blocking_recv` would panic inside a runtime too).
//!
//! The runtime is created on first use and lives until the process exits (a static
//! is never dropped, so it is never dropped from async code either). It has two
//! worker threads named `managedblob-azure`: the work is network-bound.

use std::future::Future;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The handle of the shared runtime, created on first use.
pub fn handle() -> Result<Handle, String> {
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("managedblob-azure")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the Azure I/O runtime: {e}"))
    });
    match rt {
        Ok(rt) => Ok(rt.handle().clone()),
        Err(e) => Err(e.clone()),
    }
}

/// Why a call through [`run`] produced no value.
#[derive(Debug)]
pub enum RunError {
    /// The runtime could not be started.
    NoRuntime(String),
    /// The call did not finish within its time limit (it was cancelled).
    TimedOut(Duration),
    /// The task panicked or was cancelled.
    Lost,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::NoRuntime(e) => f.write_str(e),
            RunError::TimedOut(limit) => write!(f, "no answer within {}s", limit.as_secs()),
            RunError::Lost => f.write_str("the request task panicked or was cancelled"),
        }
    }
}

/// Run `fut` on the shared runtime and wait for it, for at most `limit`.
/// Safe to call from any thread, including a thread inside another tokio runtime.
pub fn run<F, T>(limit: Duration, fut: F) -> Result<T, RunError>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let receiver = spawn(limit, fut)?;
    wait(receiver)
}

/// Start `fut` on the shared runtime; [`wait`] for its result later. Lets a caller
/// keep several requests in flight (staged block uploads).
pub fn spawn<F, T>(limit: Duration, fut: F) -> Result<mpsc::Receiver<Result<T, RunError>>, RunError>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handle = handle().map_err(RunError::NoRuntime)?;
    let (tx, rx) = mpsc::sync_channel(1);
    handle.spawn(async move {
        let result = tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| RunError::TimedOut(limit));
        // The waiter may have gone away (its thread unwound): nothing to do then.
        let _ = tx.send(result);
    });
    Ok(rx)
}

/// Wait for a result of [`spawn`].
pub fn wait<T>(receiver: mpsc::Receiver<Result<T, RunError>>) -> Result<T, RunError> {
    receiver.recv().unwrap_or(Err(RunError::Lost))
}
