//! A test hook: `MANAGEDBLOB_TEST_CRASH_AT=<step>` aborts the process at the point
//! named `step`, so the crash tests kill a write exactly there (tests/local_in_place.rs,
//! tests/crash_kills.rs). The points: the local backend's write steps
//! (`backend/local/in_place.rs`, `BlobPaths::install`) and the store's commit,
//! `commit-published` (the remote took the commit, SQLite has not finished it
//! locally), `commit-phase-two` (SQLite finished it, the sidecar is not saved) and
//! `background-upload-landed` (a `flush_ms` upload landed, the sidecar does not
//! know yet).

//!
//! Compiled only with the `testing` feature (the test harness turns it on); a build
//! without it makes every point a no-op.

/// Abort here when the hook names `step` (read once per process).
#[cfg(feature = "testing")]
pub(crate) fn crash_point(step: &str) {
    use std::sync::OnceLock;
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("MANAGEDBLOB_TEST_CRASH_AT").ok());
    if at.as_deref() == Some(step) {
        std::process::abort();
    }
}

/// Without the `testing` feature: nothing.
#[cfg(not(feature = "testing"))]
#[inline(always)]
pub(crate) fn crash_point(_step: &str) {}
