//! The waiter mark on Azure: a one-byte blob `<blob>.mb-waiting` beside the
//! database, rewritten (unconditionally, without a lease) by each writer that finds
//! the lease held; its etag is the mark. A holder keeping the lease warm reads it
//! (Get Blob Properties) and gives the lease up when it changed. Only the kept
//! versions of the database blob itself are listed (`kept_versions` filters by exact
//! name), so the mark never shows as a version.

use std::num::NonZero;

use azure_core::http::RequestContent;
use azure_storage_blob::models::BlobClientUploadOptions;

use super::errors::Op;
use super::AzureBackend;
use crate::backend::{Backend, BackendResult};

/// The mark's blob name.
fn mark_blob(blob: &str) -> String {
    format!("{blob}.mb-waiting")
}

impl AzureBackend {
    /// One Put Blob of the mark; its etag is the new mark.
    pub(super) fn put_waiter_mark(&self, blob: &str) -> BackendResult<Option<String>> {
        let mark = mark_blob(blob);
        let op = Op::Upload { create: false };
        let client = self.client(&mark)?;
        let options = BlobClientUploadOptions {
            partition_size: NonZero::new(self.tuning.single_put_max.max(1)),
            parallel: NonZero::new(1),
            ..Default::default()
        };
        let etag = self.call(&mark, op, self.tuning.request_timeout, async move {
            let result = client
                .upload(RequestContent::from(vec![b'w']), Some(options))
                .await?;
            Ok(result.etag)
        })?;
        Ok(Some(self.etag_of(&mark, op, etag)?.0))
    }

    /// The mark's etag, `None` while no writer ever waited.
    pub(super) fn read_waiter_mark(&self, blob: &str) -> BackendResult<Option<String>> {
        Ok(self.stat(&mark_blob(blob))?.map(|stat| stat.etag.0))
    }
}
