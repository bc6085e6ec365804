//! Fair turns among writers waiting for the lease on several hosts: the waiter
//! queue beside the blob ([`crate::backend::Backend::waiter_queue`]) as this store
//! sees it ([`Line`]), and the store's three steps with it: join (or refresh its
//! place) while it waits, wait behind an older waiter instead of racing it for a
//! lease that comes free, leave once it holds the lease.
//!
//! The queue's text is one entry a line, oldest first: `<store id> <token>`. A
//! waiter writes a new token every [`REFRESH`] while it waits; an entry whose token
//! this store has seen unchanged for [`STALE`] (by its own clock: hosts' clocks are
//! never compared) is stale: its writer gave up or died, it holds nobody back, and
//! the next replace drops it. Every replace changes the queue's version, which is
//! what a holder keeping the lease warm watches (`clock.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::state::{Activity, State};
use super::Store;
use crate::backend::{BackendErrorKind, BackendResult, WaiterQueue};
use crate::error::{Error, Result};

/// How often a waiting writer rewrites its place (its busy handler retries far
/// more often). Also what keeps the holder's mark moving while someone waits.
pub(crate) const REFRESH: Duration = Duration::from_millis(250);

/// An entry unchanged this long is stale: four refreshes missed.
pub(crate) const STALE: Duration = Duration::from_secs(1);

/// One waiting writer: its store's id and the token of its last refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    id: String,
    token: String,
}

/// The queue as last read or written.
#[derive(Debug, Default)]
struct View {
    /// `None`: there is no queue yet.
    version: Option<String>,
    entries: Vec<Entry>,
}

/// Whether this store waits for the lease.
#[derive(Debug, Default)]
enum Waiting {
    #[default]
    No,
    /// It waits, and last wrote (or tried to write) its place at `refreshed`.
    Since { refreshed: Instant },
    /// It gave the lease up to waiting writers at `at`: its next write, if soon,
    /// takes a place at the end of the line instead of taking a lease that is free
    /// only because the head of the line has not retried yet.
    Rejoin { at: Instant },
}

/// This store's place among the writers waiting for the lease.
#[derive(Debug)]
pub(crate) struct Line {
    /// This store's name in the queue (random, one per store).
    me: String,
    waiting: Waiting,
    /// `None` until first read.
    view: Option<View>,
    /// When this store first saw each entry's current token.
    seen: HashMap<String, (String, Instant)>,
}

impl Default for Line {
    fn default() -> Line {
        Line {
            me: format!("{:016x}{:08x}", fastrand::u64(..), std::process::id()),
            waiting: Waiting::No,
            view: None,
            seen: HashMap::new(),
        }
    }
}

fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, token)| Entry {
            id: id.to_owned(),
            token: token.to_owned(),
        })
        .collect()
}

fn format(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(|e| format!("{} {}\n", e.id, e.token))
        .collect()
}

impl Line {
    /// This store waits, and wrote its place within [`STALE`]: a wait abandoned
    /// longer ago (its write gave up) is over, so the next write tries the lease
    /// at once, with no request for the queue.
    pub fn is_waiting(&self, now: Instant) -> bool {
        match self.waiting {
            Waiting::No => false,
            Waiting::Since { refreshed: at } | Waiting::Rejoin { at } => {
                now.duration_since(at) < STALE
            }
        }
    }

    /// This process gives the lease up to waiting writers ([`Waiting::Rejoin`]).
    pub fn gave_way(&mut self, now: Instant) {
        self.waiting = Waiting::Rejoin { at: now };
    }

    /// Whether this store should write its place now: it does not wait yet, or its
    /// last refresh is [`REFRESH`] old.
    pub fn refresh_due(&self, now: Instant) -> bool {
        match self.waiting {
            Waiting::No | Waiting::Rejoin { .. } => true,
            Waiting::Since { refreshed } => now.duration_since(refreshed) >= REFRESH,
        }
    }

    /// A refresh is being written (or tried): the next one is due in [`REFRESH`].
    fn refreshing(&mut self, now: Instant) {
        self.waiting = Waiting::Since { refreshed: now };
    }

    fn known(&self) -> bool {
        self.view.is_some()
    }

    fn version(&self) -> Option<&str> {
        self.view.as_ref().and_then(|v| v.version.as_deref())
    }

    fn entries(&self) -> &[Entry] {
        self.view.as_ref().map_or(&[], |v| &v.entries)
    }

    /// The queue as read (`None`: there is none) at `now`.
    fn observe(&mut self, queue: Option<WaiterQueue>, now: Instant) {
        let view = match queue {
            Some(q) => View {
                version: Some(q.version),
                entries: parse(&q.text),
            },
            None => View::default(),
        };
        self.seen
            .retain(|id, _| view.entries.iter().any(|e| &e.id == id));
        for e in &view.entries {
            match self.seen.get(&e.id) {
                Some((token, _)) if *token == e.token => {}
                _ => {
                    self.seen.insert(e.id.clone(), (e.token.clone(), now));
                }
            }
        }
        self.view = Some(view);
    }

    /// Another writer's entry whose token has not moved for [`STALE`].
    fn is_stale(&self, e: &Entry, now: Instant) -> bool {
        e.id != self.me
            && self
                .seen
                .get(&e.id)
                .is_some_and(|(token, at)| *token == e.token && now.duration_since(*at) >= STALE)
    }

    /// How many live waiters are ahead of this store (all of them while it has
    /// no place yet).
    pub fn ahead(&self, now: Instant) -> usize {
        self.entries()
            .iter()
            .take_while(|e| e.id != self.me)
            .filter(|e| !self.is_stale(e, now))
            .count()
    }

    /// The queue with this store's place refreshed (or taken at the end), stale
    /// entries dropped.
    fn with_me(&self, now: Instant) -> String {
        let token = format!("{:016x}", fastrand::u64(..));
        let mut entries: Vec<Entry> = self
            .entries()
            .iter()
            .filter(|e| !self.is_stale(e, now))
            .cloned()
            .collect();
        match entries.iter_mut().find(|e| e.id == self.me) {
            Some(mine) => mine.token = token,
            None => entries.push(Entry {
                id: self.me.clone(),
                token,
            }),
        }
        format(&entries)
    }

    /// The queue without this store's place (and stale entries); `None` when it
    /// has none.
    fn without_me(&self, now: Instant) -> Option<String> {
        let entries = self.entries();
        if !entries.iter().any(|e| e.id == self.me) {
            return None;
        }
        let rest: Vec<Entry> = entries
            .iter()
            .filter(|e| e.id != self.me && !self.is_stale(e, now))
            .cloned()
            .collect();
        Some(format(&rest))
    }

    /// This store wrote `text` as version `version`.
    fn wrote(&mut self, text: &str, version: String, now: Instant) {
        self.observe(
            Some(WaiterQueue {
                text: text.to_owned(),
                version,
            }),
            now,
        );
    }
}

impl Store {
    /// Before a write tries the lease: a writer waiting in line with a live waiter
    /// ahead of it answers SQLITE_BUSY without trying (that one takes the lease when
    /// it comes free). A writer that does not wait pays nothing: a lone writer's
    /// commit sends no request for the queue.
    pub(super) fn wait_in_line(&self, st: &mut State) -> Result<()> {
        let now = Instant::now();
        if !st.lease.line().is_waiting(now) {
            return Ok(());
        }
        if st.lease.line().refresh_due(now) {
            self.join_line(st);
        } else if st.lease.line().ahead(now) > 0 {
            // Has the one ahead taken its turn? Read instead of trying the lease.
            match self.remote.waiter_queue() {
                Ok(queue) => st.lease.line().observe(queue, Instant::now()),
                Err(e) => {
                    tracing::debug!(blob = %self.config.blob, error = %e, "reading the waiter queue failed")
                }
            }
        }
        let ahead = st.lease.line().ahead(Instant::now());
        if ahead == 0 {
            return Ok(());
        }
        if ahead == 1 {
            // Next in line: have the holder's last version by the time it is free.
            self.force_check(st);
        }
        let refused = Error::Busy(format!(
            "the lease on blob '{}' is held by another writer, and {ahead} writer(s) \
             waiting for it longer than this one go first",
            self.config.blob
        ));
        st.report.note(Activity::Lease, refused.to_string());
        Err(refused)
    }

    /// A writer found the lease held: join the line, or refresh its place, at most
    /// every [`REFRESH`]. The version it wrote is its own: when this process gets
    /// the lease, that is no other waiter (the clock's baseline).
    pub(super) fn join_line(&self, st: &mut State) {
        let now = Instant::now();
        if !st.lease.line().refresh_due(now) {
            return;
        }
        st.lease.line().refreshing(now);
        match self.rewrite_line(st, |line, now| Some(line.with_me(now))) {
            Ok(Some(version)) => self.clock.announced(Some(version)),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(blob = %self.config.blob, error = %e, "could not take a place in the waiter queue")
            }
        }
    }

    /// This process took the lease: leave the line (one replace, only after it
    /// waited), so the next waiter goes first; the queue without it is the
    /// baseline of this turn.
    pub(super) fn leave_line(&self, st: &mut State) {
        if matches!(st.lease.line().waiting, Waiting::No) {
            return;
        }
        st.lease.line().waiting = Waiting::No;
        match self.rewrite_line(st, Line::without_me) {
            Ok(Some(version)) => {
                self.clock.announced(Some(version));

                if st.lease.line().ahead(Instant::now()) > 0 {
                    st.lease.waiters_behind();
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(blob = %self.config.blob, error = %e, "could not leave the waiter queue")
            }
        }
    }

    /// Replace the queue with what `change` makes of it, conditionally on the
    /// version last seen (read first when none was); a replace that lost to
    /// another writer's reads again and retries, a few times. The new version;
    /// `None` when nothing was to change or the backend keeps no queue.
    fn rewrite_line(
        &self,
        st: &mut State,
        change: impl Fn(&Line, Instant) -> Option<String>,
    ) -> BackendResult<Option<String>> {
        for attempt in 0..4 {
            if attempt > 0 || !st.lease.line().known() {
                let queue = self.remote.waiter_queue()?;
                st.lease.line().observe(queue, Instant::now());
            }
            let now = Instant::now();
            let Some(text) = change(st.lease.line(), now) else {
                return Ok(None);
            };
            let expected = st.lease.line().version().map(str::to_owned);
            match self.remote.replace_waiter_queue(&text, expected.as_deref()) {
                Ok(Some(version)) => {
                    st.lease.line().wrote(&text, version.clone(), now);
                    return Ok(Some(version));
                }
                Ok(None) => return Ok(None),
                Err(e) if lost_the_race(e.kind) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// A conditional replace of the queue failed because another writer replaced (or
/// created, or removed) it first.
fn lost_the_race(kind: BackendErrorKind) -> bool {
    matches!(
        kind,
        BackendErrorKind::ConditionFailed
            | BackendErrorKind::AlreadyExists
            | BackendErrorKind::NotFound
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(text: &str, version: &str) -> Option<WaiterQueue> {
        Some(WaiterQueue {
            text: text.into(),
            version: version.into(),
        })
    }

    fn named(me: &str) -> Line {
        Line {
            me: me.into(),
            ..Line::default()
        }
    }

    #[test]
    fn a_waiter_goes_after_the_live_waiters_ahead_of_it() {
        let t0 = Instant::now();
        let mut c = named("c");
        c.observe(queue("a 1\nb 1\n", "v1"), t0);
        assert_eq!(c.ahead(t0), 2, "not in line yet: everyone is ahead");
        let joined = c.with_me(t0);
        assert!(joined.starts_with("a 1\nb 1\nc "), "{joined}");
        c.wrote(&joined, "v2".into(), t0);
        assert_eq!(c.ahead(t0), 2);
        // a took the lease and left; b is next.
        c.observe(queue(&joined.replace("a 1\n", ""), "v3"), t0);
        assert_eq!(c.ahead(t0), 1);
        // b gave up: its token stays as it was, and after STALE it holds nobody back.
        assert_eq!(c.ahead(t0 + STALE / 2), 1);
        assert_eq!(c.ahead(t0 + STALE), 0);
        let refreshed = c.with_me(t0 + STALE);
        assert!(refreshed.starts_with("c "), "b dropped: {refreshed}");
        assert_eq!(refreshed.lines().count(), 1);
    }

    #[test]
    fn a_refreshed_entry_stays_live_and_keeps_its_place() {
        let t0 = Instant::now();
        let mut c = named("c");
        c.observe(queue("a 1\nc 1\n", "v1"), t0);
        c.observe(queue("a 2\nc 1\n", "v2"), t0 + STALE);
        assert_eq!(c.ahead(t0 + STALE), 1, "a refreshed: live");
        let refreshed = c.with_me(t0 + STALE);
        assert!(refreshed.starts_with("a 2\nc "), "{refreshed}");
        assert_ne!(refreshed, "a 2\nc 1\n", "a new token");
    }

    #[test]
    fn leaving_removes_only_this_store() {
        let t0 = Instant::now();
        let mut b = named("b");
        assert_eq!(b.without_me(t0), None, "not in line: nothing to write");
        b.observe(queue("a 1\nb 1\nc 1\n", "v1"), t0);
        assert_eq!(b.without_me(t0).as_deref(), Some("a 1\nc 1\n"));
        assert_eq!(b.ahead(t0), 1);
    }

    #[test]
    fn a_wait_abandoned_long_ago_is_over() {
        let t0 = Instant::now();
        let mut a = named("a");
        assert!(!a.is_waiting(t0));
        assert!(a.refresh_due(t0));
        a.refreshing(t0);
        assert!(a.is_waiting(t0 + REFRESH));
        assert!(!a.refresh_due(t0 + REFRESH / 2));
        assert!(a.refresh_due(t0 + REFRESH));
        assert!(
            !a.is_waiting(t0 + STALE),
            "the next write tries the lease at once"
        );
    }

    #[test]
    fn text_that_is_no_queue_is_read_as_empty() {
        // An older release wrote one byte, `w`, as its mark.
        let t0 = Instant::now();
        let mut a = named("a");
        a.observe(queue("w", "v1"), t0);
        assert_eq!(a.ahead(t0), 0);
        assert!(a.with_me(t0).starts_with("a "));
    }
}
