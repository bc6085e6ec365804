//! A version's layout: the first one (cold blocks, then a tail laid in halving blocks,
//! since SQLite appends at the end), and each commit's (split the blocks it wrote
//! into, merge cold runs back when the list passes [`MERGE_AT`]).

use std::ops::Range;

use super::Layout;

/// The list length merging brings the layout back to.
pub const TARGET_BLOCKS: usize = 256;
/// The list length past which a commit merges cold runs.
pub const MERGE_AT: usize = 2 * TARGET_BLOCKS;
/// A block of at most this many pages is restaged whole rather than split, and a
/// split leaves no unchanged run this short (it goes with the written pages).
const SMALL_PAGES: u64 = 4;
/// Commits a block must go unwritten before it is merged.
const COOL: u64 = 8;
/// The smallest block of a halving tail.
const TAIL_MIN: u64 = 64 * 1024;
/// The cold block size's bounds.
const COLD_MIN: u64 = 64 * 1024;
const COLD_MAX: u64 = 64 * 1024 * 1024;

/// Where a block of the new layout gets its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The base's block at this index, as it is (nothing to stage).
    Kept(usize),
    /// Holds pages this commit wrote: staged from the cache.
    Written,
    /// The base's bytes in a new block (a split's remainder, a merge, a cut): staged
    /// from the cache, or copied by the service from the base's same range.
    Unchanged,
}

/// One block of a planned layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub range: Range<u64>,
    pub source: Source,
    /// The commit (a generation number) that last wrote it: merging takes the coldest.
    pub heat: u64,
}

/// The cold block size for a file of `len` bytes: about `len / 256` (a list of about
/// 256 entries), a power of two between 64 KiB and 64 MiB.
pub fn cold_size(len: u64) -> u64 {
    let ideal = (len / TARGET_BLOCKS as u64).max(1);
    let pow = ideal.next_power_of_two();
    // The nearer power of two.
    let near = if pow / 2 >= 1 && ideal - pow / 2 < pow - ideal {
        pow / 2
    } else {
        pow
    };
    near.clamp(COLD_MIN, COLD_MAX)
}

/// The block ranges of a first upload of `len` bytes with pages of `page` bytes: page
/// 1 alone (it changes at every commit), cold blocks, and the last cold size's worth
/// in halving blocks (`cold/2`, `cold/4` ... 64 KiB).
pub fn first_layout(len: u64, page: u64) -> Vec<Range<u64>> {
    if len == 0 {
        return Vec::new();
    }
    let first = page.min(len);
    let mut out = lay(first..len, cold_size(len), page);
    out.insert(0, 0..first);
    out
}

/// Cut `range` (page-aligned start) into cold blocks and a halving tail.
fn lay(range: Range<u64>, cold: u64, page: u64) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let tail = range.end.saturating_sub(cold) / page * page;
    let mut at = range.start;
    while at < tail {
        // On the cold grid (a block after page 1 ends at the first multiple).
        let end = ((at / cold + 1) * cold).min(tail);
        out.push(at..end);
        at = end;
    }
    let floor = TAIL_MIN.max(page);
    let mut size = cold / 2;
    while at < range.end {
        let end = (at + size.max(floor)).min(range.end);
        out.push(at..end);
        at = end;
        size /= 2;
    }
    out
}

/// Written byte ranges as sorted, merged runs of whole pages within `len`.
fn pages_of(written: &[Range<u64>], page: u64, len: u64) -> Vec<Range<u64>> {
    let mut runs: Vec<Range<u64>> = written
        .iter()
        .filter(|r| r.start < r.end)
        .map(|r| r.start / page * page..r.end.div_ceil(page) * page)
        .map(|r| r.start.min(len)..r.end.min(len))
        .filter(|r| r.start < r.end)
        .collect();
    runs.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(runs.len());
    for r in runs {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// The layout of the version a commit makes: `old` the base's (`heat[i]` the
/// generation that last wrote its block `i`), `written` the byte ranges written since
/// the base, `len` the new length, `page` the page size, `generation` this commit's
/// number. Blocks nothing wrote are kept; a block written into is split into its
/// unchanged runs and its written runs (a small one is restaged whole); growth is laid
/// like a first upload's tail; past [`MERGE_AT`] blocks, cold neighbours are merged.
pub fn plan(
    old: &Layout,
    heat: &[u64],
    written: &[Range<u64>],
    len: u64,
    page: u64,
    generation: u64,
) -> Vec<Piece> {
    let written = pages_of(written, page, len);
    let mut out: Vec<Piece> = Vec::with_capacity(old.blocks.len() + 2 * written.len() + 8);
    for (i, block) in old.blocks.iter().enumerate() {
        if block.offset >= len {
            break;
        }
        let was = heat.get(i).copied().unwrap_or(0);
        let end = (block.offset + block.len).min(len);
        let runs: Vec<Range<u64>> = written
            .iter()
            .filter(|r| r.start < end && r.end > block.offset)
            .map(|r| r.start.max(block.offset)..r.end.min(end))
            .collect();
        let piece = |range: Range<u64>, source: Source, heat: u64| Piece {
            range,
            source,
            heat,
        };
        match (runs.is_empty(), end == block.offset + block.len) {
            (true, true) => out.push(piece(block.range(), Source::Kept(i), was)),
            (true, false) => out.push(piece(block.offset..end, Source::Unchanged, was)),
            (false, _) if end - block.offset <= SMALL_PAGES * page => {
                out.push(piece(block.offset..end, Source::Written, generation))
            }
            (false, _) => split(&mut out, block.offset..end, &runs, page, was, generation),
        }
    }
    let old_len = old.len().min(len);
    if len > old_len {
        for range in lay(old_len..len, cold_size(len), page) {
            out.push(Piece {
                range,
                source: Source::Written,
                heat: generation,
            });
        }
    }
    merge(&mut out, cold_size(len), generation);
    out
}

/// Split `block` around its written `runs` (sorted, within it): unchanged runs of at
/// most [`SMALL_PAGES`] pages go with the written run beside them.
fn split(
    out: &mut Vec<Piece>,
    block: Range<u64>,
    runs: &[Range<u64>],
    page: u64,
    was: u64,
    generation: u64,
) {
    let small = SMALL_PAGES * page;
    let mut pieces: Vec<(Range<u64>, bool)> = Vec::new();
    let mut at = block.start;
    for r in runs {
        if r.start > at {
            pieces.push((at..r.start, false));
        }
        pieces.push((r.clone(), true));
        at = r.end;
    }
    if at < block.end {
        pieces.push((at..block.end, false));
    }
    // Fold short unchanged runs into a written neighbour (fewer requests).
    let mut folded: Vec<(Range<u64>, bool)> = Vec::with_capacity(pieces.len());
    for (range, wrote) in pieces {
        match folded.last_mut() {
            Some((last, true)) if wrote || range.end - range.start <= small => {
                last.end = range.end;
            }
            Some((last, false)) if wrote && last.end - last.start <= small => {
                last.end = range.end;
                folded.last_mut().unwrap().1 = true;
            }
            _ => folded.push((range, wrote)),
        }
    }
    for (range, wrote) in folded {
        out.push(Piece {
            range,
            source: if wrote {
                Source::Written
            } else {
                Source::Unchanged
            },
            heat: if wrote { generation } else { was },
        });
    }
}

/// Past [`MERGE_AT`] pieces, merge the smallest pair of cold neighbours (unwritten for
/// [`COOL`] commits, together at most `cold`) until [`TARGET_BLOCKS`] are left or no
/// pair qualifies.
fn merge(pieces: &mut Vec<Piece>, cold: u64, generation: u64) {
    if pieces.len() <= MERGE_AT {
        return;
    }
    let cool = |p: &Piece| p.source != Source::Written && p.heat + COOL <= generation;
    while pieces.len() > TARGET_BLOCKS {
        let best = pieces
            .windows(2)
            .enumerate()
            .filter(|(_, w)| cool(&w[0]) && cool(&w[1]))
            .map(|(j, w)| (w[1].range.end - w[0].range.start, j))
            .filter(|(span, _)| *span <= cold)
            .min();
        let Some((_, j)) = best else { break };
        let right = pieces.remove(j + 1);
        let left = &mut pieces[j];
        left.range.end = right.range.end;
        left.source = Source::Unchanged;
        left.heat = left.heat.max(right.heat);
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::super::{Block, BlockName};
    use super::*;

    const PAGE: u64 = 4096;
    const MIB: u64 = 1 << 20;

    fn layout_of(ranges: &[Range<u64>]) -> Layout {
        Layout {
            blocks: ranges
                .iter()
                .map(|r| Block {
                    offset: r.start,
                    len: r.end - r.start,
                    name: BlockName::new(r.start, &[]),
                })
                .collect(),
        }
    }

    /// Pieces cover `0..len` in order, on page boundaries (but the end).
    fn check_covers(pieces: &[Piece], len: u64) {
        let mut at = 0;
        for p in pieces {
            assert_eq!(p.range.start, at, "{pieces:?}");
            assert!(p.range.end > p.range.start);
            assert!(p.range.end % PAGE == 0 || p.range.end == len);
            at = p.range.end;
        }
        assert_eq!(at, len);
    }

    fn staged(pieces: &[Piece]) -> (usize, u64) {
        let moving: Vec<&Piece> = pieces
            .iter()
            .filter(|p| !matches!(p.source, Source::Kept(_)))
            .collect();
        (
            moving.len(),
            moving.iter().map(|p| p.range.end - p.range.start).sum(),
        )
    }

    #[test]
    fn cold_size_is_about_a_256th_within_bounds() {
        assert_eq!(cold_size(0), COLD_MIN);
        assert_eq!(cold_size(64 * MIB), 256 * 1024);
        assert_eq!(cold_size(1024 * MIB), 4 * MIB);
        assert_eq!(cold_size(100 * 1024 * MIB), COLD_MAX);
    }

    #[test]
    fn a_first_layout_has_page_one_alone_and_a_halving_tail() {
        let len = 64 * MIB;
        let ranges = first_layout(len, PAGE);
        let pieces: Vec<Piece> = ranges
            .iter()
            .map(|r| Piece {
                range: r.clone(),
                source: Source::Written,
                heat: 0,
            })
            .collect();
        check_covers(&pieces, len);
        assert_eq!(ranges[0], 0..PAGE);
        let sizes: Vec<u64> = ranges.iter().map(|r| r.end - r.start).collect();
        assert!(ranges.len() < 270, "{} blocks", ranges.len());
        // The last cold size (256 KiB here) in 128 KiB, 64 KiB and 64 KiB.
        assert_eq!(
            sizes[sizes.len() - 3..],
            [128 * 1024, 64 * 1024, 64 * 1024][..]
        );
        assert_eq!(sizes[sizes.len() - 4], cold_size(len), "{sizes:?}");
        assert!(sizes.iter().all(|&s| s <= cold_size(len)));
        assert_eq!(first_layout(0, PAGE), Vec::<Range<u64>>::new());
        assert_eq!(first_layout(PAGE, PAGE), vec![0..PAGE]);
    }

    #[test]
    fn a_page_written_into_a_cold_block_splits_it() {
        let old = layout_of(&first_layout(64 * MIB, PAGE));
        let heat = vec![0; old.blocks.len()];
        let page = 5000 * PAGE..5001 * PAGE;
        let pieces = plan(&old, &heat, std::slice::from_ref(&page), 64 * MIB, PAGE, 1);
        check_covers(&pieces, 64 * MIB);
        let (count, bytes) = staged(&pieces);
        assert_eq!(count, 3, "the run before, the page, the run after");
        assert_eq!(bytes, cold_size(64 * MIB));
        let hot = pieces.iter().find(|p| p.range == page).unwrap();
        assert_eq!((hot.source, hot.heat), (Source::Written, 1));

        // The next commit into the same page restages that page alone.
        let next = layout_of(&pieces.iter().map(|p| p.range.clone()).collect::<Vec<_>>());
        let heat: Vec<u64> = pieces.iter().map(|p| p.heat).collect();
        let again = plan(
            &next,
            &heat,
            &[page.start + 100..page.start + 200],
            64 * MIB,
            PAGE,
            2,
        );
        assert_eq!(staged(&again), (1, PAGE));
    }

    #[test]
    fn small_blocks_are_restaged_whole_and_short_runs_fold() {
        let old = layout_of(&[0..PAGE, PAGE..4 * PAGE, 4 * PAGE..64 * PAGE]);
        let heat = [0, 0, 0];
        let pieces = plan(&old, &heat, &[2 * PAGE..2 * PAGE + 1], 64 * PAGE, PAGE, 1);
        assert_eq!(pieces[1].range, PAGE..4 * PAGE);
        assert_eq!(pieces[1].source, Source::Written);
        // Two pages before the written one stay with it: one block, not two.
        let pieces = plan(&old, &heat, &[6 * PAGE..7 * PAGE], 64 * PAGE, PAGE, 1);
        check_covers(&pieces, 64 * PAGE);
        assert_eq!(pieces[2].range, 4 * PAGE..7 * PAGE);
        assert_eq!(pieces[3].source, Source::Unchanged);
        assert_eq!(staged(&pieces).0, 2);
    }

    #[test]
    fn growth_is_written_and_a_cut_block_is_unchanged() {
        let old = layout_of(&[0..PAGE, PAGE..64 * PAGE]);
        let grown = plan(&old, &[0, 0], &[64 * PAGE..65 * PAGE], 65 * PAGE, PAGE, 1);
        check_covers(&grown, 65 * PAGE);
        assert_eq!(staged(&grown), (1, PAGE));
        let cut = plan(&old, &[0, 0], &[], 32 * PAGE, PAGE, 1);
        check_covers(&cut, 32 * PAGE);
        assert_eq!(cut[1].source, Source::Unchanged);
        assert_eq!(plan(&old, &[0, 0], &[], 0, PAGE, 1), Vec::<Piece>::new());
    }

    #[test]
    fn a_long_list_merges_its_cold_neighbours_only() {
        let ranges: Vec<Range<u64>> = (0..600).map(|i| i * PAGE..(i + 1) * PAGE).collect();
        let old = layout_of(&ranges);
        let mut heat = vec![0; 600];
        heat[300] = 95; // written lately: stays alone
        let pieces = plan(
            &old,
            &heat,
            &[599 * PAGE..600 * PAGE],
            600 * PAGE,
            PAGE,
            100,
        );
        check_covers(&pieces, 600 * PAGE);
        assert!(pieces.len() <= TARGET_BLOCKS, "{}", pieces.len());
        assert!(pieces.iter().any(|p| p.range == (300 * PAGE..301 * PAGE)));
        assert!(pieces
            .iter()
            .all(|p| p.range.end - p.range.start <= cold_size(600 * PAGE)));
        let last = pieces.last().unwrap();
        assert_eq!((last.source, last.heat), (Source::Written, 100));
    }

    #[test]
    fn steady_one_row_commits_stage_a_page_or_two() {
        // Page 1 and the last page written at every commit, a new page every 30.
        let mut len = 64 * MIB;
        let mut layout = layout_of(&first_layout(len, PAGE));
        let mut heat = vec![0; layout.blocks.len()];
        let mut total = 0;
        for generation in 1..=300u64 {
            if generation % 30 == 0 {
                len += PAGE;
            }
            let written = [0..PAGE, len - PAGE..len];
            let pieces = plan(&layout, &heat, &written, len, PAGE, generation);
            check_covers(&pieces, len);
            let (count, bytes) = staged(&pieces);
            assert!(
                count <= 3 && bytes <= 128 * 1024,
                "commit {generation}: {count} blocks, {bytes} bytes"
            );
            total += bytes;
            heat = pieces.iter().map(|p| p.heat).collect();
            layout = layout_of(&pieces.iter().map(|p| p.range.clone()).collect::<Vec<_>>());
            assert!(layout.blocks.len() <= MERGE_AT);
        }
        assert!(total / 300 < 12 * 1024, "{} bytes a commit", total / 300);
    }
}
