//! Secrets stay out of the logs at the most verbose level: a shell session with the
//! loadable extension against Azurite, with `MANAGEDBLOB_LOG=trace` (every crate:
//! ours, the Azure SDK, hyper), once with a SAS in the remote URL and once with the
//! account key in `AZURE_STORAGE_CONNECTION_STRING`. Neither the SAS signature nor the
//! account key may appear, in any encoding.
//!
//! Skipped (printing why) when the extension, /usr/bin/sqlite3 or Azurite is missing,
//! unless `CI` is set: then it fails.
#![cfg(feature = "azure")]

use std::path::{Path, PathBuf};

use common::{azurite, command_in, extension, leaks, missing, run, Output};

const SQLITE3: &str = "/usr/bin/sqlite3";

const WRITE: &str = "CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES (1);\n\
                     SELECT count(*) FROM t;\n";

/// `sqlite3` in `dir` with `.load` and `.open` of `file:corpus.db` on `remote`.
fn shell(dir: &Path, ext: &Path, remote: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = command_in(dir, SQLITE3);
    cmd.env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("AZURE_STORAGE_KEY")
        .env_remove("AZURE_STORAGE_ACCOUNT")
        .env("MANAGEDBLOB_LOG", "trace")
        .envs(env.iter().copied())
        .arg("-cmd")
        .arg(format!(".load {}", ext.display()))
        .arg("-cmd")
        .arg(format!(
            ".open 'file:corpus.db?vfs=managedblob&remote={}'",
            common::uri_escape(remote)
        ))
        .arg(":memory:");
    run(cmd, WRITE)
}

/// The log proves the Azure requests ran at trace level (so the checks that follow
/// looked at something).
fn assert_traced_azure_requests(log: &str) {
    assert!(log.contains("managedblob::backend::azure"), "{log}");
    assert!(log.contains(" TRACE "), "{log}");
    assert!(log.contains("Request"), "the SDK's request lines: {log}");
}

/// The extension, the shell and Azurite; `None` (skip, or fail under CI) without them.
fn prerequisites() -> Option<(PathBuf, std::sync::Arc<azurite::Azurite>)> {
    let ext = std::fs::canonicalize(extension()?).unwrap();
    if !Path::new(SQLITE3).is_file() {
        return missing(&format!("{SQLITE3} is not installed"));
    }
    Some((ext, azurite::shared()?))
}

#[test]
fn trace_logs_of_a_shell_session_on_azurite_hold_no_sas_signature_or_key() {
    let Some((ext, az)) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let container = azurite::random_container();
    assert!(az
        .backend_for(&container, Default::default())
        .create_container()
        .unwrap());

    // A SAS in the URL, the log in a file.
    let with_sas = az.container_url_with_sas(&container);
    let sig = leaks::sas_signature(with_sas.split_once('?').unwrap().1);
    // The check finds the signature in the URL's encoding (so it can fail).
    let found = std::panic::catch_unwind(|| leaks::assert_not_in(&with_sas, "sig", &sig));
    assert!(found.is_err(), "the leak check misses the SAS signature");
    let log_path = dir.path().join("sas.log");
    let log_file = log_path.to_str().unwrap();
    let out = shell(
        dir.path(),
        &ext,
        &with_sas,
        &[("MANAGEDBLOB_LOG_FILE", log_file)],
    );
    assert!(out.status.success() && out.stderr.is_empty(), "{out:#?}");
    assert_eq!(out.stdout.trim(), "1", "{out:#?}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_traced_azure_requests(&log);
    leaks::assert_not_in(&log, "the SAS signature", &sig);
    leaks::assert_not_in(&log, "the account key", azurite::DEV_KEY);

    // The account key in the environment, the log on stderr.
    let h2 = dir.path().join("h2");
    std::fs::create_dir(&h2).unwrap();
    let connection_string = az.connection_string();
    let out = shell(
        &h2,
        &ext,
        &az.container_url(&container),
        &[("AZURE_STORAGE_CONNECTION_STRING", &connection_string)],
    );
    assert!(out.status.success(), "{out:#?}");
    assert_eq!(out.stdout.trim(), "2", "{out:#?}");
    assert_traced_azure_requests(&out.stderr);
    leaks::assert_not_in(&out.stderr, "the account key", azurite::DEV_KEY);
    // Nor the per-request Shared Key signature.
    assert!(
        !out.stderr.contains("SharedKey devstoreaccount1:"),
        "an Authorization header value is in the log"
    );
}
