//! The per-database state machine: one [`Store`] per cache file per process,
//! shared by every connection to it, driven by SQLite's lock calls. This file is the
//! lock-event API and reads like the table in docs/ARCHITECTURE.md:
//!
//! | SQLite event                 | what the store does                                   |
//! |------------------------------|-------------------------------------------------------|
//! | xOpen (first connection)     | reload sidecar, recover, first freshness check ([`Store::attach`]) |
//! | NONE -> SHARED               | freshness check when stale ([`Store::on_shared`])     |
//! | SHARED -> RESERVED           | take the remote lease, check the snapshot ([`Store::begin_write`]) |
//! | SQLITE_FCNTL_SYNC            | publish, unless a batch is open or `flush_ms` defers it ([`Store::commit_point`]) |
//! | SQLITE_FCNTL_COMMIT_PHASETWO | the local commit finished ([`Store::commit_phase_two`]) |
//! | unlock below RESERVED        | keep the lease warm for `lease_linger_ms` (or release it) unless a batch or deferred commits hold it ([`Store::end_write`]) |
//! | xClose (last connection)     | flush a pending batch, release the lease ([`Store::detach`]) |
//! | a deferral's deadline        | the flusher thread uploads ([`flusher`])               |
//!
//! The layers below: [`state`] (the parts of the state the mutex protects, each
//! owning its fields: the write state, the lease, the freshness check, what the next
//! publish builds on, the connections, the report), `lease` (taking, adopting,
//! parking and releasing the lease), `publish` (the one upload path: condition,
//! chunks or whole file, "did my retried write land?"), `refresh` (stat, fetch,
//! install), `recovery` (conflict copies, WAL headers, leftovers, cache checks),
//! `manifest` (chunk lists of versions), `cache` (the sidecar and the cache lock),
//! `hold` (the flusher's short read under SHARED, which a COMMIT waits out),
//! `report` (the status report).
//!
//! Words, one per idea: a *refresh* brings the cache up to the remote
//! (`refresh_locked`); the *commit point* is SQLITE_FCNTL_SYNC ([`Store::commit_point`]);
//! to *publish* is to upload the cache as a new version; to *flush* is to publish
//! local commits now ([`Store::flush`], `flush_locked`, the flusher's
//! `flush_deferred`), to *schedule* a flush is to set its deadline
//! (`schedule_flush`); *sync* is left to SQLite (fsync, FCNTL_SYNC) and to the
//! `sync` setting ([`crate::config::TransferMode`]).
//!
//! Lock order: a connection takes SQLite's file lock first and the store's mutex
//! second; under the mutex, file locks are only ever tried, never waited for. A
//! lock call that finds the mutex held by a connection waiting on the remote
//! answers BUSY instead of queueing (`guard`), and the status report never takes it.
//! Every decision re-reads the sidecar under the file lock, so processes that share
//! one cache agree.

mod ambiguous;
mod background;
mod cache;
mod clock;
mod evict;
mod fetch;
pub(crate) mod flusher;
mod freshness;
mod guard;
mod history;
mod hold;
mod lazy;
mod lazy_all;
mod lazy_install;
mod lazy_write;
mod lease;
mod lease_slot;
mod line;
mod manifest;
mod publish;
mod publishing;
mod recovery;
mod refresh;
mod registry;
mod report;
mod sidecar_state;
mod stage;
pub(crate) mod state;
mod turn;
mod write_state;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::Config;
use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::layout::Ranges;
use crate::localfile::{LocalFile, LockFail, LockLevel};
use crate::remote::Remote;
use crate::sidecar::{self, InFlight};
use guard::Published;
use sidecar_state::SidecarState;
use state::{Activity, CommitAction, State};

pub(crate) use hold::HoldMark;
pub use lazy::Readahead;
// The status report, and its field type defined in this module: public API (the
// crate root re-exports them through the connection layer).
pub use lazy::Residence;
pub use registry::open_store;
pub use report::Status;

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
    /// The status fields as of the last release of `state`, for a status report
    /// that never waits behind the network.
    published: Mutex<Published>,
    /// Until when (nanoseconds on [`clock`]) a SHARED lock needs no freshness check:
    /// read without the mutex, so the read path of a fresh cache stays cheap.
    fresh_until: AtomicU64,
    /// Uploads deferred commits when the clock hands them over (`flush_ms` > 0 only).
    flusher: Option<flusher::Flusher>,
    /// The one owner of this store's timers: lease renewal, the linger's end, the
    /// `flush_ms` deadline, the sweep after a commit (src/store/clock.rs).
    clock: clock::Clock,
    /// Signalled when a background upload ends (`Publishing::upload_ended`).
    upload_done: parking_lot::Condvar,
    /// The flusher's short read under SHARED, which a COMMIT waits out.
    flusher_hold: hold::FlusherHold,
    /// `fetch=lazy`: which chunks the cache holds (src/store/lazy.rs).
    lazy: Option<lazy::LazyCache>,
}

/// Monotonic nanoseconds since the first call in this process.
fn clock() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Whether `managedblob_batch=begin` joins what this process already holds: a batch,
/// a write transaction or deferred commits take the batch in; a lease that only
/// lingers after a commit does too, but not inside a read transaction, which is
/// refused whether or not the lease happens to be warm (one answer, not a race).
fn joins_held_lease(st: &State, level: LockLevel) -> bool {
    !st.write.lease_unneeded() || (level == LockLevel::None && st.lease.slot().is_held())
}

impl Store {
    fn new(cache_path: &Path, config: Config, remote: Remote, me: Weak<Store>) -> Store {
        let with_suffix = |suffix: &str| {
            let mut s = cache_path.as_os_str().to_owned();
            s.push(suffix);
            PathBuf::from(s)
        };
        let identity = remote.identity();
        let state = State::new(SidecarState::unknown(
            identity.clone(),
            config.blob.clone(),
            false,
        ));
        let remote = Arc::new(remote);
        let (flusher, flush_handover) = if config.flush.is_zero() {
            (None, None)
        } else {
            let (flusher, handover) = flusher::Flusher::start(me.clone());
            (Some(flusher), Some(handover))
        };
        Store {
            cache_path: cache_path.to_path_buf(),
            sidecar_path: sidecar::path_for(cache_path),
            journal_path: with_suffix("-journal"),
            manifest_path: with_suffix("-managedblob.manifest"),
            // One per process: two processes refreshing one cache never share a file.
            download_path: with_suffix(&format!(
                "-managedblob.download-{}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            )),
            identity,
            clock: clock::Clock::start(remote.clone(), me, flush_handover),
            remote,
            published: Mutex::new(Published::of(&state)),
            state: Mutex::new(state),
            fresh_until: AtomicU64::new(0),
            flusher,
            flusher_hold: hold::FlusherHold::default(),
            upload_done: parking_lot::Condvar::new(),
            lazy: (config.fetch == crate::config::FetchMode::Lazy).then(lazy::LazyCache::default),
            config,
        }
    }

    /// `fetch=lazy`: reads may fetch (src/store/lazy.rs).
    pub fn is_lazy(&self) -> bool {
        self.lazy.is_some()
    }

    /// Make the next SHARED lock check the remote, whatever the staleness clock says.
    fn force_check(&self, st: &mut State) {
        st.refresh.force();
        self.fresh_until.store(0, Ordering::SeqCst);
    }

    /// xOpen: a new connection opened the cache; the first one recovers and checks
    /// freshness.
    pub fn attach(&self, file: &mut dyn LocalFile, read_only: bool) -> Result<()> {
        let mut st = self.lock_state_settled();
        if !st.connections.opened(read_only) {
            return Ok(());
        }
        self.sweep_leftovers_at_open();
        let result = match file.lock(LockLevel::Shared) {
            Ok(()) => {
                let r = self
                    .leave_wal_mode(file)
                    .and_then(|()| self.refresh_locked(&mut st, file, LockLevel::Shared));
                let _ = file.unlock(LockLevel::None);
                if r.is_ok() {
                    st.report.succeeded(Activity::Read);
                }
                r
            }
            // Another process is writing the cache: check at the first SHARED lock.
            Err(LockFail::Busy) => Ok(()),
            Err(LockFail::Io(code)) => Err(self.lock_failed(code)),
        };
        match result {
            Err(e) if e.is_busy() => {
                self.force_check(&mut st);
                Ok(())
            }
            Err(e) if self.serve_offline(&mut st, &e, true) => Ok(()),
            Err(e) => {
                st.connections.open_failed(read_only);
                self.note_error(&mut st, Activity::Read, &e);
                Err(e)
            }
            Ok(()) => Ok(()),
        }
    }

    /// The remote is unreachable but the cache is a whole version: serve it (reads
    /// come from the cache), keep the error for the status report, and look again
    /// after the staleness bound. At open, only a cache that holds a known version.
    fn serve_offline(&self, st: &mut State, err: &Error, at_open: bool) -> bool {
        let transient = matches!(err, Error::Backend(b) if b.is_transient());
        let whole = st.sidecar.in_flight() == InFlight::None
            && (!at_open || st.sidecar.base().is_some())
            && !self.holds_lazy_leftover();
        if transient && whole {
            st.refresh.restart_staleness(Instant::now());
            self.note_error(st, Activity::Read, err);
            // A lazy cache serves the chunks it holds (its chunk list is beside it).
            if let Err(e) = self.lazy_track_base(st, false) {
                self.note_error(st, Activity::Read, &e);
            }
        }
        transient && whole
    }

    /// xClose: a connection closes. The last one flushes a pending batch (best
    /// effort: the cache stays dirty on failure and the next open uploads it) and
    /// drops the lease.
    pub fn detach(&self, file: &mut dyn LocalFile, read_only: bool) {
        let mut st = self.lock_state_settled();
        if !st.connections.closing(read_only) {
            return;
        }
        let depth = st.write.close_batch();
        if depth > 0 {
            tracing::warn!(cache = %self.cache_path.display(), depth,
                "last connection closed inside a batch: ending it");
        }
        drop(st);
        if let Err(e) = self.flush(file, LockLevel::None) {
            tracing::warn!(cache = %self.cache_path.display(), error = %e,
                "flush at close failed; the cache stays dirty and uploads at the next open");
        }
        let mut st = self.lock_state_settled();
        st.connections.last_closed(read_only);
        // The mutex was dropped for the flush: a connection that attached meanwhile
        // may have taken the lease for its write or batch. It is theirs now. A warm
        // lease (lingering after the last write) goes back now.
        if st.connections.none_open() && st.write.lease_unneeded() {
            self.release_lease(&mut st);
        }
    }

    /// NONE -> SHARED: the connection holds SHARED on the cache. Brings the cache up
    /// to date when the staleness bound has passed; `Err(Busy)` when that needs the
    /// cache to itself and another connection is reading, or another connection
    /// holds the store while waiting on the remote.
    pub fn on_shared(&self, file: &mut dyn LocalFile) -> Result<()> {
        if clock() < self.fresh_until.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut st = self.lock_state_unless_network()?;
        let result = self.on_shared_locked(&mut st, file);
        // Open the fast path until the staleness bound, unless a check is pending or
        // this process writes (then every SHARED must see the lease state).
        if result.is_ok() && st.lease.slot().is_none() {
            if let Some(left) = st.refresh.fresh_for(self.config.staleness) {
                self.fresh_until
                    .store(clock() + left.as_nanos() as u64, Ordering::SeqCst);
            }
        }
        result
    }

    fn on_shared_locked(&self, st: &mut State, file: &mut dyn LocalFile) -> Result<()> {
        if self.lazy_saw_move(st) {
            // A lazy read found the remote moved on: take the new version now.
            self.force_check(st);
        }
        // While we are the writer (a lease live or warm), nobody else can move the
        // remote: no freshness check.
        let writing_here = st.lease.observe().is_writing_here();
        if !st.refresh.check_due(self.config.staleness, writing_here) {
            return Ok(());
        }
        // A forced check may take a new version: an idle warm lease is of no use.
        if st.lease.slot().is_warm() && st.write.lease_unneeded() {
            self.release_lease(st);
        }
        match self.refresh_locked(st, file, LockLevel::Shared) {
            Ok(()) => {
                st.report.succeeded(Activity::Read);
                Ok(())
            }
            Err(e) if self.serve_offline(st, &e, false) => Ok(()),
            Err(e) => {
                self.force_check(st);
                if !e.is_busy() {
                    self.note_error(st, Activity::Read, &e);
                }
                Err(e)
            }
        }
    }

    /// SHARED -> RESERVED: the connection holds RESERVED on the cache and starts a
    /// write transaction. Takes the remote lease (BUSY when another writer has it) and
    /// checks that the remote is still the version this snapshot read (BUSY and a
    /// forced refresh when it moved; BUSY too while another connection holds the
    /// store waiting on the remote).
    pub fn begin_write(&self) -> Result<()> {
        let mut st = self.lock_state_unless_network()?;
        // A long warm turn just ended: other hosts' writers get the lease first
        // (turn::WarmTurn). Waited outside the mutex.
        if let Some(pause) = st.lease.pause_left(Instant::now()) {
            drop(st);
            std::thread::sleep(pause);
            st = self.lock_state_unless_network()?;
        }
        let result = self.begin_write_locked(&mut st);
        match &result {
            Ok(()) => st.report.succeeded(Activity::Lease),
            Err(e) if e.is_busy() => {}
            Err(e) => self.note_error(&mut st, Activity::Lease, e),
        }
        result
    }

    fn begin_write_locked(&self, st: &mut State) -> Result<()> {
        st.lease.write_began();
        // While this process holds a live lease (a batch, or one lingering after the
        // last write), no other process can change the sidecar: its commits, flushes
        // and recoveries need the lease, and an install needs the remote to move,
        // which the lease prevents. Otherwise re-read it: another process sharing
        // the cache may have changed it.
        if !st.lease.observe().is_live() {
            self.reload(st)?;
        }
        if st.publishing.is_uploading() && !st.lease.slot().is_live() {
            // The lease lapsed under a background upload: taking it again is network
            // work that must wait for that upload's outcome.
            return Err(self.busy_uploading());
        }
        if st.sidecar.in_flight() != InFlight::None || st.sidecar.pending_commit().is_some() {
            self.force_check(st);
            return Err(Error::Busy(format!(
                "cache {} is being resynced from the remote",
                self.cache_path.display()
            )));
        }
        let create = self.ensure_lease(st)?;
        st.write.begin_txn(create)
    }

    /// SQLITE_FCNTL_SYNC: the commit point for the remote. `counter_moved`: the
    /// file change counter differs from the transaction's start (a commit, not the
    /// sync after a rollback). Outside a batch the cache is uploaded now, and an
    /// error fails the COMMIT (SQLite rolls the cache back from its journal); inside
    /// a batch the cache is marked dirty.
    pub fn commit_point(
        &self,
        file: &mut dyn LocalFile,
        counter_moved: bool,
        written: &Ranges,
    ) -> Result<()> {
        let mut st = self.lock_state();
        // First, whatever happens next: a rolled-back transaction's writes too (free
        // pages it reused keep its bytes), so no range of the cache is taken for the
        // base's unless nothing wrote it ([`Store::unchanged_since_base`]).
        st.publishing.wrote(written);
        if let Err(e) = self.lazy_commit_point(file, counter_moved) {
            self.note_error(&mut st, Activity::Write, &e);
            return Err(e);
        }
        let deferred = !self.config.flush.is_zero();
        let result = match st.write.commit_action(counter_moved, deferred) {
            CommitAction::Nothing => return Ok(()),
            CommitAction::MarkDirty => {
                st.publishing.kept_local();
                self.mark_dirty(&mut st)
            }
            CommitAction::Defer => {
                st.publishing.kept_local();
                self.mark_dirty(&mut st).map(|()| {
                    st.write.defer(Instant::now() + self.config.flush);
                    self.schedule_flush(&st);
                })
            }
            CommitAction::Publish => {
                let create = st.write.creates_blob();
                let was_dirty = st.sidecar.is_dirty();
                self.publish(&mut st, file, create).map(|_| {
                    // Until COMMIT_PHASETWO: the remote holds a commit the cache has
                    // not finished (in memory; `reload` leaves it alone meanwhile).
                    st.sidecar.set_in_flight(InFlight::Commit);
                    if was_dirty {
                        self.save_after_publish(&mut st);
                    }
                    // A clean cache saves once, at COMMIT_PHASETWO: until then the
                    // sidecar on disk names the old base, which the remote has left,
                    // so a crash in between resyncs from the remote (which holds this
                    // commit) whether SQLite rolls the cache back or not.
                    crash_point("commit-published");
                })
            }
        };
        if let Err(e) = &result {
            self.note_error(&mut st, Activity::Write, e);
        }
        result
    }

    /// The sidecar on disk said dirty: record at once that the remote took those
    /// commits, or a crash before COMMIT_PHASETWO would keep them as a conflict copy.
    fn save_after_publish(&self, st: &mut State) {
        if let Err(e) = self.save(st) {
            // The remote holds the transaction: failing the COMMIT now would make
            // the application apply it twice. The sidecar on disk still names the
            // old base, so a crash before the next save resyncs from the remote.
            self.note_committed_but(st, &e);
        }
    }

    /// SQLITE_FCNTL_COMMIT_PHASETWO: the local commit is complete. SQLite sends it
    /// after the transaction is committed (locally, and uploaded): nothing here may
    /// report the COMMIT failed, or the application would apply it twice. This is
    /// a clean commit's one sidecar save; a failed one leaves the old base on disk
    /// (or `in_flight: commit`, after a dirty cache's publish), so the cache resyncs
    /// from the remote at the next check or open.
    pub fn commit_phase_two(&self) -> Result<()> {
        let mut st = self.lock_state();
        if st.sidecar.in_flight() == InFlight::Commit {
            crash_point("commit-phase-two");
            st.sidecar.set_in_flight(InFlight::None);
            if let Err(e) = self.save(&mut st) {
                self.note_committed_but(&mut st, &e);
            }
        }
        Ok(())
    }

    /// A step after the remote took a transaction failed: the transaction stands,
    /// the failure is logged and kept for the status report, and the cache is
    /// checked against the remote at the next read (the sidecar on disk says to
    /// resync, or names an older base).
    fn note_committed_but(&self, st: &mut State, err: &Error) {
        let err = Error::Local(format!(
            "the transaction was committed (locally and in the remote), but {err}; the \
             cache resyncs from the remote at the next check"
        ));
        self.note_error(st, Activity::Report, &err);
        self.force_check(st);
    }

    /// Unlock below RESERVED: the write transaction ended. Outside a batch the lease
    /// lingers for the next write (`lease_linger_ms`), or goes back at once.
    /// `unsynced`: ranges written since the last commit point (a transaction that
    /// ended without one, e.g. after an I/O error): they may differ from the base.
    pub fn end_write(&self, unsynced: &Ranges) {
        let mut st = self.lock_state();
        st.publishing.wrote(unsynced);
        self.lazy_end_write();
        st.write.end_txn();
        if st.sidecar.in_flight() == InFlight::Commit {
            // The upload landed but the local commit did not complete (SQLite rolled
            // back): the cache is behind the remote. Take the remote at the next read.
            st.sidecar.commit_undone();
            self.force_check(&mut st);
            if let Err(e) = self.save(&mut st) {
                self.note_error(&mut st, Activity::Report, &e);
            }
        }
        if st.write.lease_unneeded() {
            self.linger_or_release(&mut st);
        }
    }

    /// `PRAGMA managedblob_batch=begin`: hold the lease until the matching end;
    /// commits in between stay local and the end uploads once.
    pub fn batch_begin(&self, file: &mut dyn LocalFile, level: LockLevel) -> Result<()> {
        {
            let mut st = self.lock_state_settled();
            self.revive_parked_lease(&mut st)?;
            if joins_held_lease(&st, level) {
                st.write.batch_begin(false);
                return Ok(());
            }
        }
        if level > LockLevel::None {
            return Err(Error::Misuse(
                "managedblob_batch=begin cannot start a batch inside a transaction".into(),
            ));
        }
        self.with_lock(file, level, Activity::Lease, |st, file| {
            if joins_held_lease(st, level) {
                st.write.batch_begin(false);
                return Ok(());
            }
            self.force_check(st);
            self.refresh_locked(st, file, level.max(LockLevel::Shared))?;
            let create = self.take_write_lease(st)?;
            st.write.batch_begin(create);
            Ok(())
        })
    }

    /// `PRAGMA managedblob_batch=end`: the end that closes the outermost batch
    /// uploads once (when anything was committed) and releases the lease.
    pub fn batch_end(&self, file: &mut dyn LocalFile, level: LockLevel) -> Result<()> {
        if !self.lock_state_settled().write.batch_end()? {
            return Ok(());
        }
        self.flush(file, level)
    }

    /// `PRAGMA managedblob_flush`: upload local commits now (inside a batch too, and
    /// deferred ones before their deadline).
    pub fn flush(&self, file: &mut dyn LocalFile, level: LockLevel) -> Result<()> {
        self.with_lock(file, level, Activity::Write, |st, file| {
            self.reload(st)?;
            let result = self.flush_locked(st, file);
            if result.is_ok() && !st.sidecar.is_dirty() {
                st.write.end_deferral();
            }
            if st.write.lease_unneeded() {
                self.release_lease(st);
            }
            result
        })
    }

    /// `PRAGMA managedblob_refresh`: check the remote now and take a new version.
    pub fn refresh(&self, file: &mut dyn LocalFile, level: LockLevel) -> Result<()> {
        if level > LockLevel::None {
            return Err(Error::Misuse(
                "managedblob_refresh cannot run inside a transaction".into(),
            ));
        }
        self.with_lock(file, level, Activity::Read, |st, file| {
            self.force_check(st);
            self.refresh_locked(st, file, LockLevel::Shared)
        })
    }

    /// Taken before a lock call that may meet the flusher's read (see `hold`);
    /// `None` without a flusher (`flush_ms=0`), so that lock calls pay nothing.
    pub(crate) fn lock_mark(&self) -> Option<HoldMark> {
        self.flusher.as_ref().map(|_| self.flusher_hold.mark())
    }

    /// A lock call since `mark` was refused: `true` when it met the flusher's short
    /// read, now over, so the call may be tried again.
    pub(crate) fn waited_out_flusher(&self, mark: HoldMark) -> bool {
        self.flusher_hold.wait_out(mark)
    }
}
