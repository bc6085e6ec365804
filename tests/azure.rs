//! The `azure` backend against Azurite (the Azure Storage emulator).
//!
//!     scripts/azurite.sh && cargo test --features azure --test azure
//!
//! The tests start Azurite themselves (tests/common/azurite.rs): one instance shared by
//! the tests that overlap in time (it is stopped when the last of them ends), and one
//! container per test, so tests run in parallel. Without Azurite installed the tests
//! are skipped with a message, unless the environment variable CI is set: then they
//! fail.
//!
//! Covered here: the backend conformance checks of `tests/backend_conformance.rs`
//! (copied, with the lease-expiry check stretched to Azure's 15 s minimum), large
//! conditional uploads on both upload paths, missing containers and wrong credentials,
//! secrets kept out of messages and of a trace-level log, calls from inside other tokio
//! runtimes, and an end-to-end run of the VFS through rusqlite.
#![cfg(feature = "azure")]

mod common;

use std::collections::HashSet;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use common::azurite::{self as harness, account_sas, random_container, Azurite};
use common::azurite::{DEV_ACCOUNT, DEV_KEY};
use managedblob::backend::azure::{AzureBackend, AzureTuning, ContainerUrl};
use managedblob::backend::{Backend, BackendErrorKind, BlobStat, Condition, Etag, LeaseId};

// ---- Azurite (tests/common/azurite.rs) ---------------------------------------

/// The shared Azurite, with this binary's log capture installed first.
fn azurite() -> Option<Arc<Azurite>> {
    capture_logs();
    harness::shared()
}

// ---- Log capture --------------------------------------------------------------

/// Everything logged by this test binary, at trace level (the SDK and HTTP stack
/// included, on every thread), for the secret checks.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(Default::default)
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let sink = Capture(logs().clone());
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .try_init();
    });
}

fn captured() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

// ---- The conformance checks (shared with tests/backend_conformance.rs) ----------

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
            &Condition::Match(Etag("\"0x8DEADBEEF\"".into())),
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
    // Azure lease ids are GUIDs.
    let wrong = LeaseId("00000000-0000-0000-0000-000000000000".into());
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

/// Azure leases last at least 15 s: the backend rounds the 200 ms up, so this check
/// waits 16 s instead of the reference suite's 350 ms.
fn check_lease_expiry(b: &dyn Backend) {
    let v1 = create(b, "x.db", b"v1");
    let old = b.acquire_lease("x.db", Duration::from_millis(200)).unwrap();
    assert_eq!(
        kind_of(upload(
            b,
            "x.db",
            b"v2",
            &Condition::Match(v1.etag.clone()),
            None
        )),
        BackendErrorKind::LeaseHeld,
        "a 200 ms lease must have been rounded up to Azure's 15 s minimum"
    );
    thread::sleep(Duration::from_secs(16));
    // An expired lease fences nobody...
    let v2 = upload(b, "x.db", b"v2", &Condition::Match(v1.etag), None).unwrap();
    // ...cannot be renewed once the blob was written, and can be taken over.
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
        mod conformance {
            $(
                #[test]
                fn $check() {
                    let Some(azurite) = super::azurite() else { return };
                    let backend = azurite.fresh(super::AzureTuning::default());
                    super::$check(&backend);
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

// ---- Azure specifics ------------------------------------------------------------

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64 * 2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

/// The conditional-write promises for a body bigger than 4 MiB (where the SDK's own
/// `upload()` would switch to staged blocks), on `b`, whichever path it takes.
fn check_large_conditional_uploads(b: &dyn Backend, len: usize) {
    let v1_data = pattern(len, 1);
    let v1 = create(b, "big.db", &v1_data);
    assert_eq!(v1.size, len as u64);
    assert_eq!(
        kind_of(upload(
            b,
            "big.db",
            &pattern(len, 9),
            &Condition::Create,
            None
        )),
        BackendErrorKind::AlreadyExists
    );
    let v2_data = pattern(len, 2);
    let v2 = upload(
        b,
        "big.db",
        &v2_data,
        &Condition::Match(v1.etag.clone()),
        None,
    )
    .unwrap();
    // A stale etag fails and changes nothing.
    assert_eq!(
        kind_of(upload(
            b,
            "big.db",
            &pattern(len, 3),
            &Condition::Match(v1.etag.clone()),
            None
        )),
        BackendErrorKind::ConditionFailed
    );
    assert_eq!(current(b, "big.db"), v2);
    // The lease fences the final commit: none, or a wrong one, fails.
    let lease = b.acquire_lease("big.db", LONG).unwrap();
    assert_eq!(lease.stat, v2);
    let at_v2 = Condition::Match(v2.etag.clone());
    assert_eq!(
        kind_of(upload(b, "big.db", &pattern(len, 4), &at_v2, None)),
        BackendErrorKind::LeaseHeld
    );
    let wrong = LeaseId("00000000-0000-0000-0000-000000000000".into());
    assert_eq!(
        kind_of(upload(b, "big.db", &pattern(len, 5), &at_v2, Some(&wrong))),
        BackendErrorKind::LeaseLost
    );
    // A stale etag under the right lease fails too.
    assert_eq!(
        kind_of(upload(
            b,
            "big.db",
            &pattern(len, 6),
            &Condition::Match(v1.etag.clone()),
            Some(&lease.id)
        )),
        BackendErrorKind::ConditionFailed
    );
    // A source that ends early writes nothing.
    let short = pattern(len - 1, 7);
    assert!(b
        .upload(
            "big.db",
            &mut &short[..],
            len as u64,
            &at_v2,
            Some(&lease.id)
        )
        .is_err());
    let (bytes, stat) = download(b, "big.db");
    assert_eq!(stat, v2);
    assert!(bytes == v2_data, "content changed by a failed upload");
    // The right etag and lease win.
    let v3_data = pattern(len + 3, 8);
    let v3 = upload(b, "big.db", &v3_data, &at_v2, Some(&lease.id)).unwrap();
    b.release_lease("big.db", &lease.id).unwrap();
    let (bytes, stat) = download(b, "big.db");
    assert_eq!(stat, v3);
    assert!(bytes == v3_data, "downloaded bytes differ");
}

#[test]
fn large_upload_in_one_put_keeps_condition_and_lease() {
    let Some(azurite) = azurite() else { return };
    // 6 MiB: above the SDK's 4 MiB partition, below our 32 MiB single-put limit.
    let b = azurite.fresh(AzureTuning::default());
    check_large_conditional_uploads(&b, 6 << 20);
}

#[test]
fn large_upload_in_staged_blocks_keeps_condition_and_lease() {
    let Some(azurite) = azurite() else { return };
    // Force the staged path: 6 MiB + 5 bytes in 1 MiB blocks, the last one partial.
    let tuning = AzureTuning::new()
        .single_put_max(4 << 20)
        .block_size(1 << 20)
        .parallel(3);
    let b = azurite.fresh(tuning);
    check_large_conditional_uploads(&b, (6 << 20) + 5);
    // Downloads of several ranges (4 MiB partitions) agree with the stat.
    let (bytes, stat) = download(&b, "big.db");
    assert_eq!(stat.size, bytes.len() as u64);
}

#[test]
fn a_blob_replaced_mid_download_is_a_transient_error() {
    let Some(azurite) = azurite() else { return };
    // 48 MiB in 4 MiB ranges, two at a time: more than the download buffers hold, so
    // ranges are still being fetched after the sink's first write replaced the blob.
    let b = azurite.fresh(AzureTuning::new().parallel(2));
    let v1 = create(&b, "moving.db", &pattern(48 << 20, 1));

    struct Sink<'a> {
        backend: &'a AzureBackend,
        etag: Etag,
        replaced: bool,
    }
    impl std::io::Write for Sink<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if !self.replaced {
                self.replaced = true;
                let cond = Condition::Match(self.etag.clone());
                upload(self.backend, "moving.db", b"replaced", &cond, None).unwrap();
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut sink = Sink {
        backend: &b,
        etag: v1.etag.clone(),
        replaced: false,
    };
    let err = b.download("moving.db", &mut sink).unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Transient, "{err}");
    assert!(err.message.contains("changed while"), "{err}");
    // The retry gets the new version, whole, with its etag.
    let (bytes, stat) = download(&b, "moving.db");
    assert_eq!(bytes, b"replaced");
    assert_eq!(stat, current(&b, "moving.db"));
}

/// `Backend::download` promises the version it returns is the one whose bytes it
/// wrote, even when an upload races. Here one thread makes `COMMITS` new versions
/// (8 KiB, numbered in their first bytes) while another downloads in a loop; every
/// download's etag must be the etag of the version whose number its bytes carry.
fn check_downloads_racing_commits_are_consistent(b: &AzureBackend, by_blocks: bool) {
    use managedblob::backend::Blocks;
    const COMMITS: u64 = 150;
    let version = |n: u64| {
        let mut data = pattern(8192, n as u8);
        data[..8].copy_from_slice(&n.to_le_bytes());
        data
    };
    let commit = |n: u64, condition: &Condition| -> BlobStat {
        let data = version(n);
        if by_blocks {
            let blocks: &dyn Blocks = b.blocks().expect("the azure backend has blocks");
            let id = format!("{n:032x}").into_bytes();
            blocks.stage_block("race.db", &id, data, None).unwrap();
            blocks
                .commit_blocks("race.db", &[id], condition, None)
                .unwrap()
        } else {
            upload(b, "race.db", &data, condition, None).unwrap()
        }
    };
    let mut etags = std::collections::HashMap::new();
    let mut stat = commit(0, &Condition::Create);
    etags.insert(stat.etag.clone(), 0u64);
    let done = std::sync::atomic::AtomicBool::new(false);
    let samples = thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut samples = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let mut bytes = Vec::new();
                let got = match b.download("race.db", &mut bytes) {
                    Ok(got) => got,
                    // The blob moved between the pinning stat and the GET: the
                    // caller's retry takes the new version.
                    Err(e) if e.is_transient() => continue,
                    Err(e) => panic!("download: {e}"),
                };
                let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                samples.push((got.etag, n));
            }
            samples
        });
        for n in 1..=COMMITS {
            stat = commit(n, &Condition::Match(stat.etag.clone()));
            etags.insert(stat.etag.clone(), n);
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        reader.join().unwrap()
    });
    assert!(
        samples.len() >= 10,
        "only {} downloads completed",
        samples.len()
    );
    let wrong: Vec<String> = samples
        .iter()
        .filter(|(etag, n)| etags.get(etag) != Some(n))
        .map(|(etag, n)| {
            format!(
                "etag {etag} (version {:?}) with the bytes of version {n}",
                etags.get(etag)
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} downloads returned an etag that is not the one of their bytes \
         (by_blocks: {by_blocks}), e.g. {:?}",
        wrong.len(),
        samples.len(),
        &wrong[..wrong.len().min(3)]
    );
}

#[test]
fn downloads_racing_whole_uploads_return_the_etag_of_their_bytes() {
    let Some(azurite) = azurite() else { return };
    let b = azurite.fresh(AzureTuning::default());
    check_downloads_racing_commits_are_consistent(&b, false);
}

/// Fails on Azurite 3.35.0: its Get Blob reads the blob's (live, in-memory) record
/// after awaiting the body, so a Put Block List that lands meanwhile gives the
/// response the new ETag with the old bytes (Put Blob replaces the record and does not
/// show this). The VFS trusts that ETag, so with delta sync a host's cache can hold
/// an older version under a newer base: the lost updates the two-host tests of
/// tests/processes.rs then see on Azurite. Real Azure returns a consistent pair.
#[test]
fn downloads_racing_block_list_commits_return_the_etag_of_their_bytes() {
    let Some(azurite) = azurite() else { return };
    let b = azurite.fresh(AzureTuning::default());
    check_downloads_racing_commits_are_consistent(&b, true);
}

#[test]
fn acquiring_with_the_active_lease_id_succeeds() {
    // The premise of the backend's retry of an acquire whose reply was lost: it proposes
    // the same lease id again, and the service accepts an acquire with the active
    // lease's own id (while any other id gets LeaseAlreadyPresent).
    use azure_storage_blob::models::BlobClientAcquireLeaseOptions;
    use azure_storage_blob::BlobClient;
    let Some(azurite) = azurite() else { return };
    let b = azurite.fresh(AzureTuning::default());
    create(&b, "p.db", b"x");
    let url = format!(
        "{}/p.db?{}",
        azurite.container_url(b.url().container()),
        account_sas("rwdlac")
    );
    let client = BlobClient::new(url.parse().unwrap(), None, None).unwrap();
    let proposed = "11111111-2222-3333-4444-555555555555";
    let acquire = |id: &str| {
        let options = BlobClientAcquireLeaseOptions {
            proposed_lease_id: Some(id.to_string()),
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(client.acquire_lease(20, Some(options)))
            .map(|_| ())
            .map_err(|e| e.http_status().map(u16::from))
    };
    acquire(proposed).unwrap();
    acquire(proposed).expect("a second acquire with the same id succeeds");
    assert_eq!(
        acquire("99999999-2222-3333-4444-555555555555"),
        Err(Some(409))
    );
    // And our backend sees that lease as held by someone else.
    assert_eq!(
        kind_of(b.acquire_lease("p.db", LONG)),
        BackendErrorKind::LeaseHeld
    );
    b.break_lease("p.db").unwrap();
    b.acquire_lease("p.db", LONG).unwrap();
}

#[test]
fn missing_container_is_a_clear_error() {
    let Some(azurite) = azurite() else { return };
    let b = azurite.backend_for("no-such-container", AzureTuning::default());
    for err in [
        b.stat("x.db").unwrap_err(),
        upload(&b, "x.db", b"x", &Condition::Create, None).unwrap_err(),
        b.download("x.db", &mut Vec::new()).unwrap_err(),
    ] {
        eprintln!("missing container: {err}");
        assert_eq!(err.kind, BackendErrorKind::NotFound, "{err}");
        assert!(
            err.message
                .contains("container 'no-such-container' does not exist"),
            "{err}"
        );
    }
}

#[test]
fn wrong_credentials_say_what_was_used() {
    let Some(azurite) = azurite() else { return };
    let good = azurite.fresh(AzureTuning::default());
    let container = good.url().container().to_string();
    let url = ContainerUrl::parse(&azurite.container_url(&container)).unwrap();
    // A well-formed key that is not the account's.
    let wrong_key = "V1JPTkdLRVlXUk9OR0tFWVdST05HS0VZV1JPTkdLRVk=";
    let env = |name: &str| (name == "AZURE_STORAGE_KEY").then(|| wrong_key.to_string());
    let b = AzureBackend::connect_with(&url, &env, AzureTuning::default()).unwrap();
    let err = b.stat("x.db").unwrap_err();
    eprintln!("wrong key: {err}");
    assert_eq!(err.kind, BackendErrorKind::Denied, "{err}");
    assert!(err.message.contains("AZURE_STORAGE_KEY"), "{err}");
    assert!(!err.message.contains(wrong_key), "{err}");
    // No credential at all over http: the error lists what was tried.
    let err = AzureBackend::connect_with(&url, &|_| None, AzureTuning::default()).unwrap_err();
    eprintln!("no credential: {err}");
    assert_eq!(err.kind, BackendErrorKind::Denied);
    for tried in [
        "SAS",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_KEY",
        "Entra ID",
    ] {
        assert!(err.message.contains(tried), "{tried}: {err}");
    }
}

#[test]
fn sas_token_in_the_url_works_and_stays_secret() {
    let Some(azurite) = azurite() else { return };
    let container = azurite.fresh(AzureTuning::default());
    let sas = account_sas("rwdlac");
    let sig = sas.rsplit("sig=").next().unwrap().to_string();
    let url = ContainerUrl::parse(&format!(
        "{}?{sas}",
        azurite.container_url(container.url().container())
    ))
    .unwrap();
    let b = AzureBackend::connect_with(&url, &|_| None, AzureTuning::default()).unwrap();
    assert!(b.auth_description().contains("SAS"));
    let v1 = create(&b, "sas.db", b"through a SAS");
    let lease = b.acquire_lease("sas.db", LONG).unwrap();
    upload(
        &b,
        "sas.db",
        b"v2",
        &Condition::Match(v1.etag),
        Some(&lease.id),
    )
    .unwrap();
    b.release_lease("sas.db", &lease.id).unwrap();
    assert_eq!(download(&b, "sas.db").0, b"v2");
    // A read-only SAS cannot write: Denied, and the message shows no signature.
    let ro = account_sas("rl");
    let ro_sig = ro.rsplit("sig=").next().unwrap().to_string();
    let url = ContainerUrl::parse(&format!(
        "{}?{ro}",
        azurite.container_url(container.url().container())
    ))
    .unwrap();
    let b = AzureBackend::connect_with(&url, &|_| None, AzureTuning::default()).unwrap();
    let err = upload(&b, "sas.db", b"v3", &Condition::Create, None).unwrap_err();
    eprintln!("read-only SAS: {err}");
    assert_eq!(err.kind, BackendErrorKind::Denied, "{err}");
    for shown in [
        err.message.clone(),
        format!("{b:?}"),
        format!("{url:?} {url}"),
    ] {
        for secret in [&sig, &ro_sig] {
            assert!(!shown.contains(secret.as_str()), "{shown}");
        }
        let decoded: String = url::form_urlencoded::parse(format!("s={ro_sig}").as_bytes())
            .next()
            .unwrap()
            .1
            .into_owned();
        assert!(!shown.contains(&decoded), "{shown}");
    }
    // A SAS that does not verify.
    let url = ContainerUrl::parse(&format!(
        "{}?sv=2019-12-12&ss=b&srt=sco&sp=rwdlac&se=2099-01-01T00:00:00Z&sig=BOGUSSIGNATURE",
        azurite.container_url(container.url().container())
    ))
    .unwrap();
    let b = AzureBackend::connect_with(&url, &|_| None, AzureTuning::default()).unwrap();
    let err = b.stat("sas.db").unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Denied, "{err}");
    assert!(!err.message.contains("BOGUSSIGNATURE"), "{err}");
}

#[test]
fn no_secret_reaches_the_trace_log() {
    let Some(azurite) = azurite() else { return };
    // Exercise the shared-key and SAS paths, successes and failures, at trace level.
    let b = azurite.fresh(
        AzureTuning::new()
            .single_put_max(1 << 20)
            .block_size(512 << 10),
    );
    let v1 = create(&b, "log.db", &pattern(3 << 20, 1));
    let lease = b.acquire_lease("log.db", LONG).unwrap();
    upload(
        &b,
        "log.db",
        b"x",
        &Condition::Match(v1.etag),
        Some(&lease.id),
    )
    .unwrap();
    let _ = upload(&b, "log.db", b"x", &Condition::Create, None);
    download(&b, "log.db");
    b.break_lease("log.db").unwrap();
    let sas = account_sas("rwdlac");
    let sig = sas.rsplit("sig=").next().unwrap().to_string();
    let decoded_sig: String = url::form_urlencoded::parse(format!("s={sig}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    let url = ContainerUrl::parse(&format!(
        "{}?{sas}",
        azurite.container_url(b.url().container())
    ))
    .unwrap();
    let s = AzureBackend::connect_with(&url, &|_| None, AzureTuning::default()).unwrap();
    s.stat("log.db").unwrap();
    download(&s, "log.db");
    let _ = s.stat("../bad");
    let _ = upload(&s, "log.db", b"y", &Condition::Create, None);
    let bad = ContainerUrl::parse(&format!(
        "{}?sv=2019-12-12&sig=BOGUSSIGNATURE",
        azurite.container_url(b.url().container())
    ))
    .unwrap();
    let _ = AzureBackend::connect_with(&bad, &|_| None, AzureTuning::default())
        .unwrap()
        .stat("log.db");
    // Unreachable endpoint: a transport error, which quotes the request URL.
    let gone =
        ContainerUrl::parse(&format!("http://127.0.0.1:9/{DEV_ACCOUNT}/gone?{sas}")).unwrap();
    let err = AzureBackend::connect_with(&gone, &|_| None, AzureTuning::default())
        .unwrap()
        .stat("log.db")
        .unwrap_err();
    eprintln!("unreachable: {err}");
    assert_eq!(err.kind, BackendErrorKind::Transient, "{err}");
    assert!(
        !err.message.contains(&sig) && !err.message.contains(&decoded_sig),
        "{err}"
    );

    let log = captured();
    if let Some(path) = std::env::var_os("MANAGEDBLOB_TEST_LOG_DUMP") {
        std::fs::write(path, &log).unwrap();
    }
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "nothing was captured"
    );
    assert!(
        log.contains("azure request"),
        "our own debug lines are missing"
    );
    for secret in [DEV_KEY, &sig, &decoded_sig, "BOGUSSIGNATURE"] {
        assert!(!log.contains(secret), "a secret reached the log: {secret}");
    }
    assert!(
        !log.contains("SharedKey devstoreaccount1:"),
        "an Authorization header reached the log"
    );
}

#[test]
fn calls_are_safe_inside_other_tokio_runtimes() {
    let Some(azurite) = azurite() else { return };
    let b = Arc::new(azurite.fresh(AzureTuning::default()));
    // A current-thread runtime: blocking its only thread must not deadlock our calls.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stat = rt.block_on(async {
        let v1 = create(&*b, "rt.db", b"from async code");
        assert_eq!(download(&*b, "rt.db").0, b"from async code");
        v1
    });
    // A multi-thread runtime, from inside a spawned task.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let task_backend = b.clone();
    let etag = stat.etag.clone();
    let v2 = rt
        .block_on(async move {
            tokio::spawn(async move {
                let lease = task_backend.acquire_lease("rt.db", LONG).unwrap();
                let v2 = upload(
                    &*task_backend,
                    "rt.db",
                    b"v2",
                    &Condition::Match(etag),
                    Some(&lease.id),
                )
                .unwrap();
                task_backend.release_lease("rt.db", &lease.id).unwrap();
                v2
            })
            .await
        })
        .unwrap();
    assert_eq!(current(&*b, "rt.db"), v2);
    // Dropping those runtimes leaves ours working.
    drop(rt);
    assert_eq!(download(&*b, "rt.db").0, b"v2");
}

// ---- End to end, through the VFS --------------------------------------------------

/// Runs the VFS test in a child process of this test binary, so the connection string
/// is in the child's environment from its start (setting variables in a running,
/// multi-threaded test binary races with the threads that read them).
#[test]
fn vfs_end_to_end_through_rusqlite() {
    let Some(azurite) = azurite() else { return };
    let container = azurite.fresh(AzureTuning::default());
    let remote = azurite.container_url(container.url().container());
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "vfs_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "AZURE_STORAGE_CONNECTION_STRING",
            azurite.connection_string(),
        )
        .env("MANAGEDBLOB_TEST_AZURE_REMOTE", &remote)
        .env("MANAGEDBLOB_TEST_DIR", dir.path())
        .env_remove("MANAGEDBLOB_REMOTE")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{text}");
    assert!(output.status.success(), "child failed:\n{text}");
    assert!(text.contains("vfs child: ok"), "child did not run:\n{text}");
    // The remote blob is a plain SQLite database.
    let (bytes, _) = download(&container, "corpus.db");
    assert!(bytes.starts_with(b"SQLite format 3\0"));
}

#[test]
#[ignore = "run by vfs_end_to_end_through_rusqlite in a child process"]
fn vfs_child() {
    let (Ok(remote), Ok(dir)) = (
        std::env::var("MANAGEDBLOB_TEST_AZURE_REMOTE"),
        std::env::var("MANAGEDBLOB_TEST_DIR"),
    ) else {
        eprintln!("vfs child: not started by vfs_end_to_end_through_rusqlite; nothing to do");
        return;
    };
    managedblob::register().unwrap();
    let dir = PathBuf::from(dir);
    let uri = |host: &str| {
        let cache = dir.join(host);
        std::fs::create_dir_all(&cache).unwrap();
        format!(
            "file:{}?vfs=managedblob&remote={remote}",
            cache.join("corpus.db").display()
        )
    };
    let a = common::open(&uri("host-a"));
    a.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT);
         INSERT INTO t(body) VALUES ('one'), ('two');",
    )
    .unwrap();
    a.execute("INSERT INTO t(body) VALUES (?1)", ["three"])
        .unwrap();
    let status_a = common::status(&a);
    assert!(common::uploads(&status_a) >= 1, "{status_a}");
    assert!(common::requests(&a, "lease_acquire") >= 1, "{status_a}");

    let b = common::open(&uri("host-b"));
    let bodies: Vec<String> = b
        .prepare("SELECT body FROM t ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(bodies, ["one", "two", "three"]);
    let status_b = common::status(&b);
    assert!(common::fetches(&status_b) >= 1, "{status_b}");
    assert!(common::requests(&b, "stat") >= 1, "{status_b}");
    let shown = format!("{status_a} {status_b}");
    assert!(!shown.contains(DEV_KEY), "{shown}");

    // A write on host b is seen by host a at its next read.
    b.execute("INSERT INTO t(body) VALUES ('four')", [])
        .unwrap();
    thread::sleep(Duration::from_millis(1100)); // past the default staleness
    let n: i64 = a
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 4);
    let _ = std::io::stdout().flush();
    println!("vfs child: ok");
}

// ---- Honest request counts: the SDK does not retry on its own ---------------------

/// A server that answers every request with 503 ServerBusy and counts the requests.
struct Busy {
    port: u16,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Busy {
    fn start() -> Busy {
        use std::io::{BufRead, BufReader};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming().take(50) {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let count = count.clone();
                thread::spawn(move || {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        // Read one request head; skip any body by its Content-Length.
                        let mut length = 0usize;
                        let mut line = String::new();
                        let mut first = true;
                        loop {
                            line.clear();
                            match reader.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            if first {
                                count.fetch_add(1, Ordering::SeqCst);
                                first = false;
                            }
                            let lower = line.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0u8; length];
                        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
                            return;
                        }
                        let reply = "HTTP/1.1 503 Service Unavailable\r\n\
                                     x-ms-error-code: ServerBusy\r\n\
                                     Content-Length: 0\r\n\r\n";
                        if stream.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Busy {
            port,
            requests,
            stop,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
fn the_sdk_does_not_retry_so_counts_are_honest() {
    capture_logs();
    let busy = Busy::start();
    let url = ContainerUrl::parse(&format!(
        "http://127.0.0.1:{}/{DEV_ACCOUNT}/busy",
        busy.port
    ))
    .unwrap();
    let env = |name: &str| (name == "AZURE_STORAGE_KEY").then(|| DEV_KEY.to_string());
    let b = AzureBackend::connect_with(&url, &env, AzureTuning::default()).unwrap();
    let err = b.stat("x.db").unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Transient, "{err}");
    assert!(err.message.contains("503"), "{err}");
    assert_eq!(busy.requests(), 1, "one backend call, one HTTP request");
    let err = upload(&b, "x.db", b"body", &Condition::Create, None).unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Transient, "{err}");
    assert_eq!(busy.requests(), 2);
    let err = b.acquire_lease("x.db", LONG).unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Transient, "{err}");
    assert_eq!(busy.requests(), 3);
}

// ---- Entra ID, against Azurite over https with OAuth ---------------------------------

/// Azurite with a self-signed certificate and `--oauth basic`, a fake `az` that prints
/// a token Azurite accepts, and a child process of this test binary that uses them
/// through the default credential chain narrowed to the Azure CLI.
#[test]
fn entra_id_through_the_azure_cli_credential() {
    let Some(shared) = azurite() else { return };
    drop(shared);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let openssl = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match openssl {
        Ok(out) if out.status.success() => {}
        other => {
            let why = format!("openssl could not make a test certificate: {other:?}");
            let _: Option<()> = harness::missing(&why);
            return;
        }
    }
    let azurite = harness::start(
        &harness::bin(),
        &[
            "--cert".as_ref(),
            cert.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
            "--oauth".as_ref(),
            "basic".as_ref(),
        ],
    );
    // An unsigned JWT with the claims Azurite's basic OAuth checks.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let b64 = |s: &str| {
        azure_core::base64::encode_url_safe(s)
            .trim_end_matches('=')
            .to_string()
    };
    let token = format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"aud":"https://storage.azure.com","iss":"https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/","iat":{},"nbf":{},"exp":{},"oid":"00000000-0000-0000-0000-000000000001"}}"#,
            now - 60,
            now - 60,
            now + 3600
        ))
    );
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let az = bin.join("az");
    std::fs::write(
        &az,
        format!(
            "#!/bin/sh\ncat <<'EOF'\n{{\"accessToken\":\"{token}\",\"expiresOn\":\"2099-01-01 00:00:00.000000\",\"expires_on\":{},\"tokenType\":\"Bearer\"}}\nEOF\n",
            now + 3600
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let remote = format!(
        "https://127.0.0.1:{}/{DEV_ACCOUNT}/{}",
        azurite.port,
        random_container()
    );
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "entra_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PATH", path)
        .env("SSL_CERT_FILE", &cert)
        .env("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential")
        .env("MANAGEDBLOB_TEST_AZURE_REMOTE", &remote)
        .env("MANAGEDBLOB_TEST_TOKEN", &token)
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("AZURE_STORAGE_KEY")
        .env_remove("AZURE_STORAGE_ACCOUNT")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{text}");
    assert!(output.status.success(), "child failed:\n{text}");
    assert!(
        text.contains("entra child: ok"),
        "child did not run:\n{text}"
    );
    assert!(!text.contains(&token), "the token was printed:\n{text}");
}

#[test]
#[ignore = "run by entra_id_through_the_azure_cli_credential in a child process"]
fn entra_child() {
    let (Ok(remote), Ok(token)) = (
        std::env::var("MANAGEDBLOB_TEST_AZURE_REMOTE"),
        std::env::var("MANAGEDBLOB_TEST_TOKEN"),
    ) else {
        eprintln!("entra child: not started by its parent test; nothing to do");
        return;
    };
    capture_logs();
    let url = ContainerUrl::parse(&remote).unwrap();
    let b = AzureBackend::connect(&url).unwrap();
    assert!(
        b.auth_description().starts_with("Entra ID"),
        "{}",
        b.auth_description()
    );
    assert!(b.create_container().unwrap());
    let v1 = create(&b, "entra.db", b"v1");
    let lease = b.acquire_lease("entra.db", LONG).unwrap();
    let v2 = upload(
        &b,
        "entra.db",
        b"v2",
        &Condition::Match(v1.etag),
        Some(&lease.id),
    )
    .unwrap();
    b.release_lease("entra.db", &lease.id).unwrap();
    assert_eq!(download(&b, "entra.db"), (b"v2".to_vec(), v2));
    // A chain that finds no token says which credentials it tried and why.
    let env = |name: &str| {
        (name == "AZURE_TOKEN_CREDENTIALS").then(|| "AzureDeveloperCliCredential".to_string())
    };
    let none = AzureBackend::connect_with(&url, &env, AzureTuning::default()).unwrap();
    let err = none.stat("entra.db").unwrap_err();
    eprintln!("no token: {err}");
    assert_eq!(err.kind, BackendErrorKind::Denied, "{err}");
    assert!(
        err.message.contains("AzureDeveloperCliCredential:"),
        "{err}"
    );
    let log = captured();
    assert!(log.contains("Entra ID token obtained"), "{log}");
    assert!(!log.contains(&token), "the bearer token reached the log");
    println!("entra child: ok");
}

// ---- Blocks (delta sync) against Azurite ----------------------------------------------
//
// The block checks of tests/backend_conformance.rs (module copied verbatim), then what
// only Azure shows: lists of blobs written by the staged upload path, a commit of
// blocks another backend instance staged, and one HTTP request per block call.

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

#[test]
fn blocks_list_a_blob_written_by_the_staged_upload_path() {
    use block_checks::*;
    let Some(azurite) = azurite() else { return };
    let tuning = AzureTuning::new()
        .single_put_max(1 << 20)
        .block_size(1 << 20);
    let b = azurite.fresh(tuning);
    let data = pattern((2 << 20) + 7, 3);
    let v1 = create(&b, "staged.db", &data);
    let (stat, list) = listed(&b, "staged.db");
    assert_eq!(stat, v1);
    let sizes: Vec<u64> = list.iter().map(|(_, s)| *s).collect();
    assert_eq!(sizes, vec![1 << 20, 1 << 20, 7]);
    assert!(list.iter().all(|(id, _)| id.len() == 32), "{list:?}");
    // Its blocks can be reused by a delta commit: keep 0 and 2, replace 1.
    let new1 = pattern(1 << 20, 9);
    let id1 = id(1, &new1);
    blocks(&b)
        .stage_block("staged.db", &id1, new1.clone(), None)
        .unwrap();
    let ids = vec![list[0].0.clone(), id1, list[2].0.clone()];
    let v2 = blocks(&b)
        .commit_blocks("staged.db", &ids, &Condition::Match(v1.etag), None)
        .unwrap();
    assert_eq!(v2.size, data.len() as u64);
    let mut expected = data.clone();
    expected[1 << 20..2 << 20].copy_from_slice(&new1);
    let (bytes, stat) = download(&b, "staged.db");
    assert_eq!(stat, v2);
    assert!(bytes == expected, "content differs");
}

#[test]
fn blocks_commit_of_blocks_staged_by_another_instance_knows_its_size() {
    use block_checks::*;
    let Some(azurite) = azurite() else { return };
    let a = azurite.fresh(AzureTuning::default());
    let b = azurite.backend_for(a.url().container(), AzureTuning::default());
    let staged = stage_all(&a, "other.db", &[b"staged by a, ", b"committed by b"], None);
    // `b` never saw these blocks: it asks for the size of what it committed.
    let v1 = blocks(&b)
        .commit_blocks("other.db", &ids_of(&staged), &Condition::Create, None)
        .unwrap();
    assert_eq!(v1.size, 27);
    assert_eq!(current(&a, "other.db"), v1);
    assert_eq!(listed(&b, "other.db"), (v1, staged));
}

#[test]
fn block_calls_are_one_request_each() {
    use block_checks::*;
    capture_logs();
    let busy = Busy::start();
    let url = ContainerUrl::parse(&format!(
        "http://127.0.0.1:{}/{DEV_ACCOUNT}/busy",
        busy.port
    ))
    .unwrap();
    let env = |name: &str| (name == "AZURE_STORAGE_KEY").then(|| DEV_KEY.to_string());
    let b = AzureBackend::connect_with(&url, &env, AzureTuning::default()).unwrap();
    let bl = blocks(&b);
    let block = id(0, b"data");
    let transient = |e: managedblob::backend::BackendError| {
        assert_eq!(e.kind, BackendErrorKind::Transient, "{e}");
        assert!(e.message.contains("503"), "{e}");
    };
    transient(bl.block_list("x.db").unwrap_err());
    assert_eq!(busy.requests(), 1);
    transient(
        bl.stage_block("x.db", &block, b"data".to_vec(), None)
            .unwrap_err(),
    );
    assert_eq!(busy.requests(), 2);
    let at = Condition::Match(Etag("\"0x1\"".into()));
    transient(bl.commit_blocks("x.db", &[block], &at, None).unwrap_err());
    assert_eq!(busy.requests(), 3);
    transient(
        bl.read_range("x.db", 0, 4, &Etag("\"0x1\"".into()))
            .unwrap_err(),
    );
    assert_eq!(busy.requests(), 4);
}
