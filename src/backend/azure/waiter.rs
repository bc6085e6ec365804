//! The waiter queue on Azure: a small blob `<blob>.mb-waiting` beside the database,
//! its text the store's and its etag the version. Read with one Get Blob, replaced
//! with one conditional Put Blob (If-Match its etag, or If-None-Match:* for the
//! first), never under a lease. A holder keeping the lease warm reads only its etag
//! (Get Blob Properties). Only the kept versions of the database blob itself are
//! listed (`kept_versions` filters by exact name), so the queue never shows as a
//! version.

use std::num::NonZero;

use azure_storage_blob::models::BlobClientDownloadOptions;

use super::errors::{http_status, Op};
use super::upload::Put;
use super::AzureBackend;
use crate::backend::{Backend, BackendResult, Condition, Etag, WaiterQueue};

/// The queue's blob name.
fn queue_blob(blob: &str) -> String {
    format!("{blob}.mb-waiting")
}

impl AzureBackend {
    /// One Get Blob of the queue; `None` when it does not exist.
    pub(super) fn get_waiter_queue(&self, blob: &str) -> BackendResult<Option<WaiterQueue>> {
        let name = queue_blob(blob);
        let op = Op::Download;
        let client = self.client(&name)?;
        let options = BlobClientDownloadOptions {
            parallel: NonZero::new(1),
            ..Default::default()
        };
        let result = self.exec(&name, op, self.tuning.request_timeout, async move {
            let response = client.download(Some(options)).await?;
            let etag = response.properties.etag.clone();
            let body = response.body.collect().await?;
            Ok((etag, body))
        })?;
        match result {
            Ok((etag, body)) => Ok(Some(WaiterQueue {
                text: String::from_utf8_lossy(&body).into_owned(),
                version: self.etag_of(&name, op, etag)?.0,
            })),
            Err(e) => match http_status(&e) {
                Some((404, _)) => Ok(None),
                _ => Err(self.error(&name, op, &e)),
            },
        }
    }

    /// One conditional Put Blob of the queue; its etag is the new version.
    pub(super) fn put_waiter_queue(
        &self,
        blob: &str,
        text: &str,
        expected: Option<&str>,
    ) -> BackendResult<Option<String>> {
        let name = queue_blob(blob);
        let condition = match expected {
            None => Condition::Create,
            Some(etag) => Condition::Match(Etag(etag.to_owned())),
        };
        let put = Put {
            blob: &name,
            client: self.client(&name)?,
            len: text.len() as u64,
            condition: &condition,
            lease: None,
        };
        let stat = self.put(put, &mut text.as_bytes())?;
        Ok(Some(stat.etag.0))
    }

    /// The queue's etag, `None` while no writer ever waited.
    pub(super) fn read_waiter_mark(&self, blob: &str) -> BackendResult<Option<String>> {
        Ok(self.stat(&queue_blob(blob))?.map(|stat| stat.etag.0))
    }
}
