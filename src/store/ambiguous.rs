//! Commits whose outcome is unknown: the publishing request failed in a way that
//! may have reached the server (every attempt failed transiently, or a retry was
//! refused by its own condition and the read-back that would tell failed). The
//! COMMIT fails with "may have been applied", and the sidecar records what it
//! tried to publish (`pending_commit`: the base, and the block list or a hash of
//! the bytes). The next check resolves it before anything else:
//!
//! | remote | decision |
//! |---|---|
//! | holds what we tried (same block list, or the same bytes) | it landed: adopt it (the refresh takes it) |
//! | anything else | it was not applied |
//!
//! "Not applied" is final: the lease the request carried is released by then, so a
//! delayed copy of it can no longer land. A version that did not land is not
//! uploaded again: the application was told COMMIT failed and SQLite rolled the
//! transaction back, so an application that retries would apply it twice.

use std::io::Read;

use super::state::State;
use super::Store;
use crate::backend::{hex, BlobStat, BlockId};
use crate::error::{Error, Result};
use crate::localfile::{LocalFile, LocalFileReader};
use crate::sidecar::PendingCommit;

impl Store {
    /// Record what an ambiguous publish tried (the cache still holds it: SQLite
    /// rolls back after we return), for the next check to resolve.
    pub(super) fn record_ambiguous(
        &self,
        st: &mut State,
        file: &mut dyn LocalFile,
        blocks: Option<&[BlockId]>,
    ) -> Result<()> {
        let hash = match blocks {
            Some(_) => None,
            None => {
                let len = file
                    .size()
                    .map_err(|e| Error::local("reading the cache", e))?;
                Some(hash_of(LocalFileReader::new(file, len))?)
            }
        };
        let blocks = blocks.map(|ids| ids.iter().map(|id| hex(id)).collect());
        st.sidecar.record_pending(blocks, hash);
        self.force_check(st);
        self.save(st)
    }

    /// Resolve a recorded ambiguous commit against `remote` (the blob's current
    /// version). Returns the message for `last_error`.
    pub(super) fn resolve_ambiguous(
        &self,
        st: &mut State,
        remote: Option<&BlobStat>,
    ) -> Result<String> {
        let Some(pending) = st.sidecar.pending_commit().cloned() else {
            return Ok(String::new());
        };
        let moved = remote.is_some_and(|stat| pending.base.as_ref() != Some(&stat.etag));
        let outcome = if moved && self.pending_landed(&pending)? {
            "had been applied (found in the remote)"
        } else {
            "was not applied"
        };
        st.sidecar.clear_pending();
        self.save(st)?;
        self.force_check(st);
        let msg = format!("a commit whose outcome was unknown {outcome}");
        tracing::info!(cache = %self.cache_path.display(), "{msg}");
        Ok(msg)
    }

    /// Whether the remote holds what the ambiguous commit tried to publish.
    fn pending_landed(&self, pending: &PendingCommit) -> Result<bool> {
        if let Some(ids) = &pending.blocks {
            return Ok(match self.remote.block_list()? {
                Some((_, list)) => list.iter().map(|(id, _)| hex(id)).eq(ids.iter().cloned()),
                None => false,
            });
        }
        self.remote.download_to(&self.download_path)?;
        let hash = std::fs::File::open(&self.download_path)
            .map_err(|e| Error::local("opening the downloaded copy", e))
            .and_then(hash_of);
        let _ = std::fs::remove_file(&self.download_path);
        Ok(pending.hash.as_deref() == Some(hash?.as_str()))
    }
}

/// The xxh3-128 hash of everything `r` yields, as hex.
fn hash_of(mut r: impl Read) -> Result<String> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; super::refresh::COPY_CHUNK];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(format!("{:032x}", hasher.digest128())),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::local("hashing a version", e)),
        }
    }
}
