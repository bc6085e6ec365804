//! The `azure` backend's credentials and secrets, against Azurite (the Azure Storage
//! emulator) and a fake busy server.
//!
//!     scripts/azurite.sh && cargo test --features azure --test azure
//!
//! The tests start Azurite themselves (tests/common/azurite.rs): one instance shared by
//! the tests that overlap in time (it is stopped when the last of them ends), and one
//! container per test, so tests run in parallel. Without Azurite installed the tests
//! are skipped with a message, unless the environment variable CI is set: then they
//! fail.
//!
//! Covered here: missing and wrong credentials, SAS tokens, secrets kept out of
//! messages and of a trace-level log, Entra ID through the Azure CLI credential,
//! honest request counts (the SDK does not retry), and an end-to-end run of the VFS
//! through rusqlite with a connection string. The conformance suite and the
//! backend's own behaviour are in tests/backend_azurite.rs.
#![cfg(feature = "azure")]

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use common::azurite::{self as harness, account_sas, random_container, Azurite};
use common::azurite::{DEV_ACCOUNT, DEV_KEY};
use common::conformance::blocks::{blocks, chunk, id};
use common::conformance::*;
use managedblob::internal::backend::azure::{AzureBackend, AzureTuning, ContainerUrl};
use managedblob::internal::backend::{Backend, BackendErrorKind, Condition, Etag};

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

/// The URL of `container` with `sas` as its query.
fn with_sas(azurite: &Azurite, container: &AzureBackend, sas: &str) -> ContainerUrl {
    let url = azurite.container_url(container.url().container());
    ContainerUrl::parse(&format!("{url}?{sas}")).unwrap()
}

/// A backend with no credential but what `url` carries (a SAS, or nothing).
fn with_url_only(url: &ContainerUrl) -> AzureBackend {
    AzureBackend::connect_with(url, &|_| None, AzureTuning::default()).unwrap()
}

fn captured() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
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
    let url = with_sas(&azurite, &container, &sas);
    let b = with_url_only(&url);
    assert!(b.auth_description().contains("SAS"));
    let v1 = create(&b, "sas.db", b"through a SAS");
    let lease = b.acquire_lease("sas.db", LONG).unwrap();
    upload_leased(&b, "sas.db", b"v2", v1.etag, &lease.id);
    b.release_lease("sas.db", &lease.id).unwrap();
    assert_eq!(download(&b, "sas.db").0, b"v2");
    // A read-only SAS cannot write: Denied, and the message shows no signature.
    let ro = account_sas("rl");
    let ro_sig = ro.rsplit("sig=").next().unwrap().to_string();
    let url = with_sas(&azurite, &container, &ro);
    let b = with_url_only(&url);
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
    let url = with_sas(
        &azurite,
        &container,
        "sv=2019-12-12&ss=b&srt=sco&sp=rwdlac&se=2099-01-01T00:00:00Z&sig=BOGUSSIGNATURE",
    );
    let b = with_url_only(&url);
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
    let v1 = create(&b, "log.db", &chunk(3 << 20, 1));
    let lease = b.acquire_lease("log.db", LONG).unwrap();
    upload_leased(&b, "log.db", b"x", v1.etag, &lease.id);
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
    let url = with_sas(&azurite, &b, &sas);
    let s = with_url_only(&url);
    s.stat("log.db").unwrap();
    download(&s, "log.db");
    let _ = s.stat("../bad");
    let _ = upload(&s, "log.db", b"y", &Condition::Create, None);
    // Put Block From URL, whose source carries a SAS: a service SAS signed with the
    // key for `b`, the account SAS of `s`. Azurite 3.35 answers the first 501
    // APINotImplemented, the second 500 with no error code (its account SAS check
    // has no entry for the operation); both read as "unsupported".
    for backend in [&b as &dyn Backend, &s] {
        let v = current(backend, "log.db");
        let source = managedblob::internal::backend::SourceRange {
            offset: 0,
            len: 1,
            etag: &v.etag,
        };
        let id = id(0, b"x");
        let got = blocks(backend).stage_from_range("log.db", &id, source, None);
        assert_eq!(
            got.unwrap(),
            managedblob::internal::backend::StagedFromRange::Unsupported
        );
    }
    let bad = with_sas(&azurite, &b, "sv=2019-12-12&sig=BOGUSSIGNATURE");
    let _ = with_url_only(&bad).stat("log.db");
    // Unreachable endpoint: a transport error, which quotes the request URL.
    let gone =
        ContainerUrl::parse(&format!("http://127.0.0.1:9/{DEV_ACCOUNT}/gone?{sas}")).unwrap();
    let err = with_url_only(&gone).stat("log.db").unwrap_err();
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
        log.contains("stage block from range") && log.contains("501 APINotImplemented"),
        "Azurite 3.35 answers Put Block From URL signed with a key with 501 APINotImplemented"
    );
    // The service SAS signed for the copy source (its signature is random to the
    // test): any `sig=` the log shows must be redacted.
    for (at, _) in log.match_indices("sig=") {
        let shown = &log[at + 4..(at + 24).min(log.len())];
        assert!(
            shown.starts_with("<redacted>") || shown.starts_with("REDACTED"),
            "a signature reached the log: sig={shown}"
        );
    }
    assert!(
        !log.contains("SharedKey devstoreaccount1:"),
        "an Authorization header reached the log"
    );
}

// ---- End to end, through the VFS --------------------------------------------------

/// In a child test: the remote and the variable `var` its parent set, or None
/// (after saying so) when it was not started by its parent.
fn started_with(who: &str, var: &str) -> Option<(String, String)> {
    match (
        std::env::var("MANAGEDBLOB_TEST_AZURE_REMOTE"),
        std::env::var(var),
    ) {
        (Ok(remote), Ok(value)) => Some((remote, value)),
        _ => {
            eprintln!("{who}: not started by its parent test; nothing to do");
            None
        }
    }
}

/// Run the ignored test `name` of this binary in a child process whose environment
/// `setup` sets from its start, require success, and return all it printed.
fn run_child(name: &str, setup: impl FnOnce(&mut Command)) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    setup(&mut cmd);
    let output = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{text}");
    assert!(output.status.success(), "child failed:\n{text}");
    text
}

/// Runs the VFS test in a child process of this test binary, so the connection string
/// is in the child's environment from its start (setting variables in a running,
/// multi-threaded test binary races with the threads that read them).
#[test]
fn vfs_end_to_end_through_rusqlite() {
    let Some(azurite) = azurite() else { return };
    let container = azurite.fresh(AzureTuning::default());
    let remote = azurite.container_url(container.url().container());
    let dir = tempfile::tempdir().unwrap();
    let text = run_child("vfs_child", |cmd| {
        cmd.env(
            "AZURE_STORAGE_CONNECTION_STRING",
            azurite.connection_string(),
        )
        .env("MANAGEDBLOB_TEST_AZURE_REMOTE", &remote)
        .env("MANAGEDBLOB_TEST_DIR", dir.path())
        .env_remove("MANAGEDBLOB_REMOTE");
    });
    assert!(text.contains("vfs child: ok"), "child did not run:\n{text}");
    // The remote blob is a plain SQLite database.
    let (bytes, _) = download(&container, "corpus.db");
    assert!(bytes.starts_with(b"SQLite format 3\0"));
}

#[test]
#[ignore = "run by vfs_end_to_end_through_rusqlite in a child process"]
fn vfs_child() {
    let Some((remote, dir)) = started_with("vfs child", "MANAGEDBLOB_TEST_DIR") else {
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
    // Take the new version now rather than sleeping past the staleness bound.
    common::pragma(&a, "PRAGMA managedblob_refresh").unwrap();
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

    /// A backend (shared key) whose every request goes to this server.
    fn backend(&self) -> AzureBackend {
        capture_logs();
        let url = ContainerUrl::parse(&format!(
            "http://127.0.0.1:{}/{DEV_ACCOUNT}/busy",
            self.port
        ))
        .unwrap();
        let env = |name: &str| (name == "AZURE_STORAGE_KEY").then(|| DEV_KEY.to_string());
        AzureBackend::connect_with(&url, &env, AzureTuning::default()).unwrap()
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
    let busy = Busy::start();
    let b = busy.backend();
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

#[test]
fn block_calls_are_one_request_each() {
    let busy = Busy::start();
    let b = busy.backend();
    let bl = blocks(&b);
    let block = id(0, b"data");
    let transient = |e: managedblob::internal::backend::BackendError| {
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
    let text = run_child("entra_child", |cmd| {
        cmd.env("PATH", path)
            .env("SSL_CERT_FILE", &cert)
            .env("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential")
            .env("MANAGEDBLOB_TEST_AZURE_REMOTE", &remote)
            .env("MANAGEDBLOB_TEST_TOKEN", &token)
            .env_remove("AZURE_STORAGE_CONNECTION_STRING")
            .env_remove("AZURE_STORAGE_KEY")
            .env_remove("AZURE_STORAGE_ACCOUNT");
    });
    assert!(
        text.contains("entra child: ok"),
        "child did not run:\n{text}"
    );
    assert!(!text.contains(&token), "the token was printed:\n{text}");
}

#[test]
#[ignore = "run by entra_id_through_the_azure_cli_credential in a child process"]
fn entra_child() {
    let Some((remote, token)) = started_with("entra child", "MANAGEDBLOB_TEST_TOKEN") else {
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
    let v2 = upload_leased(&b, "entra.db", b"v2", v1.etag, &lease.id);
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
