//! Delta sync's vocabulary: the database file as a list of fixed-size chunks, each
//! named by a block id made of its index and a hash of its content.
//!
//! A blob written by managedblob is an ordinary block blob whose committed block
//! list names every chunk in order, so a whole download of it is the plain SQLite
//! file. Comparing two block lists tells which chunks differ; only those move.
//!
//! Block id ([`BLOCK_ID_LEN`] = 32 bytes, the same length as every other block id
//! managedblob writes, as Azure requires): `b"mbk1"`, the chunk index (u32,
//! big-endian), the XXH3-128 of the chunk's bytes, and 8 zero bytes.

use std::fmt;

/// A remote's first chunk may keep an older change counter than its pages (see
/// [`crate::backend::Blocks::counter_may_lag`]): compare images with this applied.
pub use crate::image::ignore_change_counter;
/// The length of every block id managedblob writes (delta chunks and staged
/// whole-file uploads alike).
pub const BLOCK_ID_LEN: usize = 32;

/// The most blocks one blob may have (Azure's limit on block blobs; delta sync
/// sizes its chunks to stay within it, and so do staged whole-file uploads).
pub const MAX_BLOCKS: u64 = 50_000;
/// Smallest chunk: a multiple of every SQLite page size.
pub const MIN_CHUNK: u64 = 64 * 1024;
/// Largest chunk we choose (Azure allows 4000 MiB blocks; smaller keeps memory bounded).
pub const MAX_CHUNK: u64 = 256 * 1024 * 1024;
/// Chunk sizes are multiples of it (writes are tracked by byte ranges: layout::Ranges).
pub const GRANULE: u64 = MIN_CHUNK;

const MAGIC: &[u8; 4] = b"mbk1";

/// A chunk's block id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkId([u8; BLOCK_ID_LEN]);

impl ChunkId {
    /// The id of chunk `index` holding `data`.
    pub fn new(index: u32, data: &[u8]) -> ChunkId {
        let mut raw = [0u8; BLOCK_ID_LEN];
        raw[..4].copy_from_slice(MAGIC);
        raw[4..8].copy_from_slice(&index.to_be_bytes());
        raw[8..24].copy_from_slice(&xxhash_rust::xxh3::xxh3_128(data).to_be_bytes());
        ChunkId(raw)
    }

    pub fn index(&self) -> u32 {
        u32::from_be_bytes([self.0[4], self.0[5], self.0[6], self.0[7]])
    }

    pub fn as_bytes(&self) -> &[u8; BLOCK_ID_LEN] {
        &self.0
    }

    pub fn from_bytes(raw: &[u8]) -> Option<ChunkId> {
        let raw: [u8; BLOCK_ID_LEN] = raw.try_into().ok()?;
        (&raw[..4] == MAGIC && raw[24..].iter().all(|b| *b == 0)).then_some(ChunkId(raw))
    }

    /// The base64 form used as Azure block id.
    pub fn to_base64(&self) -> String {
        base64_encode(&self.0)
    }

    pub fn from_base64(text: &str) -> Option<ChunkId> {
        ChunkId::from_bytes(&base64_decode(text)?)
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ChunkId({}, {:02x}{:02x}..)",
            self.index(),
            self.0[8],
            self.0[9]
        )
    }
}

/// The chunk size for a database of `file_size` bytes: about sqrt(size x 40), the
/// point where re-sending the block list (about 40 bytes a block) costs as much as
/// the chunk itself, as a power of two between [`MIN_CHUNK`] and [`MAX_CHUNK`], and
/// large enough to stay under Azure's 50,000 blocks.
pub fn chunk_size_for(file_size: u64) -> u64 {
    let ideal = ((file_size as f64) * 40.0).sqrt() as u64;
    let mut chunk = ideal.next_power_of_two().clamp(MIN_CHUNK, MAX_CHUNK);
    while file_size.div_ceil(chunk) > MAX_BLOCKS && chunk < MAX_CHUNK {
        chunk *= 2;
    }
    chunk
}

/// The chunk list of one database image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub chunk_size: u64,
    pub len: u64,
    pub ids: Vec<ChunkId>,
}

impl Manifest {
    pub fn empty(chunk_size: u64) -> Manifest {
        Manifest {
            chunk_size,
            len: 0,
            ids: Vec::new(),
        }
    }

    pub fn chunk_count(len: u64, chunk_size: u64) -> u64 {
        len.div_ceil(chunk_size)
    }

    /// Byte range of chunk `index` in an image of `len` bytes.
    pub fn chunk_range(&self, index: u64) -> (u64, u64) {
        let start = index * self.chunk_size;
        (start, (start + self.chunk_size).min(self.len) - start)
    }

    /// Read a committed block list (base64 id, size) as a manifest of ours; `None`
    /// when the blob was written by another tool (foreign ids, other chunking).
    pub fn from_block_list(blocks: &[(Vec<u8>, u64)]) -> Option<Manifest> {
        let first = blocks.first()?;
        let chunk_size = first.1;
        if chunk_size == 0 || chunk_size % GRANULE != 0 {
            return None;
        }
        let mut ids = Vec::with_capacity(blocks.len());
        let mut len = 0;
        for (i, (name, size)) in blocks.iter().enumerate() {
            let id = ChunkId::from_bytes(name)?;
            let last = i + 1 == blocks.len();
            if id.index() as usize != i || (*size != chunk_size && !last) || *size > chunk_size {
                return None;
            }
            len += size;
            ids.push(id);
        }
        Some(Manifest {
            chunk_size,
            len,
            ids,
        })
    }

    /// Indexes of chunks of `self` that `have` lacks or holds with other content.
    pub fn differing(&self, have: &Manifest) -> Vec<u64> {
        (0..self.ids.len())
            .filter(|&i| {
                have.chunk_size != self.chunk_size || have.ids.get(i) != Some(&self.ids[i])
            })
            .map(|i| i as u64)
            .collect()
    }

    /// Binary form for the local manifest file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.ids.len() * BLOCK_ID_LEN);
        out.extend_from_slice(b"MBM1");
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&(self.ids.len() as u32).to_be_bytes());
        for id in &self.ids {
            out.extend_from_slice(id.as_bytes());
        }
        out
    }

    pub fn from_bytes(raw: &[u8]) -> Option<Manifest> {
        if raw.len() < 24 || &raw[..4] != b"MBM1" {
            return None;
        }
        let chunk_size = u64::from_be_bytes(raw[4..12].try_into().ok()?);
        let len = u64::from_be_bytes(raw[12..20].try_into().ok()?);
        let count = u32::from_be_bytes(raw[20..24].try_into().ok()?) as usize;
        let body = &raw[24..];
        if body.len() != count * BLOCK_ID_LEN
            || chunk_size == 0
            || Manifest::chunk_count(len, chunk_size) != count as u64
        {
            return None;
        }
        let ids = body
            .chunks(BLOCK_ID_LEN)
            .map(ChunkId::from_bytes)
            .collect::<Option<Vec<_>>>()?;
        Some(Manifest {
            chunk_size,
            len,
            ids,
        })
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if text.len() % 4 != 0 {
        return None;
    }
    let value = |c: u8| ALPHABET.iter().position(|&a| a == c).map(|v| v as u32);
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for group in text.chunks(4) {
        let pad = group.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in group.iter().enumerate() {
            let v = if i >= 4 - pad { 0 } else { value(c)? };
            n |= v << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            assert_eq!(base64_decode(&base64_encode(data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert!(base64_decode("Zm8").is_none());
        assert!(base64_decode("Z!8=").is_none());
    }

    #[test]
    fn chunk_ids_are_fixed_length_and_content_addressed() {
        let a = ChunkId::new(7, b"hello");
        assert_eq!(a.to_base64().len(), 44);
        assert_eq!(a.as_bytes().len(), BLOCK_ID_LEN);
        assert_eq!(ChunkId::from_base64(&a.to_base64()), Some(a));
        assert_eq!(a.index(), 7);
        assert_ne!(a, ChunkId::new(7, b"hellp"));
        assert_ne!(a, ChunkId::new(8, b"hello"));
        assert_eq!(
            ChunkId::from_base64("QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"),
            None,
            "foreign id"
        );
    }

    #[test]
    fn chunk_size_follows_the_square_root_rule_and_the_block_limit() {
        assert_eq!(chunk_size_for(0), MIN_CHUNK);
        assert_eq!(chunk_size_for(4 << 20), MIN_CHUNK);
        assert_eq!(chunk_size_for(64 << 20), 64 << 10);
        assert_eq!(chunk_size_for(1 << 30), 256 << 10);
        for size in [1u64 << 30, 100 << 30, 1 << 40] {
            let chunk = chunk_size_for(size);
            assert!(size.div_ceil(chunk) <= MAX_BLOCKS, "{size}: {chunk}");
            assert_eq!(chunk % GRANULE, 0);
        }
    }

    fn manifest(chunks: &[&[u8]], chunk_size: u64) -> Manifest {
        Manifest {
            chunk_size,
            len: chunks.iter().map(|c| c.len() as u64).sum(),
            ids: chunks
                .iter()
                .enumerate()
                .map(|(i, c)| ChunkId::new(i as u32, c))
                .collect(),
        }
    }

    #[test]
    fn block_lists_of_ours_parse_and_foreign_ones_do_not() {
        let m = manifest(&[b"a", b"b", b"c"], GRANULE);
        let list: Vec<(Vec<u8>, u64)> = m
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_bytes().to_vec(), if i == 2 { 100 } else { GRANULE }))
            .collect();
        let parsed = Manifest::from_block_list(&list).unwrap();
        assert_eq!(parsed.ids, m.ids);
        assert_eq!(parsed.len, 2 * GRANULE + 100);
        let mut reordered = list.clone();
        reordered.swap(0, 1);
        assert!(Manifest::from_block_list(&reordered).is_none());
        let mut uneven = list.clone();
        uneven[0].1 = GRANULE / 2;
        assert!(Manifest::from_block_list(&uneven).is_none());
        assert!(Manifest::from_block_list(&[(b"abc".to_vec(), GRANULE)]).is_none());
        assert!(Manifest::from_block_list(&[]).is_none());
    }

    #[test]
    fn differing_names_changed_added_and_rechunked_chunks() {
        let old = manifest(&[b"a", b"b", b"c"], GRANULE);
        let new = manifest(&[b"a", b"B", b"c", b"d"], GRANULE);
        assert_eq!(new.differing(&old), vec![1, 3]);
        let rechunked = Manifest {
            chunk_size: 2 * GRANULE,
            ..new.clone()
        };
        assert_eq!(rechunked.differing(&old), vec![0, 1, 2, 3]);
    }

    #[test]
    fn manifest_bytes_round_trip_and_reject_garbage() {
        let m = Manifest {
            chunk_size: GRANULE,
            len: 2 * GRANULE + 5,
            ids: manifest(&[b"a", b"b", b"c"], GRANULE).ids,
        };
        assert_eq!(Manifest::from_bytes(&m.to_bytes()), Some(m.clone()));
        let mut bad = m.to_bytes();
        bad.pop();
        assert_eq!(Manifest::from_bytes(&bad), None);
        assert_eq!(Manifest::from_bytes(b"garbage"), None);
    }
}
