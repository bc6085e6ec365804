//! Each failure a user meets first gives one line naming the cause and a non-zero
//! exit, with no panic and no secret: in the human form, with `--json`, and with
//! trace-level logging on.

mod common;

use common::azurite::{account_sas_expiring, DEV_ACCOUNT, DEV_KEY};
use common::{cli, json, stderr, stdout, Remote};

/// A well-formed key that is not the account's.
const WRONG_KEY: &str =
    "d3JvbmdrZXl3cm9uZ2tleXdyb25na2V5d3JvbmdrZXl3cm9uZ2tleXdyb25na2V5d3Jvbmdrd3Jvbmc9PT0=";

/// One failing invocation: its arguments, environment, and what the line must say.
struct Case<'a> {
    name: &'a str,
    args: Vec<String>,
    env: Vec<(&'a str, String)>,
    cause: &'a str,
    secrets: Vec<String>,
    /// Whether the command reaches the backend (so trace logging has lines to show).
    logs: bool,
}

fn check(case: &Case) {
    let run = |json_flag: bool, trace: bool| {
        let mut cmd = cli();
        if json_flag {
            cmd.arg("--json");
        }
        cmd.args(&case.args);
        for (k, v) in &case.env {
            cmd.env(k, v);
        }
        if trace {
            cmd.env("MANAGEDBLOB_LOG", "trace");
        }
        cmd.output().unwrap()
    };
    // Human: one line on stderr, nothing on stdout.
    let out = run(false, false);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}: {err}", case.name);
    assert_eq!(err.lines().count(), 1, "{}: one line: {err}", case.name);
    assert!(
        err.starts_with("error: ") && err.contains(case.cause),
        "{}: {err}",
        case.name
    );
    assert!(stdout(&out).is_empty(), "{}", case.name);
    // --json: one JSON object with the same message.
    let out = run(true, false);
    assert_eq!(out.status.code(), Some(1), "{}", case.name);
    let value = json(&out);
    assert!(
        value["error"].as_str().unwrap().contains(case.cause),
        "{}: {value}",
        case.name
    );
    // Trace logging: the same failure; logs may be long, but hold no secret.
    let traced = run(false, true);
    assert_eq!(traced.status.code(), Some(1), "{}", case.name);
    if case.logs {
        assert!(
            stderr(&traced).lines().count() > 1,
            "{}: trace logs expected",
            case.name
        );
    }
    for out in [&out, &traced] {
        let all = format!("{}{}", stdout(out), stderr(out));
        assert!(!all.contains("panicked"), "{}: {all}", case.name);
        for secret in &case.secrets {
            assert!(
                !all.contains(secret.as_str()),
                "{}: secret printed",
                case.name
            );
        }
    }
    eprintln!("{}: {}", case.name, err.trim_end());
}

fn sig_of(sas: &str) -> String {
    sas.split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .unwrap()
        .to_string()
}

#[test]
fn azurite_errors_name_their_cause_in_one_line() {
    let Some(remote) = Remote::azurite() else {
        return;
    };
    let az = remote.azurite.as_ref().unwrap();
    remote.seed("app.db", 1);
    let good_sig = sig_of(remote.setting.split_once('?').unwrap().1);
    let status = |r: &str, blob: &str| {
        vec![
            "status".to_string(),
            "--remote".into(),
            r.to_string(),
            "--blob".into(),
            blob.to_string(),
        ]
    };

    let missing_container = az.container_url_with_sas("no-such-container");
    check(&Case {
        name: "missing container",
        args: status(&missing_container, "app.db"),
        env: vec![],
        cause: "container 'no-such-container' does not exist",
        secrets: vec![good_sig.clone()],
        logs: true,
    });

    let wrong_key = format!(
        "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={WRONG_KEY};BlobEndpoint=http://127.0.0.1:{}/{DEV_ACCOUNT};",
        az.port
    );
    check(&Case {
        name: "wrong key",
        args: status(&az.container_url(&remote.container), "app.db"),
        env: vec![("AZURE_STORAGE_CONNECTION_STRING", wrong_key)],
        cause: "refused the account key",
        secrets: vec![WRONG_KEY.to_string(), DEV_KEY.to_string()],
        logs: true,
    });

    let expired = account_sas_expiring("rwdlac", "2020-01-01T00:00:00Z");
    check(&Case {
        name: "expired SAS",
        args: status(
            &format!("{}?{expired}", az.container_url(&remote.container)),
            "app.db",
        ),
        env: vec![],
        cause: "it expired at 2020-01-01T00:00:00Z",
        secrets: vec![sig_of(&expired)],
        logs: true,
    });

    check(&Case {
        name: "missing blob",
        args: status(&remote.setting, "nope.db"),
        env: vec![],
        cause: "blob nope.db does not exist",
        secrets: vec![good_sig.clone()],
        logs: true,
    });

    let work = tempfile::tempdir().unwrap();
    let text = work.path().join("notes.txt");
    std::fs::write(&text, "not a database").unwrap();
    let mut push = status(&remote.setting, "notes.db");
    push[0] = "push".into();
    push.push(text.to_str().unwrap().to_string());
    check(&Case {
        name: "not a SQLite file",
        args: push,
        env: vec![],
        cause: "is not a SQLite database",
        secrets: vec![good_sig],
        logs: false,
    });
}

#[test]
fn local_errors_name_their_cause_in_one_line() {
    let remote = Remote::local();
    let work = tempfile::tempdir().unwrap();
    let missing_dir = work.path().join("no-such-dir");
    check(&Case {
        name: "missing remote directory",
        args: vec!["status".into(), format!("{}/app.db", missing_dir.display())],
        env: vec![],
        cause: "no-such-dir",
        secrets: vec![],
        logs: false,
    });
    check(&Case {
        name: "missing blob",
        args: vec!["verify".into(), remote.shorthand("nope.db")],
        env: vec![],
        cause: "blob nope.db does not exist",
        secrets: vec![],
        logs: true,
    });
    std::fs::write(remote.dir().join("text.db"), "plain text, not SQLite").unwrap();
    check(&Case {
        name: "blob that is not SQLite",
        args: vec![
            "export".into(),
            "--remote".into(),
            remote.setting.clone(),
            "--blob".into(),
            "text.db".into(),
            work.path().join("out.db").to_str().unwrap().into(),
        ],
        env: vec![],
        cause: "blob text.db is not a SQLite database",
        secrets: vec![],
        logs: true,
    });
    assert!(!work.path().join("out.db").exists());
    check(&Case {
        name: "cache without sidecar",
        args: vec![
            "status".into(),
            "--cache".into(),
            work.path().join("c.db").to_str().unwrap().into(),
        ],
        env: vec![],
        cause: "has no sidecar",
        secrets: vec![],
        logs: false,
    });
}
