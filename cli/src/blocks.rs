//! Reading a committed block list as managedblob chunks.
//!
//! [`managedblob::internal::delta::Manifest::from_block_list`] also insists on a chunk size
//! that is a multiple of 64 KiB, which a one-chunk database smaller than that is
//! not; an operator's tool recognizes our chunks by their ids alone.

use managedblob::internal::backend::BlockList;
use managedblob::internal::delta::ChunkId;

/// How a blob was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Our block list: chunk `i` carries id `i` and the hash of its bytes.
    Managedblob,
    /// Someone else's block list.
    Foreign,
    /// No block list (written in one piece).
    Whole,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Managedblob => "managedblob",
            Format::Foreign => "foreign",
            Format::Whole => "whole",
        }
    }
}

/// The chunks of a block list: (id, offset, size), when it is ours.
pub fn chunks(list: &BlockList) -> (Format, Vec<(ChunkId, u64, u64)>) {
    if list.is_empty() {
        return (Format::Whole, Vec::new());
    }
    let mut offset = 0;
    let mut out = Vec::with_capacity(list.len());
    for (i, (raw, size)) in list.iter().enumerate() {
        match ChunkId::from_bytes(raw) {
            Some(id) if id.index() as usize == i => out.push((id, offset, *size)),
            _ => return (Format::Foreign, Vec::new()),
        }
        offset += size;
    }
    (Format::Managedblob, out)
}
