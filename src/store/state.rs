//! Everything the store's mutex protects, as parts that each own their fields:
//! the sidecar (the cache's durable state, src/sidecar.rs), what this process is
//! writing ([`WriteState`]), the lease ([`LeaseState`]), the freshness check
//! ([`Refresh`]), what the next publish builds on ([`Publishing`]), the open
//! connections ([`Connections`]) and the status report ([`Report`]). The lock-table
//! methods in src/store/mod.rs compose them.

use super::sidecar_state::SidecarState;

pub(crate) use super::freshness::Refresh;
pub(crate) use super::lease_slot::{AfterWrite, LeaseSlot, LeaseState, Release};
pub(crate) use super::publishing::Publishing;
pub(crate) use super::report::{Activity, LastError, Report};
pub(crate) use super::write_state::{CommitAction, WriteState};

/// Everything the store's mutex protects.
#[derive(Debug)]
pub(crate) struct State {
    pub sidecar: SidecarState,
    pub write: WriteState,
    pub lease: LeaseState,
    pub refresh: Refresh,
    pub publishing: Publishing,
    pub connections: Connections,
    pub report: Report,
}

impl State {
    pub fn new(sidecar: SidecarState) -> State {
        State {
            sidecar,
            write: WriteState::Idle,
            lease: LeaseState::default(),
            refresh: Refresh::new(),
            publishing: Publishing::default(),
            connections: Connections::default(),
            report: Report::default(),
        }
    }
}

/// The connections open on the cache in this process.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    open: usize,
    /// How many of them may write (not opened with mode=ro): only then does this
    /// process upload local commits, its own or left behind by a crash.
    writable: usize,
}

impl Connections {
    /// A connection opened: `true` when it is the first (it recovers and checks).
    pub fn opened(&mut self, read_only: bool) -> bool {
        self.open += 1;
        self.writable += usize::from(!read_only);
        self.open == 1
    }

    /// The first connection's open failed: it does not count.
    pub fn open_failed(&mut self, read_only: bool) {
        self.open -= 1;
        self.writable -= usize::from(!read_only);
    }

    /// A connection closes: `true` when it is the last. The last one still counts
    /// as writable until [`Connections::last_closed`], so its flush can upload.
    pub fn closing(&mut self, read_only: bool) -> bool {
        self.open = self.open.saturating_sub(1);
        if self.open > 0 {
            self.writable = self.writable.saturating_sub(usize::from(!read_only));
            return false;
        }
        true
    }

    /// The last connection's close is done.
    pub fn last_closed(&mut self, read_only: bool) {
        self.writable = self.writable.saturating_sub(usize::from(!read_only));
    }

    /// No connection is open (one may attach while the last close flushes).
    pub fn none_open(&self) -> bool {
        self.open == 0
    }

    /// A connection that may write is open.
    pub fn any_writable(&self) -> bool {
        self.writable > 0
    }
}
