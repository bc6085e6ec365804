//! Fairness of the warm lease over time: how long one process may keep it warm
//! without a break, and the pause after it gives it up.

use std::time::{Duration, Instant};

/// Fairness of the warm lease: a process that commits more often than once per
/// linger would keep the lease forever and starve other hosts' writers (they only
/// poll, through their busy handlers). After [`WarmTurn::LIMIT`] lingers of keeping
/// it without a break, the next commit gives it back and this process's next write
/// waits out a short pause before taking it again (a delay, not SQLITE_BUSY), so a
/// writer waiting elsewhere gets its turn.
#[derive(Debug, Default)]
pub(crate) struct WarmTurn {
    /// When the lease was first kept warm since it was last given back.
    since: Option<Instant>,
    /// Until when this process's next write waits before taking the lease.
    yield_until: Option<Instant>,
    /// Other writers were waiting in line behind this process when it took the
    /// lease from the line: it keeps the lease warm only [`WarmTurn::HANDOVER`], and
    /// gives it back as to a waiter.
    waiters_behind: bool,
}

impl WarmTurn {
    /// The longest run of warm keeps, in lingers (10 s at the default linger).
    pub const LIMIT: u32 = 10;
    /// The pause after a turn: at most this, and at most one linger. Other writers'
    /// busy handlers retry every 100 ms at most, so they see the lease free.
    pub const MAX_PAUSE: Duration = Duration::from_millis(250);

    /// The linger of a turn taken from the line with writers behind: long enough for
    /// writes that follow at once (a backlog), short beside a busy handler's retry.
    pub const HANDOVER: Duration = Duration::from_millis(50);

    /// This process took the lease from the line, with writers still waiting behind.
    pub fn waiters_behind(&mut self) {
        self.waiters_behind = true;
    }

    /// Whether writers wait behind this turn ([`WarmTurn::waiters_behind`]).
    pub fn has_waiters_behind(&self) -> bool {
        self.waiters_behind
    }

    /// How long this turn keeps the lease warm after a write: the linger, or
    /// [`WarmTurn::HANDOVER`] when writers wait behind it.
    pub fn linger(&self, linger: Duration) -> Duration {
        if self.waiters_behind {
            linger.min(Self::HANDOVER)
        } else {
            linger
        }
    }

    /// May the lease be kept warm after a commit at `now`? `false` ends the turn.
    pub fn may_keep(&mut self, now: Instant, linger: Duration) -> bool {
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) >= linger * Self::LIMIT {
            self.since = None;
            self.yield_until = Some(now + linger.min(Self::MAX_PAUSE));
            return false;
        }
        true
    }

    /// Another host's writer waits (its mark changed): this commit gives the lease
    /// back and the next write of this process pauses, as at the end of a turn.
    pub fn yield_to_waiter(&mut self, now: Instant, linger: Duration) {
        self.since = None;
        self.yield_until = Some(now + linger.min(Self::MAX_PAUSE));
    }

    /// When the current turn started (the first warm keep since the last release).
    pub fn started(&self) -> Option<Instant> {
        self.since
    }

    /// The lease was given back: the next warm keep starts a new turn.
    pub fn released(&mut self) {
        self.since = None;
        self.waiters_behind = false;
    }

    /// How long a write starting at `now` waits before taking the lease.
    pub fn pause_left(&self, now: Instant) -> Option<Duration> {
        self.yield_until
            .filter(|t| *t > now)
            .map(|t| t.duration_since(now))
    }
}

#[cfg(test)]
mod turn_tests {
    use super::*;

    #[test]
    fn a_long_warm_turn_ends_with_a_pause() {
        let linger = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut turn = WarmTurn::default();
        assert!(turn.may_keep(t0, linger));
        assert_eq!(turn.pause_left(t0), None);
        assert!(turn.may_keep(t0 + linger * 9, linger));
        // The limit: this commit gives the lease back, the next write pauses.
        let end = t0 + linger * 10;
        assert!(!turn.may_keep(end, linger));
        turn.released();
        assert_eq!(turn.pause_left(end), Some(linger));
        assert_eq!(turn.pause_left(end + linger / 2), Some(linger / 2));
        assert_eq!(turn.pause_left(end + linger), None);
        // Then a new turn.
        assert!(turn.may_keep(end + linger, linger));
        assert!(turn.may_keep(end + linger * 10, linger));
        assert!(!turn.may_keep(end + linger * 11, linger));
    }

    #[test]
    fn the_pause_is_short_for_a_long_linger() {
        let linger = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut turn = WarmTurn::default();
        assert!(turn.may_keep(t0, linger));
        assert!(!turn.may_keep(t0 + linger * 10, linger));
        assert_eq!(turn.pause_left(t0 + linger * 10), Some(WarmTurn::MAX_PAUSE));
    }

    #[test]
    fn a_turn_with_waiters_behind_lingers_only_the_handover() {
        let linger = Duration::from_secs(1);
        let mut turn = WarmTurn::default();
        assert_eq!(turn.linger(linger), linger);
        turn.waiters_behind();
        assert_eq!(turn.linger(linger), WarmTurn::HANDOVER);
        assert_eq!(
            turn.linger(Duration::from_millis(20)),
            Duration::from_millis(20)
        );
        // The next turn starts without them.
        turn.released();
        assert!(!turn.has_waiters_behind());
        assert_eq!(turn.linger(linger), linger);
    }

    #[test]
    fn a_release_starts_a_new_turn() {
        let linger = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut turn = WarmTurn::default();
        assert!(turn.may_keep(t0, linger));
        turn.released();
        assert!(turn.may_keep(t0 + linger * 15, linger));
        assert!(turn.may_keep(t0 + linger * 24, linger));
    }
}
