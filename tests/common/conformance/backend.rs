//! The promises of `managedblob::internal::backend::Backend` every store keeps: conditional
//! writes, etags, leases, names. Each check takes a fresh, empty [`Store`]; where
//! stores differ in shape (etags, lease ids, the shortest lease) the check reads
//! [`Store::caps`].

use std::collections::HashSet;
use std::thread;
use std::time::Duration;

use managedblob::internal::backend::{BackendErrorKind, BlobStat, Condition, Etag, LeaseId};

use super::*;

pub fn check_missing_blob(store: &Store) {
    let b = &**store;
    assert_eq!(b.stat("missing.db").unwrap(), None);
    assert_eq!(b.stat("no/such/dir/missing.db").unwrap(), None);
    assert_eq!(
        kind_of(b.download("missing.db", &mut Vec::new())),
        BackendErrorKind::NotFound
    );
    assert_eq!(
        kind_of(upload(
            b,
            "missing.db",
            b"x",
            &Condition::Match(Etag(store.caps.fake_etag.into())),
            None
        )),
        BackendErrorKind::NotFound
    );
    assert_eq!(
        kind_of(b.acquire_lease("missing.db", LONG)),
        BackendErrorKind::NotFound
    );
    assert_eq!(b.stat("missing.db").unwrap(), None);
}

pub fn check_every_upload_gets_a_new_etag(store: &Store) {
    let b = &**store;
    let mut stat = create(b, "e.db", b"aaaa");
    let mut seen = HashSet::from([stat.etag.clone()]);
    for i in 0..100u32 {
        let data = i.to_le_bytes();
        stat = upload(b, "e.db", &data, &Condition::Match(stat.etag.clone()), None).unwrap();
        assert!(
            seen.insert(stat.etag.clone()),
            "etag {} repeated",
            stat.etag
        );
        assert_eq!(current(b, "e.db"), stat);
    }
    // Identical content does not reuse an etag either.
    for _ in 0..20 {
        stat = upload(b, "e.db", b"same", &Condition::Match(stat.etag), None).unwrap();
        assert!(seen.insert(stat.etag.clone()));
    }
}

pub fn check_lease_lifecycle(store: &Store) {
    let b = &**store;
    let v1 = create(b, "l.db", b"v1");
    let lease = b.acquire_lease("l.db", LONG).unwrap();
    assert_lease_on(&lease, &v1);
    assert_eq!(
        kind_of(b.acquire_lease("l.db", LONG)),
        BackendErrorKind::LeaseHeld
    );
    let at = |s: &BlobStat| Condition::Match(s.etag.clone());
    assert_eq!(
        kind_of(upload(b, "l.db", b"x", &at(&v1), None)),
        BackendErrorKind::LeaseHeld
    );
    let wrong = LeaseId(store.caps.wrong_lease.into());
    assert_eq!(
        kind_of(upload(b, "l.db", b"x", &at(&v1), Some(&wrong))),
        BackendErrorKind::LeaseLost
    );
    assert_eq!(download(b, "l.db").0, b"v1");
    let v2 = upload(b, "l.db", b"v2", &at(&v1), Some(&lease.id)).unwrap();
    b.renew_lease("l.db", &lease.id, LONG).unwrap();
    assert_eq!(
        kind_of(b.renew_lease("l.db", &wrong, LONG)),
        BackendErrorKind::LeaseLost
    );
    b.release_lease("l.db", &wrong).unwrap(); // not ours: a no-op
    assert_eq!(
        kind_of(b.acquire_lease("l.db", LONG)),
        BackendErrorKind::LeaseHeld
    );
    b.release_lease("l.db", &lease.id).unwrap();
    b.release_lease("l.db", &lease.id).unwrap(); // already gone: still fine
    let v3 = upload(b, "l.db", b"v3", &at(&v2), None).unwrap();
    assert_eq!(
        kind_of(b.renew_lease("l.db", &lease.id, LONG)),
        BackendErrorKind::LeaseLost
    );
    assert_eq!(
        kind_of(upload(b, "l.db", b"x", &at(&v3), Some(&lease.id))),
        BackendErrorKind::LeaseLost
    );

    let taken = b.acquire_lease("l.db", LONG).unwrap();
    assert_ne!(taken.id, lease.id);
    b.break_lease("l.db").unwrap();
    b.break_lease("l.db").unwrap();
    assert_eq!(
        kind_of(upload(b, "l.db", b"x", &at(&v3), Some(&taken.id))),
        BackendErrorKind::LeaseLost
    );
    let again = b.acquire_lease("l.db", LONG).unwrap();
    assert_lease_on(&again, &v3);
    b.release_lease("l.db", &again.id).unwrap();
}

/// A lease shorter than the store's shortest is rounded up to it (Azure: 15 s), so
/// the wait for expiry is the longer of the two, with a margin.
pub fn check_lease_expiry(store: &Store) {
    let b = &**store;
    const ASKED: Duration = Duration::from_millis(200);
    let v1 = create(b, "x.db", b"v1");
    let old = b.acquire_lease("x.db", ASKED).unwrap();
    let wait = if store.caps.min_lease > ASKED {
        assert_eq!(
            kind_of(upload(
                b,
                "x.db",
                b"v2",
                &Condition::Match(v1.etag.clone()),
                None
            )),
            BackendErrorKind::LeaseHeld,
            "a 200 ms lease must have been rounded up to the store's minimum"
        );
        store.caps.min_lease + Duration::from_secs(1)
    } else {
        Duration::from_millis(350)
    };
    thread::sleep(wait);
    // An expired lease fences nobody...
    let v2 = upload(b, "x.db", b"v2", &Condition::Match(v1.etag), None).unwrap();
    // ...cannot be renewed once the blob was written, and can be taken over.
    assert_eq!(
        kind_of(b.renew_lease("x.db", &old.id, LONG)),
        BackendErrorKind::LeaseLost
    );
    let new = b.acquire_lease("x.db", LONG).unwrap();
    assert_lease_on(&new, &v2);
    assert_eq!(
        kind_of(upload(
            b,
            "x.db",
            b"late",
            &Condition::Match(v2.etag.clone()),
            Some(&old.id)
        )),
        BackendErrorKind::LeaseLost
    );
    upload(b, "x.db", b"v3", &Condition::Match(v2.etag), Some(&new.id)).unwrap();
}
pub fn check_create_then_create_again(store: &Store) {
    let b = &**store;
    let first = create(b, "c.db", b"first");
    assert_eq!(first.size, 5);
    assert_eq!(current(b, "c.db"), first);
    assert_eq!(
        kind_of(upload(b, "c.db", b"second", &Condition::Create, None)),
        BackendErrorKind::AlreadyExists
    );
    assert_eq!(download(b, "c.db"), (b"first".to_vec(), first));
}

pub fn check_stale_match_fails_and_changes_nothing(store: &Store) {
    let b = &**store;
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

pub fn check_download_matches_stat(store: &Store) {
    let b = &**store;
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

pub fn check_short_source_changes_nothing(store: &Store) {
    let b = &**store;
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

pub fn check_invalid_names_rejected_everywhere(store: &Store) {
    let b = &**store;
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

pub fn check_concurrent_matches_have_one_winner(store: &Store) {
    let b = &**store;
    let stat = create(b, "race.db", b"0000");
    one_winner_per_round(
        stat,
        10,
        8,
        |data, cond| upload(b, "race.db", data, cond, None),
        |data, won| assert_eq!(download(b, "race.db"), (data.to_vec(), won.clone())),
    );
}

/// The waiter queue beside a blob (fair turns between hosts' writers): absent until
/// first written, replaced only from the version the writer read, each replace a
/// new version that `waiter_mark` reads too; never a version of the blob itself.
pub fn check_waiter_queue_replaces_conditionally(store: &Store) {
    let b = &**store;
    assert_eq!(b.waiter_queue("q.db").unwrap(), None);
    assert_eq!(b.waiter_mark("q.db").unwrap(), None);
    let v1 = b
        .replace_waiter_queue("q.db", "a 1\n", None)
        .unwrap()
        .expect("the store keeps a queue");
    let q = b.waiter_queue("q.db").unwrap().expect("written");
    assert_eq!((q.text.as_str(), &q.version), ("a 1\n", &v1));
    assert_eq!(b.waiter_mark("q.db").unwrap().as_ref(), Some(&v1));
    // A second writer that read no queue lost the race to create it.
    assert_eq!(
        kind_of(b.replace_waiter_queue("q.db", "b 1\n", None)),
        BackendErrorKind::AlreadyExists
    );
    let v2 = b
        .replace_waiter_queue("q.db", "a 1\nb 1\n", Some(&v1))
        .unwrap()
        .unwrap();
    assert_ne!(v2, v1);
    // A replace from the old version changes nothing.
    assert_eq!(
        kind_of(b.replace_waiter_queue("q.db", "c 1\n", Some(&v1))),
        BackendErrorKind::ConditionFailed
    );
    let q = b.waiter_queue("q.db").unwrap().unwrap();
    assert_eq!((q.text.as_str(), &q.version), ("a 1\nb 1\n", &v2));
    assert_eq!(b.waiter_mark("q.db").unwrap(), Some(v2));
    // The queue is no blob of its own name's database.
    assert_eq!(b.stat("q.db").unwrap(), None);
    assert_eq!(b.waiter_queue("other.db").unwrap(), None);
}
