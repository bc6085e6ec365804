//! The promises of `managedblob::internal::backend::Blocks` (delta sync's staged blocks, block
//! lists and ranged reads), on every store that has the capability ([`Caps::blocks`]);
//! a store without it must say so.

use managedblob::internal::backend::{
    Backend, BackendErrorKind, BlobStat, BlockId, Blocks, Condition, Etag, LeaseId,
};

use super::*;
use managedblob::internal::delta::ChunkId;

/// Azure-style lease ids: a wrong one must still look like a lease id.
const WRONG_LEASE: &str = "00000000-0000-0000-0000-000000000000";

/// The store's blocks; None for a store without the capability, which must not
/// offer them.
fn blocks_of(store: &Store) -> Option<&dyn Blocks> {
    has_blocks(store).then(|| blocks(&**store))
}

/// Whether the store has blocks; one without them must not offer them.
fn has_blocks(b: &Store) -> bool {
    if !b.caps.blocks {
        assert!(
            b.blocks().is_none(),
            "a store without the block capability offers blocks"
        );
    }
    b.caps.blocks
}

pub fn blocks(b: &dyn Backend) -> &dyn Blocks {
    b.blocks().expect("the backend has the block capability")
}

pub fn chunk(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64 * 2_654_435_761) >> 11) as u8 ^ seed)
        .collect()
}

pub fn id(index: u32, data: &[u8]) -> BlockId {
    ChunkId::new(index, data).as_bytes().to_vec()
}

/// Stage `chunks` as blocks 0.. of `blob`; their ids and sizes, in order.
pub fn stage_all(
    b: &dyn Backend,
    blob: &str,
    chunks: &[&[u8]],
    lease: Option<&LeaseId>,
) -> Vec<(BlockId, u64)> {
    chunks
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let id = id(i as u32, data);
            blocks(b)
                .stage_block(blob, &id, data.to_vec(), lease)
                .expect("stage");
            (id, data.len() as u64)
        })
        .collect()
}

/// Create `blob` from `chunks` staged and committed as blocks 0..: the blocks (ids
/// and sizes) and the new version.
pub fn create_by_blocks(
    b: &dyn Backend,
    blob: &str,
    chunks: &[&[u8]],
) -> (Vec<(BlockId, u64)>, BlobStat) {
    let staged = stage_all(b, blob, chunks, None);
    let stat = blocks(b)
        .commit_blocks(blob, &ids_of(&staged), &Condition::Create, None)
        .expect("commit of new blocks");
    (staged, stat)
}

pub fn ids_of(list: &[(BlockId, u64)]) -> Vec<BlockId> {
    list.iter().map(|(id, _)| id.clone()).collect()
}

pub fn listed(b: &dyn Backend, blob: &str) -> (BlobStat, Vec<(BlockId, u64)>) {
    blocks(b)
        .block_list(blob)
        .expect("block list")
        .expect("the blob exists")
}

pub fn check_blocks_commit_list_and_read(store: &Store) {
    let b = &**store;
    let Some(bl) = blocks_of(store) else { return };
    let (c0, c1, c2) = (chunk(3000, 1), chunk(3000, 2), chunk(1234, 3));
    let staged = stage_all(b, "blk.db", &[&c0, &c1, &c2], None);
    // Staged blocks are invisible.
    assert_eq!(b.stat("blk.db").unwrap(), None);
    assert_eq!(bl.block_list("blk.db").unwrap(), None);
    let v1 = bl
        .commit_blocks("blk.db", &ids_of(&staged), &Condition::Create, None)
        .unwrap();
    assert_eq!(v1.size, 3000 + 3000 + 1234);
    assert_eq!(current(b, "blk.db"), v1);
    assert_eq!(listed(b, "blk.db"), (v1.clone(), staged.clone()));
    let whole = [c0.clone(), c1.clone(), c2.clone()].concat();
    assert_eq!(download(b, "blk.db"), (whole.clone(), v1.clone()));
    assert_eq!(bl.read_range("blk.db", 3000, 3000, &v1.etag).unwrap(), c1);
    assert_eq!(bl.read_range("blk.db", 6000, 1234, &v1.etag).unwrap(), c2);
    assert_eq!(
        bl.read_range("blk.db", 10, 7, &v1.etag).unwrap(),
        &whole[10..17]
    );
    assert_eq!(
        kind_of(bl.read_range("blk.db", 6000, 1235, &v1.etag)),
        BackendErrorKind::Invalid
    );

    // Replace block 1 only; 0 and 2 are named by their committed ids.
    let c1b = chunk(3000, 4);
    let id1b = id(1, &c1b);
    bl.stage_block("blk.db", &id1b, c1b.clone(), None).unwrap();
    let ids2 = vec![staged[0].0.clone(), id1b.clone(), staged[2].0.clone()];
    let v2 = bl
        .commit_blocks("blk.db", &ids2, &Condition::Match(v1.etag.clone()), None)
        .unwrap();
    assert_ne!(v2.etag, v1.etag);
    assert_eq!(v2.size, v1.size);
    let whole2 = [c0.clone(), c1b.clone(), c2.clone()].concat();
    assert_eq!(download(b, "blk.db"), (whole2.clone(), v2.clone()));
    let (stat, list) = listed(b, "blk.db");
    assert_eq!(stat, v2);
    assert_eq!(
        list,
        vec![
            (staged[0].0.clone(), 3000),
            (id1b.clone(), 3000),
            (staged[2].0.clone(), 1234)
        ]
    );
    assert_eq!(bl.read_range("blk.db", 3000, 3000, &v2.etag).unwrap(), c1b);
    // The old version can no longer be read.
    assert_eq!(
        kind_of(bl.read_range("blk.db", 0, 10, &v1.etag)),
        BackendErrorKind::ConditionFailed
    );

    // A stale etag fails and changes nothing.
    let c0b = chunk(3000, 5);
    let id0b = id(0, &c0b);
    bl.stage_block("blk.db", &id0b, c0b, None).unwrap();
    let stale = vec![id0b, id1b.clone(), staged[2].0.clone()];
    assert_eq!(
        kind_of(bl.commit_blocks("blk.db", &stale, &Condition::Match(v1.etag.clone()), None)),
        BackendErrorKind::ConditionFailed
    );
    assert_eq!(download(b, "blk.db"), (whole2.clone(), v2.clone()));
    assert_eq!(listed(b, "blk.db").0, v2);

    // A block that is neither staged nor committed: refused, nothing changes.
    let unknown = vec![staged[0].0.clone(), id(9, b"never staged")];
    let err = bl
        .commit_blocks("blk.db", &unknown, &Condition::Match(v2.etag.clone()), None)
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(download(b, "blk.db"), (whole2, v2.clone()));

    // Committed blocks can move and be dropped.
    let moved = vec![staged[2].0.clone(), id1b.clone(), staged[0].0.clone()];
    let v3 = bl
        .commit_blocks("blk.db", &moved, &Condition::Match(v2.etag.clone()), None)
        .unwrap();
    assert_eq!(v3.size, 1234 + 3000 + 3000);
    let whole3 = [c2.clone(), c1b.clone(), c0.clone()].concat();
    assert_eq!(download(b, "blk.db"), (whole3, v3.clone()));
    let dropped = vec![id1b.clone()];
    let v4 = bl
        .commit_blocks("blk.db", &dropped, &Condition::Match(v3.etag.clone()), None)
        .unwrap();
    assert_eq!(download(b, "blk.db"), (c1b.clone(), v4.clone()));
    assert_eq!(listed(b, "blk.db"), (v4.clone(), vec![(id1b, 3000)]));

    // A whole upload leaves no block list (like Azure's Put Blob), and moves the
    // version away from under read_range.
    let v5 = upload(
        b,
        "blk.db",
        b"whole",
        &Condition::Match(v4.etag.clone()),
        None,
    )
    .unwrap();
    assert_eq!(listed(b, "blk.db"), (v5.clone(), Vec::new()));
    assert_eq!(
        kind_of(bl.read_range("blk.db", 0, 10, &v4.etag)),
        BackendErrorKind::ConditionFailed
    );
    assert_eq!(bl.read_range("blk.db", 1, 3, &v5.etag).unwrap(), b"hol");
    // And blocks can be committed over it again.
    let v6 = bl
        .commit_blocks(
            "blk.db",
            &ids_of(&stage_all(b, "blk.db", &[b"again"], None)),
            &Condition::Match(v5.etag),
            None,
        )
        .unwrap();
    assert_eq!(download(b, "blk.db"), (b"again".to_vec(), v6));
}

pub fn check_blocks_create_and_missing(store: &Store) {
    let b = &**store;
    let Some(bl) = blocks_of(store) else { return };
    assert_eq!(bl.block_list("none.db").unwrap(), None);
    assert_eq!(
        kind_of(bl.read_range("none.db", 0, 1, &Etag("x".into()))),
        BackendErrorKind::NotFound
    );
    let staged = stage_all(b, "dir/new.db", &[b"first", b"second"], None);
    assert_eq!(
        kind_of(bl.commit_blocks(
            "dir/new.db",
            &ids_of(&staged),
            &Condition::Match(Etag("whatever".into())),
            None
        )),
        BackendErrorKind::NotFound
    );
    let v1 = bl
        .commit_blocks("dir/new.db", &ids_of(&staged), &Condition::Create, None)
        .unwrap();
    assert_eq!(
        download(b, "dir/new.db"),
        (b"firstsecond".to_vec(), v1.clone())
    );
    let again = stage_all(b, "dir/new.db", &[b"other"], None);
    assert_eq!(
        kind_of(bl.commit_blocks("dir/new.db", &ids_of(&again), &Condition::Create, None)),
        BackendErrorKind::AlreadyExists
    );
    assert_eq!(download(b, "dir/new.db"), (b"firstsecond".to_vec(), v1));
    // An empty list makes an empty blob.
    let empty = bl
        .commit_blocks("empty.db", &[], &Condition::Create, None)
        .unwrap();
    assert_eq!(empty.size, 0);
    assert_eq!(listed(b, "empty.db"), (empty.clone(), Vec::new()));
    assert_eq!(download(b, "empty.db"), (Vec::new(), empty.clone()));
    assert_eq!(bl.read_range("empty.db", 0, 0, &empty.etag).unwrap(), b"");
    // A blob written whole has a version but no block list.
    let whole = create(b, "whole.db", b"written whole");
    assert_eq!(listed(b, "whole.db"), (whole, Vec::new()));
}

pub fn check_blocks_respect_the_lease(store: &Store) {
    let b = &**store;
    let Some(bl) = blocks_of(store) else { return };
    let (first, v1) = create_by_blocks(b, "lb.db", &[b"v1"]);
    let lease = b.acquire_lease("lb.db", LONG).unwrap();
    assert_lease_on(&lease, &v1);
    let wrong = LeaseId(WRONG_LEASE.into());
    let data = b"v2".to_vec();
    let id2 = id(0, &data);
    assert_eq!(
        kind_of(bl.stage_block("lb.db", &id2, data.clone(), None)),
        BackendErrorKind::LeaseHeld
    );
    assert_eq!(
        kind_of(bl.stage_block("lb.db", &id2, data.clone(), Some(&wrong))),
        BackendErrorKind::LeaseLost
    );
    bl.stage_block("lb.db", &id2, data, Some(&lease.id))
        .unwrap();
    let at_v1 = Condition::Match(v1.etag.clone());
    let ids = vec![id2.clone()];
    assert_eq!(
        kind_of(bl.commit_blocks("lb.db", &ids, &at_v1, None)),
        BackendErrorKind::LeaseHeld
    );
    assert_eq!(
        kind_of(bl.commit_blocks("lb.db", &ids, &at_v1, Some(&wrong))),
        BackendErrorKind::LeaseLost
    );
    assert_eq!(download(b, "lb.db"), (b"v1".to_vec(), v1.clone()));
    assert_eq!(listed(b, "lb.db"), (v1.clone(), first));
    let v2 = bl
        .commit_blocks("lb.db", &ids, &at_v1, Some(&lease.id))
        .unwrap();
    // Reads need no lease.
    assert_eq!(bl.read_range("lb.db", 0, 2, &v2.etag).unwrap(), b"v2");
    assert_eq!(listed(b, "lb.db"), (v2.clone(), vec![(id2, 2)]));
    b.release_lease("lb.db", &lease.id).unwrap();
    // A released lease fences nothing, and is no longer ours.
    let v3 = bl
        .commit_blocks("lb.db", &ids, &Condition::Match(v2.etag.clone()), None)
        .unwrap();
    assert_eq!(
        kind_of(bl.commit_blocks("lb.db", &ids, &Condition::Match(v3.etag), Some(&lease.id))),
        BackendErrorKind::LeaseLost
    );
}

/// A commit takes the staged block of an id before the committed one (Azure's
/// "Latest").
pub fn check_blocks_staged_wins_over_committed(store: &Store) {
    let b = &**store;
    let Some(bl) = blocks_of(store) else { return };
    let same = id(0, b"the id");
    bl.stage_block("sw.db", &same, b"old".to_vec(), None)
        .unwrap();
    let v1 = bl
        .commit_blocks(
            "sw.db",
            std::slice::from_ref(&same),
            &Condition::Create,
            None,
        )
        .unwrap();
    bl.stage_block("sw.db", &same, b"newer".to_vec(), None)
        .unwrap();
    let v2 = bl
        .commit_blocks(
            "sw.db",
            &[same.clone(), same.clone()],
            &Condition::Match(v1.etag),
            None,
        )
        .unwrap();
    assert_eq!(download(b, "sw.db"), (b"newernewer".to_vec(), v2.clone()));
    assert_eq!(listed(b, "sw.db"), (v2, vec![(same.clone(), 5), (same, 5)]));
}

pub fn check_blocks_concurrent_commits_have_one_winner(store: &Store) {
    let b = &**store;
    let Some(bl) = blocks_of(store) else { return };
    let (_, stat) = create_by_blocks(b, "rc.db", &[b"0000"]);
    one_winner_per_round(
        stat,
        5,
        4,
        |data, cond| {
            let ids = vec![id(0, data)];
            bl.stage_block("rc.db", &ids[0], data.to_vec(), None)
                .and_then(|()| bl.commit_blocks("rc.db", &ids, cond, None))
        },
        |data, won| {
            assert_eq!(download(b, "rc.db"), (data.to_vec(), won.clone()));
            assert_eq!(listed(b, "rc.db"), (won.clone(), vec![(id(0, data), 4)]));
        },
    );
}

pub fn check_block_names_and_ids_are_checked(store: &Store) {
    let Some(bl) = blocks_of(store) else { return };
    let good = id(0, b"x");
    let etag = Etag("x".into());
    for name in ["../x", ".hidden", "", "a//b"] {
        let invalid = |kind: BackendErrorKind, what: &str| {
            assert_eq!(kind, BackendErrorKind::Invalid, "{what} accepted {name:?}");
        };
        invalid(kind_of(bl.block_list(name)), "block list");
        invalid(
            kind_of(bl.stage_block(name, &good, b"x".to_vec(), None)),
            "stage",
        );
        invalid(
            kind_of(bl.commit_blocks(name, std::slice::from_ref(&good), &Condition::Create, None)),
            "commit",
        );
        invalid(kind_of(bl.read_range(name, 0, 1, &etag)), "read range");
    }
    // Every block id of a blob has one length (as Azure requires), checked by the
    // store itself where it does (Azure takes the first id's length as the rule).
    if !store.caps.checks_block_ids {
        return;
    }
    for bad in [&b""[..], b"short", &[1u8; 33]] {
        assert_eq!(
            kind_of(bl.stage_block("ids.db", bad, b"x".to_vec(), None)),
            BackendErrorKind::Invalid,
            "{bad:?}"
        );
    }
}
