//! [`History`] on Azure: blob snapshots, or the versions Azure keeps itself where the
//! storage account has blob versioning on.
//!
//! * **Which.** The first history call for a container asks the blob's properties:
//!   a response with `x-ms-version-id` means versioning is on (remembered for the
//!   process). Azurite has no versioning, so there the snapshot path runs.
//! * **Snapshot path.** `snapshot` is one Snapshot Blob (with the lease id when one
//!   is held), right after the publish: a read-only copy billed only for the blocks
//!   it does not share with the base blob or other snapshots. Ids are the snapshot
//!   times Azure gives (`2026-12-01T05:37:02.1234567Z`).
//! * **Versioning path.** Every write already made a version; `snapshot` is one Get
//!   Blob Properties to learn the current version id. Ids are `v` + the version id
//!   (also a time). The current version is never deleted.
//! * `versions` is one List Blobs (prefix = the blob, with snapshots or versions),
//!   plus one Get Block List per version to count the bytes each holds alone;
//!   `listing` (what `as_of` uses) is the List Blobs alone. `download_version` reads
//!   the version in ranges of [`super::AzureTuning::block_size`]; `delete_version` is
//!   one Delete Blob with `snapshot=` or `versionid=` (never the base blob).
//! * `read_kept_range` finds the kept version by the ETag it keeps (a snapshot has
//!   the base blob's ETag as of when it was taken) through the retention's record,
//!   then reads the range with one ranged Get Blob (`snapshots/kept_range.rs`).
//! * **Retention** (`prune`, after each commit) counts instead of listing: a
//!   per-process record of each blob's kept versions (`snapshots/record.rs`, where
//!   the rule that keeps a stale record safe is written), seeded by one listing and
//!   relisted now and then. A commit with history on costs the snapshot, plus one
//!   Delete Blob when the retention drops a version.

use std::collections::HashMap;
use std::io::Write;
use std::num::NonZero;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use azure_storage_blob::models::{
    BlobClientCreateSnapshotOptions, BlobClientCreateSnapshotResultHeaders,
    BlobClientDeleteOptions, BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders,
    BlobContainerClientListBlobsOptions, BlobItem, BlockListType, HttpRange, ListBlobsIncludeItem,
};
use azure_storage_blob::BlobClient;
use futures::TryStreamExt;
use parking_lot::Mutex;

use super::errors::{http_status, Op};
use super::AzureBackend;
use crate::backend::history::{parse_time, unique_bytes};
use crate::backend::{
    BackendErrorKind, BackendResult, BlockId, Etag, History, LeaseId, VersionInfo,
};
use crate::config::HistoryPolicy;

mod kept_range;
mod record;
use record::Record;

/// The id prefix of a version kept by Azure's blob versioning.
const VERSION_PREFIX: &str = "v";

/// One kept version as List Blobs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Listed {
    pub id: String,
    pub time: SystemTime,
    pub size: u64,
    /// The blob's current version (versioning path): never deleted.
    pub current: bool,
    /// The ETag the blob had as this version: a snapshot keeps the base blob's ETag
    /// as of when it was taken (checked on Azurite, `tests/history_backends.rs`), a
    /// version the ETag of the write that made it. `None` when the reply had none.
    pub etag: Option<Etag>,
}

/// Whether two ETags name one version: List Blobs spells them bare (`0x8D..`),
/// response headers quoted (`"0x8D.."`).
pub(super) fn same_etag(a: &Etag, b: &Etag) -> bool {
    let bare = |e: &Etag| e.0.trim_start_matches("W/").trim_matches('"').to_string();
    bare(a) == bare(b)
}

/// Where a kept version lives: a snapshot or a version of the blob.
enum Target<'a> {
    Snapshot(&'a str),
    Version(&'a str),
}

fn target(id: &str) -> Target<'_> {
    match id.strip_prefix(VERSION_PREFIX) {
        Some(version) => Target::Version(version),
        None => Target::Snapshot(id),
    }
}

/// The kept versions of `blob` among List Blobs `items`, oldest first: its snapshots,
/// or (with `versioning`) its versions. Items of other blobs (the listing is by
/// prefix), the base blob itself and items without a parsable time are skipped.
pub(super) fn kept_versions(blob: &str, items: Vec<BlobItem>, versioning: bool) -> Vec<Listed> {
    let mut kept: Vec<Listed> = items
        .into_iter()
        .filter(|item| item.name.as_deref() == Some(blob))
        .filter_map(|item| {
            let size = item
                .properties
                .as_ref()
                .and_then(|p| p.content_length)
                .unwrap_or(0);
            let etag = item
                .properties
                .as_ref()
                .and_then(|p| p.etag.as_ref())
                .map(|e| Etag(e.to_string()));
            let (id, stamp, current) = if versioning {
                let version = item.version_id?;
                let current = item.is_current_version.unwrap_or(false);
                (format!("{VERSION_PREFIX}{version}"), version, current)
            } else {
                let snapshot = item.snapshot?;
                (snapshot.clone(), snapshot, false)
            };
            Some(Listed {
                id,
                time: parse_time(&stamp)?,
                size,
                current,
                etag,
            })
        })
        .collect();
    kept.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
    kept
}

/// Per container (by its secret-free URL): whether blob versioning is on.
fn versioning_known() -> &'static Mutex<HashMap<String, bool>> {
    static KNOWN: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    KNOWN.get_or_init(Default::default)
}

/// Per blob (by its container's secret-free URL and its name): the retention's
/// record of its kept versions, shared by every backend of the process.
fn records() -> &'static Mutex<HashMap<String, Arc<Mutex<Record>>>> {
    static RECORDS: OnceLock<Mutex<HashMap<String, Arc<Mutex<Record>>>>> = OnceLock::new();
    RECORDS.get_or_init(Default::default)
}

impl AzureBackend {
    /// The retention's record of `blob`'s kept versions.
    fn record(&self, blob: &str) -> Arc<Mutex<Record>> {
        let key = format!("{}/{blob}", self.url.redacted());
        records().lock().entry(key).or_default().clone()
    }

    /// The current version id of `blob` (`None` without versioning), in one Get Blob
    /// Properties; remembers whether the container has versioning.
    fn current_version(&self, blob: &str, op: Op) -> BackendResult<Option<String>> {
        Ok(self.current_version_and_etag(blob, op)?.0)
    }

    /// [`Self::current_version`] with the blob's ETag from the same reply.
    fn current_version_and_etag(
        &self,
        blob: &str,
        op: Op,
    ) -> BackendResult<(Option<String>, Option<Etag>)> {
        let client = self.client(blob)?;
        let (version, etag) = self.call(blob, op, self.tuning.request_timeout, async move {
            let props = client.get_properties(None).await?;
            Ok((props.version_id()?, props.etag()?))
        })?;
        versioning_known()
            .lock()
            .insert(self.url.redacted(), version.is_some());
        Ok((version, etag.map(|e| Etag(e.to_string()))))
    }

    /// Whether the container has blob versioning (one request the first time).
    fn versioning(&self, blob: &str, op: Op) -> BackendResult<bool> {
        if let Some(known) = versioning_known().lock().get(&self.url.redacted()) {
            return Ok(*known);
        }
        Ok(self.current_version(blob, op)?.is_some())
    }

    /// One List Blobs of `blob`'s snapshots or versions, which also refreshes the
    /// retention's record.
    fn listed(&self, blob: &str) -> BackendResult<Vec<Listed>> {
        let kept = self.list_kept(blob)?;
        self.record(blob).lock().seed(kept.clone(), Instant::now());
        Ok(kept)
    }

    /// One List Blobs of `blob`'s snapshots or versions.
    fn list_kept(&self, blob: &str) -> BackendResult<Vec<Listed>> {
        let op = Op::ListVersions;
        let versioning = self.versioning(blob, op)?;
        let client = self.container_client(op)?;
        let include = if versioning {
            ListBlobsIncludeItem::Versions
        } else {
            ListBlobsIncludeItem::Snapshots
        };
        let options = BlobContainerClientListBlobsOptions {
            include: Some(vec![include]),
            prefix: Some(blob.to_string()),
            ..Default::default()
        };
        let items = self.call(blob, op, self.tuning.request_timeout, async move {
            client
                .list_blobs(Some(options))?
                .try_collect::<Vec<_>>()
                .await
        })?;
        Ok(kept_versions(blob, items, versioning))
    }

    /// A client for the kept version `id` of `blob`.
    fn version_client(&self, blob: &str, id: &str, op: Op) -> BackendResult<Arc<BlobClient>> {
        let base = self.client(blob)?;
        let client = match target(id) {
            Target::Snapshot(s) => base.with_snapshot(s),
            Target::Version(v) => base.with_version(v),
        };
        client.map(Arc::new).map_err(|e| self.error(blob, op, &e))
    }

    /// The committed block list of kept version `id`.
    fn version_blocks(&self, blob: &str, id: &str) -> BackendResult<Vec<(BlockId, u64)>> {
        let op = Op::ListVersions;
        let client = self.version_client(blob, id, op)?;
        let list = self.call(blob, op, self.tuning.request_timeout, async move {
            client
                .block_blob_client()
                .get_block_list(BlockListType::Committed, None)
                .await?
                .into_model()
        })?;
        Ok(list
            .committed_blocks
            .unwrap_or_default()
            .into_iter()
            .filter_map(|b| Some((b.name?, u64::try_from(b.size?).ok()?)))
            .collect())
    }
}

impl History for AzureBackend {
    fn snapshot(&self, blob: &str, lease: Option<&LeaseId>) -> BackendResult<String> {
        let op = Op::Snapshot;
        if self.versioning(blob, op)? {
            let (version, etag) = self.current_version_and_etag(blob, op)?;
            let id = version
                .map(|v| format!("{VERSION_PREFIX}{v}"))
                .ok_or_else(|| self.local_error(blob, op, "no version id in the reply".into()))?;
            self.record_taken(blob, &id, true, etag);
            return Ok(id);
        }
        let client = self.client(blob)?;
        let options = BlobClientCreateSnapshotOptions {
            lease_id: lease.map(|l| l.0.clone()),
            ..Default::default()
        };
        let (snapshot, etag) = self.call(blob, op, self.tuning.request_timeout, async move {
            let reply = client.create_snapshot(Some(options)).await?;
            Ok((reply.snapshot()?, reply.etag()?))
        })?;
        let id = snapshot
            .ok_or_else(|| self.local_error(blob, op, "no snapshot time in the reply".into()))?;
        // The reply's ETag is the snapshot's, which is the base blob's as it was.
        self.record_taken(blob, &id, false, etag.map(|e| Etag(e.to_string())));
        Ok(id)
    }

    /// The listing alone: no block lists.
    fn listing(&self, blob: &str) -> BackendResult<Vec<VersionInfo>> {
        Ok(self
            .listed(blob)?
            .into_iter()
            .map(|v| VersionInfo {
                id: v.id,
                time: v.time,
                size: v.size,
                unique_bytes: 0,
            })
            .collect())
    }

    fn versions(&self, blob: &str) -> BackendResult<Vec<VersionInfo>> {
        let listed = self.listed(blob)?;
        let blocks = listed
            .iter()
            .map(|v| self.version_blocks(blob, &v.id))
            .collect::<BackendResult<Vec<_>>>()?;
        Ok(listed
            .into_iter()
            .zip(unique_bytes(&blocks))
            .map(|(v, unique)| VersionInfo {
                id: v.id,
                time: v.time,
                size: v.size,
                unique_bytes: unique,
            })
            .collect())
    }

    fn download_version(&self, blob: &str, id: &str, sink: &mut dyn Write) -> BackendResult<u64> {
        let op = Op::ReadVersion;
        let client = self.version_client(blob, id, op)?;
        let props = client.clone();
        let size = self
            .exec(blob, op, self.tuning.request_timeout, async move {
                props.get_properties(None).await?.content_length()
            })?
            .map_err(|e| match http_status(&e) {
                Some((404, _)) => self.fail(
                    BackendErrorKind::NotFound,
                    blob,
                    op,
                    format!("no version {id}"),
                ),
                _ => self.error(blob, op, &e),
            })?
            .unwrap_or(0);
        let step = self.tuning.block_size.max(1);
        let mut offset = 0;
        while offset < size {
            let len = step.min(size - offset);
            let capacity = usize::try_from(len).expect("a block fits in memory");
            let options = BlobClientDownloadOptions {
                range: Some(HttpRange::new(offset, len)),
                parallel: NonZero::new(1),
                partition_size: NonZero::new(capacity),
                ..Default::default()
            };
            let client = client.clone();
            let (data, got) = self.call(blob, op, self.tuning.limit_for(len), async move {
                let mut data = vec![0u8; capacity];
                let result = client.download_into(&mut data, Some(options)).await?;
                Ok((data, result.len))
            })?;
            if got != capacity {
                return Err(self.local_error(blob, op, format!("version {id} ended early")));
            }
            sink.write_all(&data)
                .map_err(|e| self.local_error(blob, op, format!("writing: {e}")))?;
            offset += len;
        }
        Ok(size)
    }

    /// From the snapshot (or version) the record maps `etag` to
    /// (`snapshots/kept_range.rs`).
    fn read_kept_range(
        &self,
        blob: &str,
        etag: &Etag,
        offset: u64,
        len: u64,
    ) -> BackendResult<Option<Vec<u8>>> {
        self.kept_range(blob, etag, offset, len)
    }

    fn delete_version(&self, blob: &str, id: &str) -> BackendResult<()> {
        self.delete_kept(blob, id)?;
        self.record(blob).lock().forget(id);
        Ok(())
    }

    /// Retention from the record (`snapshots/record.rs`): a listing only when the
    /// record needs one; a delete that finds its version gone lists again.
    fn prune(
        &self,
        blob: &str,
        policy: HistoryPolicy,
        now: SystemTime,
    ) -> BackendResult<Vec<String>> {
        if !policy.is_on() {
            return Ok(Vec::new());
        }
        let record = self.record(blob);
        let mut record = record.lock();
        let mut dropped = Vec::new();
        // A second pass only after a delete showed the record stale.
        for _ in 0..2 {
            if record.needs_listing(Instant::now()) {
                record.seed(self.list_kept(blob)?, Instant::now());
            }
            let mut stale = false;
            for id in record.expired(policy, now) {
                let deleted = self.delete_kept(blob, &id)?;
                record.forget(&id);
                if !deleted {
                    record.invalidate();
                    stale = true;
                    break;
                }
                dropped.push(id);
            }
            if !stale {
                break;
            }
        }
        Ok(dropped)
    }
}

impl AzureBackend {
    /// A version this process just kept (with the ETag it keeps), into the
    /// retention's record.
    fn record_taken(&self, blob: &str, id: &str, versioning: bool, etag: Option<Etag>) {
        let stamp = if versioning {
            id.strip_prefix(VERSION_PREFIX).unwrap_or(id)
        } else {
            id
        };
        let record = self.record(blob);
        let mut record = record.lock();
        match parse_time(stamp) {
            Some(time) => record.taken(Listed {
                id: id.to_string(),
                time,
                size: 0,
                current: versioning,
                etag,
            }),
            None => record.invalidate(),
        }
    }

    /// Delete kept version `id` (never the blob itself): `true` when this deleted
    /// it, `false` when it was already gone.
    fn delete_kept(&self, blob: &str, id: &str) -> BackendResult<bool> {
        let op = Op::DeleteVersion;
        let mut options = BlobClientDeleteOptions::default();
        match target(id) {
            Target::Snapshot(s) => options.snapshot = Some(s.to_string()),
            Target::Version(v) => {
                if self.current_version(blob, op)?.as_deref() == Some(v) {
                    return Err(self.fail(
                        BackendErrorKind::Invalid,
                        blob,
                        op,
                        "the current version is the blob itself and is never deleted",
                    ));
                }
                options.version_id = Some(v.to_string());
            }
        }
        let client = self.client(blob)?;
        let result = self.exec(blob, op, self.tuning.request_timeout, async move {
            client.delete(Some(options)).await.map(|_| ())
        })?;
        match result {
            Ok(()) => Ok(true),
            Err(e) if matches!(http_status(&e), Some((404, _))) => Ok(false),
            Err(e) => Err(self.error(blob, op, &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_storage_blob::models::ListBlobsResponse;

    /// A List Blobs reply of an account with versioning on (the shape Azure sends
    /// with `include=versions`).
    const VERSIONED: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="https://acct.blob.core.windows.net/" ContainerName="data">
  <Prefix>a.db</Prefix>
  <Blobs>
    <Blob>
      <Name>a.db</Name>
      <VersionId>2026-12-01T05:37:03.2000000Z</VersionId>
      <IsCurrentVersion>true</IsCurrentVersion>
      <Properties><Content-Length>8192</Content-Length><BlobType>BlockBlob</BlobType></Properties>
    </Blob>
    <Blob>
      <Name>a.db</Name>
      <VersionId>2026-12-01T05:37:02.1000000Z</VersionId>
      <Properties><Content-Length>4096</Content-Length><BlobType>BlockBlob</BlobType></Properties>
    </Blob>
    <Blob>
      <Name>a.db-other</Name>
      <VersionId>2026-12-01T05:37:01.0000000Z</VersionId>
      <Properties><Content-Length>1</Content-Length></Properties>
    </Blob>
  </Blobs>
  <NextMarker />
</EnumerationResults>"#;

    #[test]
    fn versioning_listing_gives_the_blobs_versions_oldest_first() {
        let reply: ListBlobsResponse = azure_core::xml::from_xml(VERSIONED.as_bytes()).unwrap();
        let kept = kept_versions("a.db", reply.blob_items, true);
        let ids: Vec<&str> = kept.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "v2026-12-01T05:37:02.1000000Z",
                "v2026-12-01T05:37:03.2000000Z"
            ]
        );
        assert_eq!(kept[0].size, 4096);
        assert!(!kept[0].current && kept[1].current);
        assert!(kept[0].time < kept[1].time);
        assert!(matches!(
            target(&kept[0].id),
            Target::Version("2026-12-01T05:37:02.1000000Z")
        ));
    }

    #[test]
    fn snapshot_listing_skips_the_base_blob() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ContainerName="data"><Blobs>
  <Blob><Name>a.db</Name><Snapshot>2026-12-01T05:37:02.1000000Z</Snapshot>
    <Properties><Content-Length>10</Content-Length></Properties></Blob>
  <Blob><Name>a.db</Name><Properties><Content-Length>12</Content-Length></Properties></Blob>
</Blobs></EnumerationResults>"#;
        let reply: ListBlobsResponse = azure_core::xml::from_xml(xml.as_bytes()).unwrap();
        let kept = kept_versions("a.db", reply.blob_items, false);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].id, "2026-12-01T05:37:02.1000000Z");
        assert!(matches!(target(&kept[0].id), Target::Snapshot(_)));
    }
}
