//! A set of byte ranges, kept sorted and merged: what the commits since the base
//! wrote (page runs, not whole chunks), so that a layout can split exactly there.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent byte ranges (start → end).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges(BTreeMap<u64, u64>);

impl Ranges {
    /// Add `range` (merged with the ranges it overlaps or touches).
    pub fn add(&mut self, range: Range<u64>) {
        if range.start >= range.end {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        // A range that starts before and reaches `start` absorbs it.
        if let Some((&s, &e)) = self.0.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        let covered: Vec<u64> = self.0.range(start..=end).map(|(&s, _)| s).collect();
        for s in covered {
            if let Some(e) = self.0.remove(&s) {
                end = end.max(e);
            }
        }
        self.0.insert(start, end);
    }

    /// Add every range of `other`.
    pub fn extend(&mut self, other: &Ranges) {
        for r in other.iter() {
            self.add(r);
        }
    }

    /// Whether any byte of `range` is in the set.
    pub fn overlaps(&self, range: Range<u64>) -> bool {
        if range.start >= range.end {
            return false;
        }
        self.0
            .range(..range.end)
            .next_back()
            .is_some_and(|(_, &e)| e > range.start)
    }

    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.0.iter().map(|(&s, &e)| s..e)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_when_they_overlap_or_touch() {
        let mut r = Ranges::default();
        r.add(10..20);
        r.add(30..40);
        r.add(5..5);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![10..20, 30..40]);
        r.add(20..25);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![10..25, 30..40]);
        r.add(0..100);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![0..100]);
        let mut s = Ranges::default();
        s.add(200..300);
        s.add(150..210);
        s.add(290..310);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![150..310]);
        r.extend(&s);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![0..100, 150..310]);
    }

    #[test]
    fn overlaps_is_byte_exact() {
        let mut r = Ranges::default();
        r.add(4096..8192);
        assert!(r.overlaps(8191..9000));
        assert!(!r.overlaps(8192..9000));
        assert!(!r.overlaps(0..4096));
        assert!(r.overlaps(0..4097));
        assert!(r.overlaps(5000..5001));
        assert!(!r.overlaps(5000..5000));
        assert!(!Ranges::default().overlaps(0..u64::MAX));
    }
}
