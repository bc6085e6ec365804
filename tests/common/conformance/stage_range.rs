//! `Blocks::stage_from_range`: a block staged from a range of the blob's current
//! version, pinned by its etag, without the bytes passing through the caller. A
//! store that does it ([`Caps::stages_from_range`]: memory, local) stages exactly
//! those bytes and refuses a moved blob, a range past the end, a missing blob and a
//! write past the lease as `stage` would; one that does not (Azurite, which lacks
//! Put Block From URL) answers `Unsupported`, changes nothing, and says so from
//! then on without asking the service again.

use managedblob::internal::backend::{
    BackendErrorKind, Condition, Etag, RangeStaging, SourceRange, StagedFromRange,
};

use super::blocks::{blocks, chunk, create_by_blocks, id, ids_of, listed};
use super::*;

fn range(offset: u64, len: u64, etag: &Etag) -> SourceRange<'_> {
    SourceRange { offset, len, etag }
}

/// HTTP requests so far, where the store counts them.
fn http_total(b: &dyn Backend) -> Option<u64> {
    b.http_requests()
        .map(|counts| counts.iter().map(|(_, n)| n).sum())
}

pub fn check_blocks_stage_from_range(store: &Store) {
    if !store.caps.blocks {
        return;
    }
    if store.caps.stages_from_range {
        stages_from_range(store);
    } else {
        answers_unsupported(store);
    }
}

fn stages_from_range(store: &Store) {
    let b = &**store;
    let bl = blocks(b);
    assert_eq!(bl.range_staging(), RangeStaging::Supported);
    let (c0, c1, c2) = (chunk(3000, 1), chunk(3000, 2), chunk(1234, 3));
    let (staged, v1) = create_by_blocks(b, "sr.db", &[&c0, &c1, &c2]);
    let whole = [c0.clone(), c1.clone(), c2.clone()].concat();

    // A chunk laid across blocks 0 and 1, staged from the base, then committed.
    let across = &whole[1000..5000];
    let id_across = id(7, across);
    let got = bl.stage_from_range("sr.db", &id_across, range(1000, 4000, &v1.etag), None);
    assert_eq!(got.unwrap(), StagedFromRange::Staged);
    let list = vec![id_across.clone(), staged[2].0.clone()];
    let v2 = bl
        .commit_blocks("sr.db", &list, &Condition::Match(v1.etag.clone()), None)
        .unwrap();
    let want = [across, &c2[..]].concat();
    assert_eq!(v2.size, want.len() as u64);
    assert_eq!(download(b, "sr.db"), (want.clone(), v2.clone()));
    assert_eq!(
        listed(b, "sr.db").1,
        vec![(id_across, 4000), staged[2].clone()]
    );

    // The source must still be that version: an old or unknown etag is refused and
    // stages nothing (a commit naming the id finds no such block).
    let id_stale = id(8, &c0);
    for stale in [v1.etag.clone(), Etag(store.caps.fake_etag.into())] {
        let refused = bl.stage_from_range("sr.db", &id_stale, range(0, 3000, &stale), None);
        assert_eq!(
            kind_of(refused),
            BackendErrorKind::ConditionFailed,
            "{stale:?}"
        );
    }
    let at_v2 = Condition::Match(v2.etag.clone());
    assert!(bl
        .commit_blocks("sr.db", std::slice::from_ref(&id_stale), &at_v2, None)
        .is_err());
    assert_eq!(current(b, "sr.db"), v2, "nothing changed");

    // A range past the end, and a missing blob.
    let past = bl.stage_from_range("sr.db", &id_stale, range(4000, 1235, &v2.etag), None);
    assert_eq!(kind_of(past), BackendErrorKind::Invalid);
    let missing = bl.stage_from_range("none.db", &id_stale, range(0, 1, &v2.etag), None);
    assert_eq!(kind_of(missing), BackendErrorKind::NotFound);

    // Under a lease, as for `stage`: refused without it, staged with it.
    let lease = b.acquire_lease("sr.db", LONG).unwrap();
    let unleased = bl.stage_from_range("sr.db", &id_stale, range(0, 3000, &v2.etag), None);
    assert_eq!(kind_of(unleased), BackendErrorKind::LeaseHeld);
    let leased = bl.stage_from_range(
        "sr.db",
        &id_stale,
        range(0, 3000, &v2.etag),
        Some(&lease.id),
    );
    assert_eq!(leased.unwrap(), StagedFromRange::Staged);
    let v3 = bl
        .commit_blocks("sr.db", &[id_stale], &at_v2, Some(&lease.id))
        .unwrap();
    assert_eq!(download(b, "sr.db"), (want[..3000].to_vec(), v3));
    b.release_lease("sr.db", &lease.id).unwrap();
}

fn answers_unsupported(store: &Store) {
    let b = &**store;
    let bl = blocks(b);
    assert_ne!(bl.range_staging(), RangeStaging::Supported);
    let (c0, c1) = (chunk(3000, 1), chunk(3000, 2));
    let (staged, v1) = create_by_blocks(b, "sr.db", &[&c0, &c1]);
    let id_new = id(7, &c1);
    let got = bl.stage_from_range("sr.db", &id_new, range(3000, 3000, &v1.etag), None);
    assert_eq!(got.unwrap(), StagedFromRange::Unsupported);
    assert_eq!(bl.range_staging(), RangeStaging::Unsupported, "learned");

    // Without side effects: the blob and its list are as they were, and no block of
    // that id was staged.
    assert_eq!(listed(b, "sr.db"), (v1.clone(), staged.clone()));
    let at_v1 = Condition::Match(v1.etag.clone());
    assert!(bl
        .commit_blocks("sr.db", std::slice::from_ref(&id_new), &at_v1, None)
        .is_err());
    assert_eq!(current(b, "sr.db"), v1);
    assert_eq!(download(b, "sr.db").0, [c0, c1].concat());

    // From then on the answer comes without a request.
    let before = http_total(b);
    let again = bl.stage_from_range("sr.db", &id_new, range(0, 3000, &v1.etag), None);
    assert_eq!(again.unwrap(), StagedFromRange::Unsupported);
    assert_eq!(http_total(b), before, "no request once unsupported");
    assert_eq!(ids_of(&listed(b, "sr.db").1), ids_of(&staged));
}
