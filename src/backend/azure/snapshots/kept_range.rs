//! [`History::read_kept_range`](crate::backend::History::read_kept_range) on Azure:
//! bytes of the kept version (snapshot or version) that was the blob's version
//! `etag`, for a lazy reader whose base the remote moved past mid-read.
//!
//! A snapshot keeps the base blob's ETag as of when it was taken, and List Blobs
//! shows it (as it shows each version's ETag with versioning): the retention's
//! record (`record.rs`) maps ETags to ids, filled by this process's own snapshots
//! (from the Snapshot Blob reply) and by every listing. So the first read of a
//! version another process kept costs one List Blobs and a ranged Get Blob of the
//! snapshot (plus, once per container and process, the Get Blob Properties that
//! tells whether it has versioning); every later one the ranged Get alone. A version deleted since it was
//! recorded answers 404: the record forgets it and lists once more. `None` when no
//! kept version has that ETag, or the range is not all inside it.

use std::num::NonZero;

use azure_storage_blob::models::{BlobClientDownloadOptions, HttpRange};

use super::super::errors::{http_status, Op};
use super::AzureBackend;
use crate::backend::checks::buffer_len;
use crate::backend::{BackendResult, Etag};

/// What a ranged read of one kept version found.
enum KeptRead {
    Bytes(Vec<u8>),
    /// The range is not all inside the version.
    Short,
    /// No such version (any more).
    Gone,
}

impl AzureBackend {
    /// `len` bytes at `offset` of the kept version whose ETag is `etag`.
    pub(super) fn kept_range(
        &self,
        blob: &str,
        etag: &Etag,
        offset: u64,
        len: u64,
    ) -> BackendResult<Option<Vec<u8>>> {
        let record = self.record(blob);
        let mut listed = false;
        loop {
            let known = record.lock().id_of(etag);
            let Some(id) = known else {
                if listed {
                    return Ok(None);
                }
                // Seeds the record, with every kept version's ETag.
                self.listed(blob)?;
                listed = true;
                continue;
            };
            match self.read_kept(blob, &id, offset, len)? {
                KeptRead::Bytes(data) => return Ok(Some(data)),
                KeptRead::Short => return Ok(None),
                KeptRead::Gone => {
                    tracing::debug!(blob, id, "a recorded kept version is gone");
                    record.lock().forget(&id);
                    if listed {
                        return Ok(None);
                    }
                    self.listed(blob)?;
                    listed = true;
                }
            }
        }
    }

    /// One ranged Get Blob of kept version `id`.
    fn read_kept(&self, blob: &str, id: &str, offset: u64, len: u64) -> BackendResult<KeptRead> {
        let op = Op::ReadVersion;
        if len == 0 {
            return Ok(KeptRead::Bytes(Vec::new()));
        }
        let capacity = buffer_len(len).map_err(|r| self.refused(blob, op, r))?;
        let client = self.version_client(blob, id, op)?;
        let options = BlobClientDownloadOptions {
            range: Some(HttpRange::new(offset, len)),
            // One request: the whole range is one partition.
            parallel: NonZero::new(1),
            partition_size: NonZero::new(capacity),
            ..Default::default()
        };
        let result = self.exec(blob, op, self.tuning.limit_for(len), async move {
            let mut data = vec![0u8; capacity];
            let result = client.download_into(&mut data, Some(options)).await?;
            Ok((data, result.len))
        })?;
        match result {
            Ok((data, got)) if got == capacity => Ok(KeptRead::Bytes(data)),
            Ok(_) => Ok(KeptRead::Short),
            Err(e) => match http_status(&e) {
                Some((404, code)) if code != "ContainerNotFound" => Ok(KeptRead::Gone),
                Some((416, _)) => Ok(KeptRead::Short),
                _ => Err(self.error(blob, op, &e)),
            },
        }
    }
}
