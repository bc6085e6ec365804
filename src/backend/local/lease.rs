//! Leases of the local backend: `.mb-lease` holds the lease in force as JSON
//! (token, owner, expiry). The owner fields let a process on the same machine and
//! boot reclaim the lease of a holder that died without releasing it; anyone else
//! waits for the expiry.

use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::etag::random_token;
use super::paths::{is_missing, BlobPaths};
use super::LocalBackend;
use crate::backend::checks::check_write_lease;
use crate::backend::{BackendResult, LeaseId};
use crate::sys::process_exists;

/// What `.mb-lease` holds.
#[derive(Serialize, Deserialize)]
pub(super) struct LeaseRecord {
    pub token: String,
    pub pid: u32,
    pub host: String,
    boot_id: String,
    pub expires_unix_ms: u64,
}

impl LeaseRecord {
    pub fn is_expired(&self) -> bool {
        now_unix_ms() >= self.expires_unix_ms
    }

    /// Make the lease run for `duration` from now.
    pub fn extend(&mut self, duration: Duration) {
        self.expires_unix_ms = expiry_after(duration);
    }

    /// Only a holder on this very machine and boot, whose pid no longer exists, is
    /// provably dead; anything else must wait for the lease to expire.
    pub(super) fn owner_is_dead(&self, host: &str, boot_id: &str) -> bool {
        self.host == host && self.boot_id == boot_id && !process_exists(self.pid)
    }

    /// A description of the holder for messages (never the token).
    pub fn owner(&self) -> String {
        let left = self.expires_unix_ms.saturating_sub(now_unix_ms());
        format!(
            "pid {} on {} for another {:.1}s",
            self.pid,
            self.host,
            left as f64 / 1000.0
        )
    }
}

impl LocalBackend {
    /// A new lease, held by this process, for `duration`.
    pub(super) fn new_lease(&self, duration: Duration) -> LeaseRecord {
        LeaseRecord {
            token: random_token(),
            pid: std::process::id(),
            host: self.host.clone(),
            boot_id: self.boot_id.clone(),
            expires_unix_ms: expiry_after(duration),
        }
    }

    /// The lease currently in force on the blob: present, unexpired, and not held by
    /// a process we can prove is dead.
    pub(super) fn live_lease(&self, p: &BlobPaths, op: &str) -> BackendResult<Option<LeaseRecord>> {
        Ok(p.read_lease(op)?
            .filter(|l| !l.is_expired() && !l.owner_is_dead(&self.host, &self.boot_id)))
    }

    /// Whether a write carrying `lease` may proceed given the lease state on disk.
    pub(super) fn check_write_lease(
        &self,
        p: &BlobPaths,
        lease: Option<&LeaseId>,
        op: &str,
    ) -> BackendResult<()> {
        let held = self.live_lease(p, op)?;
        let holder = || held.as_ref().map(LeaseRecord::owner).unwrap_or_default();
        check_write_lease(lease, held.as_ref().map(|h| h.token.as_str()), holder)
            .map_err(|r| p.refused(op, r))
    }
}

impl BlobPaths {
    pub fn read_lease(&self, op: &str) -> BackendResult<Option<LeaseRecord>> {
        self.read_json(&self.lease_record(), op)
    }

    /// Replace the lease record, durably.
    pub fn write_lease(&self, record: &LeaseRecord, op: &str) -> BackendResult<()> {
        self.write_json(&self.lease_record(), record, true)
            .map_err(|e| self.io_error(op, e))
    }

    pub fn remove_lease(&self, op: &str) -> BackendResult<()> {
        match fs::remove_file(self.lease_record()) {
            Ok(()) => self.sync_parent(op),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(self.io_error(op, e)),
        }
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn expiry_after(duration: Duration) -> u64 {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    now_unix_ms().saturating_add(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_exists_and_group_ids_are_never_dead() {
        assert!(process_exists(std::process::id()));
        assert!(process_exists(0));
        assert!(process_exists(u32::MAX));
    }
}
