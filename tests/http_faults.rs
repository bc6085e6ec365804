//! Faults on the real HTTP path: the `azure` backend talking to Azurite through the
//! fault-injecting proxy of tests/common/http_proxy.rs (connections closed before a
//! request is forwarded, replies dropped after the server applied the request).
#![cfg(feature = "azure")]

mod common;

use std::io::Cursor;
use std::time::Duration;

use common::azurite::{self, random_container, Azurite, DEV_ACCOUNT, DEV_KEY};
use common::http_proxy::{Fate, HttpProxy};
use managedblob::backend::azure::{AzureBackend, AzureTuning, ContainerUrl};
use managedblob::backend::{Backend, BackendErrorKind, Condition};

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

/// The acquire succeeds, the stat after it is cut off, the release of the unused
/// lease is cut off too: the lease id must not be forgotten, or every writer (this
/// one included) waits up to `lease_secs` for it to lapse.
#[test]
fn a_lease_whose_stat_and_release_failed_is_taken_back_not_waited_out() {
    let Some(p) = proxied() else { return };
    p.direct
        .upload("a.db", &mut Cursor::new(b"x"), 1, &Condition::Create, None)
        .unwrap();
    let mut stage = 0;
    p.proxy.set_rule(move |r| match stage {
        0 if r.is_lease("acquire") => {
            stage = 1;
            Fate::Forward
        }
        1 if r.method == "HEAD" => {
            stage = 2;
            Fate::ResetBeforeForwarding
        }
        2 if r.is_lease("release") => {
            stage = 3;
            Fate::ResetBeforeForwarding
        }
        _ => Fate::Forward,
    });
    let failed = p.via.acquire_lease("a.db", LEASE).unwrap_err();
    assert_eq!(failed.kind, BackendErrorKind::Transient, "{failed}");
    assert_eq!(
        p.proxy
            .counts
            .resets
            .load(std::sync::atomic::Ordering::Relaxed),
        2,
        "the stat and the release were both cut off"
    );
    p.proxy.pass_all();
    // The lease is still held on the blob...
    let other = p.direct.acquire_lease("a.db", LEASE).unwrap_err();
    assert_eq!(other.kind, BackendErrorKind::LeaseHeld, "{other}");
    // ...and the backend that took it takes it back at once.
    let lease = p
        .via
        .acquire_lease("a.db", LEASE)
        .unwrap_or_else(|e| panic!("the forgotten lease blocks its own taker: {e}"));
    p.via.release_lease("a.db", &lease.id).unwrap();
    let next = p.direct.acquire_lease("a.db", LEASE).unwrap();
    p.direct.release_lease("a.db", &next.id).unwrap();
}
