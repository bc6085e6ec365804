//! The block capability ([`Blocks`]) on Azure, for delta sync.
//!
//! * `block_list` is one Get Block List (committed) when the blob has committed
//!   blocks: the response carries the ETag and `x-ms-blob-content-length` of the
//!   version the list belongs to, so list and version always agree. An empty list
//!   (a blob written by one Put Blob has one) may also come from a blob that has only
//!   uncommitted blocks and so does not exist yet (Azurite sends an ETag then, Azure
//!   none), and a response may lack the ETag: then the version is pinned by a stat
//!   before another list (and after it, when that one has no ETag either), retried
//!   while they differ. The extra requests only happen where the caller falls back to
//!   a whole download anyway.
//! * `stage_block` is one Put Block, with our lease id.
//! * `commit_blocks` is one Put Block List with every id in `Latest` (in order; the
//!   service takes the uncommitted block of that id when there is one, else the
//!   committed one), `If-Match` / `If-None-Match: *` and the lease id, mapped exactly
//!   like an upload. Put Block List does not report the new blob's size, so the
//!   backend remembers the size of every block it staged or saw in a committed list;
//!   only a list naming blocks it never saw costs a stat.
//! * `read_range` is one ranged Get with `If-Match`.
//! * `stage_from_range` is one Put Block From URL where the service has it
//!   (`stage_range.rs`).
//!
//! No retries here: the caller's bounded retry (`src/remote.rs`) is the only one.

use std::collections::HashMap;
use std::num::NonZero;

use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientCommitBlockListResultHeaders, BlockBlobClientStageBlockOptions,
    BlockListHeaders, BlockListType, BlockLookupList, HttpRange,
};

use azure_core::http::RequestContent;

use super::client::precondition;
use super::errors::{http_status, Op};
use super::{AzureBackend, MAX_CACHED_CLIENTS};
use crate::backend::checks::{buffer_len, check_range, check_version, Refusal};
use crate::backend::{
    Backend, BackendErrorKind, BackendResult, BlobStat, BlockId, Blocks, Condition, Etag, LeaseId,
};
use crate::backend::{Block, RangeStaging, SourceRange, StagedFromRange, Terms};

/// How often `block_list` pins the version again when the blob keeps changing
/// between the stats around a list that carried no ETag.
const PIN_ATTEMPTS: usize = 3;

/// One Get Block List response.
struct Listed {
    /// The version the list belongs to, when the response said (ETag and size).
    stat: Option<BlobStat>,
    blocks: Vec<(BlockId, u64)>,
}

/// Sizes of blocks this backend staged or saw committed, per blob.
#[derive(Default)]
pub(super) struct BlockSizes {
    blobs: HashMap<String, HashMap<BlockId, u64>>,
}

impl BlockSizes {
    pub(super) fn remember<'a>(
        &mut self,
        blob: &str,
        blocks: impl IntoIterator<Item = (&'a [u8], u64)>,
    ) {
        if !self.blobs.contains_key(blob) && self.blobs.len() >= MAX_CACHED_CLIENTS {
            self.blobs.clear();
        }
        let sizes = self.blobs.entry(blob.to_string()).or_default();
        for (id, size) in blocks {
            sizes.insert(id.to_vec(), size);
        }
    }

    /// The blob's content length if every block of `ids` is known.
    fn total(&self, blob: &str, ids: &[BlockId]) -> Option<u64> {
        let sizes = self.blobs.get(blob)?;
        ids.iter().map(|id| sizes.get(id).copied()).sum()
    }

    /// After a commit only the committed blocks remain (the service drops the rest).
    fn committed(&mut self, blob: &str, ids: &[BlockId]) {
        if let Some(sizes) = self.blobs.get_mut(blob) {
            let kept: HashMap<BlockId, u64> = ids
                .iter()
                .filter_map(|id| sizes.get(id).map(|s| (id.clone(), *s)))
                .collect();
            *sizes = kept;
        }
    }
}

impl AzureBackend {
    /// One Get Block List (committed); `None` when the blob does not exist.
    fn get_block_list(&self, blob: &str) -> BackendResult<Option<Listed>> {
        let op = Op::BlockList;
        let client = self.client(blob)?;
        let result = self.exec(blob, op, self.tuning.request_timeout, async move {
            let response = client
                .block_blob_client()
                .get_block_list(BlockListType::Committed, None)
                .await?;
            let etag = response.etag()?;
            let length = response.blob_content_length()?;
            let list = response.into_model()?;
            Ok((etag, length, list))
        })?;
        let (etag, length, list) = match result {
            Ok(parts) => parts,
            Err(e) => {
                return match http_status(&e) {
                    Some((404, code)) if code != "ContainerNotFound" => Ok(None),
                    _ => Err(self.error(blob, op, &e)),
                }
            }
        };
        let mut blocks = Vec::new();
        for block in list.committed_blocks.unwrap_or_default() {
            let (Some(name), Some(size)) = (block.name, block.size) else {
                return Err(self.local_error(
                    blob,
                    op,
                    "the block list names a block without id or size".into(),
                ));
            };
            let size = u64::try_from(size).map_err(|_| {
                self.local_error(blob, op, format!("the block list has a size of {size}"))
            })?;
            blocks.push((name, size));
        }
        let listed_size = blocks.iter().map(|(_, s)| s).sum::<u64>();
        let size = match length {
            Some(length) => u64::try_from(length).ok(),
            // Without the header only a non-empty list tells the size.
            None => (!blocks.is_empty()).then_some(listed_size),
        };
        if !blocks.is_empty() && size.is_some_and(|s| s != listed_size) {
            return Err(self.local_error(
                blob,
                op,
                format!(
                    "the committed blocks add up to {listed_size} bytes but the blob has {}",
                    size.unwrap_or_default()
                ),
            ));
        }
        let stat = match (etag, size) {
            (Some(etag), Some(size)) => Some(BlobStat {
                etag: Etag(etag.to_string()),
                size,
            }),
            _ => None,
        };
        Ok(Some(Listed { stat, blocks }))
    }

    fn remember_sizes(&self, blob: &str, blocks: &[(BlockId, u64)]) {
        self.block_sizes
            .lock()
            .remember(blob, blocks.iter().map(|(id, s)| (id.as_slice(), *s)));
    }
}

impl Blocks for AzureBackend {
    /// Readers take the blob whole (a download, ranged reads into their own cache).
    fn counter_may_lag(&self) -> bool {
        true
    }

    fn block_list(&self, blob: &str) -> BackendResult<Option<(BlobStat, Vec<(BlockId, u64)>)>> {
        let Some(listed) = self.get_block_list(blob)? else {
            return Ok(None);
        };
        if let (Some(stat), false) = (&listed.stat, listed.blocks.is_empty()) {
            self.remember_sizes(blob, &listed.blocks);
            return Ok(Some((stat.clone(), listed.blocks)));
        }
        // An empty list, or one that does not say which version it lists. An empty
        // list may also belong to a blob that has only uncommitted blocks, which does
        // not exist yet (Azurite answers with an ETag then, Azure without). Pin the
        // version with a stat before (and, without an ETag, after) another list.
        for _ in 0..PIN_ATTEMPTS {
            let Some(before) = self.stat(blob)? else {
                return Ok(None);
            };
            let Some(listed) = self.get_block_list(blob)? else {
                return Ok(None);
            };
            let pinned = match &listed.stat {
                Some(stat) if !listed.blocks.is_empty() => Some(stat.clone()),
                // The version `before` has an empty list.
                Some(stat) if stat.etag == before.etag => Some(before),
                // It changed in between.
                Some(_) => None,
                None => {
                    let listed_size = listed.blocks.iter().map(|(_, s)| s).sum::<u64>();
                    let fits = listed.blocks.is_empty() || listed_size == before.size;
                    (fits && self.stat(blob)?.as_ref() == Some(&before)).then_some(before)
                }
            };
            if let Some(stat) = pinned {
                self.remember_sizes(blob, &listed.blocks);
                return Ok(Some((stat, listed.blocks)));
            }
        }
        Err(self.fail(
            BackendErrorKind::Transient,
            blob,
            Op::BlockList,
            "the blob kept changing while its block list was read",
        ))
    }

    fn stage(&self, blob: &str, block: Block<'_>, lease: Option<&LeaseId>) -> BackendResult<()> {
        let Block { id, data } = block;
        let client = self.client(blob)?;
        let size = data.len() as u64;
        let options = BlockBlobClientStageBlockOptions {
            lease_id: lease.map(|l| l.0.clone()),
            ..Default::default()
        };
        let block_id = id.to_vec();
        self.call(blob, Op::Stage, self.tuning.limit_for(size), async move {
            client
                .block_blob_client()
                .stage_block(&block_id, size, RequestContent::from(data), Some(options))
                .await
                .map(|_| ())
        })?;
        self.block_sizes.lock().remember(blob, [(id, size)]);
        Ok(())
    }

    fn learn_sizes(&self, blob: &str, blocks: &[(BlockId, u64)]) {
        self.remember_sizes(blob, blocks);
    }

    fn commit(&self, blob: &str, ids: &[BlockId], terms: Terms<'_>) -> BackendResult<BlobStat> {
        let Terms { condition, lease } = terms;
        let op = Op::CommitBlocks {
            create: *condition == Condition::Create,
        };
        let client = self.client(blob)?;
        let mut options = BlockBlobClientCommitBlockListOptions {
            lease_id: lease.map(|l| l.0.clone()),
            ..Default::default()
        };
        (options.if_match, options.if_none_match) = precondition(condition);
        let list = BlockLookupList {
            latest: Some(ids.to_vec()),
            ..Default::default()
        };
        let limit = self.tuning.limit_for(ids.len() as u64 * 64);
        let result = self.call(blob, op, limit, async move {
            let result = client
                .block_blob_client()
                .commit_block_list(list.try_into()?, Some(options))
                .await?;
            result.etag()
        });
        let conditional = matches!(condition, Condition::Match(_));
        let etag = self.missing_if_gone(blob, op, conditional, result)?;
        let etag = self.etag_of(blob, op, etag)?;
        let known = {
            let mut sizes = self.block_sizes.lock();
            let total = sizes.total(blob, ids);
            sizes.committed(blob, ids);
            total
        };
        if let Some(size) = known {
            return Ok(BlobStat { etag, size });
        }
        // A list naming blocks this backend never saw: ask for the size, which is
        // only ours while the etag still is.
        match self.stat(blob) {
            Ok(Some(stat)) if stat.etag == etag => Ok(stat),
            Ok(_) => Err(self.fail(
                BackendErrorKind::Transient,
                blob,
                op,
                format!(
                    "the commit landed as etag {etag}, but the blob moved before its size \
                     could be read"
                ),
            )),
            Err(e) => Err(self.fail(
                BackendErrorKind::Transient,
                blob,
                op,
                format!("the commit landed as etag {etag}, but reading its size failed: {e}"),
            )),
        }
    }

    fn read_range(&self, blob: &str, offset: u64, len: u64, etag: &Etag) -> BackendResult<Vec<u8>> {
        let op = Op::ReadRange;
        let client = self.client(blob)?;
        let refused = |r| self.refused(blob, op, r);
        if len == 0 {
            // Nothing to read (and the service refuses an empty range): check the version.
            let stat = self.stat(blob)?.ok_or_else(|| self.missing(blob, op))?;
            check_version(etag, &stat.etag).map_err(refused)?;
            check_range(offset, len, stat.size).map_err(refused)?;
            return Ok(Vec::new());
        }
        let capacity = buffer_len(len).map_err(refused)?;
        let options = BlobClientDownloadOptions {
            range: Some(HttpRange::new(offset, len)),
            if_match: Some(etag.0.clone().into()),
            // One request: the whole range is one partition.
            parallel: NonZero::new(1),
            partition_size: NonZero::new(capacity),
            ..Default::default()
        };
        let result = self.call(blob, op, self.tuning.limit_for(len), async move {
            let mut data = vec![0u8; capacity];
            let result = client.download_into(&mut data, Some(options)).await?;
            Ok((data, result.len))
        });
        // Azurite answers If-Match on a missing blob with 412: say NotFound, as for
        // commits.
        let (mut data, got) = self.missing_if_gone(blob, op, true, result)?;
        if got != capacity {
            return Err(refused(Refusal::beyond_end(
                offset,
                len,
                offset + got as u64,
            )));
        }
        data.truncate(got);
        Ok(data)
    }

    /// Unknown until the first Put Block From URL answered (`stage_range.rs`).
    fn range_staging(&self) -> RangeStaging {
        self.range_capability.get()
    }

    fn stage_from_range(
        &self,
        blob: &str,
        id: &[u8],
        source: SourceRange<'_>,
        lease: Option<&LeaseId>,
    ) -> BackendResult<StagedFromRange> {
        self.stage_range_from_url(blob, id, source, lease)
    }
}
