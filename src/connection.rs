//! One SQLite connection's main database file: its lock level, and the store calls
//! each lock transition and file control triggers. Safe Rust; the FFI layer calls in.

use std::sync::Arc;

use crate::error::{sqlite_code, Error, Phase, Result};
use crate::layout::Ranges;
use crate::localfile::{LocalFile, LockFail, LockLevel};
use crate::pragma::Command;
use crate::store::Store;

/// What `PRAGMA managedblob_status` answers, re-exported at the crate root (the
/// store's layer is sealed: the crate root names it through this layer).
pub use crate::store::{Residence, Status};

pub struct Connection {
    store: Arc<Store>,
    file: Box<dyn LocalFile>,
    level: LockLevel,
    /// Opened with mode=ro / SQLITE_OPEN_READONLY: no lease, no upload from here.
    read_only: bool,
    /// This connection started a write transaction (holds the lease or create right).
    writing: bool,
    /// The file change counter when the write transaction started (None: empty file).
    start_version: Option<[u8; 4]>,
    /// The byte ranges of the cache this transaction wrote.
    written: Ranges,
    /// `fetch=lazy`: a read may first fetch the chunks under it.
    lazy: bool,
    /// `fetch=lazy`: the epoch of the read transaction this connection is in (from
    /// SHARED to NONE): the bounded cache keeps the chunks it touched.
    read_epoch: Option<u64>,
    /// `fetch=lazy`: this connection's sequential-read detector.
    readahead: crate::store::Readahead,
}

/// What a pragma produced: a result row, or an error message for the user.
pub type PragmaResult = std::result::Result<Option<String>, String>;

impl Connection {
    /// Attach a freshly opened cache file to its store (recovery and the first
    /// freshness check happen for the first connection of the process).
    pub fn open(
        store: Arc<Store>,
        mut file: Box<dyn LocalFile>,
        read_only: bool,
    ) -> Result<Connection> {
        store.attach(file.as_mut(), read_only)?;
        Ok(Connection {
            lazy: store.is_lazy(),
            read_epoch: None,
            readahead: Default::default(),
            store,
            file,
            read_only,
            level: LockLevel::None,
            writing: false,
            start_version: None,
            written: Ranges::default(),
        })
    }

    /// xLock. Returns a SQLite result code.
    pub fn lock(&mut self, level: LockLevel) -> i32 {
        if level <= self.level {
            return 0;
        }
        if let Err(code) = self.lock_file(level) {
            return code;
        }
        let from = self.level;
        let hook = match (from, level) {
            // A lazy cache first looks whether another process sharing it moved its
            // base (then the freshness check below takes the new one).
            (LockLevel::None, _) => self
                .store
                .lazy_on_shared()
                .and_then(|()| self.store.on_shared(self.file.as_mut())),
            _ => Ok(()),
        };
        // A write transaction asks for RESERVED; SHARED -> EXCLUSIVE directly is a
        // hot-journal rollback, which needs no lease.
        let starts_write = from < LockLevel::Reserved && level == LockLevel::Reserved;
        let hook = hook.and_then(|()| {
            if starts_write {
                self.store.begin_write()
            } else {
                Ok(())
            }
        });
        match hook {
            Ok(()) => {
                if from == LockLevel::None && self.lazy {
                    self.read_epoch = self.store.lazy_begin_read();
                }
                self.level = level;
                if starts_write {
                    self.writing = true;
                    self.start_version = self.version();
                }
                0
            }
            Err(e) => {
                // SQLite assumes a failed xLock left the level unchanged.
                let _ = self.file.unlock(from);
                log_failure("xLock", &e);
                sqlite_code(&e, Phase::Lock)
            }
        }
    }

    /// Take `level` on the cache file. An EXCLUSIVE refused because this process's
    /// flusher reads the cache under SHARED for a moment is tried again once that
    /// read is over (`store::hold`): a lone connection's COMMIT never fails on it.
    fn lock_file(&mut self, level: LockLevel) -> std::result::Result<(), i32> {
        loop {
            // Only EXCLUSIVE can be refused by the flusher's SHARED.
            let mark = match level {
                LockLevel::Exclusive => self.store.lock_mark(),
                _ => None,
            };
            match self.file.lock(level) {
                Ok(()) => return Ok(()),
                Err(LockFail::Busy) if mark.is_some_and(|m| self.store.waited_out_flusher(m)) => {}
                Err(fail) => return Err(lock_fail_code(fail)),
            }
        }
    }

    /// xUnlock. Ends the write transaction when dropping below RESERVED.
    pub fn unlock(&mut self, level: LockLevel) -> i32 {
        if level >= self.level {
            return 0;
        }
        let was_writing = self.writing;
        let rc = match self.file.unlock(level) {
            Ok(()) => 0,
            Err(fail) => lock_fail_code(fail),
        };
        self.level = level;
        if level == LockLevel::None {
            if let Some(epoch) = self.read_epoch.take() {
                self.store.lazy_end_read(epoch);
            }
        }
        if was_writing && level < LockLevel::Reserved {
            self.writing = false;
            let unsynced = std::mem::take(&mut self.written);
            self.store.end_write(&unsynced);
        }
        rc
    }

    /// xRead of `len` bytes at `offset`, before the real read: a lazy cache fetches
    /// the chunks it lacks. A remote that moved on under this read transaction
    /// answers SQLITE_BUSY_SNAPSHOT (retry the transaction); other failures
    /// SQLITE_IOERR_READ (the cause is in the status's `last_error`).
    pub fn before_read(&mut self, offset: u64, len: u64) -> std::result::Result<(), i32> {
        if !self.lazy {
            return Ok(());
        }
        self.store
            .ensure_present(self.file.as_mut(), offset, len, &mut self.readahead)
            .map_err(|e| {
                self.store.note_read_failure(&e);
                if e.is_busy() {
                    crate::error::code::BUSY | (2 << 8)
                } else {
                    sqlite_code(&e, Phase::Read)
                }
            })
    }

    /// xWrite of `len` bytes at `offset`, before the real write and
    /// [`Connection::note_write`]: a lazy cache marks the chunks dirty, and those it
    /// lacks (a page SQLite never read, such as a reused free page) partial, which
    /// the commit point completes (src/store/lazy_write.rs). Nothing is fetched here.
    pub fn before_write(&mut self, offset: u64, len: u64) -> std::result::Result<(), i32> {
        if !self.lazy {
            return Ok(());
        }
        self.store.lazy_before_write(offset, len).map_err(|e| {
            self.store.note_read_failure(&e);
            if e.is_busy() {
                crate::error::code::BUSY | (2 << 8)
            } else {
                sqlite_code(&e, Phase::Commit)
            }
        })
    }

    /// xWrite of `len` bytes at `offset` (called before the real write).
    pub fn note_write(&mut self, offset: u64, len: u64) {
        self.written.add(offset..offset + len.max(1));
    }

    /// The file change counter (bytes 24..28), which every commit in rollback-journal
    /// mode increments; `None` for a file too short to have one.
    fn version(&mut self) -> Option<[u8; 4]> {
        let mut header = [0u8; 28];
        match self.file.read_at(&mut header, 0) {
            Ok(28) => Some([header[24], header[25], header[26], header[27]]),
            _ => None,
        }
    }

    /// SQLITE_FCNTL_SYNC: the commit point. Returns a SQLite code (0 = carry on).
    ///
    /// SQLite also syncs after rolling a transaction back (pager_playback); the file
    /// then carries the change counter it had when the transaction started. The
    /// store decides what a sync means ([`Store::commit_point`]); this connection
    /// only tells it whether the counter moved and which byte ranges were written.
    pub fn commit_point(&mut self) -> i32 {
        let counter_moved = self.writing && self.version() != self.start_version;
        // A rollback's ranges too: what it wrote into reused free pages stays.
        let written = std::mem::take(&mut self.written);
        match self
            .store
            .commit_point(self.file.as_mut(), counter_moved, &written)
        {
            Ok(()) => 0,
            Err(e) => {
                log_failure("commit", &e);
                sqlite_code(&e, Phase::Commit)
            }
        }
    }

    /// SQLITE_FCNTL_COMMIT_PHASETWO.
    pub fn commit_phase_two(&mut self) -> i32 {
        match self.store.commit_phase_two() {
            Ok(()) => 0,
            Err(e) => {
                log_failure("commit phase two", &e);
                sqlite_code(&e, Phase::Commit)
            }
        }
    }

    /// Run one of our pragmas.
    /// `busy_wait`: one call of the connection's busy handler (it sleeps as the
    /// busy_timeout says; `false` once it is spent), for a pragma that waits for the
    /// lease as a write does.
    pub fn pragma(
        &mut self,
        command: Command,
        busy_wait: &mut dyn FnMut() -> bool,
    ) -> PragmaResult {
        let level = self.level;
        let store = self.store.clone();
        let file = self.file.as_mut();
        let done =
            |r: Result<()>, row: &str| r.map(|()| Some(row.to_string())).map_err(|e| e.to_string());
        let in_write = level >= LockLevel::Reserved;
        let writes = matches!(
            command,
            Command::BatchBegin | Command::BatchEnd | Command::Flush
        );
        match command {
            _ if writes && self.read_only => Err(
                "managedblob: batches and flushes need a writable connection (this one was \
                 opened with mode=ro)"
                    .into(),
            ),
            Command::BatchEnd | Command::Flush if in_write => {
                Err("managedblob: this pragma cannot run inside a write transaction".into())
            }
            Command::BatchBegin => done(store.batch_begin_waiting(file, level, busy_wait), "begin"),
            Command::BatchEnd => done(store.batch_end(file, level), "end"),
            Command::Flush => done(store.flush(file, level), "ok"),
            Command::Refresh => done(store.refresh(file, level), "ok"),
            Command::FetchAll => done(store.fetch_all(file, level), "ok"),
            Command::Status => Ok(Some(
                serde_json::to_string(&store.status())
                    .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
            )),
        }
    }

    /// xClose: the last connection flushes and releases the lease.
    pub fn close(mut self) {
        if self.level > LockLevel::None {
            let _ = self.unlock(LockLevel::None);
        }
        self.store.detach(self.file.as_mut(), self.read_only);
    }
}

fn lock_fail_code(fail: LockFail) -> i32 {
    match fail {
        LockFail::Busy => crate::error::code::BUSY,
        LockFail::Io(code) => code,
    }
}

fn log_failure(what: &str, e: &Error) {
    if e.is_busy() {
        tracing::debug!(error = %e, "{what}: busy");
    } else {
        tracing::warn!(error = %e, "{what} failed");
    }
}
