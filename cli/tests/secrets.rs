//! No SAS signature in any output of any command, whatever fails (issue 25, item 3):
//! every command run into every failure it can meet with a SAS in the remote URL (an
//! unreachable service, a signature Azurite refuses, a missing blob, a cache that
//! cannot be opened, a cache of another blob, an argument error that quotes the URL,
//! a refused push or restore), in text and with `--json`, the URL given as `--remote`,
//! as the REMOTE/BLOB shorthand and as `MANAGEDBLOB_REMOTE`. Each run must fail (so
//! the failure path is the one checked) and show no signature: neither the value
//! (as given, decoded, or encoded again) nor any `sig=` / `sig%3D` / `sig%253D` with a
//! value other than `<redacted>`.

mod common;

use std::path::Path;

use common::azurite::DEV_ACCOUNT;
use common::{cli, stderr, stdout, Remote};

/// A fake signature: its alphanumeric core must never be printed, in any encoding.
const FAKE_CORE: &str = "Zm9vU0VDUkVUc2lnbmF0dXJl";
const FAKE_SIG: &str = "Zm9vU0VDUkVUc2lnbmF0dXJl%2B%2FQ%3D";

/// Whether `text` shows a signature: `core`, or a `sig` parameter (in any
/// percent-encoding, any case) whose value is not `<redacted>`.
fn shows_a_signature(text: &str, core: &str) -> bool {
    if text.contains(core) {
        return true;
    }
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("sig") {
        let at = from + i + 3;
        from = at;
        let rest = &lower[at..];
        let value = ["=", "%3d", "%253d", "%25253d"]
            .iter()
            .find_map(|sep| rest.strip_prefix(sep));
        if let Some(value) = value {
            let ends = value.is_empty()
                || value.starts_with(['&', '"', ' ', '\n', ';'])
                || value.starts_with("%26");
            if !ends && !value.starts_with("<redacted>") && !value.starts_with("redacted") {
                return true;
            }
        }
    }
    false
}

/// One remote URL with a SAS, and the signature's core to look for.
struct Sas {
    what: &'static str,
    /// The container URL with its SAS query.
    url: String,
    core: String,
}

impl Sas {
    /// `<container URL>/<blob>?<SAS>`: the REMOTE/BLOB shorthand.
    fn shorthand(&self, blob: &str) -> String {
        let (base, query) = self.url.split_once('?').unwrap();
        format!("{base}/{blob}?{query}")
    }
}

/// The first alphanumeric run of the (percent-decoded) `sig` value of `url`.
fn core_of(url: &str) -> String {
    let sig = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("sig="))
        .unwrap();
    let core: String = sig
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    assert!(core.len() >= 8, "{sig}");
    core
}

/// A plain SQLite file to push.
fn plain_database(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE p(x); INSERT INTO p VALUES (1);")
        .unwrap();
}

/// Run `args` (text and `--json`) with `env`; it must fail and print no signature.
fn check(sas: &Sas, case: &str, args: &[String], env: &[(&str, &str)]) {
    run(sas, case, args, env, true);
}

/// [`check`], for a command that succeeds (`sweep` on Azure): no signature either.
fn run(sas: &Sas, case: &str, args: &[String], env: &[(&str, &str)], must_fail: bool) {
    for json in [false, true] {
        let mut cmd = cli();
        if json {
            cmd.arg("--json");
        }
        cmd.args(args).envs(env.iter().copied());
        let out = cmd.output().unwrap();
        let (o, e) = (stdout(&out), stderr(&out));
        let label = format!("{} / {case}{}", sas.what, if json { " --json" } else { "" });
        if must_fail {
            assert!(
                !out.status.success(),
                "{label}: the failure was not provoked\n{o}{e}"
            );
        }
        if json && must_fail {
            let first = o.lines().next().unwrap_or_default();
            let value: serde_json::Value = serde_json::from_str(first)
                .unwrap_or_else(|err| panic!("{label}: not JSON ({err}): {o}{e}"));
            assert!(value["error"].is_string(), "{label}: {o}");
        }
        for (stream, text) in [("stdout", &o), ("stderr", &e)] {
            assert!(
                !shows_a_signature(text, &sas.core),
                "{label}: {stream} shows the signature:\n{text}"
            );
        }
        eprintln!("{label}: {}", format!("{o}{e}").trim_end());
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// What a remote lets a command run into.
#[derive(Clone, Copy, PartialEq)]
enum Meets {
    /// Every request fails (unreachable, or the signature is refused).
    NoService,
    /// The service answers; the blob does not exist.
    MissingBlob,
    /// The service answers; the blob exists.
    ExistingBlob,
}

/// Every command into every failure it can meet on `sas`'s remote, as `meets` says.
fn every_command(sas: &Sas, blob: &str, meets: Meets, work: &Path) {
    let r = sas.url.as_str();
    let at = |extra: &[&str]| {
        let mut v = args(extra);
        v.extend(args(&["--remote", r, "--blob", blob]));
        v
    };
    let with = |mut v: Vec<String>, path: &Path| {
        v.push(path.display().to_string());
        v
    };
    let pull_into = |cache: &Path| {
        let mut ordered = at(&["pull"]);
        ordered.extend(["--cache".to_string(), cache.display().to_string()]);
        ordered
    };
    let plain = work.join("plain.db");
    if !plain.exists() {
        plain_database(&plain);
    }
    let text = work.join("notes.txt");
    std::fs::write(&text, "not a database").unwrap();
    let out = work.join("out.db");
    std::fs::write(&out, "exists").unwrap();
    let new_cache = work.join("new-dir").join("nested").join(blob);

    // Argument errors, which quote the URL, whatever the remote.
    let mut cases: Vec<(&str, Vec<String>)> = vec![
        (
            "argument error quoting the URL",
            vec!["status".into(), sas.shorthand(blob), sas.shorthand(blob)],
        ),
        (
            "unknown option before the URL",
            vec!["pull".into(), "--no-such-flag".into(), sas.shorthand(blob)],
        ),
        (
            "push of a file that is not SQLite",
            with(at(&["push"]), &text),
        ),
        (
            "restore of a version that is not kept",
            at(&["restore", "--version", "no-such-version"]),
        ),
    ];
    if meets != Meets::ExistingBlob {
        cases.extend([
            ("status", at(&["status"])),
            ("verify", at(&["verify"])),
            ("versions", at(&["versions"])),
            ("break-lease", at(&["break-lease", "--yes"])),
            ("export", with(at(&["export", "--force"]), &out)),
            ("pull into a missing directory", pull_into(&new_cache)),
            (
                "status REMOTE/BLOB",
                vec!["status".into(), sas.shorthand(blob)],
            ),
            (
                "verify REMOTE/BLOB",
                vec!["verify".into(), sas.shorthand(blob)],
            ),
            (
                "export REMOTE/BLOB",
                with(args(&["export", "--force", &sas.shorthand(blob)]), &out),
            ),
        ]);
    }
    if meets == Meets::NoService {
        cases.extend([
            ("push", with(at(&["push"]), &plain)),
            (
                "create-container",
                args(&["create-container", "--remote", r]),
            ),
            ("create-container REMOTE", args(&["create-container", r])),
        ]);
    }
    if meets == Meets::ExistingBlob {
        // The cache cannot be opened: a directory in its place, or a file where its
        // directory should be.
        let is_dir = work.join("dir-cache").join(blob);
        std::fs::create_dir_all(&is_dir).unwrap();
        cases.extend([
            ("pull into a cache that is a directory", pull_into(&is_dir)),
            ("pull under a file", pull_into(&plain.join(blob))),
            ("push over an existing blob", with(at(&["push"]), &plain)),
            (
                "push --if-match a wrong version",
                with(at(&["push", "--if-match", "0x0"]), &plain),
            ),
            ("export over an existing file", with(at(&["export"]), &out)),
        ]);
    }
    for (case, list) in &cases {
        check(sas, case, list, &[]);
    }
    if meets != Meets::ExistingBlob {
        // The URL from MANAGEDBLOB_REMOTE.
        check(
            sas,
            "status, remote from MANAGEDBLOB_REMOTE",
            &args(&["status", "--blob", blob]),
            &[("MANAGEDBLOB_REMOTE", r)],
        );
    }
    // sweep has nothing to do on Azure: it succeeds, and shows no signature either.
    run(sas, "sweep", &args(&["sweep", "--remote", r]), &[], false);
    run(sas, "sweep REMOTE", &args(&["sweep", r]), &[], false);
    if meets != Meets::NoService {
        // The container exists: create-container succeeds, and says so without the SAS.
        for list in [
            args(&["create-container", r]),
            args(&["create-container", "--remote", r]),
        ] {
            run(
                sas,
                "create-container of an existing container",
                &list,
                &[],
                false,
            );
        }
        run(
            sas,
            "create-container, remote from MANAGEDBLOB_REMOTE",
            &args(&["create-container"]),
            &[("MANAGEDBLOB_REMOTE", r)],
            false,
        );
    }
}

/// A cache of another blob, given with --cache and a SAS remote: refused by name.
fn cache_of_another_blob(sas: &Sas, remote: &Remote) {
    let (_dir, cache, conn) = remote.seeded_cache("other.db", 2);
    drop(conn);
    for command in ["status", "verify", "pull"] {
        check(
            sas,
            &format!("{command} --cache of another blob"),
            &args(&[
                command,
                "--remote",
                &sas.url,
                "--blob",
                "app.db",
                "--cache",
                cache.to_str().unwrap(),
            ]),
            &[],
        );
    }
}

#[test]
fn unreachable_remote_with_a_sas_prints_no_signature() {
    let sas = Sas {
        what: "unreachable",
        // Port 9 (discard) on loopback: refused at once.
        url: format!(
            "http://127.0.0.1:9/{DEV_ACCOUNT}/corpus?sv=2022-11-02&ss=b&srt=sco&sp=rwdlac&se=2099-01-01T00:00:00Z&sig={FAKE_SIG}"
        ),
        core: FAKE_CORE.to_string(),
    };
    let work = tempfile::tempdir().unwrap();
    every_command(&sas, "app.db", Meets::NoService, work.path());
}

#[test]
fn azurite_with_a_sas_prints_no_signature() {
    let Some(remote) = Remote::azurite() else {
        return;
    };
    remote.seed("app.db", 3);
    let work = tempfile::tempdir().unwrap();
    let good = Sas {
        what: "azurite",
        url: remote.setting.clone(),
        core: core_of(&remote.setting),
    };
    // The blob exists: the cache, push, restore and export failures.
    every_command(&good, "app.db", Meets::ExistingBlob, work.path());
    // It does not: every command's missing-blob failure.
    every_command(&good, "missing.db", Meets::MissingBlob, work.path());
    cache_of_another_blob(&good, &remote);

    // A signature Azurite refuses (403), every command.
    let (base, query) = remote.setting.split_once('?').unwrap();
    let forged: Vec<String> = query
        .split('&')
        .map(|p| match p.strip_prefix("sig=") {
            Some(_) => format!("sig={FAKE_SIG}"),
            None => p.to_string(),
        })
        .collect();
    let bad = Sas {
        what: "azurite, refused signature",
        url: format!("{base}?{}", forged.join("&")),
        core: FAKE_CORE.to_string(),
    };
    let work = tempfile::tempdir().unwrap();
    every_command(&bad, "app.db", Meets::NoService, work.path());
}

#[test]
fn the_checker_sees_signatures_in_every_encoding() {
    for shown in [
        format!("sig={FAKE_SIG}"),
        "x?sig=abc".to_string(),
        "file:a.db?remote=h%3Fsv%3D1%26sig%3DQUJD%253D".to_string(),
        "%2526SIG%253Dabc".to_string(),
        FAKE_CORE.to_string(),
    ] {
        assert!(shows_a_signature(&shown, FAKE_CORE), "{shown}");
    }
    for clean in [
        "sig=<redacted>&se=1",
        "remote=h%3Fsv%3D1%26sig%3D<redacted>&blob=a",
        "sig=REDACTED",
        "signature, design=1",
    ] {
        assert!(!shows_a_signature(clean, FAKE_CORE), "{clean}");
    }
}
