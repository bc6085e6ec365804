//! The retention's record of one blob's kept versions, so a commit with history on
//! counts its snapshots instead of listing them (a List Blobs at every commit grows
//! with the snapshots kept: +48 ms per commit at 1,000).
//!
//! The record is seeded by one listing, takes each snapshot this process makes, and
//! forgets each one it deletes. It is listed again at the first prune, after
//! [`RELIST_AFTER_SNAPSHOTS`] snapshots or [`RELIST_AFTER`] since the last listing,
//! after any full listing (`versions`, `listing`), and when a delete finds its
//! snapshot already gone (someone else prunes too).
//!
//! **Why a stale record never drops what the retention keeps.** The record can
//! differ from the store in two ways. (1) It misses snapshots that other processes or
//! hosts took since the listing: it under-counts, so the retention drops later, never
//! earlier (by age, a missing snapshot changes nothing: each version's age is its
//! own). (2) It still holds snapshots that others deleted since: a managedblob
//! retention deletes a snapshot only when `n` newer ones exist, and deleting a newer
//! one needs `n` newer still, so a snapshot deleted by a count retention of `n` or
//! more always has at least `n` newer ones in the store; counting it as one of the `n`
//! newer than some older snapshot therefore never drops a snapshot among the newest
//! `n`. The newest version the record holds is never dropped, and the record holds
//! only snapshots or non-current versions besides it: a prune deletes with
//! `snapshot=`/`versionid=`, never the blob itself. A retention that is shorter in
//! another process (or deletes by hand) can only make versions go sooner than this
//! process's own setting would, which the periodic listing bounds.
//!
//! The record also maps each kept version's ETag to its id ([`Record::id_of`]), so
//! a lazy reader's second read of a kept version costs one ranged Get Blob. A stale
//! mapping is safe: a kept version never changes, so an id found reads the right
//! bytes or, deleted since, answers 404 (then the caller lists again).

use std::time::{Duration, Instant, SystemTime};

use super::{same_etag, Listed};
use crate::backend::history::expired;
use crate::backend::{Etag, VersionInfo};
use crate::config::HistoryPolicy;

/// Snapshots this process may take between two listings of a blob's versions.
pub const RELIST_AFTER_SNAPSHOTS: u32 = 256;

/// The longest a record goes without a listing.
pub const RELIST_AFTER: Duration = Duration::from_secs(15 * 60);

/// What the retention knows of one blob's kept versions.
#[derive(Debug, Default)]
pub struct Record {
    /// Oldest first (by time, then id); `None` until the first listing, and after
    /// something showed the record stale.
    kept: Option<Vec<Listed>>,
    listed_at: Option<Instant>,
    snapshots_since_listing: u32,
}

impl Record {
    /// Whether the record must be listed again before a prune may use it.
    pub fn needs_listing(&self, now: Instant) -> bool {
        match (&self.kept, self.listed_at) {
            (Some(_), Some(at)) => {
                self.snapshots_since_listing >= RELIST_AFTER_SNAPSHOTS
                    || now.saturating_duration_since(at) >= RELIST_AFTER
            }
            _ => true,
        }
    }

    /// Replace the record by a fresh listing (oldest first or not).
    pub fn seed(&mut self, mut listed: Vec<Listed>, now: Instant) {
        listed.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        listed.dedup_by(|a, b| a.id == b.id);
        self.kept = Some(listed);
        self.listed_at = Some(now);
        self.snapshots_since_listing = 0;
    }

    /// A version this process just kept. Before the first listing nothing is
    /// recorded (that listing will show it).
    pub fn taken(&mut self, version: Listed) {
        self.snapshots_since_listing = self.snapshots_since_listing.saturating_add(1);
        let Some(kept) = self.kept.as_mut() else {
            return;
        };
        if let Some(known) = kept.iter_mut().find(|v| v.id == version.id) {
            if known.etag.is_none() {
                known.etag = version.etag;
            }
            return;
        }
        let at = kept.partition_point(|v| (v.time, &v.id) <= (version.time, &version.id));
        kept.insert(at, version);
    }

    /// The versions `policy` drops at `now`, oldest first ([`expired`] on the record);
    /// nothing before the first listing.
    pub fn expired(&self, policy: HistoryPolicy, now: SystemTime) -> Vec<String> {
        let Some(kept) = &self.kept else {
            return Vec::new();
        };
        let infos: Vec<VersionInfo> = kept
            .iter()
            .map(|v| VersionInfo {
                id: v.id.clone(),
                time: v.time,
                size: v.size,
                unique_bytes: 0,
            })
            .collect();
        expired(&infos, policy, now)
    }

    /// The id of the kept version whose ETag is `etag`, when the record holds one.
    pub fn id_of(&self, etag: &Etag) -> Option<String> {
        let kept = self.kept.as_ref()?;
        kept.iter()
            .rev()
            .find(|v| v.etag.as_ref().is_some_and(|e| same_etag(e, etag)))
            .map(|v| v.id.clone())
    }

    /// Version `id` is gone (deleted by this process, or found gone).
    pub fn forget(&mut self, id: &str) {
        if let Some(kept) = self.kept.as_mut() {
            kept.retain(|v| v.id != id);
        }
    }

    /// Something showed the record stale (a delete found its version already gone):
    /// list again before the next use.
    pub fn invalidate(&mut self) {
        self.kept = None;
    }

    /// How many versions the record holds (`None` before the first listing).
    #[cfg(test)]
    pub fn len(&self) -> Option<usize> {
        self.kept.as_ref().map(Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> Listed {
        Listed {
            id: format!("s{secs:04}"),
            time: UNIX_EPOCH + Duration::from_secs(secs),
            size: 1,
            current: false,
            etag: Some(Etag(format!("\"e{secs}\""))),
        }
    }

    fn seeded(secs: &[u64]) -> (Record, Instant) {
        let now = Instant::now();
        let mut r = Record::default();
        r.seed(secs.iter().map(|s| at(*s)).collect(), now);
        (r, now)
    }

    fn clock(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn nothing_is_dropped_before_the_first_listing() {
        let mut r = Record::default();
        assert!(r.needs_listing(Instant::now()));
        r.taken(at(1));
        r.taken(at(2));
        assert_eq!(
            r.len(),
            None,
            "a snapshot before any listing is not recorded"
        );
        assert!(r.expired(HistoryPolicy::Keep(1), clock(9)).is_empty());
    }

    #[test]
    fn counts_its_own_snapshots_and_forgets_its_deletes() {
        let (mut r, now) = seeded(&[30, 10, 20]);
        assert!(!r.needs_listing(now));
        r.taken(at(40));
        r.taken(at(40));
        assert_eq!(r.len(), Some(4), "the same snapshot twice is recorded once");
        assert_eq!(
            r.expired(HistoryPolicy::Keep(2), clock(50)),
            ["s0010", "s0020"]
        );
        r.forget("s0010");
        r.forget("s0020");
        assert_eq!(
            r.expired(HistoryPolicy::Keep(2), clock(50)),
            Vec::<String>::new()
        );
        r.taken(at(50));
        assert_eq!(r.expired(HistoryPolicy::Keep(2), clock(60)), ["s0030"]);
        let age = HistoryPolicy::MaxAge(Duration::from_secs(15));
        assert_eq!(r.expired(age, clock(60)), ["s0030", "s0040"]);
        assert_eq!(
            r.expired(age, clock(999)),
            ["s0030", "s0040"],
            "never the newest"
        );
    }

    #[test]
    fn a_snapshot_taken_out_of_order_is_placed_by_its_time() {
        let (mut r, _) = seeded(&[10, 30]);
        r.taken(at(20));
        assert_eq!(
            r.expired(HistoryPolicy::Keep(1), clock(40)),
            ["s0010", "s0020"]
        );
    }

    #[test]
    fn lists_again_when_stale_after_many_snapshots_or_a_while() {
        let (mut r, now) = seeded(&[1]);
        r.invalidate();
        assert!(r.needs_listing(now));
        assert!(r.expired(HistoryPolicy::Keep(1), clock(9)).is_empty());

        let (mut r, now) = seeded(&[1]);
        for s in 0..RELIST_AFTER_SNAPSHOTS - 1 {
            r.taken(at(2 + u64::from(s)));
        }
        assert!(!r.needs_listing(now));
        r.taken(at(9999));
        assert!(
            r.needs_listing(now),
            "after {RELIST_AFTER_SNAPSHOTS} snapshots"
        );

        let (r, now) = seeded(&[1]);
        assert!(!r.needs_listing(now + RELIST_AFTER - Duration::from_secs(1)));
        assert!(r.needs_listing(now + RELIST_AFTER));
    }

    #[test]
    fn finds_a_kept_version_by_its_etag_however_it_is_quoted() {
        let (mut r, _) = seeded(&[10, 20]);
        assert_eq!(r.id_of(&Etag("\"e20\"".into())).as_deref(), Some("s0020"));
        assert_eq!(r.id_of(&Etag("e10".into())).as_deref(), Some("s0010"));
        assert_eq!(r.id_of(&Etag("\"e30\"".into())), None);
        r.taken(Listed {
            etag: None,
            ..at(30)
        });
        assert_eq!(
            r.id_of(&Etag("\"e30\"".into())),
            None,
            "taken without its etag"
        );
        r.taken(at(30));
        assert_eq!(r.id_of(&Etag("\"e30\"".into())).as_deref(), Some("s0030"));
        r.forget("s0030");
        assert_eq!(r.id_of(&Etag("\"e30\"".into())), None);
        r.invalidate();
        assert_eq!(
            r.id_of(&Etag("\"e10\"".into())),
            None,
            "nothing before a listing"
        );
    }

    /// Another host took snapshots the record misses: it under-counts, so the
    /// retention drops fewer (later), never one the full listing would keep.
    #[test]
    fn a_record_missing_other_hosts_snapshots_drops_a_subset() {
        let store: Vec<u64> = (1..=10).collect();
        let (mut r, _) = seeded(&store[..4]);
        for own in [6, 8, 10] {
            r.taken(at(own));
        }
        let mut full = Record::default();
        full.seed(store.iter().map(|s| at(*s)).collect(), Instant::now());
        for policy in [
            HistoryPolicy::Keep(3),
            HistoryPolicy::Keep(5),
            HistoryPolicy::MaxAge(Duration::from_secs(4)),
        ] {
            let from_record = r.expired(policy, clock(12));
            let from_listing = full.expired(policy, clock(12));
            assert!(
                from_record.iter().all(|id| from_listing.contains(id)),
                "{policy:?}: the record drops {from_record:?}, a listing only {from_listing:?}"
            );
        }
    }

    /// Another process with the same count retention deleted old snapshots the
    /// record still holds: what the record drops is still beyond the newest n.
    #[test]
    fn a_record_holding_snapshots_others_pruned_still_keeps_the_newest_n() {
        let n = 3;
        let (mut r, _) = seeded(&[1, 2, 3, 4]);
        // The other process took 5 and 6 and pruned 1..=3 (each had 3 newer).
        let store = [4u64, 5, 6];
        r.taken(at(7));
        let store: Vec<u64> = store.iter().copied().chain([7]).collect();
        let newest_n: Vec<String> = store[store.len() - n..].iter().map(|s| at(*s).id).collect();
        let dropped = r.expired(HistoryPolicy::Keep(n as u32), clock(8));
        assert_eq!(dropped, ["s0001", "s0002"]);
        assert!(dropped.iter().all(|id| !newest_n.contains(id)));
    }
}
