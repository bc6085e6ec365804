//! The publishing part of the store's state: what this process knows of the chunks
//! (the base version's chunk list, the byte ranges written since, the first chunk's
//! change counter as last published, whether the backend knows the chunk sizes),
//! and whether a background upload is in flight ([`Background`]).

use super::stage::COUNTER_BYTES;
use crate::backend::Etag;
use crate::delta::Manifest;
use crate::layout::Ranges;

/// What the next publish builds on.
#[derive(Debug, Default)]
pub(crate) struct Publishing {
    /// The base version's chunk list, when known.
    manifest: Option<(Etag, Manifest)>,
    /// The byte ranges of the cache written by commits since the base.
    written: Ranges,
    /// The backend was told the sizes of the base's chunks (it learns them from its
    /// own stages and lists too), so a commit needs no request for the blob's size.
    sizes_known: bool,
    /// The change-counter bytes (header offsets 24..28 and 92..96) of the remote's
    /// first chunk as this process last published it: a hint that lets a commit keep
    /// that chunk when nothing else in it changed ([`crate::backend::Blocks::counter_may_lag`]).
    /// Only used after the hash check confirms it, so a stale hint costs one staged
    /// chunk, never a wrong version.
    remote_counter: Option<[u8; COUNTER_BYTES]>,
    /// The size of the version this process took in or published, so the cache was
    /// equal to it then (not one merely found at the base: a crash may have left a
    /// rolled-back transaction's bytes in reused free pages). The ranges of it no
    /// write touched since can be staged by the store from the version itself
    /// ([`crate::remote::Remote::stage_from_range`]).
    base_size: Option<(Etag, u64)>,
    background: Background,
}

/// A background upload (src/store/background.rs) and the commits it races.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Background {
    #[default]
    Idle,
    /// In flight with the store's mutex released: whatever else would publish or
    /// take a new version waits for it (`lock_state_settled`) or is BUSY.
    /// `commits_meanwhile`: commits stayed local since it started, so the cache is
    /// still dirty once it lands.
    Uploading { commits_meanwhile: bool },
}

impl Publishing {
    /// A commit wrote these byte ranges.
    pub fn wrote(&mut self, ranges: &Ranges) {
        self.written.extend(ranges);
    }

    /// A commit stayed in the cache (a batch, `flush_ms`).
    pub fn kept_local(&mut self) {
        if let Background::Uploading { commits_meanwhile } = &mut self.background {
            *commits_meanwhile = true;
        }
    }

    pub fn written(&self) -> &Ranges {
        &self.written
    }

    /// The ranges written so far, for an upload that may fail (then they are
    /// handed back to [`Publishing::wrote`]).
    pub fn take_written(&mut self) -> Ranges {
        std::mem::take(&mut self.written)
    }

    /// The chunks written since the base are in the remote now.
    pub fn chunks_published(&mut self) {
        self.written.clear();
    }

    /// A version was published by chunks: what its first chunk's counter is (when
    /// this publish staged it) and that the backend knows the chunk sizes.
    pub fn learned(&mut self, first_counter: Option<[u8; COUNTER_BYTES]>) {
        if first_counter.is_some() {
            self.remote_counter = first_counter;
        }
        self.sizes_known = true;
    }

    /// The cache took in a version from the remote: nothing written since, and
    /// this process did not publish its first chunk.
    pub fn took_version(&mut self) {
        self.written.clear();
        self.remote_counter = None;
    }

    /// Version `etag` is `size` bytes.
    pub fn knew_base(&mut self, etag: &Etag, size: u64) {
        self.base_size = Some((etag.clone(), size));
    }

    /// The size of version `etag`, when known.
    pub fn base_size_of(&self, etag: &Etag) -> Option<u64> {
        match &self.base_size {
            Some((e, size)) if e == etag => Some(*size),
            _ => None,
        }
    }

    pub fn sizes_known(&self) -> bool {
        self.sizes_known
    }

    pub fn remote_counter(&self) -> Option<[u8; COUNTER_BYTES]> {
        self.remote_counter
    }

    /// The chunk list of version `etag`, when it is the one in memory.
    pub fn manifest_of(&self, etag: &Etag) -> Option<&Manifest> {
        match &self.manifest {
            Some((e, m)) if e == etag => Some(m),
            _ => None,
        }
    }

    /// Keep `manifest` (the chunk list of a version) in memory, or forget it.
    pub fn set_manifest(&mut self, manifest: Option<(Etag, Manifest)>) {
        self.manifest = manifest;
    }

    pub fn is_uploading(&self) -> bool {
        matches!(self.background, Background::Uploading { .. })
    }

    /// A background upload starts, with the mutex to be released.
    pub fn upload_started(&mut self) {
        self.background = Background::Uploading {
            commits_meanwhile: false,
        };
    }

    /// The background upload is over: whether commits stayed local meanwhile.
    pub fn upload_ended(&mut self) -> bool {
        let meanwhile = matches!(
            self.background,
            Background::Uploading {
                commits_meanwhile: true
            }
        );
        self.background = Background::Idle;
        meanwhile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_commits_kept_local_during_an_upload_count_as_meanwhile() {
        let mut p = Publishing::default();
        p.kept_local();
        p.upload_started();
        assert!(p.is_uploading());
        assert!(!p.upload_ended(), "a commit before the upload is in it");
        p.upload_started();
        p.kept_local();
        assert!(p.upload_ended());
        assert!(!p.is_uploading());
    }
}
