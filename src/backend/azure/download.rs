//! Whole downloads from Azure, pinned to one version: a stat first, then a GET with
//! `If-Match` on its etag, streamed by a task on the shared runtime through a
//! bounded channel into the caller's sink. The bytes and the etag reported always
//! agree; a blob replaced mid-download is a transient error (the caller starts
//! again).

use std::io::Write;
use std::num::NonZero;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::Bytes;
use azure_storage_blob::models::BlobClientDownloadOptions;
use futures::StreamExt;

use super::errors::Op;
use super::runtime::{self, RunError};
use super::AzureBackend;
use crate::backend::{Backend, BackendError, BackendErrorKind, BackendResult, BlobStat};

/// A message from a download task to the waiting thread.
enum Piece {
    Start(Option<azure_core::http::Etag>),
    Data(Bytes),
    Done,
    Failed(azure_core::Error),
}

impl AzureBackend {
    /// [`crate::backend::Backend::download`].
    pub(super) fn download_pinned(
        &self,
        blob: &str,
        sink: &mut dyn Write,
    ) -> BackendResult<BlobStat> {
        let op = Op::Download;
        // Pin the download to one version: stat first, then GET with If-Match, and
        // report that etag. (Azurite 3.35 can pair a newer ETag header with older
        // bytes when a block list commit lands mid-download; If-Match closes that.)
        let pinned = match self.stat(blob)? {
            Some(stat) => stat.etag,
            None => return Err(self.missing(blob, op)),
        };
        let client = self.client(blob)?;
        let handle =
            runtime::handle().map_err(|e| self.run_error(blob, op, RunError::NoRuntime(e)))?;
        // A bounded channel; the task waits on `space` when it is full (a tokio wait,
        // never a blocking one), and this thread signals it after each receive.
        let (tx, rx) = mpsc::sync_channel::<Piece>(4);
        let space = Arc::new(tokio::sync::Notify::new());
        let task_space = space.clone();
        let idle = self.tuning.idle_timeout;
        let options = BlobClientDownloadOptions {
            parallel: NonZero::new(self.tuning.parallel),
            if_match: Some(pinned.0.clone().into()),
            ..Default::default()
        };
        let task = handle.spawn(async move {
            let send = |piece: Piece| {
                let tx = tx.clone();
                let space = task_space.clone();
                async move {
                    let mut piece = piece;
                    loop {
                        match tx.try_send(piece) {
                            Ok(()) => return true,
                            Err(mpsc::TrySendError::Full(p)) => {
                                piece = p;
                                space.notified().await;
                            }
                            Err(mpsc::TrySendError::Disconnected(_)) => return false,
                        }
                    }
                }
            };
            let started = tokio::time::timeout(idle, client.download(Some(options))).await;
            let response = match started {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => {
                    send(Piece::Failed(e)).await;
                    return;
                }
                Err(_) => {
                    send(Piece::Failed(azure_core::Error::with_message(
                        azure_core::error::ErrorKind::Io,
                        format!("no response within {}s (timed out)", idle.as_secs()),
                    )))
                    .await;
                    return;
                }
            };
            if !send(Piece::Start(response.properties.etag.clone())).await {
                return;
            }
            let mut body = response.body;
            loop {
                let piece = match tokio::time::timeout(idle, body.next()).await {
                    Ok(Some(Ok(bytes))) => Piece::Data(bytes),
                    Ok(Some(Err(e))) => Piece::Failed(e),
                    Ok(None) => Piece::Done,
                    Err(_) => Piece::Failed(azure_core::Error::with_message(
                        azure_core::error::ErrorKind::Io,
                        format!("no data for {}s (timed out)", idle.as_secs()),
                    )),
                };
                let last = !matches!(piece, Piece::Data(_));
                if !send(piece).await || last {
                    return;
                }
            }
        });
        // Receive until done; on any exit the receiver is dropped, which stops the task.
        let start = Instant::now();
        let mut etag = None;
        let mut written: u64 = 0;
        let outcome: BackendResult<()> = loop {
            let piece = match rx.recv_timeout(idle + Duration::from_secs(5)) {
                Ok(piece) => piece,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    task.abort();
                    break Err(self.run_error(blob, op, RunError::TimedOut(idle)));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(self.run_error(blob, op, RunError::Lost))
                }
            };
            space.notify_one();
            match piece {
                Piece::Start(e) => match self.etag_of(blob, op, e) {
                    Ok(e) => etag = Some(e),
                    Err(e) => break Err(e),
                },
                Piece::Data(bytes) => {
                    if let Err(e) = sink.write_all(&bytes) {
                        break Err(self
                            .local_error(blob, op, format!("writing to the sink failed: {e}"))
                            .with_io(e.kind()));
                    }
                    written += bytes.len() as u64;
                }
                Piece::Done => break Ok(()),
                Piece::Failed(e) => break Err(self.error(blob, op, &e)),
            }
        };
        drop(rx);
        space.notify_one();
        tracing::debug!(
            remote = %self.url.redacted(),
            blob,
            op = op.name(),
            bytes = written,
            elapsed_ms = start.elapsed().as_millis() as u64,
            ok = outcome.is_ok(),
            "azure download"
        );
        if let Err(e) = outcome {
            // The blob moved between the stat and the GET: a retry takes the new one.
            return Err(if e.kind == BackendErrorKind::ConditionFailed {
                BackendError::new(BackendErrorKind::Transient, e.message)
            } else {
                e
            });
        }
        etag.ok_or_else(|| self.local_error(blob, op, "no response".into()))?;
        Ok(BlobStat {
            etag: pinned,
            size: written,
        })
    }
}
