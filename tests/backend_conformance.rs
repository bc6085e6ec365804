//! The promises of `managedblob::backend::Backend`, checked against every backend.
//!
//! Each `check_*` function takes a fresh, empty backend; the `conformance!` macro
//! runs every one of them against `LocalBackend` (in a temp dir) and `MemoryBackend`.
//! Backend-specific behavior (foreign files, lease files, fault injection) follows.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use managedblob::backend::local::LocalBackend;
use managedblob::backend::memory::{MemoryBackend, Op};
use managedblob::backend::{Backend, BackendErrorKind, BlobStat, Condition, Etag, LeaseId};

#[path = "common/backend_checks.rs"]
mod backend_checks;
use backend_checks::*;

fn check_missing_blob(b: &dyn Backend) {
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
            &Condition::Match(Etag("whatever".into())),
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

fn check_every_upload_gets_a_new_etag(b: &dyn Backend) {
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

fn check_lease_lifecycle(b: &dyn Backend) {
    let v1 = create(b, "l.db", b"v1");
    let lease = b.acquire_lease("l.db", LONG).unwrap();
    assert_eq!(lease.stat, v1);
    assert_eq!(
        kind_of(b.acquire_lease("l.db", LONG)),
        BackendErrorKind::LeaseHeld
    );
    let at = |s: &BlobStat| Condition::Match(s.etag.clone());
    assert_eq!(
        kind_of(upload(b, "l.db", b"x", &at(&v1), None)),
        BackendErrorKind::LeaseHeld
    );
    let wrong = LeaseId("0".repeat(32));
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
    assert_eq!(again.stat, v3);
    b.release_lease("l.db", &again.id).unwrap();
}

fn check_lease_expiry(b: &dyn Backend) {
    let v1 = create(b, "x.db", b"v1");
    let old = b.acquire_lease("x.db", Duration::from_millis(200)).unwrap();
    thread::sleep(Duration::from_millis(350));
    // An expired lease fences nobody...
    let v2 = upload(b, "x.db", b"v2", &Condition::Match(v1.etag), None).unwrap();
    // ...cannot be renewed, and can be taken over.
    assert_eq!(
        kind_of(b.renew_lease("x.db", &old.id, LONG)),
        BackendErrorKind::LeaseLost
    );
    let new = b.acquire_lease("x.db", LONG).unwrap();
    assert_eq!(new.stat, v2);
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

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod local {
            $(
                #[test]
                fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    let backend = super::LocalBackend::new(dir.path()).unwrap();
                    super::$check(&backend);
                }
            )*
        }
        mod memory {
            $(
                #[test]
                fn $check() {
                    super::$check(&super::MemoryBackend::new());
                }
            )*
        }
    };
}

conformance!(
    check_missing_blob,
    check_create_then_create_again,
    check_stale_match_fails_and_changes_nothing,
    check_every_upload_gets_a_new_etag,
    check_download_matches_stat,
    check_short_source_changes_nothing,
    check_lease_lifecycle,
    check_lease_expiry,
    check_invalid_names_rejected_everywhere,
    check_concurrent_matches_have_one_winner,
);

// ---- local only -------------------------------------------------------------

fn local() -> (tempfile::TempDir, LocalBackend) {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path()).unwrap();
    (dir, backend)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Rewrite the pid (and optionally the token) of the lease file of `blob`.
fn forge_lease(dir: &Path, blob: &str, pid: u32, token: &str) {
    let path = dir.join(format!(".{blob}.mb-lease"));
    let mut lease: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    lease["pid"] = pid.into();
    lease["token"] = token.into();
    lease["expires_unix_ms"] = (u64::MAX / 2).into();
    std::fs::write(&path, serde_json::to_vec(&lease).unwrap()).unwrap();
}

#[test]
fn local_identity_and_missing_dir() {
    let (dir, b) = local();
    let canonical = dir.path().canonicalize().unwrap();
    assert_eq!(b.identity(), format!("local:{}", canonical.display()));
    let err = LocalBackend::new(dir.path().join("nope")).unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::NotFound);
    assert!(err.message.contains("nope"), "{err}");
}

#[test]
fn local_sees_a_copied_in_file() {
    let (dir, b) = local();
    let source = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(source.path(), b"SQLite format 3\0 and more").unwrap();
    std::fs::copy(source.path(), dir.path().join("copied.db")).unwrap();
    let stat = current(&b, "copied.db");
    assert_eq!(stat.size, 25);
    assert_eq!(
        download(&b, "copied.db"),
        (std::fs::read(source.path()).unwrap(), stat.clone())
    );
    assert_eq!(current(&b, "copied.db"), stat, "etag must be stable");
    let next = upload(&b, "copied.db", b"ours", &Condition::Match(stat.etag), None).unwrap();
    assert_eq!(download(&b, "copied.db").0, b"ours");
    assert_eq!(current(&b, "copied.db"), next);
}

#[test]
fn local_foreign_overwrite_moves_the_etag() {
    let (dir, b) = local();
    let ours = create(&b, "f.db", b"12345678");
    // Coarse file-system clocks tick every few ms; a foreign write within the same
    // tick as our upload is the documented blind spot, so step past it.
    thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.path().join("f.db"), b"87654321").unwrap();
    let theirs = current(&b, "f.db");
    assert_ne!(theirs.etag, ours.etag);
    assert_eq!(theirs.size, 8);
    assert_eq!(
        kind_of(upload(&b, "f.db", b"x", &Condition::Match(ours.etag), None)),
        BackendErrorKind::ConditionFailed
    );
    assert_eq!(download(&b, "f.db"), (b"87654321".to_vec(), theirs));
}

#[test]
fn local_files_are_private() {
    let (dir, b) = local();
    create(&b, "p.db", b"secret");
    let lease = b.acquire_lease("p.db", LONG).unwrap();
    for name in ["p.db", ".p.db.mb-etag", ".p.db.mb-lease", ".p.db.mb-mutex"] {
        assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
    }
    b.release_lease("p.db", &lease.id).unwrap();
    assert!(!dir.path().join(".p.db.mb-lease").exists());
}

#[test]
fn local_lease_message_hides_the_token() {
    let (_dir, b) = local();
    create(&b, "t.db", b"x");
    let lease = b.acquire_lease("t.db", LONG).unwrap();
    let err = b.acquire_lease("t.db", LONG).unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::LeaseHeld);
    assert!(!err.message.contains(&lease.id.0), "{err}");
    assert!(err.message.contains("t.db"), "{err}");
}

#[test]
fn local_reclaims_the_lease_of_a_dead_process() {
    let (dir, b) = local();
    create(&b, "d.db", b"x");
    b.acquire_lease("d.db", LONG).unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    forge_lease(dir.path(), "d.db", dead_pid, &"d".repeat(32));
    let lease = b.acquire_lease("d.db", LONG).unwrap();
    upload(
        &b,
        "d.db",
        b"y",
        &Condition::Match(lease.stat.etag),
        Some(&lease.id),
    )
    .unwrap();
}

#[test]
fn local_respects_the_lease_of_a_live_process() {
    let (dir, b) = local();
    let v1 = create(&b, "a.db", b"x");
    b.acquire_lease("a.db", LONG).unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    forge_lease(dir.path(), "a.db", child.id(), &"a".repeat(32));
    let acquired = b.acquire_lease("a.db", LONG);
    let written = upload(&b, "a.db", b"y", &Condition::Match(v1.etag), None);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(kind_of(acquired), BackendErrorKind::LeaseHeld);
    assert_eq!(kind_of(written), BackendErrorKind::LeaseHeld);
}

#[test]
fn local_two_instances_share_one_directory() {
    let (dir, a) = local();
    let b = LocalBackend::new(dir.path()).unwrap();
    let v1 = create(&a, "two.db", b"x");
    assert_eq!(current(&b, "two.db"), v1);
    let lease = a.acquire_lease("two.db", LONG).unwrap();
    assert_eq!(
        kind_of(b.acquire_lease("two.db", LONG)),
        BackendErrorKind::LeaseHeld
    );
    let v2 = upload(
        &a,
        "two.db",
        b"y",
        &Condition::Match(v1.etag),
        Some(&lease.id),
    )
    .unwrap();
    assert_eq!(download(&b, "two.db"), (b"y".to_vec(), v2));
}

#[test]
fn local_names_cannot_escape_the_directory() {
    let outer = tempfile::tempdir().unwrap();
    let inner = outer.path().join("remote");
    std::fs::create_dir(&inner).unwrap();
    let b = LocalBackend::new(&inner).unwrap();
    let _ = upload(&b, "../escaped.db", b"x", &Condition::Create, None);
    assert!(!outer.path().join("escaped.db").exists());
}

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
    assert_eq!(lease.stat, v2);
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

// ---- blocks (delta sync) ----------------------------------------------------------
//
// The `Blocks` capability, on every backend that has it (memory and local here; the
// same checks run against Azurite in tests/azure.rs).

#[path = "common/block_checks.rs"]
mod block_checks;

mod block_conformance {
    use super::block_checks::*;
    use super::*;

    conformance!(
        check_blocks_commit_list_and_read,
        check_blocks_create_and_missing,
        check_blocks_respect_the_lease,
        check_blocks_staged_wins_over_committed,
        check_blocks_concurrent_commits_have_one_winner,
    );
}

// ---- blocks: local only -------------------------------------------------------------

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn local_block_files_are_hidden_and_private() {
    use block_checks::*;
    let (dir, b) = local();
    let bl = blocks(&b);
    let staged = stage_all(&b, "p.db", &[b"one", b"two"], None);
    let staging = dir.path().join(".p.db.mb-staged");
    assert_eq!(mode(&staging), 0o700);
    let mut expected: Vec<String> = staged.iter().map(|(id, _)| hex(id)).collect();
    expected.sort();
    assert_eq!(names_in(&staging), expected);
    for name in &expected {
        assert_eq!(mode(&staging.join(name)), 0o600, "{name}");
    }
    let v1 = bl
        .commit_blocks("p.db", &ids_of(&staged), &Condition::Create, None)
        .unwrap();
    assert!(!staging.exists(), "a commit clears the staged blocks");
    for name in ["p.db", ".p.db.mb-blocks", ".p.db.mb-etag"] {
        assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
    }
    // Nothing but the blob and its hidden companions, and no temp file.
    assert_eq!(
        names_in(dir.path()),
        [".p.db.mb-blocks", ".p.db.mb-etag", ".p.db.mb-mutex", "p.db"]
    );
    // A whole upload drops the list and the staged blocks.
    stage_all(&b, "p.db", &[b"three"], None);
    upload(&b, "p.db", b"whole", &Condition::Match(v1.etag), None).unwrap();
    assert!(!staging.exists());
    assert!(!dir.path().join(".p.db.mb-blocks").exists());
}

#[test]
fn local_foreign_copy_empties_the_block_list() {
    use block_checks::*;
    let (dir, b) = local();
    let bl = blocks(&b);
    let staged = stage_all(&b, "f.db", &[b"ours-1", b"ours-2"], None);
    let ours = bl
        .commit_blocks("f.db", &ids_of(&staged), &Condition::Create, None)
        .unwrap();
    thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.path().join("f.db"), b"theirs, same dir").unwrap();
    let (theirs, list) = listed(&b, "f.db");
    assert_ne!(theirs.etag, ours.etag);
    assert_eq!(theirs, current(&b, "f.db"));
    assert!(list.is_empty(), "{list:?}");
    assert_eq!(
        kind_of(bl.read_range("f.db", 0, 4, &ours.etag)),
        BackendErrorKind::ConditionFailed
    );
    assert_eq!(
        bl.read_range("f.db", 0, 6, &theirs.etag).unwrap(),
        b"theirs"
    );
    // The blocks of our version are gone with it.
    let err = bl
        .commit_blocks(
            "f.db",
            &ids_of(&staged),
            &Condition::Match(theirs.etag.clone()),
            None,
        )
        .unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Permanent, "{err}");
    assert!(
        err.message.contains("neither staged nor committed"),
        "{err}"
    );
    let fresh = stage_all(&b, "f.db", &[b"again"], None);
    let v = bl
        .commit_blocks(
            "f.db",
            &ids_of(&fresh),
            &Condition::Match(theirs.etag),
            None,
        )
        .unwrap();
    assert_eq!(listed(&b, "f.db"), (v, fresh));
}

#[test]
fn local_failed_commits_keep_staged_blocks_and_leave_no_temp_file() {
    use block_checks::*;
    let (dir, b) = local();
    let bl = blocks(&b);
    let v1 = create(&b, "k.db", b"v1");
    let v2 = upload(&b, "k.db", b"v2", &Condition::Match(v1.etag.clone()), None).unwrap();
    let staged = stage_all(&b, "k.db", &[b"block"], None);
    assert_eq!(
        kind_of(bl.commit_blocks("k.db", &ids_of(&staged), &Condition::Match(v1.etag), None)),
        BackendErrorKind::ConditionFailed
    );
    assert_eq!(
        kind_of(bl.commit_blocks(
            "k.db",
            &[staged[0].0.clone(), id(7, b"unknown")],
            &Condition::Match(v2.etag.clone()),
            None
        )),
        BackendErrorKind::Permanent
    );
    assert!(!names_in(dir.path()).iter().any(|n| n.contains("mb-tmp")));
    // The staged block survived both failures.
    let v3 = bl
        .commit_blocks("k.db", &ids_of(&staged), &Condition::Match(v2.etag), None)
        .unwrap();
    assert_eq!(download(&b, "k.db"), (b"block".to_vec(), v3));
    assert!(!names_in(dir.path()).iter().any(|n| n.contains("mb-tmp")));
}

#[test]
fn local_commits_move_large_blocks_intact() {
    use block_checks::*;
    let (_dir, b) = local();
    let bl = blocks(&b);
    // Blocks larger than the copy buffer, moved to other offsets, one replaced.
    let (c0, c1, c2) = (
        chunk(2_500_000, 1),
        chunk(2_500_000, 2),
        chunk(1_000_001, 3),
    );
    let staged = stage_all(&b, "big.db", &[&c0, &c1, &c2], None);
    let v1 = bl
        .commit_blocks("big.db", &ids_of(&staged), &Condition::Create, None)
        .unwrap();
    let c3 = chunk(2_500_000, 4);
    let id3 = id(3, &c3);
    bl.stage_block("big.db", &id3, c3.clone(), None).unwrap();
    let order = vec![
        staged[2].0.clone(),
        staged[0].0.clone(),
        id3,
        staged[0].0.clone(),
    ];
    let v2 = bl
        .commit_blocks("big.db", &order, &Condition::Match(v1.etag), None)
        .unwrap();
    let expected = [c2, c0.clone(), c3, c0].concat();
    assert_eq!(v2.size, expected.len() as u64);
    let (bytes, stat) = download(&b, "big.db");
    assert_eq!(stat, v2);
    assert!(bytes == expected, "content differs");
}

// ---- blocks: memory only ------------------------------------------------------------

#[test]
fn memory_block_faults_have_no_side_effects() {
    use block_checks::*;
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
    use block_checks::*;
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

fn check_block_names_and_ids_are_checked(b: &dyn Backend) {
    use block_checks::*;
    let bl = blocks(b);
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
    // Every block id of a blob has one length (as Azure requires).
    for bad in [&b""[..], b"short", &[1u8; 33]] {
        assert_eq!(
            kind_of(bl.stage_block("ids.db", bad, b"x".to_vec(), None)),
            BackendErrorKind::Invalid,
            "{bad:?}"
        );
    }
}

#[test]
fn local_block_names_and_ids_are_checked() {
    let (_dir, b) = local();
    check_block_names_and_ids_are_checked(&b);
}

#[test]
fn memory_block_names_and_ids_are_checked() {
    check_block_names_and_ids_are_checked(&MemoryBackend::new());
}
