//! The per-database state machine: one [`Store`] per cache file per process,
//! shared by every connection to it, driven by SQLite's lock calls.
//!
//! | SQLite event                 | what the store does                                   |
//! |------------------------------|-------------------------------------------------------|
//! | xOpen (first connection)     | reload sidecar, recover, first freshness check        |
//! | NONE -> SHARED               | freshness check when stale ([`Store::on_shared`])     |
//! | SHARED -> RESERVED           | take the remote lease, check the snapshot ([`Store::begin_write`]) |
//! | SQLITE_FCNTL_SYNC            | upload, unless a batch is open ([`Store::commit`])    |
//! | SQLITE_FCNTL_COMMIT_PHASETWO | the local commit finished ([`Store::commit_phase_two`]) |
//! | unlock below RESERVED        | release the lease unless a batch holds it ([`Store::end_write`]) |
//!
//! Lock order: a connection takes SQLite's file lock first and the store's mutex
//! second; under the mutex, file locks are only ever tried, never waited for.
//! Every decision re-reads the sidecar under the file lock, so processes that share
//! one cache agree.

mod delta_sync;
mod registry;
mod sync;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::backend::{BackendErrorKind, Condition, Lease};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lease::HeldLease;
use crate::localfile::{LocalFile, LockFail, LockLevel};
use crate::remote::Remote;
use crate::sidecar::{self, InFlight, Sidecar};

pub use registry::open_store;

/// How long a pragma waits for a SHARED lock on the cache before giving up.
const PRAGMA_LOCK_WAIT: Duration = Duration::from_secs(10);

/// One managed database in this process.
#[derive(Debug)]
pub struct Store {
    cache_path: PathBuf,
    sidecar_path: PathBuf,
    journal_path: PathBuf,
    download_path: PathBuf,
    /// The chunk list of the base version (delta sync), beside the sidecar.
    manifest_path: PathBuf,
    config: Config,
    identity: String,
    remote: Arc<Remote>,
    state: Mutex<State>,
    /// Until when (nanoseconds on [`clock`]) a SHARED lock needs no freshness check:
    /// read without the mutex, so the read path of a fresh cache stays cheap.
    fresh_until: AtomicU64,
}

/// Monotonic nanoseconds since the first call in this process.
fn clock() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[derive(Debug)]
struct State {
    sidecar: Sidecar,
    lease: Option<HeldLease>,
    /// A connection of this process is inside a write transaction.
    writer: bool,
    /// The blob did not exist when the writer started: its commit creates it.
    create_on_commit: bool,
    batch_depth: u32,
    last_check: Option<Instant>,
    /// Check the remote at the next SHARED lock whatever the staleness clock says.
    must_check: bool,
    connections: usize,
    /// How many of them may write (not opened with mode=ro): only then does this
    /// process upload local commits left behind by a crash.
    writable: usize,
    last_error: Option<String>,
    conflicts: Vec<String>,
    /// A downloaded version waiting beside the cache for an EXCLUSIVE lock.
    pending_download: Option<delta_sync::Fetched>,
    /// The base version's chunk list, when known.
    manifest: Option<(crate::backend::Etag, crate::delta::Manifest)>,
    /// 64 KiB granules of the cache written by commits since the base.
    written: std::collections::BTreeSet<u64>,
}

/// The status report of `PRAGMA managedblob_status`.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub remote: String,
    pub blob: String,
    pub etag: Option<String>,
    pub dirty: bool,
    pub lease_held: bool,
    pub batch_depth: u32,
    pub generation: u64,
    pub in_flight: InFlight,
    pub requests: crate::counters::CounterSnapshot,
    pub conflicts: Vec<String>,
    pub last_error: Option<String>,
}

impl Store {
    fn new(cache_path: &Path, config: Config, remote: Remote) -> Store {
        let with_suffix = |suffix: &str| {
            let mut s = cache_path.as_os_str().to_owned();
            s.push(suffix);
            PathBuf::from(s)
        };
        let identity = remote.identity();
        let sidecar = Sidecar::new(identity.clone(), config.blob.clone());
        Store {
            cache_path: cache_path.to_path_buf(),
            sidecar_path: sidecar::path_for(cache_path),
            journal_path: with_suffix("-journal"),
            // One per process: two processes refreshing one cache never share a file.
            manifest_path: with_suffix("-managedblob.manifest"),
            download_path: with_suffix(&format!(
                "-managedblob.download-{}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            )),
            identity,
            config,
            remote: Arc::new(remote),
            state: Mutex::new(State {
                sidecar,
                lease: None,
                writer: false,
                create_on_commit: false,
                batch_depth: 0,
                last_check: None,
                must_check: true,
                connections: 0,
                writable: 0,
                last_error: None,
                conflicts: Vec::new(),
                pending_download: None,
                manifest: None,
                written: Default::default(),
            }),
            fresh_until: AtomicU64::new(0),
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Make the next SHARED lock check the remote, whatever the staleness clock says.
    fn force_check(&self, st: &mut State) {
        st.must_check = true;
        self.fresh_until.store(0, Ordering::SeqCst);
    }

    /// Remember an error for the status report and log it.
    fn note_error(&self, st: &mut State, err: &Error) {
        tracing::warn!(cache = %self.cache_path.display(), error = %err, "managedblob operation failed");
        st.last_error = Some(err.to_string());
    }

    /// A new connection opened the cache; the first one recovers and checks freshness.
    pub fn attach(&self, file: &mut dyn LocalFile, read_only: bool) -> Result<()> {
        let mut st = self.lock_state();
        st.connections += 1;
        st.writable += usize::from(!read_only);
        if st.connections > 1 {
            return Ok(());
        }
        self.remove_stale_downloads();
        let result = match file.lock(LockLevel::Shared) {
            Ok(()) => {
                let r = self
                    .leave_wal_mode(file)
                    .and_then(|()| self.sync(&mut st, file, LockLevel::Shared));
                let _ = file.unlock(LockLevel::None);
                r
            }
            // Another process is writing the cache: check at the first SHARED lock.
            Err(LockFail::Busy) => Ok(()),
            Err(LockFail::Io(code)) => Err(Error::Local(format!(
                "locking cache {} failed (SQLite code {code})",
                self.cache_path.display()
            ))),
        };
        match result {
            Err(e) if e.is_busy() => {
                self.force_check(&mut st);
                Ok(())
            }
            Err(Error::Backend(e))
                if e.is_transient()
                    && st.sidecar.base.is_some()
                    && st.sidecar.in_flight == InFlight::None =>
            {
                // The remote is unreachable but the cache is a whole, known version:
                // open it (reads are served from it), and look again after the
                // staleness bound.
                st.last_check = Some(Instant::now());
                self.note_error(&mut st, &Error::Backend(e));
                Ok(())
            }
            Err(e) => {
                st.connections -= 1;
                st.writable -= usize::from(!read_only);
                self.note_error(&mut st, &e);
                Err(e)
            }
            Ok(()) => Ok(()),
        }
    }

    /// A connection closes. The last one flushes a pending batch (best effort: the
    /// cache stays dirty on failure and the next open uploads it) and drops the lease.
    pub fn detach(&self, file: &mut dyn LocalFile, read_only: bool) {
        let mut st = self.lock_state();
        st.connections = st.connections.saturating_sub(1);
        if st.connections > 0 {
            st.writable = st.writable.saturating_sub(usize::from(!read_only));
            return;
        }
        if st.batch_depth > 0 {
            tracing::warn!(cache = %self.cache_path.display(), depth = st.batch_depth,
                "last connection closed inside a batch: ending it");
            st.batch_depth = 0;
        }
        drop(st);
        if let Err(e) = self.flush_with_lock(file, LockLevel::None) {
            tracing::warn!(cache = %self.cache_path.display(), error = %e,
                "flush at close failed; the cache stays dirty and uploads at the next open");
        }
        let mut st = self.lock_state();
        st.writable = st.writable.saturating_sub(usize::from(!read_only));
        self.release_lease(&mut st);
    }

    /// NONE -> SHARED: the connection holds SHARED on the cache. Brings the cache up
    /// to date when the staleness bound has passed; `Err(Busy)` when that needs the
    /// cache to itself and another connection is reading.
    pub fn on_shared(&self, file: &mut dyn LocalFile) -> Result<()> {
        if clock() < self.fresh_until.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut st = self.lock_state();
        let result = self.on_shared_locked(&mut st, file);
        // Open the fast path until the staleness bound, unless a check is pending or
        // this process writes (then every SHARED must see the lease state).
        if result.is_ok() && !st.must_check && st.lease.is_none() {
            if let Some(checked) = st.last_check {
                let until = clock()
                    + (self.config.staleness.saturating_sub(checked.elapsed())).as_nanos() as u64;
                self.fresh_until.store(until, Ordering::SeqCst);
            }
        }
        result
    }

    fn on_shared_locked(&self, st: &mut State, file: &mut dyn LocalFile) -> Result<()> {
        let writing_here = st.lease.as_ref().is_some_and(|l| !l.is_parked());
        if writing_here && !st.must_check {
            // We are the writer: nobody else can move the remote.
            return Ok(());
        }
        let fresh = st
            .last_check
            .is_some_and(|t| t.elapsed() < self.config.staleness);
        if fresh && !st.must_check {
            return Ok(());
        }
        match self.sync(st, file, LockLevel::Shared) {
            Ok(()) => Ok(()),
            Err(Error::Backend(e))
                if e.is_transient() && st.sidecar.in_flight == InFlight::None =>
            {
                // The remote is unreachable: serve the local copy, look again later.
                st.last_check = Some(Instant::now());
                let err = Error::Backend(e);
                self.note_error(st, &err);
                Ok(())
            }
            Err(e) => {
                self.force_check(st);
                if !e.is_busy() {
                    self.note_error(st, &e);
                }
                Err(e)
            }
        }
    }

    /// SHARED -> RESERVED: the connection holds RESERVED on the cache and starts a
    /// write transaction. Takes the remote lease (BUSY when another writer has it) and
    /// checks that the remote is still the version this snapshot read (BUSY and a
    /// forced refresh when it moved).
    pub fn begin_write(&self) -> Result<()> {
        let mut st = self.lock_state();
        let result = self.begin_write_locked(&mut st);
        match &result {
            Ok(()) => st.writer = true,
            Err(e) if e.is_busy() => {}
            Err(e) => self.note_error(&mut st, e),
        }
        result
    }

    fn begin_write_locked(&self, st: &mut State) -> Result<()> {
        // While this process holds a live lease (a batch), no other process can change
        // the sidecar: its commits, flushes and recoveries need the lease, and an
        // install needs the remote to move, which the lease prevents. Otherwise
        // re-read it: another process sharing the cache may have changed it.
        let lease_live = st
            .lease
            .as_ref()
            .is_some_and(|l| !l.is_parked() && !l.is_lost());
        if !lease_live {
            self.reload(st)?;
        }
        if st.sidecar.in_flight != InFlight::None {
            self.force_check(st);
            return Err(Error::Busy(format!(
                "cache {} is being resynced from the remote",
                self.cache_path.display()
            )));
        }
        self.revive_parked_lease(st)?;
        if let Some(lease) = &st.lease {
            if lease.is_lost() {
                return Err(Error::Backend(crate::backend::BackendError::new(
                    BackendErrorKind::LeaseLost,
                    format!("the lease on blob '{}' was lost", self.config.blob),
                )));
            }
            return Ok(());
        }
        match self.take_lease()? {
            Some(lease) => self.adopt_lease(st, lease),
            None if st.sidecar.base.is_none() => {
                // No blob yet: the first commit creates it with If-None-Match:*.
                st.create_on_commit = true;
                Ok(())
            }
            None => {
                self.force_check(st);
                Err(Error::Backend(crate::backend::BackendError::new(
                    BackendErrorKind::NotFound,
                    format!(
                        "remote blob '{}' was deleted; this cache holds version {}",
                        self.config.blob,
                        st.sidecar
                            .base
                            .as_ref()
                            .map(|e| e.0.as_str())
                            .unwrap_or("?")
                    ),
                )))
            }
        }
    }

    /// Take the lease; `None` when the blob does not exist.
    /// Take the lease. A blob that does not exist yet is first created empty with
    /// If-None-Match:* (a lease needs a blob; whoever creates it first, the empty blob
    /// is the same), so the writer that creates the database holds the lease too.
    /// `None` only when the blob vanished again in between.
    fn take_lease(&self) -> Result<Option<Lease>> {
        let busy = || {
            Error::Busy(format!(
                "the lease on blob '{}' is held by another writer",
                self.config.blob
            ))
        };
        match self.remote.acquire_lease(self.config.lease) {
            Ok(lease) => return Ok(Some(lease)),
            Err(e) if e.kind == BackendErrorKind::NotFound => {}
            Err(e) if e.kind == BackendErrorKind::LeaseHeld => return Err(busy()),
            Err(e) => return Err(e.into()),
        }
        match self.remote.create_empty() {
            Ok(_) => {}
            Err(e) if e.kind == BackendErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        match self.remote.acquire_lease(self.config.lease) {
            Ok(lease) => Ok(Some(lease)),
            Err(e) if e.kind == BackendErrorKind::NotFound => Ok(None),
            Err(e) if e.kind == BackendErrorKind::LeaseHeld => Err(busy()),
            Err(e) => Err(e.into()),
        }
    }

    /// Keep a lease just taken if the remote is still our base version.
    fn adopt_lease(&self, st: &mut State, lease: Lease) -> Result<()> {
        let matches = st.sidecar.base.as_ref() == Some(&lease.stat.etag);
        let adoptable_empty = st.sidecar.base.is_none() && lease.stat.size == 0;
        if !(matches || adoptable_empty) {
            self.give_back(st, lease.id);
            self.force_check(st);
            return Err(Error::Busy(format!(
                "remote blob '{}' moved since this snapshot was read; the next read takes the \
                 new version (use BEGIN IMMEDIATE for read-then-write transactions)",
                self.config.blob
            )));
        }
        if adoptable_empty {
            st.sidecar.base = Some(lease.stat.etag.clone());
            self.save(st)?;
        }
        st.lease = Some(HeldLease::start(
            self.remote.clone(),
            lease.id,
            self.config.lease,
        ));
        Ok(())
    }

    /// SQLITE_FCNTL_SYNC in a write transaction: the commit point for the remote.
    /// Outside a batch, upload the cache now; an error fails the COMMIT and SQLite
    /// rolls the cache back from its journal. Inside a batch, mark the cache dirty.
    pub fn commit(&self, file: &mut dyn LocalFile, written: &BTreeSet<u64>) -> Result<()> {
        let mut st = self.lock_state();
        if !st.writer {
            return Ok(());
        }
        st.written.extend(written.iter().copied());
        let result = self.commit_locked(&mut st, file);
        if let Err(e) = &result {
            self.note_error(&mut st, e);
        }
        result
    }

    fn commit_locked(&self, st: &mut State, file: &mut dyn LocalFile) -> Result<()> {
        if st.batch_depth > 0 {
            if !st.sidecar.dirty {
                st.sidecar.dirty = true;
                st.sidecar.dirty_owner = Some(delta_sync::process_token().to_string());
                self.save(st)?;
            }
            return Ok(());
        }
        let condition = if st.create_on_commit {
            Condition::Create
        } else {
            match &st.sidecar.base {
                Some(etag) => Condition::Match(etag.clone()),
                None => Condition::Create,
            }
        };
        let lease = st.lease.as_ref().map(|l| l.id.clone());
        let stat = self
            .upload(st, file, &condition, lease.as_ref())
            .map_err(|e| match e {
                Error::Backend(b) if b.kind == BackendErrorKind::AlreadyExists => {
                    Error::Busy(format!(
                        "another writer created blob '{}' first; retry the transaction",
                        self.config.blob
                    ))
                }
                other => other,
            })?;
        st.create_on_commit = false;
        st.sidecar.base = Some(stat.etag);
        st.sidecar.dirty = false;
        st.sidecar.in_flight = InFlight::Commit;
        st.sidecar.generation += 1;
        self.save(st)
    }

    /// SQLITE_FCNTL_COMMIT_PHASETWO: the local commit is complete.
    pub fn commit_phase_two(&self) -> Result<()> {
        let mut st = self.lock_state();
        if st.sidecar.in_flight == InFlight::Commit {
            st.sidecar.in_flight = InFlight::None;
            self.save(&mut st)?;
        }
        Ok(())
    }

    /// The write transaction ended (unlock below RESERVED).
    pub fn end_write(&self) {
        let mut st = self.lock_state();
        st.writer = false;
        st.create_on_commit = false;
        if st.sidecar.in_flight == InFlight::Commit {
            // The upload landed but the local commit did not complete (SQLite rolled
            // back): the cache is behind the remote. Take the remote at the next read.
            st.sidecar.in_flight = InFlight::None;
            st.sidecar.base = None;
            self.force_check(&mut st);
            if let Err(e) = self.save(&mut st) {
                self.note_error(&mut st, &e);
            }
        }
        if st.batch_depth == 0 {
            self.release_lease(&mut st);
        }
    }

    /// Give the lease back. When the release fails, the lease is parked: no more
    /// renewals, so it lapses within `lease_secs`, but this process's next writer
    /// may renew and reuse it instead of waiting for itself.
    fn release_lease(&self, st: &mut State) {
        let Some(mut lease) = st.lease.take() else {
            return;
        };
        lease.park();
        if lease.is_lost() {
            return;
        }
        if let Err(e) = self.remote.release_lease(&lease.id) {
            tracing::warn!(blob = %self.config.blob, error = %e,
                "releasing the lease failed; it lapses by itself unless reused");
            st.lease = Some(lease);
        }
    }

    /// Release a lease taken for nothing. If the release fails the lease may still be
    /// ours: it is parked (kept, not renewed), never forgotten, or every writer, this
    /// process included, would wait for it to lapse.
    fn give_back(&self, st: &mut State, id: crate::backend::LeaseId) {
        match self.remote.release_lease(&id) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind,
                    BackendErrorKind::LeaseLost | BackendErrorKind::NotFound
                ) => {}
            Err(e) => {
                tracing::warn!(blob = %self.config.blob, error = %e,
                    "releasing the lease failed; it is kept parked until released or lapsed");
                st.lease = Some(HeldLease::parked(id));
            }
        }
    }

    /// Make a parked lease (see [`Store::release_lease`]) live again, or drop it when
    /// it is gone. When the renewal fails transiently the lease may still be ours: it
    /// stays parked (forgetting it would lock this process out until it lapses) and
    /// the error fails the caller. A revived lease is only kept when the remote is
    /// still this cache's base (it may have been parked after seeing a moved remote).
    fn revive_parked_lease(&self, st: &mut State) -> Result<()> {
        let Some(lease) = st.lease.as_mut() else {
            return Ok(());
        };
        if !lease.is_parked() {
            return Ok(());
        }
        match self.remote.renew_lease(&lease.id, self.config.lease) {
            Ok(()) => {}
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(_) => {
                st.lease = None;
                return Ok(());
            }
        }
        let current = self.remote.stat()?;
        let matches = match (&current, &st.sidecar.base) {
            (Some(stat), Some(base)) => stat.etag == *base,
            (Some(stat), None) => stat.size == 0,
            (None, _) => false,
        };
        if !matches {
            let id = st.lease.take().expect("checked above").id.clone();
            self.give_back(st, id);
            self.force_check(st);
            return Err(Error::Busy(format!(
                "remote blob '{}' moved since this snapshot was read; the next read takes the \
                 new version",
                self.config.blob
            )));
        }
        if let Some(lease) = st.lease.as_mut() {
            lease.resume(self.remote.clone(), self.config.lease);
        }
        Ok(())
    }

    /// `PRAGMA managedblob_batch=begin`: hold the lease until the matching end;
    /// commits in between stay local and the end uploads once.
    pub fn batch_begin(&self, file: &mut dyn LocalFile, level: LockLevel) -> Result<()> {
        {
            let mut st = self.lock_state();
            self.revive_parked_lease(&mut st)?;
            if st.batch_depth > 0 || st.lease.is_some() {
                st.batch_depth += 1;
                return Ok(());
            }
        }
        if level > LockLevel::None {
            return Err(Error::Misuse(
                "managedblob_batch=begin cannot start a batch inside a transaction".into(),
            ));
        }
        self.with_lock(file, level, |st, file| {
            if st.batch_depth > 0 || st.lease.is_some() {
                st.batch_depth += 1;
                return Ok(());
            }
            self.force_check(st);
            self.sync(st, file, level.max(LockLevel::Shared))?;
            match self.take_lease()? {
                Some(lease) => self.adopt_lease(st, lease)?,
                None => st.create_on_commit = st.sidecar.base.is_none(),
            }
            st.batch_depth = 1;
            Ok(())
        })
    }

    /// `PRAGMA managedblob_batch=end`: the end that closes the outermost batch
    /// uploads once (when anything was committed) and releases the lease.
    pub fn batch_end(&self, file: &mut dyn LocalFile, level: LockLevel) -> Result<()> {
        {
            let mut st = self.lock_state();
            if st.batch_depth == 0 {
                return Err(Error::Misuse(
                    "managedblob_batch=end without a matching managedblob_batch=begin".into(),
                ));
            }
            st.batch_depth -= 1;
            if st.batch_depth > 0 {
                return Ok(());
            }
        }
        self.flush_with_lock(file, level)
    }

    /// `PRAGMA managedblob_flush`: upload local commits now (inside a batch too).
    pub fn flush_with_lock(&self, file: &mut dyn LocalFile, level: LockLevel) -> Result<()> {
        self.with_lock(file, level, |st, file| {
            self.reload(st)?;
            let result = self.flush_locked(st, file);
            if st.batch_depth == 0 && !st.writer {
                self.release_lease(st);
            }
            result
        })
    }

    fn flush_locked(&self, st: &mut State, file: &mut dyn LocalFile) -> Result<()> {
        if !st.sidecar.dirty || st.writable == 0 {
            return Ok(());
        }
        self.revive_parked_lease(st)?;
        if st.lease.is_none() {
            match self.take_lease()? {
                Some(lease) => self.adopt_lease(st, lease)?,
                None if st.sidecar.base.is_none() => st.create_on_commit = true,
                None => {
                    return Err(Error::Backend(crate::backend::BackendError::new(
                        BackendErrorKind::NotFound,
                        format!("remote blob '{}' was deleted", self.config.blob),
                    )))
                }
            }
        }
        let condition = match (&st.sidecar.base, st.create_on_commit) {
            (Some(etag), false) => Condition::Match(etag.clone()),
            _ => Condition::Create,
        };
        let lease = st.lease.as_ref().map(|l| l.id.clone());
        let stat = self.upload(st, file, &condition, lease.as_ref())?;
        st.create_on_commit = false;
        st.sidecar.base = Some(stat.etag);
        st.sidecar.dirty = false;
        st.sidecar.generation += 1;
        self.save(st)
    }

    /// `PRAGMA managedblob_refresh`: check the remote now and take a new version.
    pub fn refresh(&self, file: &mut dyn LocalFile, level: LockLevel) -> Result<()> {
        if level > LockLevel::None {
            return Err(Error::Misuse(
                "managedblob_refresh cannot run inside a transaction".into(),
            ));
        }
        self.with_lock(file, level, |st, file| {
            self.force_check(st);
            self.sync(st, file, LockLevel::Shared)
        })
    }

    /// `PRAGMA managedblob_status`.
    pub fn status(&self) -> Status {
        let st = self.lock_state();
        Status {
            remote: self.identity.clone(),
            blob: self.config.blob.clone(),
            etag: st.sidecar.base.as_ref().map(|e| e.0.clone()),
            dirty: st.sidecar.dirty,
            lease_held: st.lease.is_some(),
            batch_depth: st.batch_depth,
            generation: st.sidecar.generation,
            in_flight: st.sidecar.in_flight,
            requests: self.remote.counters.snapshot(),
            conflicts: st.conflicts.clone(),
            last_error: st.last_error.clone(),
        }
    }

    /// Run `f` holding at least SHARED on the cache: the connection's own lock when
    /// it has one, else a SHARED lock taken (waiting) before the store's mutex.
    fn with_lock<T>(
        &self,
        file: &mut dyn LocalFile,
        level: LockLevel,
        f: impl FnOnce(&mut State, &mut dyn LocalFile) -> Result<T>,
    ) -> Result<T> {
        let took = if level == LockLevel::None {
            let deadline = Instant::now() + PRAGMA_LOCK_WAIT;
            loop {
                match file.lock(LockLevel::Shared) {
                    Ok(()) => break true,
                    Err(LockFail::Busy) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(LockFail::Busy) => {
                        return Err(Error::Busy(format!(
                            "cache {} stayed locked by a writer for {PRAGMA_LOCK_WAIT:?}",
                            self.cache_path.display()
                        )))
                    }
                    Err(LockFail::Io(code)) => {
                        return Err(Error::Local(format!(
                            "locking cache {} failed (SQLite code {code})",
                            self.cache_path.display()
                        )))
                    }
                }
            }
        } else {
            false
        };
        let result = {
            let mut st = self.lock_state();
            let r = f(&mut st, file);
            if let Err(e) = &r {
                self.note_error(&mut st, e);
            }
            r
        };
        if took {
            let _ = file.unlock(LockLevel::None);
        }
        result
    }

    /// Re-read the sidecar (another process may have changed it). A missing or
    /// foreign sidecar means the cache corresponds to nothing we know: it is kept
    /// as local changes when it has content.
    fn reload(&self, st: &mut State) -> Result<()> {
        let cache_id = sidecar::file_identity(&self.cache_path);
        match sidecar::load(&self.sidecar_path)? {
            Some(s)
                if s.is_for(&self.identity, &self.config.blob)
                    && (s.cache_id.is_none() || s.cache_id == cache_id) =>
            {
                st.sidecar = s
            }
            found => {
                if let Some(other) = found {
                    tracing::warn!(cache = %self.cache_path.display(), other = %other.remote,
                        "sidecar belongs to another remote or to a cache file that was \
                         replaced; treating the cache as unknown");
                }
                let size = std::fs::metadata(&self.cache_path).map_or(0, |m| m.len());
                let mut fresh = Sidecar::new(self.identity.clone(), self.config.blob.clone());
                fresh.dirty = size > 0;
                st.sidecar = fresh;
            }
        }
        Ok(())
    }

    fn save(&self, st: &mut State) -> Result<()> {
        if !st.sidecar.dirty {
            st.sidecar.dirty_owner = None;
        }
        st.sidecar.cache_id = sidecar::file_identity(&self.cache_path);
        sidecar::store(&self.sidecar_path, &st.sidecar)
    }
}
