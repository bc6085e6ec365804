//! The memory backend (the test double behind `remote=memory:<name>`): the
//! conformance suite, then its fault-injection and test helpers.

use std::time::Duration;

use common::conformance::blocks::{blocks, id, ids_of, listed, stage_all};
use common::conformance::*;
use managedblob::internal::backend::memory::{MemoryBackend, Op};
use managedblob::internal::backend::{Backend, BackendErrorKind, Condition, Etag};

common::conformance::suite!(memory);

// ---- memory only ------------------------------------------------------------

#[test]
fn memory_injected_faults_have_no_side_effects() {
    let m = MemoryBackend::new();
    let v1 = create(&m, "f.db", b"v1");
    m.fail_next(Op::Upload, BackendErrorKind::Transient, 2);
    for _ in 0..2 {
        let err = upload(&m, "f.db", b"v2", &Condition::Match(v1.etag.clone()), None).unwrap_err();
        assert!(err.is_transient());
        assert!(err.message.contains("injected fault"), "{err}");
    }
    assert_eq!(m.get("f.db").unwrap(), b"v1");
    let v2 = upload(&m, "f.db", b"v2", &Condition::Match(v1.etag), None).unwrap();
    assert_eq!(m.calls(Op::Upload), 4);

    m.fail_next(Op::AcquireLease, BackendErrorKind::Denied, 1);
    assert_eq!(
        kind_of(m.acquire_lease("f.db", LONG)),
        BackendErrorKind::Denied
    );
    assert!(!m.lease_holder_exists("f.db"));
    let lease = m.acquire_lease("f.db", LONG).unwrap();
    assert_eq!((&lease.etag, lease.size), (&v2.etag, Some(v2.size)));
    assert_eq!(m.calls(Op::AcquireLease), 2);

    m.fail_next(Op::ReleaseLease, BackendErrorKind::Transient, 1);
    assert!(m.release_lease("f.db", &lease.id).is_err());
    assert!(m.lease_holder_exists("f.db"));

    m.fail_next(Op::Download, BackendErrorKind::NotFound, 1);
    assert_eq!(
        kind_of(m.download("f.db", &mut Vec::new())),
        BackendErrorKind::NotFound
    );
    assert_eq!(download(&m, "f.db").0, b"v2");
    assert_eq!(m.calls(Op::Download), 2);
    assert_eq!(m.calls(Op::Stat), 0);
}

#[test]
fn memory_upload_can_land_and_still_fail() {
    let m = MemoryBackend::new();
    let v1 = create(&m, "l.db", b"v1");
    m.land_then_fail_next_upload();
    // A write that fails on its own merits does not use up the fault.
    assert_eq!(
        kind_of(upload(&m, "l.db", b"x", &Condition::Create, None)),
        BackendErrorKind::AlreadyExists
    );
    let err = upload(&m, "l.db", b"v2", &Condition::Match(v1.etag.clone()), None).unwrap_err();
    assert!(err.is_transient());
    assert_eq!(m.get("l.db").unwrap(), b"v2");
    // The retry with the old etag now fails: the caller must check what landed.
    assert_eq!(
        kind_of(upload(&m, "l.db", b"v2", &Condition::Match(v1.etag), None)),
        BackendErrorKind::ConditionFailed
    );
}

#[test]
fn memory_foreign_put_and_expiry_helpers() {
    let m = MemoryBackend::named("conformance-helpers");
    let v1 = create(&*m, "h.db", b"v1");
    let lease = m.acquire_lease("h.db", LONG).unwrap();
    m.put("h.db", b"foreign");
    let now = current(&*m, "h.db");
    assert_ne!(now.etag, v1.etag);
    assert_eq!(
        kind_of(upload(
            &*m,
            "h.db",
            b"x",
            &Condition::Match(v1.etag),
            Some(&lease.id)
        )),
        BackendErrorKind::ConditionFailed
    );
    m.expire_lease("h.db");
    assert!(!m.lease_holder_exists("h.db"));
    assert_eq!(
        kind_of(upload(
            &*m,
            "h.db",
            b"x",
            &Condition::Match(now.etag),
            Some(&lease.id)
        )),
        BackendErrorKind::LeaseLost
    );
    assert_eq!(
        MemoryBackend::named("conformance-helpers")
            .get("h.db")
            .unwrap(),
        b"foreign"
    );
}

#[test]
fn memory_latency_delays_calls() {
    let m = MemoryBackend::new();
    m.set_latency(Duration::from_millis(50));
    let start = std::time::Instant::now();
    assert_eq!(m.stat("x.db").unwrap(), None);
    assert!(start.elapsed() >= Duration::from_millis(50));
}

// ---- blocks: memory only ------------------------------------------------------------

#[test]
fn memory_block_faults_have_no_side_effects() {
    let m = MemoryBackend::new();
    let bl = blocks(&m);
    let staged = stage_all(&m, "f.db", &[b"v1"], None);
    let v1 = bl
        .commit_blocks("f.db", &ids_of(&staged), &Condition::Create, None)
        .unwrap();
    let data = b"v2".to_vec();
    let id2 = id(0, &data);

    m.fail_next(Op::StageBlock, BackendErrorKind::Transient, 1);
    assert!(bl
        .stage_block("f.db", &id2, data.clone(), None)
        .unwrap_err()
        .is_transient());
    assert!(m.staged_blocks("f.db").is_empty());
    bl.stage_block("f.db", &id2, data, None).unwrap();
    assert_eq!(m.staged_blocks("f.db"), vec![id2.clone()]);
    assert_eq!(m.calls(Op::StageBlock), 3);

    let at_v1 = Condition::Match(v1.etag.clone());
    m.fail_next(Op::CommitBlocks, BackendErrorKind::Transient, 2);
    for _ in 0..2 {
        let err = bl
            .commit_blocks("f.db", std::slice::from_ref(&id2), &at_v1, None)
            .unwrap_err();
        assert!(
            err.is_transient() && err.message.contains("injected fault"),
            "{err}"
        );
    }
    assert_eq!(m.get("f.db").unwrap(), b"v1");
    assert_eq!(m.staged_blocks("f.db"), vec![id2.clone()]);

    m.fail_next(Op::BlockList, BackendErrorKind::NotFound, 1);
    assert_eq!(kind_of(bl.block_list("f.db")), BackendErrorKind::NotFound);
    assert_eq!(listed(&m, "f.db").0, v1);
    m.set_fail_rate(Op::ReadRange, 1.0);
    assert!(bl
        .read_range("f.db", 0, 2, &v1.etag)
        .unwrap_err()
        .is_transient());
    m.set_fail_rate(Op::ReadRange, 0.0);
    assert_eq!(bl.read_range("f.db", 0, 2, &v1.etag).unwrap(), b"v1");
    assert_eq!(m.calls(Op::ReadRange), 2);
    assert_eq!(m.calls(Op::BlockList), 2);

    // A commit can land and still fail, like an upload.
    m.land_then_fail_next_upload();
    assert_eq!(
        kind_of(bl.commit_blocks("f.db", std::slice::from_ref(&id2), &Condition::Create, None)),
        BackendErrorKind::AlreadyExists
    );
    let err = bl
        .commit_blocks("f.db", std::slice::from_ref(&id2), &at_v1, None)
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(m.get("f.db").unwrap(), b"v2");
    let (v2, list) = listed(&m, "f.db");
    assert_eq!(list, vec![(id2.clone(), 2)]);
    assert_eq!(
        kind_of(bl.commit_blocks("f.db", std::slice::from_ref(&id2), &at_v1, None)),
        BackendErrorKind::ConditionFailed
    );
    // The fault is used up.
    bl.commit_blocks("f.db", &[id2], &Condition::Match(v2.etag), None)
        .unwrap();
    assert_eq!(m.calls(Op::CommitBlocks), 7);
    assert_eq!(m.calls(Op::Upload), 0);
}

#[test]
fn memory_staged_blocks_are_discarded_like_azure() {
    let m = MemoryBackend::new();
    let bl = blocks(&m);
    let v1 = create(&m, "d.db", b"v1");
    let staged = stage_all(&m, "d.db", &[b"a", b"b"], None);
    assert_eq!(m.staged_blocks("d.db").len(), 2);
    // A failed commit keeps them...
    let wrong = Condition::Match(Etag("m-0".into()));
    assert_eq!(
        kind_of(bl.commit_blocks("d.db", &ids_of(&staged), &wrong, None)),
        BackendErrorKind::ConditionFailed
    );
    assert_eq!(m.staged_blocks("d.db").len(), 2);
    // ...a successful one discards all of them, named or not.
    let v2 = bl
        .commit_blocks(
            "d.db",
            &ids_of(&staged[..1]),
            &Condition::Match(v1.etag),
            None,
        )
        .unwrap();
    assert!(m.staged_blocks("d.db").is_empty());
    assert_eq!(m.get("d.db").unwrap(), b"a");
    // A whole upload, or a foreign write, discards them too.
    stage_all(&m, "d.db", &[b"c"], None);
    let v3 = upload(&m, "d.db", b"whole", &Condition::Match(v2.etag), None).unwrap();
    assert!(m.staged_blocks("d.db").is_empty());
    assert_eq!(listed(&m, "d.db"), (v3, Vec::new()));
    stage_all(&m, "d.db", &[b"d"], None);
    m.put("d.db", b"foreign");
    assert!(m.staged_blocks("d.db").is_empty());
    assert!(listed(&m, "d.db").1.is_empty());
}
