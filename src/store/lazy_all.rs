//! `PRAGMA managedblob_fetch_all`: a lazy cache brings in every chunk it lacks
//! (`managedblob pull --all`), inside a read transaction of the connection that
//! asks, so no install or commit rewrites the cache meanwhile. The chunks come in
//! groups of up to [`GROUP_BYTES`], each group one parallel round, and each group is
//! marked present in the residency record as it lands: a watcher of the record sees
//! the cache fill (the CLI's progress bar), and an interrupted run keeps what it got.

use super::lazy::Known;
use super::Store;
use crate::error::{Error, Result};
use crate::localfile::{LocalFile, LockLevel};

/// The most chunk bytes one round of a fetch-all brings in.
const GROUP_BYTES: u64 = 8 << 20;

impl Store {
    /// Make every chunk of the base present. Nothing to do for a full cache (or a
    /// lazy one holding another tool's blob whole). `level`: the connection's lock,
    /// at least SHARED (a read transaction).
    pub fn fetch_all(&self, file: &mut dyn LocalFile, level: LockLevel) -> Result<()> {
        if level < LockLevel::Shared {
            return Err(Error::Misuse(
                "managedblob_fetch_all runs inside a read transaction (BEGIN; a SELECT; the \
                 pragma; COMMIT), so that no new version is installed while it fetches"
                    .into(),
            ));
        }
        let Some(lazy) = &self.lazy else {
            return Ok(());
        };
        let guard = lazy.base.read();
        let base = match &*guard {
            Known::Base(base) => base,
            Known::Local => return Ok(()),
            Known::Unknown => return Err(self.chunk_list_unknown("try again")),
        };
        let count = base.record.chunk_count();
        base.record
            .look_again(0..count)
            .map_err(|e| Error::local("reading the residency record", e))?;
        let missing: Vec<u64> = (0..count).filter(|&i| !base.record.is_present(i)).collect();
        let per_group = (GROUP_BYTES / base.manifest.chunk_size.max(1)).max(1) as usize;
        for group in missing.chunks(per_group) {
            self.bring_in(lazy, base, file, group)?;
        }
        drop(guard);
        self.evict_if_over(lazy)
    }
}
