//! The waiter queue of a local remote: `.<blob>.mb-waiting`, its version (a random
//! token, new at every replace) on the first line and the store's text after it.
//! Replaced by rename, so a reader sees one whole queue; a replace compares the
//! version under its own `flock` (`.<blob>.mb-waiting-lock`, not the blob's lock,
//! which a commit holds while it writes the blob).

use std::io;

use super::etag::random_token;
use super::paths::{BlobPaths, FileLock};
use crate::backend::{BackendError, BackendErrorKind, BackendResult, WaiterQueue};

impl BlobPaths {
    /// The queue as it is now, `None` when no writer ever waited.
    pub(super) fn read_waiter_queue(&self) -> BackendResult<Option<WaiterQueue>> {
        match std::fs::read_to_string(self.waiter_mark()) {
            Ok(content) => {
                let (version, text) = content.split_once('\n').unwrap_or((&content, ""));
                Ok(Some(WaiterQueue {
                    text: text.to_owned(),
                    version: version.to_owned(),
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("read waiter queue", e)),
        }
    }

    /// Replace the queue if its version is still `expected`; the new version.
    pub(super) fn replace_waiter_queue(
        &self,
        text: &str,
        expected: Option<&str>,
    ) -> BackendResult<String> {
        const OP: &str = "replace waiter queue";
        let _lock =
            FileLock::acquire(&self.side("waiting-lock")).map_err(|e| self.io_error(OP, e))?;
        let current = self.read_waiter_queue()?;
        let current = current.as_ref().map(|q| q.version.as_str());
        if current != expected {
            let kind = match expected {
                None => BackendErrorKind::AlreadyExists,
                Some(_) => BackendErrorKind::ConditionFailed,
            };
            return Err(BackendError::new(
                kind,
                format!(
                    "the waiter queue of {} changed meanwhile",
                    self.path.display()
                ),
            ));
        }
        let version = random_token();
        crate::fsutil::replace_unsynced(
            &self.waiter_mark(),
            format!("{version}\n{text}").as_bytes(),
        )
        .map_err(|e| self.io_error(OP, e))?;
        Ok(version)
    }
}
