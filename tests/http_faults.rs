//! Faults on the real HTTP path: the `azure` backend talking to Azurite through the
//! fault-injecting proxy of tests/common/http_proxy.rs (connections closed before a
//! request is forwarded, replies dropped after the server applied the request).
#![cfg(feature = "azure")]

use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::azurite::{self, random_container, Azurite, DEV_ACCOUNT, DEV_KEY};
use common::http_proxy::{Fate, HttpProxy, Request};
use managedblob::internal::backend::azure::{AzureBackend, AzureTuning, ContainerUrl};
use managedblob::internal::backend::{Backend, BackendErrorKind, Condition};

/// A fresh container, a backend talking to it directly, one talking through a proxy,
/// and the proxy.
struct Proxied {
    _azurite: std::sync::Arc<Azurite>,
    direct: AzureBackend,
    via: AzureBackend,
    proxy: HttpProxy,
}

fn proxied() -> Option<Proxied> {
    let az = azurite::shared()?;
    let container = random_container();
    let direct = az.backend_for(&container, AzureTuning::default());
    assert!(direct.create_container().unwrap());
    let proxy = HttpProxy::start(([127, 0, 0, 1], az.port).into());
    let via = backend_through(&proxy, &container);
    Some(Proxied {
        _azurite: az,
        direct,
        via,
        proxy,
    })
}

/// A backend on `container` whose requests go through `proxy`.
fn backend_through(proxy: &HttpProxy, container: &str) -> AzureBackend {
    let url =
        ContainerUrl::parse(&format!("http://{}/{DEV_ACCOUNT}/{container}", proxy.addr)).unwrap();
    let cs = format!(
        "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};\
         BlobEndpoint=http://{}/{DEV_ACCOUNT};",
        proxy.addr
    );
    let env = move |name: &str| (name == "AZURE_STORAGE_CONNECTION_STRING").then(|| cs.clone());
    AzureBackend::connect_with(&url, &env, AzureTuning::default()).expect("connect")
}

const LEASE: Duration = Duration::from_secs(15);

/// An acquire is one request (its reply carries the ETag: no Get Properties after
/// it). When its reply is lost, the lease id must not be forgotten, or every writer
/// (this one included) waits up to `lease_secs` for it to lapse: the next acquire
/// proposes the same id and takes it back at once.
#[test]
fn a_lease_whose_acquire_reply_was_lost_is_taken_back_not_waited_out() {
    let Some(p) = proxied() else { return };
    let v1 = p
        .direct
        .upload("a.db", &mut Cursor::new(b"x"), 1, &Condition::Create, None)
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut lost = false;
    p.proxy.set_rule(move |r| {
        log.lock().unwrap().push(r.method.clone());
        if !lost && r.is_lease("acquire") {
            lost = true;
            Fate::LoseReply
        } else {
            Fate::Forward
        }
    });
    let failed = p.via.acquire_lease("a.db", LEASE).unwrap_err();
    assert_eq!(failed.kind, BackendErrorKind::Transient, "{failed}");
    // The lease is held on the blob...
    let other = p.direct.acquire_lease("a.db", LEASE).unwrap_err();
    assert_eq!(other.kind, BackendErrorKind::LeaseHeld, "{other}");
    // ...and the backend that took it takes it back at once, in one request.
    seen.lock().unwrap().clear();
    let lease = p
        .via
        .acquire_lease("a.db", LEASE)
        .unwrap_or_else(|e| panic!("the forgotten lease blocks its own taker: {e}"));
    assert_eq!(*seen.lock().unwrap(), ["PUT"], "one Lease Blob request");
    assert_eq!(lease.etag, v1.etag);
    p.via.release_lease("a.db", &lease.id).unwrap();
    let next = p.direct.acquire_lease("a.db", LEASE).unwrap();
    p.direct.release_lease("a.db", &next.id).unwrap();
}

/// A VFS remote URL (with an account SAS) for `container` through `proxy`.
fn vfs_remote_through(proxy: &HttpProxy, container: &str) -> String {
    format!(
        "http://{}/{DEV_ACCOUNT}/{container}?{}",
        proxy.addr,
        azurite::account_sas("rwdlac")
    )
}

/// A cache directory and the URI of cache `a.db` in it on `p`'s container through
/// its proxy, with `extra` settings (the VFS registered).
fn cache_through(p: &Proxied, extra: &str) -> (tempfile::TempDir, String) {
    common::init_logging();
    managedblob::register().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let uri = common::uri_with_remote(
        &dir.path().join("a.db"),
        &vfs_remote_through(&p.proxy, p.direct.url().container()),
        extra,
    );
    (dir, uri)
}

/// An ambiguous COMMIT on the real HTTP path: the reply to the request that
/// publishes is dropped after Azurite applied it (`landed`), or every attempt is
/// cut off before it reaches Azurite; the read-back that would tell is cut off too.
/// The COMMIT fails saying "may have been applied"; the next statement resolves it.
fn ambiguous_commit_through_the_proxy(mode: &str, landed: bool) {
    let Some(p) = proxied() else { return };
    let (dir, uri) = cache_through(
        &p,
        &format!("&sync={mode}&retry_base_ms=1&retry_attempts=3"),
    );
    let c = common::open(&uri);
    c.execute("CREATE TABLE t(id)", []).unwrap();
    let full = mode == "full";
    // The blob itself (full) or its block list (delta): a PUT publishes, a GET reads back.
    let on_the_version = move |r: &Request| {
        if full {
            !r.target.contains("comp=")
        } else {
            r.query_has("comp=blocklist")
        }
    };
    let publishes = move |r: &Request| r.method == "PUT" && on_the_version(r);
    let reads_back = move |r: &Request| r.method == "GET" && on_the_version(r);
    let mut first = true;
    p.proxy.set_rule(move |r| {
        if publishes(r) && (first || !landed) {
            first = false;
            if landed {
                Fate::LoseReply
            } else {
                Fate::ResetBeforeForwarding
            }
        } else if reads_back(r) {
            Fate::ResetBeforeForwarding
        } else {
            Fate::Forward
        }
    });
    let e = c.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
    let last_error = common::status(&c)["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        last_error.contains("may have been applied"),
        "{mode}: {e}: {last_error}"
    );
    p.proxy.pass_all();
    let ids: std::collections::BTreeSet<i64> = common::column(&c, "SELECT id FROM t");
    let last_error = common::status(&c)["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    if landed {
        assert_eq!(ids, [1].into(), "{mode}");
        assert!(
            last_error.contains("had been applied"),
            "{mode}: {last_error}"
        );
    } else {
        assert!(ids.is_empty(), "{mode}: {ids:?}");
        assert!(
            last_error.contains("was not applied"),
            "{mode}: {last_error}"
        );
    }
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    let mut remote = Vec::new();
    p.direct.download("a.db", &mut remote).unwrap();
    let copy = dir.path().join("remote.db");
    std::fs::write(&copy, remote).unwrap();
    let r = rusqlite::Connection::open(&copy).unwrap();
    let count: i64 = r
        .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
        .unwrap();
    assert_eq!(
        count,
        if landed { 2 } else { 1 },
        "{mode}: the remote holds each commit once"
    );
}

#[test]
fn an_ambiguous_commit_is_resolved_on_azurite() {
    for mode in ["full", "delta"] {
        ambiguous_commit_through_the_proxy(mode, true);
        ambiguous_commit_through_the_proxy(mode, false);
    }
}

/// `managedblob_status` counts every HTTP request, by kind, and the retries: the
/// proxy sees exactly as many requests as the status reports, including the ones a
/// backend call makes besides its main request (creating the container).
#[test]
fn status_counts_every_http_request_and_retry() {
    let Some(p) = proxied() else { return };
    let (_dir, uri) = cache_through(&p, "&retry_base_ms=1");
    let c = common::open(&uri);
    c.execute("CREATE TABLE t(id)", []).unwrap();
    // Cut off the first block commit: one retry.
    let mut cut = false;
    p.proxy.set_rule(move |r| {
        if !cut && r.method == "PUT" && r.query_has("comp=blocklist") {
            cut = true;
            Fate::ResetBeforeForwarding
        } else {
            Fate::Forward
        }
    });
    for i in 0..3 {
        c.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
    }
    let s = common::status(&c);
    let requests = &s["requests"];
    let http = &requests["http"];
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    let seen = {
        use std::sync::atomic::Ordering::Relaxed;
        let k = &p.proxy.counts;
        k.forwarded.load(Relaxed) + k.resets.load(Relaxed) + k.lost_replies.load(Relaxed)
    };
    assert_eq!(n(&http["total"]), seen, "{s}");
    let kinds: u64 = http
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "total")
        .map(|(_, v)| n(v))
        .sum();
    assert_eq!(kinds, seen, "{s}");
    assert_eq!(n(&requests["retries"]), 1, "{s}");
    assert!(n(&http["put_block_list"]) >= 5, "{s}");
    // A lease acquire is one request (its reply carries the ETag): every Get
    // Properties is a stat the store asked for.
    assert_eq!(n(&http["get_blob_properties"]), n(&requests["stat"]), "{s}");
    // Nor does any other call send a request its counter does not show.
    assert_eq!(n(&http["total"]), n(&requests["total"]), "{s}");
}
