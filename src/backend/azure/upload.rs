//! Whole uploads to Azure: a body up to [`AzureTuning::single_put_max`] in one Put
//! Blob; a larger one read block by block, staged a few at a time with fixed-length
//! ids, and made visible by one conditional Put Block List.

use std::io::Read;
use std::num::NonZero;
use std::sync::mpsc;
use std::sync::Arc;

use azure_core::http::RequestContent;
use azure_storage_blob::models::{
    BlobClientUploadOptions, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientCommitBlockListResultHeaders, BlockBlobClientStageBlockOptions, BlockLookupList,
};
use azure_storage_blob::BlobClient;

use super::client::precondition;
use super::errors::Op;
use super::runtime::{self, RunError};
use super::{AzureBackend, MAX_BLOCK_SIZE};
use crate::backend::checks::read_exactly;
use crate::backend::{BackendResult, BlobStat, Condition, LeaseId, BLOCK_ID_LEN, MAX_BLOCKS};

#[cfg(doc)]
use super::AzureTuning;

/// One whole upload: where it goes, how long the body is, and the condition and
/// lease of the write.
pub(super) struct Put<'a> {
    pub blob: &'a str,
    pub client: Arc<BlobClient>,
    pub len: u64,
    pub condition: &'a Condition,
    pub lease: Option<&'a LeaseId>,
}

impl Put<'_> {
    fn op(&self) -> Op {
        Op::Upload {
            create: *self.condition == Condition::Create,
        }
    }
}

/// A staged block upload in flight.
type Pending = mpsc::Receiver<Result<azure_core::Result<()>, RunError>>;

impl AzureBackend {
    /// [`crate::backend::Backend::upload`]: one Put Blob, or staged blocks and one
    /// Put Block List for a large body.
    pub(super) fn put(&self, put: Put<'_>, source: &mut dyn Read) -> BackendResult<BlobStat> {
        let (blob, op) = (put.blob, put.op());
        let conditional = matches!(put.condition, Condition::Match(_));
        let result = if put.len <= self.tuning.single_put_max {
            self.put_single(put, source)
        } else {
            self.put_staged(put, source)
        };
        self.missing_if_gone(blob, op, conditional, result)
    }

    fn put_single(&self, put: Put<'_>, source: &mut dyn Read) -> BackendResult<BlobStat> {
        let op = put.op();
        let (blob, client, len) = (put.blob, put.client, put.len);
        let data = read_exactly(source, len).map_err(|r| self.refused(blob, op, r))?;
        let mut options = BlobClientUploadOptions {
            lease_id: put.lease.map(|l| l.0.clone()),
            // One request: the whole body fits in one partition.
            partition_size: NonZero::new(self.tuning.single_put_max.max(len).max(1)),
            parallel: NonZero::new(1),
            ..Default::default()
        };
        (options.if_match, options.if_none_match) = precondition(put.condition);
        let etag = self.call(blob, op, self.tuning.limit_for(len), async move {
            let result = client
                .upload(RequestContent::from(data), Some(options))
                .await?;
            Ok(result.etag)
        })?;
        Ok(BlobStat {
            etag: self.etag_of(blob, op, etag)?,
            size: len,
        })
    }

    fn put_staged(&self, put: Put<'_>, source: &mut dyn Read) -> BackendResult<BlobStat> {
        let op = put.op();
        let (blob, client, len, lease) = (put.blob, put.client, put.len, put.lease);
        let block_size = self
            .tuning
            .block_size
            .max(len.div_ceil(MAX_BLOCKS))
            .min(MAX_BLOCK_SIZE);
        let nonce = fastrand::u64(..);
        let count = len.div_ceil(block_size);
        let mut ids: Vec<Vec<u8>> = Vec::with_capacity(count as usize);
        let mut in_flight = std::collections::VecDeque::new();
        let lease_id = lease.map(|l| l.0.clone());
        let limit = self.tuning.limit_for(block_size);
        let wait_one = |rx: Pending| -> BackendResult<()> {
            runtime::wait(rx)
                .map_err(|e| self.run_error(blob, Op::StageBlock, e))?
                .map_err(|e| self.error(blob, Op::StageBlock, &e))
        };
        let mut staged: BackendResult<()> = Ok(());
        for index in 0..count {
            let size = block_size.min(len - index * block_size);
            let chunk = match read_exactly(source, size) {
                Ok(chunk) => chunk,
                Err(r) => {
                    staged = Err(self.refused(blob, op, r));
                    break;
                }
            };
            let id = format!("{nonce:016x}{index:016x}").into_bytes();
            debug_assert_eq!(id.len(), BLOCK_ID_LEN);
            ids.push(id.clone());
            let client = client.clone();
            let options = BlockBlobClientStageBlockOptions {
                lease_id: lease_id.clone(),
                ..Default::default()
            };
            let rx = runtime::spawn(limit, async move {
                client
                    .block_blob_client()
                    .stage_block(&id, size, RequestContent::from(chunk), Some(options))
                    .await
                    .map(|_| ())
            })
            .map_err(|e| self.run_error(blob, Op::StageBlock, e))?;
            in_flight.push_back(rx);
            if in_flight.len() >= self.tuning.parallel {
                if let Err(e) = wait_one(in_flight.pop_front().expect("not empty")) {
                    staged = Err(e);
                    break;
                }
            }
        }
        // Wait for every block still in flight, even after a failure, so no request
        // outlives the call.
        for rx in in_flight {
            let result = wait_one(rx);
            if staged.is_ok() {
                staged = result;
            }
        }
        staged?;
        tracing::debug!(
            blob,
            blocks = count,
            block_size,
            "blocks staged; committing"
        );
        let mut options = BlockBlobClientCommitBlockListOptions {
            lease_id,
            ..Default::default()
        };
        (options.if_match, options.if_none_match) = precondition(put.condition);
        let list = BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        };
        let etag = self.call(blob, op, self.tuning.limit_for(count * 64), async move {
            let result = client
                .block_blob_client()
                .commit_block_list(list.try_into()?, Some(options))
                .await?;
            result.etag()
        })?;
        Ok(BlobStat {
            etag: self.etag_of(blob, op, etag)?,
            size: len,
        })
    }
}
