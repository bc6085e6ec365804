//! How the database file is cut into blocks (docs/ARCHITECTURE.md, "Units of change"):
//! blocks of varying size on the page grid, each named by a 12-byte id that hashes its
//! offset, length and content. Pure computation: no I/O, no backend.
//!
//! [`plan`] decides a commit's layout from the base's and the pages written: split
//! where commits land, merge cold runs back when the list grows long.

// Not wired into the store yet (the next change of issue 26 does): only the unit
// tests use it meanwhile.
#![allow(dead_code, unused_imports)]

mod plan;
mod ranges;

use std::fmt;
use std::ops::Range;

pub use plan::{first_layout, plan, Piece, Source};
pub use ranges::Ranges;

/// Bytes of a block id (16 characters of base64).
pub const ID_LEN: usize = 12;
/// The tag byte of format-2 ids (`m`): tells them from today's 32-byte chunk ids
/// (which Azure would refuse in one blob anyway: a blob's ids share one length).
const TAG: u8 = 0x6d;

/// A block's id: the tag, then the first 11 bytes of XXH3-128 over the block's
/// offset, length and bytes. Equal ids at equal offsets mean equal bytes (an
/// accidental match is about 1 in 3 x 10^26).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockName([u8; ID_LEN]);

impl BlockName {
    /// The name of the block at `offset` holding `data`.
    pub fn new(offset: u64, data: &[u8]) -> BlockName {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&offset.to_be_bytes());
        hasher.update(&(data.len() as u64).to_be_bytes());
        hasher.update(data);
        let digest = hasher.digest128().to_be_bytes();
        let mut raw = [0u8; ID_LEN];
        raw[0] = TAG;
        raw[1..].copy_from_slice(&digest[..ID_LEN - 1]);
        BlockName(raw)
    }

    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// A format-2 id, or `None` (another tool's, or today's 32-byte chunk ids).
    pub fn from_bytes(raw: &[u8]) -> Option<BlockName> {
        let raw: [u8; ID_LEN] = raw.try_into().ok()?;
        (raw[0] == TAG).then_some(BlockName(raw))
    }
}

impl fmt::Debug for BlockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BlockName({:02x}{:02x}{:02x}..)",
            self.0[1], self.0[2], self.0[3]
        )
    }
}

/// One block: bytes `offset .. offset + len` of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub offset: u64,
    pub len: u64,
    pub name: BlockName,
}

impl Block {
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.len
    }
}

/// The blocks of one version of the file, in order, covering it without gaps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub blocks: Vec<Block>,
}

impl Layout {
    /// The file's length.
    pub fn len(&self) -> u64 {
        self.blocks.last().map_or(0, |b| b.offset + b.len)
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Read a committed block list (raw id, size) as a layout of ours; `None` when
    /// any id is not ours (another tool's blob, or today's 32-byte chunk ids: both are
    /// converted by the next upload), or a block is empty.
    pub fn from_block_list(list: &[(Vec<u8>, u64)]) -> Option<Layout> {
        let mut offset = 0;
        let mut blocks = Vec::with_capacity(list.len());
        for (raw, len) in list {
            if *len == 0 {
                return None;
            }
            blocks.push(Block {
                offset,
                len: *len,
                name: BlockName::from_bytes(raw)?,
            });
            offset += len;
        }
        Some(Layout { blocks })
    }

    /// The indexes of the blocks holding any byte of `range`.
    pub fn overlapping(&self, range: Range<u64>) -> Range<usize> {
        let start = self
            .blocks
            .partition_point(|b| b.offset + b.len <= range.start);
        let end = self.blocks.partition_point(|b| b.offset < range.end);
        start..end.max(start)
    }

    /// Whether `self` holds block `b` (same offset, length and name): its bytes are
    /// the same in both versions.
    pub fn has(&self, b: &Block) -> bool {
        let i = self.blocks.partition_point(|x| x.offset < b.offset);
        self.blocks.get(i) == Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(sizes: &[u64]) -> Layout {
        let mut offset = 0;
        let blocks = sizes
            .iter()
            .map(|&len| {
                let b = Block {
                    offset,
                    len,
                    name: BlockName::new(offset, &vec![offset as u8; len as usize]),
                };
                offset += len;
                b
            })
            .collect();
        Layout { blocks }
    }

    #[test]
    fn names_hash_offset_length_and_bytes() {
        let a = BlockName::new(0, b"page");
        assert_eq!(a, BlockName::new(0, b"page"));
        assert_ne!(a, BlockName::new(4096, b"page"), "another offset");
        assert_ne!(a, BlockName::new(0, b"pagf"), "other bytes");
        assert_ne!(
            BlockName::new(0, b""),
            BlockName::new(0, b"\0"),
            "another length"
        );
        assert_eq!(BlockName::from_bytes(a.as_bytes()), Some(a));
        assert_eq!(BlockName::from_bytes(&[0u8; ID_LEN]), None, "not our tag");
        assert_eq!(
            BlockName::from_bytes(&[TAG; 32]),
            None,
            "today's 32-byte ids"
        );
    }

    #[test]
    fn a_block_list_reads_back_with_offsets() {
        let l = layout(&[4096, 65536, 8192]);
        let list: Vec<(Vec<u8>, u64)> = l
            .blocks
            .iter()
            .map(|b| (b.name.as_bytes().to_vec(), b.len))
            .collect();
        let back = Layout::from_block_list(&list).unwrap();
        assert_eq!(back, l);
        assert_eq!(back.len(), 77824);
        assert_eq!(back.blocks[2].offset, 69632);
        let mut foreign = list.clone();
        foreign[1].0 = vec![1u8; 32];
        assert_eq!(Layout::from_block_list(&foreign), None);
        assert_eq!(Layout::from_block_list(&[]), Some(Layout::default()));
    }

    #[test]
    fn overlapping_and_has() {
        let l = layout(&[4096, 65536, 8192]);
        assert_eq!(l.overlapping(0..1), 0..1);
        assert_eq!(l.overlapping(4095..4097), 0..2);
        assert_eq!(l.overlapping(4096..69632), 1..2);
        assert_eq!(l.overlapping(69632..1 << 20), 2..3);
        assert_eq!(l.overlapping(1 << 20..2 << 20), 3..3);
        assert!(l.has(&l.blocks[1]));
        let mut moved = l.blocks[1];
        moved.offset += 4096;
        assert!(!l.has(&moved));
    }
}
