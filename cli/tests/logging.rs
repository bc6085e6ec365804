//! `MANAGEDBLOB_LOG` / `MANAGEDBLOB_LOG_FILE` in the command: off by default (whatever
//! `RUST_LOG` says), to stderr or appended to a file when set, one line and no logging
//! for a bad setting, and no SAS signature or account key at trace level on Azurite.

mod common;

use std::process::Output;

use common::{azurite, cli, Remote};
use harness::leaks;

/// A line the debug filter lets through for `status` on a local remote.
const DEBUG_LINE: &str = " DEBUG managedblob::backend::local";

/// `managedblob <args>` with only the given logging variables set.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = cli();
    cmd.env_remove("MANAGEDBLOB_LOG")
        .env_remove("MANAGEDBLOB_LOG_FILE")
        .envs(env.iter().copied())
        .args(args);
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A local remote with one seeded blob, and the `status` arguments for it.
fn seeded() -> (Remote, String) {
    let remote = Remote::local();
    remote.seed("app.db", 3);
    let shorthand = remote.shorthand("app.db");
    (remote, shorthand)
}

#[test]
fn managedblob_log_debug_logs_to_stderr() {
    let (_remote, blob) = seeded();
    let out = run(&["status", &blob], &[("MANAGEDBLOB_LOG", "debug")]);
    assert!(out.status.success(), "{out:#?}");
    assert!(text(&out.stdout).contains("etag"), "{out:#?}");
    assert!(text(&out.stderr).contains(DEBUG_LINE), "{out:#?}");
}

#[test]
fn managedblob_log_file_receives_the_lines_and_is_appended_to() {
    let (_remote, blob) = seeded();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("cli.log");
    let env = [
        ("MANAGEDBLOB_LOG", "debug"),
        ("MANAGEDBLOB_LOG_FILE", log.to_str().unwrap()),
    ];
    let out = run(&["status", &blob], &env);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:#?}");
    let first = std::fs::read_to_string(&log).unwrap();
    assert!(first.contains(DEBUG_LINE), "{first}");
    let out = run(&["verify", &blob], &env);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:#?}");
    let both = std::fs::read_to_string(&log).unwrap();
    assert!(both.starts_with(&first), "the file was not appended to");
    assert!(both[first.len()..].contains(DEBUG_LINE), "{both}");
}

#[test]
fn without_managedblob_log_nothing_is_logged_even_with_rust_log() {
    let (_remote, blob) = seeded();
    let out = run(&["status", &blob], &[("RUST_LOG", "trace")]);
    assert!(out.status.success(), "{out:#?}");
    assert!(out.stderr.is_empty(), "{out:#?}");
}

#[test]
fn a_bad_setting_gives_one_line_and_the_command_still_runs() {
    let (remote, blob) = seeded();
    let missing_dir = remote.dir().join("no-such-dir").join("cli.log");
    for (env, start) in [
        (
            vec![("MANAGEDBLOB_LOG", "managedblob=loud")],
            "managedblob: logging stays off: MANAGEDBLOB_LOG=",
        ),
        (
            vec![
                ("MANAGEDBLOB_LOG", "debug"),
                ("MANAGEDBLOB_LOG_FILE", missing_dir.to_str().unwrap()),
            ],
            "managedblob: logging stays off: cannot open MANAGEDBLOB_LOG_FILE=",
        ),
    ] {
        let out = run(&["status", &blob], &env);
        assert!(out.status.success(), "{out:#?}");
        assert!(text(&out.stdout).contains("etag"), "{out:#?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{out:#?}");
        assert!(stderr.starts_with(start), "{out:#?}");
    }
}

#[test]
fn trace_logs_on_azurite_hold_no_sas_signature_or_key() {
    let Some(remote) = Remote::azurite() else {
        return;
    };
    remote.seed("app.db", 3);
    let az = remote.azurite.as_ref().unwrap();
    let sig = leaks::sas_signature(remote.setting.split_once('?').unwrap().1);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path().join("app.db");
    let cache = cache.to_str().unwrap();
    let trace = ("MANAGEDBLOB_LOG", "trace");

    // A SAS in the remote URL: status, verify, and pull (through the VFS).
    let mut log = String::new();
    for args in [
        vec!["status", "--remote", &remote.setting, "--blob", "app.db"],
        vec!["verify", "--remote", &remote.setting, "--blob", "app.db"],
        vec![
            "pull",
            "--remote",
            &remote.setting,
            "--blob",
            "app.db",
            "--cache",
            cache,
        ],
    ] {
        let out = run(&args, &[trace]);
        assert!(out.status.success(), "{args:?}: {out:#?}");
        log.push_str(&text(&out.stderr));
    }
    // The account key in the environment.
    let url = az.container_url(&remote.container);
    let connection_string = az.connection_string();
    let out = run(
        &["verify", "--remote", &url, "--blob", "app.db"],
        &[
            trace,
            ("AZURE_STORAGE_CONNECTION_STRING", &connection_string),
        ],
    );
    assert!(out.status.success(), "{out:#?}");
    log.push_str(&text(&out.stderr));

    // The requests were traced, so there was something to look at.
    assert!(log.contains("managedblob::backend::azure"), "{log}");
    assert!(log.contains(" TRACE "), "{log}");
    assert!(log.contains("Request"), "the SDK's request lines: {log}");
    let found = std::panic::catch_unwind(|| leaks::assert_not_in(&remote.setting, "sig", &sig));
    assert!(found.is_err(), "the leak check misses the SAS signature");
    leaks::assert_not_in(&log, "the SAS signature", &sig);
    leaks::assert_not_in(&log, "the account key", azurite::DEV_KEY);
    assert!(
        !log.contains("SharedKey devstoreaccount1:"),
        "an Authorization header value is in the log"
    );
}
