//! Request and byte counters of one managed database, reported by
//! `PRAGMA managedblob_status`. Every attempt counts, retries included.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The kinds of remote request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Stat,
    Download,
    Upload,
    AcquireLease,
    RenewLease,
    ReleaseLease,
    BlockList,
    StageBlock,
    CommitBlocks,
    ReadRange,
    /// The waiter queue read or replaced (a writer waits for the lease), or its
    /// version read (a holder keeping the lease warm looks whether someone waits).
    Waiter,
}

impl Request {
    pub const ALL: [Request; 11] = [
        Request::Stat,
        Request::Download,
        Request::Upload,
        Request::AcquireLease,
        Request::RenewLease,
        Request::ReleaseLease,
        Request::BlockList,
        Request::StageBlock,
        Request::CommitBlocks,
        Request::ReadRange,
        Request::Waiter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Request::Stat => "stat",
            Request::Download => "download",
            Request::Upload => "upload",
            Request::AcquireLease => "lease_acquire",
            Request::RenewLease => "lease_renew",
            Request::ReleaseLease => "lease_release",
            Request::BlockList => "block_list",
            Request::StageBlock => "stage_block",
            Request::CommitBlocks => "commit_blocks",
            Request::ReadRange => "read_range",
            Request::Waiter => "waiter",
        }
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    requests: [AtomicU64; Request::ALL.len()],
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub retries: AtomicU64,
    /// Delta sync: chunks staged (up) and fetched (down).
    pub chunks_up: AtomicU64,
    pub chunks_down: AtomicU64,
    /// Versions published to the remote (whole uploads and block list commits) and
    /// taken into the cache (whole downloads and chunk installs), whatever the
    /// transfer mode.
    pub versions_up: AtomicU64,
    pub versions_down: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CounterSnapshot {
    pub stat: u64,
    pub download: u64,
    pub upload: u64,
    pub lease_acquire: u64,
    pub lease_renew: u64,
    pub lease_release: u64,
    pub block_list: u64,
    pub stage_block: u64,
    pub commit_blocks: u64,
    pub read_range: u64,
    /// Waiter-queue reads and replaces (fair turns between hosts' writers).
    pub waiter: u64,
    pub total: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub chunks_up: u64,
    pub chunks_down: u64,
    pub versions_up: u64,
    pub versions_down: u64,
    /// Backend calls retried after a transient failure (each retry is another
    /// request, counted above and in `http`).
    pub retries: u64,
    /// HTTP requests by kind, as Azure bills and throttles them (`total` included);
    /// for the local and memory backends one request per backend call.
    pub http: BTreeMap<&'static str, u64>,
}

impl CounterSnapshot {
    /// Set the HTTP request counts (and their total).
    pub fn set_http(&mut self, counts: Vec<(&'static str, u64)>) {
        let total = counts.iter().map(|(_, n)| n).sum();
        self.http = counts.into_iter().collect();
        self.http.insert("total", total);
    }
}

impl Counters {
    pub fn count(&self, request: Request) {
        self.requests[request as usize].fetch_add(1, Relaxed);
    }

    pub fn get(&self, request: Request) -> u64 {
        self.requests[request as usize].load(Relaxed)
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let g = |r| self.get(r);
        CounterSnapshot {
            stat: g(Request::Stat),
            download: g(Request::Download),
            upload: g(Request::Upload),
            lease_acquire: g(Request::AcquireLease),
            lease_renew: g(Request::RenewLease),
            lease_release: g(Request::ReleaseLease),
            block_list: g(Request::BlockList),
            stage_block: g(Request::StageBlock),
            commit_blocks: g(Request::CommitBlocks),
            read_range: g(Request::ReadRange),
            waiter: g(Request::Waiter),
            total: Request::ALL.iter().map(|r| g(*r)).sum(),
            bytes_up: self.bytes_up.load(Relaxed),
            bytes_down: self.bytes_down.load(Relaxed),
            chunks_up: self.chunks_up.load(Relaxed),
            chunks_down: self.chunks_down.load(Relaxed),
            versions_up: self.versions_up.load(Relaxed),
            versions_down: self.versions_down.load(Relaxed),
            retries: self.retries.load(Relaxed),
            http: BTreeMap::new(),
        }
    }
}
