//! Writes into a lazy cache (docs/ARCHITECTURE.md, "Lazy fetch"). A chunk SQLite
//! writes into holds local commits until they are uploaded (dirty: never dropped).
//! A chunk it writes into without having read it (a reused free page; a page still
//! in its page cache after the chunk was dropped) is *partial*, and nothing is
//! fetched at that xWrite: this process remembers which bytes it wrote
//! ([`Written`]). The commit point completes every partial chunk in one parallel
//! round (the base's bytes around the ranges written, pinned to the base), before
//! SQLite syncs the cache and before the upload stages anything; a rollback's sync
//! forgets them instead, since a partial chunk's committed content is the base's
//! (every commit completed the ones before). A crash leaves them partial on disk,
//! which every loader reads as absent: SQLite's hot journal puts back what the
//! transaction overwrote, and a reused free page holds nothing.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::Ordering;

use super::lazy::Known;
use super::Store;
use crate::error::{Error, Result};
use crate::localfile::LocalFile;

/// The byte ranges (absolute offsets in the cache, sorted and merged) this process
/// wrote into each partial chunk of the base.
#[derive(Debug, Default)]
pub(super) struct Written(BTreeMap<u64, Vec<Range<u64>>>);

impl Written {
    /// Bytes `range` of chunk `chunk` were written.
    fn add(&mut self, chunk: u64, range: Range<u64>) {
        let ranges = self.0.entry(chunk).or_default();
        ranges.push(range);
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
        for r in ranges.drain(..) {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        *ranges = merged;
    }

    /// The ranges written into chunk `chunk`, when it is partial.
    pub(super) fn of(&self, chunk: u64) -> Option<&[Range<u64>]> {
        self.0.get(&chunk).map(Vec::as_slice)
    }

    /// Chunk `chunk` is whole again (completed), or absent again (forgotten).
    pub(super) fn remove(&mut self, chunk: u64) {
        self.0.remove(&chunk);
    }

    fn chunks(&self) -> Vec<u64> {
        self.0.keys().copied().collect()
    }
}

/// The parts of `chunk` (a byte range) that `written` (sorted, merged) leaves out.
pub(super) fn gaps(chunk: Range<u64>, written: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = chunk.start;
    for w in written {
        let (start, end) = (w.start.max(chunk.start), w.end.min(chunk.end));
        if start >= end {
            continue;
        }
        if start > at {
            out.push(at..start);
        }
        at = at.max(end);
    }
    if at < chunk.end {
        out.push(at..chunk.end);
    }
    out
}

impl Store {
    /// Before SQLite writes `len` bytes at `offset`: the chunks under them hold
    /// local commits until the next clean save (the bounded cache must not drop
    /// them); those it lacks become partial, without a fetch. The record is synced
    /// at the commit point ([`Store::lazy_commit_point`]).
    pub fn lazy_before_write(&self, offset: u64, len: u64) -> Result<()> {
        let Some(lazy) = &self.lazy else {
            return Ok(());
        };
        let guard = lazy.base.read();
        let base = match &*guard {
            Known::Base(base) => base,
            Known::Local => return Ok(()),
            Known::Unknown => return Err(self.chunk_list_unknown("writes wait for the next check")),
        };
        let record_err = |e| Error::local("writing the residency record", e);
        let chunks = base.chunks_of(offset, len);
        let lacking = |i: u64| !base.record.is_present(i) && !base.record.is_partial(i);
        if chunks.clone().any(lacking) {
            // Another process sharing the cache may have fetched them.
            base.record.look_again(chunks.clone()).map_err(record_err)?;
        }
        let mut marked = false;
        let mut written = base.written.lock();
        for i in chunks {
            if base.record.is_present(i) {
                marked |= base.record.mark_dirty(i..i + 1).map_err(record_err)?;
                continue;
            }
            let (start, chunk_len) = base.manifest.chunk_range(i);
            let range = offset.max(start)..(offset + len).min(start + chunk_len);
            if range.is_empty() {
                // Only past the base's end (an append into its short last chunk):
                // the base's bytes of the chunk stay absent, and untouched.
                continue;
            }
            if !base.record.is_partial(i) {
                base.record.mark_partial(i).map_err(record_err)?;
            }
            written.add(i, range);
            marked = true;
        }
        if marked {
            lazy.unsynced_dirty.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// At the commit point, before SQLite syncs the cache (`committed`: the change
    /// counter moved, so this is a commit and not a rollback's sync): partial chunks
    /// are completed (one parallel round of fetches) or, after a rollback,
    /// forgotten; then the record's marks are durable before the commit's bytes.
    pub(super) fn lazy_commit_point(
        &self,
        file: &mut dyn LocalFile,
        committed: bool,
    ) -> Result<()> {
        let Some(lazy) = &self.lazy else {
            return Ok(());
        };
        if !lazy.unsynced_dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let guard = lazy.base.read();
        let Some(base) = guard.base() else {
            return Ok(());
        };
        let partial = base.written.lock().chunks();
        let settled = match (partial.is_empty(), committed) {
            (true, _) => Ok(()),
            (false, true) => self.bring_in(lazy, base, file, &partial),
            (false, false) => base
                .record
                .forget_partial(&partial)
                .map(|()| partial.iter().for_each(|&i| base.written.lock().remove(i)))
                .map_err(|e| Error::local("writing the residency record", e)),
        };
        let synced = settled.and_then(|()| {
            base.record
                .sync()
                .map_err(|e| Error::local("syncing the residency record", e))
        });
        if synced.is_err() {
            lazy.unsynced_dirty.store(true, Ordering::SeqCst);
        }
        synced
    }

    /// The write transaction ended (below RESERVED). Its commit point completed or
    /// forgot its partial chunks; any left (a transaction abandoned without a sync,
    /// after an I/O error: another process's hot-journal rollback finishes it) are
    /// forgotten now, so that no stale ranges outlive the transaction that wrote
    /// them (another process may write those chunks next).
    pub(super) fn lazy_end_write(&self) {
        let Some(lazy) = &self.lazy else {
            return;
        };
        let guard = lazy.base.read();
        let Some(base) = guard.base() else {
            return;
        };
        let mut written = base.written.lock();
        let left = written.chunks();
        if left.is_empty() {
            return;
        }
        if let Err(e) = base.record.forget_partial(&left) {
            tracing::warn!(cache = %self.cache_path.display(), error = %e,
                "could not mark abandoned partial chunks absent; a reload reads them as absent");
        }
        left.iter().for_each(|&i| written.remove(i));
    }

    /// The sidecar was saved clean: the remote has every local commit.
    pub(super) fn lazy_clean_dirty(&self) {
        let Some(lazy) = &self.lazy else {
            return;
        };
        if let Some(base) = lazy.base.read().base() {
            if let Err(e) = base.record.clean_dirty() {
                tracing::warn!(cache = %self.cache_path.display(), error = %e,
                    "could not mark uploaded chunks clean; they stay until the next upload");
            }
        }
    }

    /// Before an upload plans its chunks (`chunk` bytes each, the cache `size`
    /// bytes): complete the chunks the new version cannot take from the base as
    /// they are (a new chunk size; a chunk the new length cuts; a partial chunk,
    /// which a commit point normally completed already), and return which chunks
    /// are still absent (the base's, unchanged: their block ids stay). Empty for a
    /// full cache.
    pub(super) fn lazy_prepare_upload(
        &self,
        file: &mut dyn LocalFile,
        size: u64,
        chunk: u64,
    ) -> Result<Vec<bool>> {
        let Some(lazy) = &self.lazy else {
            return Ok(Vec::new());
        };
        let guard = lazy.base.read();
        let base = match &*guard {
            Known::Base(base) => base,
            Known::Local => return Ok(Vec::new()),
            Known::Unknown => {
                return Err(Error::Local(format!(
                    "lazy cache {}: its chunk list is not known, so an upload cannot tell \
                     its absent chunks; it is retried after the next check",
                    self.cache_path.display()
                )))
            }
        };
        let count = base.record.chunk_count();
        let relaid = base.manifest.chunk_size != chunk;
        let must: Vec<u64> = (0..count)
            .filter(|&i| !base.record.is_present(i))
            .filter(|&i| {
                let (offset, len) = base.manifest.chunk_range(i);
                relaid
                    || base.record.is_partial(i)
                    || offset + len > size
                    || (offset + len < size && len < chunk)
            })
            .collect();
        if !must.is_empty() {
            tracing::info!(cache = %self.cache_path.display(), chunks = must.len(),
                "completing chunks of a lazy cache before an upload");
            self.bring_in(lazy, base, file, &must)?;
        }
        Ok((0..count).map(|i| !base.record.is_present(i)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn written_ranges_merge_and_leave_the_right_gaps() {
        let mut w = Written::default();
        w.add(1, 70..80);
        w.add(1, 100..110);
        w.add(1, 75..100);
        assert_eq!(w.of(1), Some(&[70..110][..]));
        assert_eq!(w.of(2), None);
        assert_eq!(gaps(64..128, w.of(1).unwrap()), vec![64..70, 110..128]);
        assert_eq!(gaps(64..128, &[0..200]), Vec::<Range<u64>>::new());
        assert_eq!(gaps(64..128, &[]), vec![64..128]);
        assert_eq!(gaps(64..128, &[64..70, 120..128]), vec![70..120]);
        w.remove(1);
        assert!(w.chunks().is_empty());
    }
}
