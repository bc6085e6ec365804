//! The history capability: earlier versions of a blob kept by the store, each a
//! plain copy of the blob as it was published (a SQLite file, nothing to replay).
//!
//! A backend that can keep versions answers [`super::Backend::history`] with a
//! [`History`]: `memory` (the reference), `local` (a content-addressed chunk store
//! beside the blob, `local/versions.rs`) and `azure` (blob snapshots,
//! `azure/snapshots.rs`). This file also holds what every implementation and caller
//! shares: which versions a retention drops ([`expired`]), which version was current
//! at a given time ([`as_of`]), the bytes each version holds alone
//! ([`unique_bytes`]), and RFC 3339 times ([`format_time`], [`parse_time`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{BackendResult, Etag, LeaseId};
use crate::config::HistoryPolicy;

/// One kept version of a blob.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VersionInfo {
    /// The store's name for it (opaque; sorts by time within one store).
    pub id: String,
    /// When it was taken (the publish it records happened just before).
    #[serde(serialize_with = "serialize_time")]
    pub time: SystemTime,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes held by no other kept version (what deleting it frees), as far as the
    /// store can tell.
    pub unique_bytes: u64,
}

/// Keeping, listing, reading and dropping versions of a blob.
pub trait History: Send + Sync {
    /// Keep the blob's current version (call right after a publish, under `lease` when
    /// one is held); returns its id. Taking it twice for the same version keeps it
    /// once (where the store can tell without another request).
    fn snapshot(&self, blob: &str, lease: Option<&LeaseId>) -> BackendResult<String>;

    /// The kept versions of `blob`, oldest first (empty when none are kept).
    fn versions(&self, blob: &str) -> BackendResult<Vec<VersionInfo>>;

    /// The kept versions like [`History::versions`], where `unique_bytes` may be 0: for
    /// stores where counting them costs requests (one Get Block List per version on
    /// Azure). What retention and `as_of` lookups use.
    fn listing(&self, blob: &str) -> BackendResult<Vec<VersionInfo>> {
        self.versions(blob)
    }

    /// Write version `id` of `blob` into `sink`; returns its size.
    /// `NotFound` when no such version is kept.
    fn download_version(&self, blob: &str, id: &str, sink: &mut dyn Write) -> BackendResult<u64>;

    /// `len` bytes at `offset` of the kept version that was the blob's version `etag`,
    /// or `None` when none is kept for it, or the store cannot tell versions by etag
    /// (the default). A lazy cache reads a chunk the remote has changed since its
    /// read transaction began from here.
    fn read_kept_range(
        &self,
        _blob: &str,
        _etag: &Etag,
        _offset: u64,
        _len: u64,
    ) -> BackendResult<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Drop version `id` (never the current blob). Dropping a version that is already
    /// gone is not an error.
    fn delete_version(&self, blob: &str, id: &str) -> BackendResult<()>;

    /// Drop the versions `policy` no longer keeps at `now` ([`expired`]); returns
    /// their ids. A store may override it to drop many versions at the cost of one.
    fn prune(
        &self,
        blob: &str,
        policy: HistoryPolicy,
        now: SystemTime,
    ) -> BackendResult<Vec<String>> {
        let dropped = expired(&self.listing(blob)?, policy, now);
        for id in &dropped {
            self.delete_version(blob, id)?;
        }
        Ok(dropped)
    }
}

/// The versions `policy` drops from `versions` (oldest first) at `now`: beyond the
/// newest `n`, or older than the age. The newest version is always kept.
pub fn expired(versions: &[VersionInfo], policy: HistoryPolicy, now: SystemTime) -> Vec<String> {
    let Some((_newest, older)) = versions.split_last() else {
        return Vec::new();
    };
    match policy {
        HistoryPolicy::Off => Vec::new(),
        HistoryPolicy::Keep(n) => {
            let drop = versions.len().saturating_sub(n.max(1) as usize);
            older.iter().take(drop).map(|v| v.id.clone()).collect()
        }
        HistoryPolicy::MaxAge(age) => older
            .iter()
            .filter(|v| now.duration_since(v.time).unwrap_or_default() > age)
            .map(|v| v.id.clone())
            .collect(),
    }
}

/// The version that was current at `time`: the newest taken at or before it.
pub fn as_of(versions: &[VersionInfo], time: SystemTime) -> Option<&VersionInfo> {
    versions
        .iter()
        .filter(|v| v.time <= time)
        .max_by_key(|v| v.time)
}

/// For each version (a list of (chunk key, length)), the bytes of the chunks no
/// other version holds.
pub fn unique_bytes<K: Eq + Hash>(versions: &[Vec<(K, u64)>]) -> Vec<u64> {
    let mut holders: HashMap<&K, usize> = HashMap::new();
    for chunks in versions {
        let mut seen = std::collections::HashSet::new();
        for (key, _) in chunks {
            if seen.insert(key) {
                *holders.entry(key).or_default() += 1;
            }
        }
    }
    versions
        .iter()
        .map(|chunks| {
            let mut seen = std::collections::HashSet::new();
            chunks
                .iter()
                .filter(|(key, _)| holders[key] == 1 && seen.insert(key))
                .map(|(_, len)| len)
                .sum()
        })
        .collect()
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `time` as RFC 3339 UTC with milliseconds: `2026-12-01T05:37:02.123Z`.
pub fn format_time(time: SystemTime) -> String {
    let ms = unix_millis(time);
    let utc = crate::utc::Utc::from_unix(ms / 1000);
    let whole = utc.iso8601();
    format!("{}.{:03}Z", &whole[..whole.len() - 1], ms % 1000)
}

fn serialize_time<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(*time))
}

/// Parse an RFC 3339 time (`2026-12-01T05:37:02Z`, with optional fraction and a
/// `Z` or `+HH:MM` offset; a space may stand for the `T`).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let t = text.trim().as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = std::str::from_utf8(t.get(range)?).ok()?;
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let sep = |i: usize, c: &[u8]| t.get(i).is_some_and(|b| c.contains(b));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u64 = 0;
    if sep(i, b".") {
        i += 1;
        let start = i;
        while t.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = std::str::from_utf8(&t[start..i]).ok()?;
        if digits.is_empty() {
            return None;
        }
        let padded: String = digits
            .chars()
            .chain(std::iter::repeat('0'))
            .take(9)
            .collect();
        nanos = padded.parse().ok()?;
    }
    let offset_secs = match t.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] if t.len() == i + 6 && t[i + 3] == b':' => {
            let minutes = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str, secs: u64) -> VersionInfo {
        VersionInfo {
            id: id.into(),
            time: UNIX_EPOCH + Duration::from_secs(secs),
            size: 0,
            unique_bytes: 0,
        }
    }

    #[test]
    fn times_round_trip_and_offsets_apply() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(format_time(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_time("2023-11-14T22:13:20.123Z"), Some(t));
        assert_eq!(
            parse_time("2023-11-14T23:13:20.123+01:00"),
            Some(t),
            "an offset east of UTC"
        );
        assert_eq!(
            parse_time("2000-02-29 00:00:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(951_782_400))
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-13-01T00:00:00Z",
            "2023-11-14T22:13:20",
            "yesterday",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retention_keeps_the_newest_by_count_and_by_age() {
        let all = [v("a", 10), v("b", 20), v("c", 30), v("d", 40)];
        let now = UNIX_EPOCH + Duration::from_secs(45);
        assert_eq!(expired(&all, HistoryPolicy::Keep(2), now), ["a", "b"]);
        assert_eq!(expired(&all, HistoryPolicy::Keep(0), now), ["a", "b", "c"]);
        assert_eq!(
            expired(&all, HistoryPolicy::Keep(9), now),
            Vec::<String>::new()
        );
        let age = HistoryPolicy::MaxAge(Duration::from_secs(20));
        assert_eq!(expired(&all, age, now), ["a", "b"]);
        let ancient = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(
            expired(&all, age, ancient),
            ["a", "b", "c"],
            "never the newest"
        );
        assert_eq!(
            expired(&all, HistoryPolicy::Off, ancient),
            Vec::<String>::new()
        );
    }

    #[test]
    fn as_of_picks_the_newest_at_or_before() {
        let all = [v("a", 10), v("b", 20)];
        let at = |s| as_of(&all, UNIX_EPOCH + Duration::from_secs(s)).map(|v| v.id.as_str());
        assert_eq!(at(5), None);
        assert_eq!(at(10), Some("a"));
        assert_eq!(at(19), Some("a"));
        assert_eq!(at(99), Some("b"));
    }

    #[test]
    fn unique_bytes_counts_chunks_no_other_version_holds() {
        let versions = vec![
            vec![(1, 10), (2, 20)],
            vec![(1, 10), (3, 30), (3, 30)],
            vec![(4, 5)],
        ];
        assert_eq!(unique_bytes(&versions), [20, 30, 5]);
    }
}
