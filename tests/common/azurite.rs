//! Azurite (the Azure Storage emulator) for the tests: found in `target/azurite`
//! (`scripts/azurite.sh` installs it there) or at `$AZURITE_BLOB`, started on a free
//! loopback port, shared by the tests that overlap in time (stopped, and its data
//! removed, when the last of them drops its handle), one random container per test.
//!
//! Without Azurite installed the tests that need it are skipped with a message, unless
//! the environment variable CI is set: then they fail.
//!
//! Only in builds with the `azure` feature (this module uses the `azure` backend).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use managedblob::internal::backend::azure::{AzureBackend, AzureTuning, ContainerUrl};

/// Azurite's well-known development account.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite blob service, stopped (and its data removed) on drop.
pub struct Azurite {
    child: Mutex<Child>,
    pub port: u16,
    _data: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Where the azurite-blob binary is expected.
pub fn bin() -> PathBuf {
    match std::env::var_os("AZURITE_BLOB") {
        Some(path) => PathBuf::from(path),
        None => crate::repo_root().join("target/azurite/node_modules/.bin/azurite-blob"),
    }
}

/// The CI policy for a missing prerequisite: fail when CI is set, else say why and
/// return None (the caller skips).
pub fn missing<T>(why: &str) -> Option<T> {
    if std::env::var_os("CI").is_some() {
        panic!("{why}; CI is set, so this is a failure, not a skip");
    }
    eprintln!("skipping: {why}");
    None
}

/// The shared Azurite, started when no test holds one. `None` (after saying why) when
/// Azurite is not installed and CI is not set.
pub fn shared() -> Option<Arc<Azurite>> {
    static SHARED: Mutex<Weak<Azurite>> = Mutex::new(Weak::new());
    let bin = bin();
    if !bin.exists() {
        return missing(&format!(
            "Azurite is not installed at {} (run scripts/azurite.sh, or set AZURITE_BLOB)",
            bin.display()
        ));
    }
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(running) = shared.upgrade() {
        return Some(running);
    }
    let started = Arc::new(start(&bin, &[]));
    *shared = Arc::downgrade(&started);
    Some(started)
}

/// Start an Azurite of its own (with `extra` arguments) on a free loopback port, and
/// wait until it listens.
pub fn start(bin: &Path, extra: &[&std::ffi::OsStr]) -> Azurite {
    let data = tempfile::tempdir().expect("azurite data dir");
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
        listener.local_addr().unwrap().port()
    };
    let mut child = Command::new(bin)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .arg("--location")
        .arg(data.path())
        .args(["--skipApiVersionCheck", "--disableTelemetry", "--silent"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if listens(port) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
            }
            panic!("azurite exited with {status}: {err}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("azurite did not listen on port {port} within 30 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Azurite {
        child: Mutex::new(child),
        port,
        _data: data,
    }
}

/// Whether something other than ourselves accepts connections on `port`. A connect
/// to a loopback port in the ephemeral range that nothing listens on can succeed by
/// connecting to itself (TCP simultaneous open: the kernel picked the same port as the
/// source); a wait that took that for Azurite went on before it listened (a CI failure).
fn listens(port: u16) -> bool {
    match TcpStream::connect(("127.0.0.1", port)) {
        Ok(stream) => stream.local_addr().ok() != stream.peer_addr().ok(),
        Err(_) => false,
    }
}

impl Azurite {
    /// The process id of the Azurite process (for its CPU time in /proc).
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// The path-style URL of `container` on this Azurite, without credentials.
    pub fn container_url(&self, container: &str) -> String {
        format!("http://127.0.0.1:{}/{DEV_ACCOUNT}/{container}", self.port)
    }

    /// The URL of `container` with an account SAS (read, write, delete, list, add,
    /// create) in its query string: a complete `remote` value, no environment needed.
    pub fn container_url_with_sas(&self, container: &str) -> String {
        format!(
            "{}?{}",
            self.container_url(container),
            account_sas("rwdlac")
        )
    }

    /// The dev account's connection string (for `AZURE_STORAGE_CONNECTION_STRING`).
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};\
             BlobEndpoint=http://127.0.0.1:{}/{DEV_ACCOUNT};",
            self.port
        )
    }

    /// A backend on `container` with the dev account's connection string.
    pub fn backend_for(&self, container: &str, tuning: AzureTuning) -> AzureBackend {
        let url = ContainerUrl::parse(&self.container_url(container)).unwrap();
        let cs = self.connection_string();
        let env = move |name: &str| (name == "AZURE_STORAGE_CONNECTION_STRING").then(|| cs.clone());
        AzureBackend::connect_with(&url, &env, tuning).expect("connect")
    }

    /// A backend on a fresh, empty container of its own.
    pub fn fresh(&self, tuning: AzureTuning) -> AzureBackend {
        let backend = self.backend_for(&random_container(), tuning);
        assert!(backend.create_container().expect("create container"));
        backend
    }
}

/// A container name no other test uses.
pub fn random_container() -> String {
    format!("t-{:016x}", fastrand::u64(..))
}

/// An account SAS for the dev account with `permissions`, signed with the well-known
/// key: `sv=...&ss=b&srt=sco&sp=...&se=...&spr=https,http&sig=<url-encoded>`.
pub fn account_sas(permissions: &str) -> String {
    account_sas_expiring(permissions, "2099-01-01T00:00:00Z")
}

/// [`account_sas`] with the expiry `se` (UTC, like `2020-01-01T00:00:00Z`): one in
/// the past makes a correctly signed SAS that the service refuses as expired.
pub fn account_sas_expiring(permissions: &str, se: &str) -> String {
    let (sv, ss, srt, spr) = ("2019-12-12", "b", "sco", "https,http");
    let to_sign = format!("{DEV_ACCOUNT}\n{permissions}\n{ss}\n{srt}\n\n{se}\n\n{spr}\n{sv}\n");
    let sig =
        azure_core::hmac::hmac_sha256(&to_sign, &azure_core::credentials::Secret::new(DEV_KEY))
            .unwrap();
    let sig: String = url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
    format!("sv={sv}&ss={ss}&srt={srt}&sp={permissions}&se={se}&spr={spr}&sig={sig}")
}

/// A fresh container on `az`, reached through a new loopback proxy: the container
/// for the test's own look (not through the proxy), the proxy, and the `remote`
/// setting for it (the container's URL through the proxy, with an account SAS).
pub fn container_behind_proxy(
    az: &Azurite,
) -> (AzureBackend, crate::http_proxy::HttpProxy, String) {
    let direct = az.backend_for(&random_container(), AzureTuning::default());
    assert!(direct.create_container().unwrap());
    let container = direct.url().container().to_string();
    let proxy = crate::http_proxy::HttpProxy::start(([127, 0, 0, 1], az.port).into());
    let remote = format!(
        "http://{}/{DEV_ACCOUNT}/{container}?{}",
        proxy.addr,
        account_sas("rwdlac")
    );
    (direct, proxy, remote)
}
