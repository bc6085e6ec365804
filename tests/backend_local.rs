//! The local backend (a directory): the conformance suite, then what only a
//! directory shows (foreign files, lease files of dead or live processes, file modes,
//! the hidden block files).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::thread;
use std::time::Duration;

use common::conformance::blocks::{blocks, chunk, id, ids_of, listed, stage_all};
use common::conformance::*;
use managedblob::internal::backend::local::LocalBackend;
use managedblob::internal::backend::{Backend, BackendErrorKind, Condition};

common::conformance::suite!(local);

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
    step_past_mtime(&dir.path().join("f.db"));
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
        &Condition::Match(lease.etag),
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
    let v2 = upload_leased(&a, "two.db", b"y", v1.etag, &lease.id);
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
    let (dir, b) = local();
    let bl = blocks(&b);
    let staged = stage_all(&b, "f.db", &[b"ours-1", b"ours-2"], None);
    let ours = bl
        .commit_blocks("f.db", &ids_of(&staged), &Condition::Create, None)
        .unwrap();
    step_past_mtime(&dir.path().join("f.db"));
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

/// Wait until a file written now gets a later modification time than `path` has
/// (the file system's clock ticked): a condition, not a guess at the tick.
fn step_past_mtime(path: &std::path::Path) {
    let ours = std::fs::metadata(path).unwrap().modified().unwrap();
    let probe = path.with_extension("mtime-probe");
    for _ in 0..10_000 {
        std::fs::write(&probe, b"").unwrap();
        let now = std::fs::metadata(&probe).unwrap().modified().unwrap();
        if now > ours {
            std::fs::remove_file(&probe).unwrap();
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("the file-system clock never moved past {ours:?}");
}
