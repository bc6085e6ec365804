//! Etags of the local backend: `.mb-etag` records a random token with the stat
//! fingerprint of the blob file the upload produced. While the fingerprint still
//! matches, the etag is `mb-<token>` (fresh for every upload, even when size and
//! mtime are not); otherwise (a foreign write, or a crash between the rename and the
//! record, or during an in-place commit, which deletes the record first) it is
//! `fs-<fingerprint>`, so foreign writes still move it.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::paths::BlobPaths;
use crate::backend::{BackendResult, BlobStat, Etag};

/// What `.mb-etag` holds: our token for the blob file with this fingerprint.
#[derive(Serialize, Deserialize)]
struct EtagRecord {
    token: String,
    fingerprint: String,
}

impl BlobPaths {
    /// The version of the blob now (call with the mutex held).
    pub fn current_stat(&self, op: &str) -> BackendResult<Option<BlobStat>> {
        self.metadata(op)?
            .map(|meta| self.stat_of(&meta, op))
            .transpose()
    }

    /// The version of the blob file described by `meta` (call with the mutex held,
    /// so the etag file and the blob file belong to the same upload).
    pub fn stat_of(&self, meta: &Metadata, op: &str) -> BackendResult<BlobStat> {
        let print = fingerprint(meta);
        let recorded: Option<EtagRecord> = self.read_json(&self.etag_record(), op)?;
        let etag = match recorded {
            Some(r) if r.fingerprint == print => format!("mb-{}", r.token),
            _ => format!("fs-{print}"),
        };
        Ok(BlobStat {
            etag: Etag(etag),
            size: meta.len(),
        })
    }

    /// Give the blob file just installed (described by `meta`) a fresh etag (call
    /// with the mutex held).
    pub fn record_new_etag(&self, meta: &Metadata, op: &str) -> BackendResult<BlobStat> {
        self.record_etag_token(&random_token(), meta, op)
    }

    /// Give the blob file described by `meta` the etag `mb-<token>`: a fresh token,
    /// or the one of the version a rollback just restored (call with the mutex held).
    pub fn record_etag_token(
        &self,
        token: &str,
        meta: &Metadata,
        op: &str,
    ) -> BackendResult<BlobStat> {
        let record = EtagRecord {
            token: token.to_owned(),
            fingerprint: fingerprint(meta),
        };
        self.write_json(&self.etag_record(), &record, false)
            .map_err(|e| self.io_error(op, e))?;
        Ok(BlobStat {
            etag: Etag(format!("mb-{}", record.token)),
            size: meta.len(),
        })
    }
}

impl BlobPaths {
    /// The etag (`mb-<token>`) of the version this backend last finished installing,
    /// from the etag record whatever the blob file's fingerprint is now; `None`
    /// without a record (an in-place commit deleted it and died before recording the
    /// new one). A block list recorded for another etag is stale, not evidence of a
    /// foreign write (call with the mutex held).
    pub fn installed_etag(&self, op: &str) -> BackendResult<Option<Etag>> {
        let recorded: Option<EtagRecord> = self.read_json(&self.etag_record(), op)?;
        Ok(recorded.map(|r| Etag(format!("mb-{}", r.token))))
    }

    /// Drop the etag record before the blob is written in place: until a new one is
    /// recorded the etag is `fs-<fingerprint>`, never the old version's token.
    pub fn forget_etag(&self, op: &str) -> BackendResult<()> {
        match std::fs::remove_file(self.etag_record()) {
            Err(e) if !super::paths::is_missing(&e) => Err(self.io_error(op, e)),
            _ => Ok(()),
        }
    }
}

/// Identifies one state of the blob file well enough to notice a foreign write:
/// a `cp` over it changes mtime/ctime (and a rename also the inode).
fn fingerprint(meta: &Metadata) -> String {
    format!(
        "{:x}-{:x}-{:x}-{:x}.{:x}-{:x}.{:x}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

/// 32 hex characters. The pid and clock are mixed in so processes forked with the
/// same generator state still draw different tokens.
pub(super) fn random_token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let salt = (u64::from(std::process::id()) << 32) | u64::from(nanos);
    format!(
        "{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..) ^ salt
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_hex_and_distinct() {
        let a = random_token();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_token());
    }
}
