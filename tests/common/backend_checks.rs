//! Backend conformance helpers and the checks every backend passes unchanged, shared
//! by tests/backend_conformance.rs (memory, local) and tests/azure.rs (Azurite), which
//! include this file as their `backend_checks` module. Checks whose timing or lease
//! ids differ per store stay in those files.

use std::fmt::Debug;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use managedblob::backend::{
    Backend, BackendErrorKind, BackendResult, BlobStat, Condition, LeaseId,
};

/// A lease duration every store accepts.
pub const LONG: Duration = Duration::from_secs(30);

pub fn upload(
    b: &dyn Backend,
    blob: &str,
    data: &[u8],
    condition: &Condition,
    lease: Option<&LeaseId>,
) -> BackendResult<BlobStat> {
    b.upload(blob, &mut &data[..], data.len() as u64, condition, lease)
}

pub fn create(b: &dyn Backend, blob: &str, data: &[u8]) -> BlobStat {
    upload(b, blob, data, &Condition::Create, None).expect("create upload")
}

pub fn download(b: &dyn Backend, blob: &str) -> (Vec<u8>, BlobStat) {
    let mut bytes = Vec::new();
    let stat = b.download(blob, &mut bytes).expect("download");
    (bytes, stat)
}

pub fn current(b: &dyn Backend, blob: &str) -> BlobStat {
    b.stat(blob).expect("stat").expect("blob exists")
}

#[track_caller]
pub fn kind_of<T: Debug>(result: BackendResult<T>) -> BackendErrorKind {
    result.expect_err("expected an error").kind
}

pub fn check_create_then_create_again(b: &dyn Backend) {
    let first = create(b, "c.db", b"first");
    assert_eq!(first.size, 5);
    assert_eq!(current(b, "c.db"), first);
    assert_eq!(
        kind_of(upload(b, "c.db", b"second", &Condition::Create, None)),
        BackendErrorKind::AlreadyExists
    );
    assert_eq!(download(b, "c.db"), (b"first".to_vec(), first));
}

pub fn check_stale_match_fails_and_changes_nothing(b: &dyn Backend) {
    let v1 = create(b, "m.db", b"one");
    let v2 = upload(b, "m.db", b"two", &Condition::Match(v1.etag.clone()), None).unwrap();
    assert_ne!(v1.etag, v2.etag);
    assert_eq!(
        kind_of(upload(
            b,
            "m.db",
            b"three",
            &Condition::Match(v1.etag),
            None
        )),
        BackendErrorKind::ConditionFailed
    );
    assert_eq!(download(b, "m.db"), (b"two".to_vec(), v2));
}

pub fn check_download_matches_stat(b: &dyn Backend) {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let up = create(b, "dir/sub/big.db", &data);
    assert_eq!(up.size, data.len() as u64);
    let (bytes, stat) = download(b, "dir/sub/big.db");
    assert_eq!(bytes, data);
    assert_eq!(stat, up);
    assert_eq!(current(b, "dir/sub/big.db"), up);
    let empty = create(b, "empty.db", b"");
    assert_eq!(download(b, "empty.db"), (Vec::new(), empty));
}

pub fn check_short_source_changes_nothing(b: &dyn Backend) {
    let v1 = create(b, "s.db", b"keep");
    let result = b.upload(
        "s.db",
        &mut &b"short"[..],
        100,
        &Condition::Match(v1.etag.clone()),
        None,
    );
    assert!(result.is_err());
    assert_eq!(download(b, "s.db"), (b"keep".to_vec(), v1));
}

pub fn check_invalid_names_rejected_everywhere(b: &dyn Backend) {
    let lease = LeaseId("f".repeat(32));
    for name in ["../x", "a/../../b", "x\0y", ".hidden", "", "/abs", "a//b"] {
        let invalid = |kind: BackendErrorKind, what: &str| {
            assert_eq!(kind, BackendErrorKind::Invalid, "{what} accepted {name:?}");
        };
        invalid(kind_of(b.stat(name)), "stat");
        invalid(kind_of(b.download(name, &mut Vec::new())), "download");
        invalid(
            kind_of(upload(b, name, b"x", &Condition::Create, None)),
            "upload",
        );
        invalid(kind_of(b.acquire_lease(name, LONG)), "acquire");
        invalid(kind_of(b.renew_lease(name, &lease, LONG)), "renew");
        invalid(kind_of(b.release_lease(name, &lease)), "release");
        invalid(kind_of(b.break_lease(name)), "break");
    }
}

pub fn check_concurrent_matches_have_one_winner(b: &dyn Backend) {
    let mut stat = create(b, "race.db", b"0000");
    for round in 0..10u8 {
        let winners = Mutex::new(Vec::new());
        thread::scope(|s| {
            for t in 0..8u8 {
                let (winners, cond) = (&winners, Condition::Match(stat.etag.clone()));
                s.spawn(move || {
                    let data = [round, t, round, t];
                    match upload(b, "race.db", &data, &cond, None) {
                        Ok(won) => winners.lock().unwrap().push((data, won)),
                        Err(e) => assert_eq!(e.kind, BackendErrorKind::ConditionFailed, "{e}"),
                    }
                });
            }
        });
        let winners = winners.into_inner().unwrap();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let (data, won) = winners.into_iter().next().unwrap();
        assert_eq!(download(b, "race.db"), (data.to_vec(), won.clone()));
        stat = won;
    }
}
