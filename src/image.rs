//! Facts about SQLite database images and journals that the sync logic needs,
//! read from the documented file format (<https://www.sqlite.org/fileformat.html>).

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// "SQLite format 3\0", the first 16 bytes of every database file.
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The byte-range locks of SQLite's unix VFS on a database file (`sqlite3.c`:
/// `PENDING_BYTE` 0x40000000, `RESERVED_BYTE` = +1, `SHARED_FIRST` = +2,
/// `SHARED_SIZE` 510): a reader holds a read lock on the shared range, an
/// EXCLUSIVE holder a write lock on all of it.
pub const PENDING_BYTE: u64 = 0x4000_0000;
pub const RESERVED_BYTE: u64 = PENDING_BYTE + 1;
pub const SHARED_FIRST: u64 = PENDING_BYTE + 2;
pub const SHARED_SIZE: u64 = 510;
/// The first 8 bytes of a rollback journal whose header is valid (a hot journal).
const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];

/// Check that the first bytes of a file of `size` bytes describe a SQLite database
/// (an empty file is a valid, empty database). Returns why not.
pub fn check_database(header: &[u8], size: u64) -> Result<(), String> {
    if size == 0 {
        return Ok(());
    }
    if size < 100 || header.len() < 100 {
        return Err(format!("it is {size} bytes, too short for a SQLite header"));
    }
    if &header[..16] != MAGIC {
        return Err("it does not start with the SQLite header 'SQLite format 3'".into());
    }
    let page_size = page_size(header);
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format!("its header names an invalid page size {page_size}"));
    }
    if size % page_size as u64 != 0 {
        return Err(format!(
            "its size {size} is not a multiple of its page size {page_size} (truncated?)"
        ));
    }
    // The in-header database size (offset 28) counts when it is non-zero and the
    // change counter equals "version-valid-for" (offset 92), as SQLite decides; a
    // file shorter than that lost its tail (SQLite would read zeros there).
    let pages = u32::from_be_bytes([header[28], header[29], header[30], header[31]]);
    if pages > 0
        && header[24..28] == header[92..96]
        && u64::from(pages) * u64::from(page_size) > size
    {
        return Err(format!(
            "it is {size} bytes but its header says {pages} pages of {page_size} bytes (truncated?)"
        ));
    }
    Ok(())
}

/// The page size recorded at offset 16 (1 means 65536).
pub fn page_size(header: &[u8]) -> u32 {
    match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => n as u32,
    }
}

/// Whether bytes 18-19 say WAL mode (2, 2), as the Python store leaves its uploads.
pub fn is_wal_header(header: &[u8]) -> bool {
    header.len() >= 20 && header[18] == 2 && header[19] == 2
}

/// The file change counter at offset 24.
pub fn change_counter(header: &[u8]) -> u32 {
    u32::from_be_bytes([header[24], header[25], header[26], header[27]])
}

/// Adjust a header about to replace the cache so SQLite reads it correctly here:
/// a WAL header becomes a rollback-journal header (what `journal_mode=DELETE`
/// writes), and when the change counter equals the old cache's, it is bumped so
/// every connection's page cache notices the new content. Returns whether it changed.
pub fn adapt_header(header: &mut [u8], old_counter: Option<u32>) -> bool {
    if header.len() < 100 || &header[..16] != MAGIC {
        return false;
    }
    let mut changed = false;
    if is_wal_header(header) {
        header[18] = 1;
        header[19] = 1;
        changed = true;
    }
    let counter = change_counter(header);
    if let Some(old) = old_counter.filter(|old| counter <= *old) {
        let bumped = old.wrapping_add(1).to_be_bytes();
        header[24..28].copy_from_slice(&bumped);
        // "version-valid-for" must match the counter or SQLite distrusts the page count.
        header[92..96].copy_from_slice(&bumped);
        changed = true;
    }
    changed
}

/// Copy the change counter and its "version-valid-for" copy (offsets 24 and 92) of
/// the image starting `from` into the image starting `to`, so that comparing them
/// compares the content SQLite reads, not how many commits each copy has seen.
pub fn ignore_change_counter(from: &[u8], to: &mut [u8]) {
    for field in [24..28, 92..96] {
        if let (Some(src), Some(dst)) = (from.get(field.clone()), to.get_mut(field)) {
            dst.copy_from_slice(src);
        }
    }
}

/// Whether a rollback journal at `path` is (possibly) hot: it exists and its header
/// is not zeroed (PERSIST mode zeroes it, TRUNCATE empties it, DELETE removes it).
pub fn journal_is_hot(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut head = [0u8; 8];
    match f.read_exact(&mut head) {
        Ok(()) => head == JOURNAL_MAGIC || head.iter().any(|b| *b != 0),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(page: u16, counter: u32) -> Vec<u8> {
        let mut h = vec![0u8; 100];
        h[..16].copy_from_slice(MAGIC);
        h[16..18].copy_from_slice(&page.to_be_bytes());
        h[18] = 1;
        h[19] = 1;
        h[24..28].copy_from_slice(&counter.to_be_bytes());
        h[92..96].copy_from_slice(&counter.to_be_bytes());
        h
    }

    #[test]
    fn rejects_what_is_not_a_database() {
        assert!(check_database(b"", 0).is_ok());
        assert!(check_database(&header(4096, 1), 8192).is_ok());
        assert!(check_database(&[b'x'; 100], 4096)
            .unwrap_err()
            .contains("SQLite header"));
        assert!(check_database(&header(4096, 1), 5000)
            .unwrap_err()
            .contains("truncated"));
        assert!(check_database(&header(1000, 1), 4000)
            .unwrap_err()
            .contains("page size"));
        assert!(check_database(&header(4096, 1), 50)
            .unwrap_err()
            .contains("too short"));
    }

    #[test]
    fn a_file_shorter_than_its_in_header_size_is_truncated() {
        let mut h = header(4096, 5);
        h[28..32].copy_from_slice(&3u32.to_be_bytes());
        assert!(check_database(&h, 3 * 4096).is_ok());
        assert!(
            check_database(&h, 4 * 4096).is_ok(),
            "longer is SQLite's business"
        );
        assert!(check_database(&h, 2 * 4096)
            .unwrap_err()
            .contains("header says 3 pages"));
        // Not valid when the change counter and version-valid-for differ (files
        // written before SQLite 3.7.0): SQLite then sizes by the file.
        h[92..96].copy_from_slice(&4u32.to_be_bytes());
        assert!(check_database(&h, 2 * 4096).is_ok());
    }

    #[test]
    fn wal_header_becomes_rollback_header() {
        let mut h = header(4096, 7);
        h[18] = 2;
        h[19] = 2;
        assert!(adapt_header(&mut h, Some(3)));
        assert_eq!((h[18], h[19]), (1, 1));
        assert_eq!(change_counter(&h), 7);
    }

    #[test]
    fn equal_change_counter_is_bumped_with_version_valid_for() {
        let mut h = header(4096, 7);
        assert!(!adapt_header(&mut h, Some(6)));
        assert!(adapt_header(&mut h, Some(7)));
        assert_eq!(change_counter(&h), 8);
        assert_eq!(&h[92..96], &8u32.to_be_bytes());
    }

    #[test]
    fn journal_hotness() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        assert!(!journal_is_hot(&p));
        std::fs::write(&p, b"").unwrap();
        assert!(!journal_is_hot(&p));
        std::fs::write(&p, [0u8; 512]).unwrap();
        assert!(!journal_is_hot(&p));
        let mut j = JOURNAL_MAGIC.to_vec();
        j.resize(512, 0);
        std::fs::write(&p, &j).unwrap();
        assert!(journal_is_hot(&p));
    }
}
