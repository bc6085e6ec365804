//! The rules every backend applies the same way, written once: blob names, write
//! conditions, the lease a write must carry, block ids, ranges and short sources.
//!
//! A check answers with a [`Refusal`] (the kind and the reason); the backend turns
//! it into a [`BackendError`] that names its store, the blob and the operation
//! ([`Refusal::at`]), so every backend refuses the same things with the same words.

use std::fmt;

use super::{BackendError, BackendErrorKind, Condition, Etag, LeaseId, BLOCK_ID_LEN};

/// Why a backend refuses an operation, before it is told where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: BackendErrorKind,
    pub why: String,
}

impl Refusal {
    pub fn new(kind: BackendErrorKind, why: impl Into<String>) -> Self {
        Refusal {
            kind,
            why: why.into(),
        }
    }

    /// `NotFound`: the blob does not exist.
    pub fn missing() -> Self {
        Refusal::new(BackendErrorKind::NotFound, "the blob does not exist")
    }

    /// `LeaseLost`: a write or renewal carried a lease that is no longer in force.
    pub fn lease_lost() -> Self {
        Refusal::new(
            BackendErrorKind::LeaseLost,
            "our lease expired, was released, broken or taken over",
        )
    }

    /// `LeaseHeld`, naming the holder as far as the backend knows it.
    pub fn lease_held(holder: &str) -> Self {
        Refusal::new(
            BackendErrorKind::LeaseHeld,
            format!("the blob is leased by {holder}"),
        )
    }

    /// `Invalid`: a range that does not lie within a blob of `size` bytes.
    pub fn beyond_end(offset: u64, len: u64, size: u64) -> Self {
        Refusal::new(
            BackendErrorKind::Invalid,
            format!("{len} bytes at {offset} lie beyond the end of the blob ({size} bytes)"),
        )
    }

    /// The error "`subject`: `op` failed: `why`" (subject names store and blob).
    pub fn at(self, subject: impl fmt::Display, op: impl fmt::Display) -> BackendError {
        BackendError::failed(self.kind, subject, op, self.why)
    }
}

impl BackendError {
    /// The message shape every backend uses: "`subject`: `op` failed: `why`".
    pub(crate) fn failed(
        kind: BackendErrorKind,
        subject: impl fmt::Display,
        op: impl fmt::Display,
        why: impl fmt::Display,
    ) -> Self {
        BackendError::new(kind, format!("{subject}: {op} failed: {why}"))
    }
}

/// Blob names are part of the remote's address, checked by the settings too, so the
/// rule lives below both (src/remote_spec/).
pub use crate::remote_spec::validate_blob_name;

/// Whether `condition` holds for the blob whose current etag is `current` (`None`:
/// the blob does not exist).
pub fn check_condition(condition: &Condition, current: Option<&Etag>) -> Result<(), Refusal> {
    match (condition, current) {
        (Condition::Create, None) => Ok(()),
        (Condition::Create, Some(cur)) => Err(Refusal::new(
            BackendErrorKind::AlreadyExists,
            format!("the blob already exists (etag {cur})"),
        )),
        (Condition::Match(_), None) => Err(Refusal::missing()),
        (Condition::Match(want), Some(cur)) => check_version(want, cur),
    }
}

/// `ConditionFailed` unless the blob is still at version `want`.
pub fn check_version(want: &Etag, current: &Etag) -> Result<(), Refusal> {
    if want == current {
        Ok(())
    } else {
        Err(Refusal::new(
            BackendErrorKind::ConditionFailed,
            format!("expected etag {want} but the blob is at {current}"),
        ))
    }
}

/// Whether a write carrying `ours` may proceed while the lease in force has the
/// token `held` (`None`: no live lease). `holder` describes the holder for the
/// message when somebody else's lease blocks a write that carried none.
pub fn check_write_lease(
    ours: Option<&LeaseId>,
    held: Option<&str>,
    holder: impl FnOnce() -> String,
) -> Result<(), Refusal> {
    match (ours, held) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(Refusal::lease_held(&holder())),
        (Some(ours), Some(held)) if held == ours.0 => Ok(()),
        (Some(_), _) => Err(Refusal::lease_lost()),
    }
}

/// Every id managedblob stages has [`BLOCK_ID_LEN`] bytes (Azure wants one length
/// per blob).
pub fn check_block_id(id: &[u8]) -> Result<(), Refusal> {
    if id.len() == BLOCK_ID_LEN {
        Ok(())
    } else {
        Err(Refusal::new(
            BackendErrorKind::Invalid,
            format!(
                "a block id must have {BLOCK_ID_LEN} bytes, not {}",
                id.len()
            ),
        ))
    }
}

/// The buffer length for a read of `len` bytes at `offset` of a blob of `size`
/// bytes: `Invalid` when the range leaves the blob.
pub fn check_range(offset: u64, len: u64, size: u64) -> Result<usize, Refusal> {
    match offset.checked_add(len) {
        Some(end) if end <= size => buffer_len(len),
        _ => Err(Refusal::beyond_end(offset, len, size)),
    }
}

/// `len` as a buffer length: `Permanent` where it does not fit in memory.
pub fn buffer_len(len: u64) -> Result<usize, Refusal> {
    usize::try_from(len).map_err(|_| {
        Refusal::new(
            BackendErrorKind::Permanent,
            format!("{len} bytes do not fit in memory"),
        )
    })
}

/// `Permanent`: an upload's source ended before its announced length (the write is
/// abandoned before anything is committed).
pub fn short_source(got: u64, len: u64) -> Refusal {
    Refusal::new(
        BackendErrorKind::Permanent,
        format!("the source ended after {got} of {len} bytes; nothing was written"),
    )
}

/// Read exactly `len` bytes of an upload's `source` into memory (the stores that hold
/// an upload in memory: Azure, and the memory test double).
#[cfg(any(feature = "azure", test, feature = "testing"))]
pub fn read_exactly(source: &mut dyn std::io::Read, len: u64) -> Result<Vec<u8>, Refusal> {
    use std::io::Read;
    // Grown as bytes arrive: a source may announce more than it has.
    let mut data = Vec::with_capacity(buffer_len(len)?.min(64 << 20));
    Read::take(source, len)
        .read_to_end(&mut data)
        .map_err(|e| {
            Refusal::new(
                BackendErrorKind::Permanent,
                format!("reading the source failed: {e}"),
            )
        })?;
    if data.len() as u64 != len {
        return Err(short_source(data.len() as u64, len));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_names_cannot_escape() {
        for bad in [
            "",
            "..",
            "../x.db",
            "a/../../x",
            "/abs.db",
            "a//b",
            "x\0y",
            "a\\b",
            ".hidden",
            "dir/.lease",
            "trailing/",
        ] {
            assert!(validate_blob_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["corpus.db", "prod/app.db", "a-b_c.sqlite3"] {
            validate_blob_name(good).unwrap();
        }
    }

    #[test]
    fn conditions_refuse_with_the_kind_the_trait_promises() {
        let e1 = Etag("e1".into());
        let e2 = Etag("e2".into());
        let kind =
            |c: &Condition, cur: Option<&Etag>| check_condition(c, cur).err().map(|r| r.kind);
        assert_eq!(kind(&Condition::Create, None), None);
        assert_eq!(
            kind(&Condition::Create, Some(&e1)),
            Some(BackendErrorKind::AlreadyExists)
        );
        let matching = Condition::Match(e1.clone());
        assert_eq!(kind(&matching, None), Some(BackendErrorKind::NotFound));
        assert_eq!(kind(&matching, Some(&e1)), None);
        assert_eq!(
            kind(&matching, Some(&e2)),
            Some(BackendErrorKind::ConditionFailed)
        );
    }

    #[test]
    fn writes_need_the_lease_in_force() {
        let ours = LeaseId("t1".into());
        let holder = || "pid 7".to_string();
        let kind = |l: Option<&LeaseId>, held| check_write_lease(l, held, holder).err();
        assert_eq!(kind(None, None), None);
        assert_eq!(kind(Some(&ours), Some("t1")), None);
        let held = kind(None, Some("t1")).unwrap();
        assert_eq!(held.kind, BackendErrorKind::LeaseHeld);
        assert!(held.why.contains("pid 7"), "{}", held.why);
        for theirs in [None, Some("t2")] {
            assert_eq!(
                kind(Some(&ours), theirs).unwrap().kind,
                BackendErrorKind::LeaseLost
            );
        }
    }

    #[test]
    fn ranges_stay_inside_the_blob() {
        assert_eq!(check_range(2, 3, 5), Ok(3));
        assert_eq!(check_range(5, 0, 5), Ok(0));
        assert_eq!(
            check_range(3, 3, 5).unwrap_err().kind,
            BackendErrorKind::Invalid
        );
        assert_eq!(
            check_range(u64::MAX, 1, 5).unwrap_err().kind,
            BackendErrorKind::Invalid
        );
        assert_eq!(check_block_id(&[0; BLOCK_ID_LEN]), Ok(()));
        assert!(check_block_id(b"short").is_err());
    }

    #[test]
    fn short_sources_are_refused() {
        let e = read_exactly(&mut &b"abc"[..], 5).unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::Permanent);
        assert!(e.why.contains("3 of 5"), "{}", e.why);
        assert_eq!(read_exactly(&mut &b"abcdef"[..], 4).unwrap(), b"abcd");
    }

    #[test]
    fn errors_name_subject_and_operation() {
        let e = Refusal::missing().at("memory remote m/x.db", "download");
        assert_eq!(e.kind, BackendErrorKind::NotFound);
        assert_eq!(
            e.message,
            "memory remote m/x.db: download failed: the blob does not exist"
        );
    }
}
