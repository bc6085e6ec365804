//! The refresh part of the store's state: when the next SHARED lock must look at
//! the remote ([`Freshness`]), and a fetched version waiting to be installed.

use std::time::{Duration, Instant};

use super::manifest::Fetched;

/// When the next SHARED lock must check the remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// At the next SHARED lock, whatever the staleness clock says: at open, after a
    /// busy or failed check, when the remote may have moved (a lost race, a commit
    /// whose local half failed, a writer waiting for the lease).
    MustCheck,
    /// The remote was last seen at this instant: check again once `staleness_ms`
    /// has passed (never while this process holds the lease).
    CheckedAt(Instant),
}

/// What the freshness check keeps between lock calls.
#[derive(Debug)]
pub(crate) struct Refresh {
    freshness: Freshness,
    /// A downloaded version waiting beside the cache for an EXCLUSIVE lock.
    pending_download: Option<Fetched>,
}

impl Refresh {
    pub fn new() -> Refresh {
        Refresh {
            freshness: Freshness::MustCheck,
            pending_download: None,
        }
    }

    /// The next SHARED lock checks the remote, whatever the staleness clock says.
    pub fn force(&mut self) {
        self.freshness = Freshness::MustCheck;
    }

    /// The remote was checked at `now`: a forced check is done.
    pub fn checked(&mut self, now: Instant) {
        self.freshness = Freshness::CheckedAt(now);
    }

    /// The staleness clock restarts at `now` (a version published or taken in, an
    /// unreachable remote served from the cache); a forced check stays forced.
    pub fn restart_staleness(&mut self, now: Instant) {
        if let Freshness::CheckedAt(_) = self.freshness {
            self.freshness = Freshness::CheckedAt(now);
        }
    }

    pub fn is_forced(&self) -> bool {
        self.freshness == Freshness::MustCheck
    }

    /// Whether a SHARED lock must check the remote now. `writing_here`: this process
    /// holds the lease (live or warm), so nobody else can move the remote.
    pub fn check_due(&self, staleness: Duration, writing_here: bool) -> bool {
        match self.freshness {
            Freshness::MustCheck => true,
            Freshness::CheckedAt(at) => !writing_here && at.elapsed() >= staleness,
        }
    }

    /// How long SHARED locks need no check from now on (`None`: the next one must).
    pub fn fresh_for(&self, staleness: Duration) -> Option<Duration> {
        match self.freshness {
            Freshness::MustCheck => None,
            Freshness::CheckedAt(at) => Some(staleness.saturating_sub(at.elapsed())),
        }
    }

    /// Keep a fetched version for the next try of its install (the cache was busy).
    pub fn keep_download(&mut self, fetched: Fetched) {
        self.pending_download = Some(fetched);
    }

    /// The fetched version kept by a busy install, if any (it is the caller's now).
    pub fn take_download(&mut self) -> Option<Fetched> {
        self.pending_download.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_check_outlasts_a_restarted_staleness_clock() {
        let staleness = Duration::from_secs(60);
        let mut r = Refresh::new();
        assert!(
            r.check_due(staleness, true),
            "at open: check even when writing"
        );
        r.restart_staleness(Instant::now());
        assert!(r.is_forced() && r.fresh_for(staleness).is_none());
        r.checked(Instant::now());
        assert!(!r.check_due(staleness, false));
        assert!(r.fresh_for(staleness).is_some_and(|d| d > Duration::ZERO));
        r.force();
        assert!(r.check_due(staleness, true));
    }

    #[test]
    fn a_stale_check_waits_while_this_process_writes() {
        let mut r = Refresh::new();
        r.checked(Instant::now());
        assert!(r.check_due(Duration::ZERO, false));
        assert!(!r.check_due(Duration::ZERO, true));
        assert_eq!(r.fresh_for(Duration::ZERO), Some(Duration::ZERO));
    }
}
