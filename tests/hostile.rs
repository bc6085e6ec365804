//! Hostile input: a table of malformed or hostile settings, names, files and
//! environments. Each row runs in its own child process (this test binary
//! re-executed with `MB_CHILD_ROLE=row`), so a row may set environment variables or
//! resource limits, and an abort (a panic unwinding into C, a crash) shows as a
//! failed exit status. For every row the test asserts:
//!
//! - the error message contains the expected text (or the open succeeds, for the
//!   few rows where the designed answer is to recover);
//! - nothing was deleted or changed: every file that existed under the row's
//!   directory (remote, cache, anything outside) is still there with the same bytes
//!   (a row that recovers may replace the cache, but only after keeping its old
//!   bytes in a conflict copy);
//! - the child exited normally and printed no panic.
//!
//! Unwritable directories: the tests run as root in CI, where permission bits do not
//! stop anyone. As root the row makes the directory immutable with `chattr +i`, or,
//! where the file system does not support that, bind-mounts it read-only; as another
//! user it uses `chmod 0555`. The full-disk rows mount a small tmpfs (root only;
//! skipped otherwise) or set RLIMIT_FSIZE in the child with SIGXFSZ ignored.
//! The mechanism used is printed with the table (`--nocapture`).

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

const ROLE: &str = "MB_CHILD_ROLE";
const MARK: &str = "MB:RESULT ";
const SECRET: &str = "SECRETSIG";

/// The directories of one row.
struct Ctx {
    dir: PathBuf,
}

impl Ctx {
    fn remote(&self) -> PathBuf {
        self.dir.join("remote")
    }
    fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }
    fn cache(&self) -> PathBuf {
        self.cache_dir().join("a.db")
    }
    fn blob(&self) -> PathBuf {
        self.remote().join("a.db")
    }
    fn sidecar(&self) -> PathBuf {
        managedblob::sidecar::path_for(&self.cache())
    }
    fn expand(&self, template: &str) -> String {
        template
            .replace("{cache}", &self.cache().display().to_string())
            .replace("{cache_dir}", &self.cache_dir().display().to_string())
            .replace("{remote}", &self.remote().display().to_string())
            .replace("{dir}", &self.dir.display().to_string())
    }
    /// The usual URI: the cache `a.db` and the remote directory, plus `extra`.
    fn uri(&self, extra: &str) -> String {
        format!(
            "file:{}?vfs=managedblob&remote={}{extra}",
            self.cache().display(),
            self.remote().display()
        )
    }
}

/// A row's own step (an action in the child, or a check in the parent).
type RowFn = fn(&Ctx) -> Result<(), String>;

/// What a row expects.
#[derive(Clone, Copy)]
enum Expect {
    /// The action fails with a message containing all of these.
    Err(&'static [&'static str]),
    /// The action fails with a message containing one of these.
    AnyErr(&'static [&'static str]),
    /// The action succeeds (the designed answer is to recover).
    Opens,
    /// Not testable in this build; the reason.
    #[cfg_attr(feature = "azure", allow(dead_code))]
    Pending(&'static str),
}

/// What the child does once the row is set up.
#[derive(Clone, Copy)]
enum Action {
    /// Open the URI and read the schema and table `t`.
    Read,
    /// Read, then insert into `t`.
    Write,
    /// Read, then insert a 1 MiB row into `t`.
    WriteBig,
    /// Anything else, in the child.
    Custom(RowFn),
}

/// What the parent-side setup made, and how to undo it.
#[derive(Default)]
struct Setup {
    skip: Option<String>,
    mechanism: Option<String>,
    cleanup: Vec<Box<dyn FnOnce()>>,
    /// The URI for the child, instead of the row's template (a remote that is not a
    /// directory, such as an Azurite container URL).
    uri: Option<String>,
    /// More environment for the child.
    env: Vec<(String, String)>,
    /// Secrets the row hands over: none may appear in the error, the output, the log
    /// or any file.
    secrets: Vec<String>,
    /// A check of a remote that is not under the row's directory: nothing in it was
    /// deleted or changed.
    remote_unchanged: Option<Box<dyn Fn() -> Result<(), String>>>,
    /// (text, stand-in) pairs for the printed table (ports, random names).
    redact: Vec<(String, String)>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for undo in self.cleanup.drain(..).rev() {
            undo();
        }
    }
}

struct Row {
    name: &'static str,
    uri: &'static str,
    expect: Expect,
    setup: fn(&Ctx) -> Setup,
    action: Action,
    env: &'static [(&'static str, &'static str)],
    /// RLIMIT_FSIZE for the child, in bytes.
    fsize_limit: Option<u64>,
    /// The row recovers by replacing the cache (its old bytes must be kept aside).
    cache_may_change: bool,
    /// A row-specific check after the child ran.
    check: Option<RowFn>,
}

const DEFAULT_URI: &str = "file:{cache}?vfs=managedblob&remote={remote}";

fn row(name: &'static str, uri: &'static str, expect: Expect) -> Row {
    Row {
        name,
        uri,
        expect,
        setup: seeded,
        action: Action::Read,
        env: &[],
        fsize_limit: None,
        cache_may_change: false,
        check: None,
    }
}

impl Row {
    fn setup(mut self, f: fn(&Ctx) -> Setup) -> Row {
        self.setup = f;
        self
    }
    fn action(mut self, a: Action) -> Row {
        self.action = a;
        self
    }
    fn env(mut self, env: &'static [(&'static str, &'static str)]) -> Row {
        self.env = env;
        self
    }
    fn fsize_limit(mut self, bytes: u64) -> Row {
        self.fsize_limit = Some(bytes);
        self
    }
    fn cache_may_change(mut self) -> Row {
        self.cache_may_change = true;
        self
    }
    fn check(mut self, f: RowFn) -> Row {
        self.check = Some(f);
        self
    }
}

fn err(texts: &'static [&'static str]) -> Expect {
    Expect::Err(texts)
}

/// The table.
fn rows() -> Vec<Row> {
    vec![
        // --- the remote setting
        row("no remote setting", "file:{cache}?vfs=managedblob", err(&["setting 'remote' is missing"])),
        row("empty remote", "file:{cache}?vfs=managedblob&remote=", err(&["'remote'", "it is empty"])),
        row(
            "remote hidden behind %00 (URI-encoded NUL)",
            "file:{cache}?vfs=managedblob&remote=%00{remote}",
            err(&["'remote'"]),
        ),
        row("unknown scheme s3://", "file:{cache}?vfs=managedblob&remote=s3://bucket/x", err(&["unknown scheme 's3://'"])),
        row(
            "unknown scheme with a SAS-like secret",
            "file:{cache}?vfs=managedblob&remote=ftp%3A%2F%2Fhost%2Fc%3Fsv%3D1%26sig%3DSECRETSIG",
            err(&["unknown scheme 'ftp://'"]),
        ),
        #[cfg(not(feature = "azure"))]
        row(
            "https remote in a build without Azure",
            "file:{cache}?vfs=managedblob&remote=https%3A%2F%2Facct.blob.core.windows.net%2Fc%3Fsig%3DSECRETSIG",
            err(&["`azure` cargo feature"]),
        ),
        row("relative file:// URL", "file:{cache}?vfs=managedblob&remote=file%3A%2F%2Frelative%2Fdir", err(&["file:// URLs must be absolute"])),
        row("file:// URL with a host", "file:{cache}?vfs=managedblob&remote=file%3A%2F%2Fevil.example%2Fx", err(&["file:// URLs must be absolute"])),
        row("memory: without a name", "file:{cache}?vfs=managedblob&remote=memory%3A", err(&["memory: needs a name"])),
        row("remote directory does not exist", "file:{cache}?vfs=managedblob&remote={dir}/no-such-dir", err(&["'remote'", "cannot be resolved"])),
        row("remote is a regular file", "file:{cache}?vfs=managedblob&remote={dir}/plain-file", err(&["'remote'", "not a directory"]))
            .setup(|ctx| {
                let s = seeded(ctx);
                std::fs::write(ctx.dir.join("plain-file"), b"not a directory").unwrap();
                s
            }),
        row("NUL byte in the remote (register_with)", "", err(&["'remote'", "NUL byte"]))
            .action(Action::Custom(open_with_nul_remote)),
        row("remote from the environment with an unknown scheme", "file:{cache}?vfs=managedblob", err(&["environment variable MANAGEDBLOB_REMOTE", "unknown scheme 'gopher://'"]))
            .env(&[("MANAGEDBLOB_REMOTE", "gopher://x/y")]),
        // --- blob names
        row("blob ../escape.db", "file:{cache}?vfs=managedblob&remote={remote}&blob=../escape.db", err(&["'blob'", "'..' segments are not allowed"])),
        row("blob %2e%2e%2fescape.db", "file:{cache}?vfs=managedblob&remote={remote}&blob=%2e%2e%2fescape.db", err(&["'blob'", "'..' segments are not allowed"])),
        row("blob a/%2e%2e/%2e%2e/escape.db", "file:{cache}?vfs=managedblob&remote={remote}&blob=a/%2e%2e/%2e%2e/escape.db", err(&["'blob'", "'..' segments are not allowed"])),
        row("blob %00../escape.db", "file:{cache}?vfs=managedblob&remote={remote}&blob=%00../escape.db", err(&["'blob'"])),
        row("absolute blob %2fetc%2fpasswd", "file:{cache}?vfs=managedblob&remote={remote}&blob=%2fetc%2fpasswd", err(&["'blob'", "empty path segment"])),
        row("blob named like a companion file", "file:{cache}?vfs=managedblob&remote={remote}&blob=.a.db.mb-lease", err(&["'blob'", "may not start with '.'"])),
        row("blob with a backslash", "file:{cache}?vfs=managedblob&remote={remote}&blob=a%5c..%5cb", err(&["'blob'", "backslash"])),
        row("blob of 1025 bytes", "", err(&["'blob'", "longer than 1024 bytes"]))
            .action(Action::Custom(open_with_long_blob)),
        row("cache named .hidden.db (the default blob name)", "file:{cache_dir}/.hidden.db?vfs=managedblob&remote={remote}", err(&["'blob'", "defaults to the cache file's name"])),
        // --- numbers
        row("lease_secs=5", "file:{cache}?vfs=managedblob&remote={remote}&lease_secs=5", err(&["'lease_secs'", "between 15 and 60, got 5"])),
        row("lease_secs=61", "file:{cache}?vfs=managedblob&remote={remote}&lease_secs=61", err(&["'lease_secs'", "between 15 and 60, got 61"])),
        row("lease_secs=-1", "file:{cache}?vfs=managedblob&remote={remote}&lease_secs=-1", err(&["'lease_secs'", "whole number"])),
        row("lease_secs overflowing u64", "file:{cache}?vfs=managedblob&remote={remote}&lease_secs=99999999999999999999999", err(&["'lease_secs'", "whole number"])),
        row("lease_secs=15s", "file:{cache}?vfs=managedblob&remote={remote}&lease_secs=15s", err(&["'lease_secs'", "whole number"])),
        row("lease_secs from the environment out of range", DEFAULT_URI, err(&["environment variable MANAGEDBLOB_LEASE_SECS", "between 15 and 60, got 7"]))
            .env(&[("MANAGEDBLOB_LEASE_SECS", "7")]),
        row("staleness_ms=86400001", "file:{cache}?vfs=managedblob&remote={remote}&staleness_ms=86400001", err(&["'staleness_ms'", "between 0 and 86400000"])),
        row("retry_attempts=0", "file:{cache}?vfs=managedblob&remote={remote}&retry_attempts=0", err(&["'retry_attempts'", "between 1 and 20"])),
        row("retry_attempts=21", "file:{cache}?vfs=managedblob&remote={remote}&retry_attempts=21", err(&["'retry_attempts'", "between 1 and 20"])),
        row("retry_base_ms=0", "file:{cache}?vfs=managedblob&remote={remote}&retry_base_ms=0", err(&["'retry_base_ms'", "between 1 and 60000"])),
        row(
            "sync=sometimes",
            "file:{cache}?vfs=managedblob&remote={remote}&sync=sometimes",
            err(&["'sync'", "'delta' or 'full'"]),
        ),
        // --- what the remote holds
        row("remote blob is not a SQLite database", DEFAULT_URI, err(&["is not a SQLite database"]))
            .setup(|ctx| {
                let s = seeded(ctx);
                std::fs::write(ctx.blob(), pseudo_random(8192)).unwrap();
                s
            }),
        row("remote blob truncated mid-page", DEFAULT_URI, err(&["is not a SQLite database", "truncated"]))
            .setup(|ctx| {
                let s = seeded(ctx);
                truncate(&ctx.blob(), 4096 * 3 + 100);
                s
            }),
        row("remote truncated at a page boundary, over a warm cache", DEFAULT_URI, err(&["truncated"]))
            .setup(|ctx| {
                let s = warm(ctx);
                replace_remote_with_more_rows(ctx);
                let len = std::fs::metadata(ctx.blob()).unwrap().len();
                truncate(&ctx.blob(), len / 2 / 4096 * 4096);
                s
            }),
        row("remote blob is a directory", DEFAULT_URI, err(&["not a regular file"]))
            .setup(|ctx| {
                std::fs::create_dir_all(ctx.blob()).unwrap();
                std::fs::create_dir_all(ctx.cache_dir()).unwrap();
                Setup::default()
            }),
        row("remote blob is a symlink to a file outside the remote", DEFAULT_URI, err(&["is not a SQLite database"]))
            .setup(|ctx| {
                std::fs::create_dir_all(ctx.remote()).unwrap();
                std::fs::create_dir_all(ctx.cache_dir()).unwrap();
                std::fs::write(ctx.dir.join("outside.txt"), b"root:x:0:0:root:/root:/bin/sh\n").unwrap();
                std::os::unix::fs::symlink(ctx.dir.join("outside.txt"), ctx.blob()).unwrap();
                Setup::default()
            }),
        row("garbage lease file in the remote", DEFAULT_URI, Expect::Opens)
            .setup(|ctx| {
                let s = seeded(ctx);
                std::fs::write(ctx.remote().join(".a.db.mb-lease"), b"\x00\xffnot json{{{").unwrap();
                s
            })
            .action(Action::Write)
            .check(remote_gained_one_row),
        row("lease held by another host for a year", DEFAULT_URI, err(&["database is locked"]))
            .setup(|ctx| {
                let s = seeded(ctx);
                let far = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64
                    + 365 * 86_400_000;
                std::fs::write(
                    ctx.remote().join(".a.db.mb-lease"),
                    format!(
                        r#"{{"token":"0123456789abcdef0123456789abcdef","pid":1,"host":"another-host","boot_id":"x","expires_unix_ms":{far}}}"#
                    ),
                )
                .unwrap();
                s
            })
            .action(Action::Write),
        // --- the sidecar
        row("corrupt sidecar", DEFAULT_URI, err(&["sidecar", "is corrupt"]))
            .setup(|ctx| {
                let s = warm(ctx);
                std::fs::write(ctx.sidecar(), b"{\"format\": 1, \"remote\": tru").unwrap();
                s
            }),
        row("sidecar of a newer format", DEFAULT_URI, err(&["sidecar", "format 99"]))
            .setup(|ctx| {
                let s = warm(ctx);
                edit_sidecar(ctx, |v| v["format"] = 99.into());
                s
            }),
        row("sidecar of another remote, cache with other content", DEFAULT_URI, Expect::Opens)
            .setup(|ctx| {
                let s = warm(ctx);
                let c = Connection::open(ctx.cache()).unwrap();
                c.execute("INSERT INTO t(x) VALUES ('local only')", []).unwrap();
                drop(c);
                edit_sidecar(ctx, |v| v["remote"] = "local:/somewhere/else".into());
                s
            })
            .cache_may_change()
            .check(cache_equals_remote),
        row("sidecar is a directory", DEFAULT_URI, err(&["sidecar"]))
            .setup(|ctx| {
                let s = warm(ctx);
                std::fs::remove_file(ctx.sidecar()).unwrap();
                std::fs::create_dir(ctx.sidecar()).unwrap();
                s
            }),
        // --- the cache
        row("cache path is a directory", DEFAULT_URI, err(&["unable to open database file"]))
            .setup(|ctx| {
                let s = seeded(ctx);
                std::fs::create_dir_all(ctx.cache()).unwrap();
                s
            }),
        row("clean cache overwritten with garbage in place", DEFAULT_URI, err(&["file is not a database"]))
            .setup(|ctx| {
                let s = warm(ctx);
                let mut f = std::fs::OpenOptions::new().write(true).open(ctx.cache()).unwrap();
                std::io::Write::write_all(&mut f, &pseudo_random(4096)).unwrap();
                s
            })
            .action(Action::Write),
        row("cache directory not writable, cold cache", DEFAULT_URI, err(&["unable to open database file"]))
            .setup(|ctx| {
                let mut s = seeded(ctx);
                unwritable(&ctx.cache_dir(), &mut s);
                s
            }),
        row("cache directory not writable, remote moved", DEFAULT_URI, err(&["creating download file"]))
            .setup(|ctx| {
                let mut s = warm(ctx);
                replace_remote_with_more_rows(ctx);
                unwritable(&ctx.cache_dir(), &mut s);
                s
            }),
        row("full disk (tmpfs) while downloading", DEFAULT_URI, err(&["no space left"]))
            .setup(|ctx| {
                let mut s = seeded_big(ctx);
                small_tmpfs(&ctx.cache_dir(), "256k", &mut s);
                s
            }),
        row("full disk (tmpfs) at COMMIT", DEFAULT_URI, err(&["database or disk is full"]))
            .setup(|ctx| {
                let mut s = seeded(ctx);
                small_tmpfs(&ctx.cache_dir(), "512k", &mut s);
                drop(open(&ctx.uri("")));
                s
            })
            .action(Action::WriteBig),
        row("file size limit (RLIMIT_FSIZE) while downloading", DEFAULT_URI, err(&["File too large"]))
            .setup(seeded_big)
            .fsize_limit(256 * 1024),
        row("file size limit (RLIMIT_FSIZE) at COMMIT", DEFAULT_URI, Expect::AnyErr(&["database or disk is full", "disk I/O error"]))
            .setup(warm)
            .fsize_limit(256 * 1024)
            .action(Action::WriteBig),
        // --- Azure (a container on Azurite, holding a database; a warm cache)
        #[cfg(feature = "azure")]
        row(
            "expired SAS token (Azurite)",
            "",
            err(&["the service refused the SAS token", "it expired at 2020-", "devstoreaccount1"]),
        )
        .setup(azure_expired_sas)
        .action(Action::Write),
        #[cfg(feature = "azure")]
        row(
            "wrong account key in AZURE_STORAGE_CONNECTION_STRING (Azurite)",
            "",
            err(&["AZURE_STORAGE_CONNECTION_STRING", "devstoreaccount1"]),
        )
        .setup(azure_wrong_key)
        .action(Action::Write),
        #[cfg(not(feature = "azure"))]
        row("expired SAS token", "", Expect::Pending("needs the `azure` feature")),
        #[cfg(not(feature = "azure"))]
        row("wrong account key", "", Expect::Pending("needs the `azure` feature")),
    ]
}

// ---------------------------------------------------------------------------
// Setups (parent side)

/// The remote directory with a valid database `a.db` (table `t`, 40 rows of 1000
/// bytes: about a dozen 4 KiB pages); an empty cache directory.
fn seeded(ctx: &Ctx) -> Setup {
    seed_rows(ctx, 40, 1000);
    Setup::default()
}

/// Like [`seeded`] with about 1 MiB of rows.
fn seeded_big(ctx: &Ctx) -> Setup {
    seed_rows(ctx, 256, 4000);
    Setup::default()
}

fn seed_rows(ctx: &Ctx, rows: u32, bytes: u32) {
    std::fs::create_dir_all(ctx.remote()).unwrap();
    std::fs::create_dir_all(ctx.cache_dir()).unwrap();
    let c = Connection::open(ctx.blob()).unwrap();
    c.execute_batch(&format!(
        "PRAGMA page_size=4096; CREATE TABLE t(x);
         WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < {rows})
         INSERT INTO t SELECT randomblob({bytes}) FROM s;"
    ))
    .unwrap();
}

/// [`seeded`], then the cache synced with it through the VFS (cache + sidecar).
fn warm(ctx: &Ctx) -> Setup {
    let s = seeded(ctx);
    let c = open(&ctx.uri(""));
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 40);
    s
}

/// Another host commits: the remote moves to a bigger version.
fn replace_remote_with_more_rows(ctx: &Ctx) {
    let other = ctx.dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let c = open(&format!(
        "file:{}?vfs=managedblob&remote={}",
        other.join("a.db").display(),
        ctx.remote().display()
    ));
    c.execute_batch(
        "WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < 40)
         INSERT INTO t SELECT randomblob(1000) FROM s;",
    )
    .unwrap();
}

/// A fresh container on the shared Azurite holding the [`seeded`] database as blob
/// `a.db`, and a warm cache synced from it through the VFS with a good SAS. Returns
/// the setup (keeping Azurite up, checking the blob at the end) and the container
/// URL without credentials; `None` in `skip` when Azurite is not installed.
#[cfg(feature = "azure")]
fn azure_seeded(ctx: &Ctx) -> (Setup, Option<String>) {
    use managedblob::backend::{Backend, Condition};
    let mut setup = Setup::default();
    let Some(azurite) = common::azurite::shared() else {
        setup.skip = Some("Azurite is not installed".into());
        return (setup, None);
    };
    seed_rows(ctx, 40, 1000);
    let bytes = std::fs::read(ctx.blob()).unwrap();
    // Only the cache directory is ours here: the remote is the container.
    std::fs::remove_dir_all(ctx.remote()).unwrap();
    let backend = azurite.fresh(Default::default());
    backend
        .upload(
            "a.db",
            &mut &bytes[..],
            bytes.len() as u64,
            &Condition::Create,
            None,
        )
        .unwrap();
    let container = backend.url().container().to_string();
    let url = azurite.container_url(&container);
    // Warm the cache with a good SAS.
    let good = format!("{url}?{}", common::azurite::account_sas("rwdlac"));
    let c = open(&uri_with_remote(&ctx.cache(), &good, ""));
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 40);
    drop(c);
    let seen = bytes.clone();
    setup.remote_unchanged = Some(Box::new(move || {
        let mut now = Vec::new();
        backend
            .download("a.db", &mut now)
            .map_err(|e| format!("the remote blob a.db cannot be read back: {e}"))?;
        if now != seen {
            return Err("the remote blob a.db was changed".into());
        }
        Ok(())
    }));
    setup.redact = vec![
        (format!("127.0.0.1:{}", azurite.port), "<azurite>".into()),
        (container, "<container>".into()),
    ];
    setup.cleanup.push(Box::new(move || drop(azurite)));
    (setup, Some(url))
}

/// The secret part of a SAS: its signature, as written and URL-decoded.
#[cfg(feature = "azure")]
fn sas_signatures(sas: &str) -> Vec<String> {
    let sig = sas.rsplit("sig=").next().unwrap().to_string();
    let decoded = url::form_urlencoded::parse(format!("s={sig}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    vec![sig, decoded]
}

/// [`azure_seeded`], then the remote given as the container URL with an account SAS
/// that is correctly signed but expired (`se` in 2020).
#[cfg(feature = "azure")]
fn azure_expired_sas(ctx: &Ctx) -> Setup {
    let (mut setup, url) = azure_seeded(ctx);
    let Some(url) = url else { return setup };
    let sas = common::azurite::account_sas_expiring("rwdlac", "2020-01-01T00:00:00Z");
    setup.secrets = sas_signatures(&sas);
    setup.uri = Some(uri_with_remote(
        &ctx.cache(),
        &format!("{url}?{sas}"),
        "&retry_attempts=2&retry_base_ms=1",
    ));
    setup
}

/// [`azure_seeded`], then the remote given as the bare container URL and the
/// credential as a connection string whose AccountKey is well-formed but wrong.
#[cfg(feature = "azure")]
fn azure_wrong_key(ctx: &Ctx) -> Setup {
    let (mut setup, url) = azure_seeded(ctx);
    let Some(url) = url else { return setup };
    let wrong_key = "V1JPTkdLRVlXUk9OR0tFWVdST05HS0VZV1JPTkdLRVlXUk9OR0tFWQ==";
    let endpoint = url.rsplit_once('/').unwrap().0;
    setup.env = vec![(
        "AZURE_STORAGE_CONNECTION_STRING".into(),
        format!(
            "DefaultEndpointsProtocol=http;AccountName={};AccountKey={wrong_key};\
             BlobEndpoint={endpoint};",
            common::azurite::DEV_ACCOUNT
        ),
    )];
    setup.secrets = vec![wrong_key.into(), common::azurite::DEV_KEY.into()];
    setup.uri = Some(uri_with_remote(
        &ctx.cache(),
        &url,
        "&retry_attempts=2&retry_base_ms=1",
    ));
    setup
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn edit_sidecar(ctx: &Ctx, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ctx.sidecar()).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(ctx.sidecar(), serde_json::to_vec(&v).unwrap()).unwrap();
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(len as u64);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether creating a file in `dir` fails now.
fn creating_fails(dir: &Path) -> bool {
    let probe = dir.join(".probe");
    match std::fs::write(&probe, b"x") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            false
        }
        Err(_) => true,
    }
}

/// Make `dir` refuse new files, by a means that also stops root.
fn unwritable(dir: &Path, setup: &mut Setup) {
    let shown = dir.display().to_string();
    if !is_root() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let d = dir.to_path_buf();
        setup.cleanup.push(Box::new(move || {
            let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755));
        }));
        setup.mechanism = Some("chmod 0555 (not root)".into());
        return;
    }
    let mut tried = Vec::new();
    match run("chattr", &["+i", &shown]) {
        Ok(()) => {
            let d = shown.clone();
            setup.cleanup.push(Box::new(move || {
                let _ = run("chattr", &["-i", &d]);
            }));
            if creating_fails(dir) {
                setup.mechanism = Some("chattr +i (immutable directory; root)".into());
                return;
            }
            tried.push("chattr +i did not stop root".to_string());
        }
        Err(e) => tried.push(e),
    }
    match run("mount", &["--bind", &shown, &shown])
        .and_then(|()| run("mount", &["-o", "remount,bind,ro", &shown]))
    {
        Ok(()) => {
            let d = shown.clone();
            setup.cleanup.push(Box::new(move || {
                let _ = run("umount", &[&d]);
            }));
            if creating_fails(dir) {
                setup.mechanism = Some("read-only bind mount (root)".into());
                return;
            }
            tried.push("the read-only bind mount did not stop root".into());
        }
        Err(e) => {
            let _ = run("umount", &[&shown]);
            tried.push(e);
        }
    }
    setup.skip = Some(format!(
        "running as root and no way to make a directory unwritable: {}",
        tried.join("; ")
    ));
}

/// Mount a tmpfs of `size` on `dir` (root only).
fn small_tmpfs(dir: &Path, size: &str, setup: &mut Setup) {
    if !is_root() {
        setup.skip = Some("mounting a tmpfs needs root".into());
        return;
    }
    let shown = dir.display().to_string();
    match run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
            &shown,
        ],
    ) {
        Ok(()) => {
            setup.mechanism = Some(format!("tmpfs of {size}"));
            setup.cleanup.push(Box::new(move || {
                let _ = run("umount", &[&shown]);
            }));
        }
        Err(e) => setup.skip = Some(format!("cannot mount a tmpfs: {e}")),
    }
}

// ---------------------------------------------------------------------------
// Custom actions and checks

fn open_with_nul_remote(ctx: &Ctx) -> Result<(), String> {
    managedblob::register_with(
        managedblob::Options::new()
            .vfs_name("hostile-nul")
            .remote(format!("{}\0/etc", ctx.remote().display())),
    )
    .map_err(|e| format!("register_with: {e}"))?;
    let uri = format!("file:{}?vfs=hostile-nul", ctx.cache().display());
    probe(&uri, Action::Read)
}

fn open_with_long_blob(ctx: &Ctx) -> Result<(), String> {
    probe(
        &ctx.uri(&format!("&blob={}", "b".repeat(1025))),
        Action::Read,
    )
}

fn count_rows(path: &Path) -> i64 {
    read_remote(path, |c| {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    })
}

fn remote_gained_one_row(ctx: &Ctx) -> Result<(), String> {
    match count_rows(&ctx.blob()) {
        41 => Ok(()),
        n => Err(format!("the remote has {n} rows, expected 40 + 1")),
    }
}

fn cache_equals_remote(ctx: &Ctx) -> Result<(), String> {
    let remote = std::fs::read(ctx.blob()).unwrap();
    let c = Connection::open(ctx.cache()).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let local: i64 = c
        .query_row("SELECT count(*) FROM t WHERE x = 'local only'", [], |r| {
            r.get(0)
        })
        .unwrap();
    if n != 40 || local != 0 {
        return Err(format!(
            "the cache has {n} rows ({local} local-only): it did not take the remote"
        ));
    }
    drop(c);
    if remote.is_empty() {
        return Err("the remote is empty".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The child side

/// Open `uri` and do `action`; the first error, with the step that failed.
fn probe(uri: &str, action: Action) -> Result<(), String> {
    let c = Connection::open_with_flags(uri, flags()).map_err(|e| format!("open: {e}"))?;
    c.busy_timeout(Duration::ZERO).unwrap();
    let tables: i64 = c
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| format!("read schema: {e}"))?;
    if tables > 0 {
        c.query_row("SELECT count(*), sum(length(x)) FROM t", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| format!("read t: {e}"))?;
    }
    let insert = match action {
        Action::Write => "INSERT INTO t(x) VALUES ('hostile probe')",
        Action::WriteBig => "INSERT INTO t(x) VALUES (randomblob(1048576))",
        _ => return Ok(()),
    };
    c.execute(insert, [])
        .map_err(|e| format!("write: {e}; last_error {}", last_error(&c)))?;
    Ok(())
}

fn last_error(c: &Connection) -> String {
    c.query_row("PRAGMA managedblob_status", [], |r| r.get::<_, String>(0))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .map(|v| v["last_error"].to_string())
        .unwrap_or_default()
}

#[test]
fn child_main() {
    if std::env::var(ROLE).as_deref() != Ok("row") {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("managedblob=debug")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    managedblob::register().unwrap();
    let name = std::env::var("MB_ROW").unwrap();
    let ctx = Ctx {
        dir: PathBuf::from(std::env::var("MB_DIR").unwrap()),
    };
    let table = rows();
    let row = table.iter().find(|r| r.name == name).expect("row");
    if let Some(limit) = row.fsize_limit {
        // SAFETY: plain libc calls with valid arguments; SIG_IGN makes a write past
        // the limit fail with EFBIG instead of killing the process.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
    }
    let result = match row.action {
        Action::Custom(f) => f(&ctx),
        action => probe(
            &std::env::var("MB_URI").unwrap_or_else(|_| ctx.expand(row.uri)),
            action,
        ),
    };
    let line = match result {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("err {}", serde_json::to_string(&e).unwrap()),
    };
    println!("\n{MARK}{line}");
}

// ---------------------------------------------------------------------------
// The parent side

/// Every regular file under `dir` (recursively) and its bytes; lock files we
/// create empty on first use are left out.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() && !path.to_string_lossy().ends_with(".mb-mutex") {
                if let Ok(bytes) = std::fs::read(&path) {
                    out.insert(path, bytes);
                }
            }
        }
    }
    out
}

/// Run one row in a child; returns (result line, stderr, exit status).
fn run_child(
    row: &Row,
    ctx: &Ctx,
    setup: &Setup,
) -> (Option<String>, String, String, std::process::ExitStatus) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
        .env(ROLE, "row")
        .env("MB_ROW", row.name)
        .env("MB_DIR", &ctx.dir)
        .env_remove("MANAGEDBLOB_REMOTE")
        .env_remove("MANAGEDBLOB_LEASE_SECS")
        .env_remove("MB_URI")
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("AZURE_STORAGE_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in row.env {
        cmd.env(k, v);
    }
    for (k, v) in &setup.env {
        cmd.env(k, v);
    }
    if let Some(uri) = &setup.uri {
        cmd.env("MB_URI", uri);
    }
    let mut child = cmd.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        thread::sleep(Duration::from_millis(5));
    };
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    let line = stdout
        .lines()
        .find_map(|l| l.find(MARK).map(|at| l[at + MARK.len()..].to_string()));
    (line, stdout, stderr, status)
}

/// The outcome of one row, or why it failed.
fn check_row(row: &Row, ctx: &Ctx, setup: &Setup) -> Result<String, String> {
    let before = snapshot(&ctx.dir);
    let (line, stdout, stderr, status) = run_child(row, ctx, setup);
    let after = snapshot(&ctx.dir);
    let tail = || {
        let start = stderr.len().saturating_sub(3000);
        let start = (start..stderr.len())
            .find(|i| stderr.is_char_boundary(*i))
            .unwrap_or(stderr.len());
        stderr[start..].to_string()
    };
    if !status.success() {
        return Err(format!(
            "the child did not exit normally: {status:?}\n{}",
            tail()
        ));
    }
    if stderr.contains("panicked") || stderr.contains("panic was caught") {
        return Err(format!("a panic happened:\n{}", tail()));
    }
    let secrets: Vec<&str> = std::iter::once(SECRET)
        .chain(setup.secrets.iter().map(String::as_str))
        .collect();
    for secret in &secrets {
        if stderr.contains(secret) {
            return Err(format!("a secret appears in the log: {secret}"));
        }
        if stdout.contains(secret) {
            return Err(format!("a secret appears in the output: {secret}"));
        }
        for (path, bytes) in &after {
            if String::from_utf8_lossy(bytes).contains(secret) {
                return Err(format!("{} holds a secret: {secret}", path.display()));
            }
        }
    }
    let line = line.ok_or_else(|| format!("no result line\n{}", tail()))?;
    let outcome = match line.strip_prefix("err ") {
        Some(json) => Err(serde_json::from_str::<String>(json).unwrap()),
        None => Ok(()),
    };
    if let Err(e) = &outcome {
        if let Some(secret) = secrets.iter().find(|s| e.contains(*s)) {
            return Err(format!("the error echoes a secret ({secret}): {e}"));
        }
    }
    let shown = match (&outcome, row.expect) {
        (Err(e), Expect::Err(texts)) => {
            if !texts.iter().all(|t| e.contains(t)) {
                return Err(format!("expected all of {texts:?}, got: {e}"));
            }
            e.clone()
        }
        (Err(e), Expect::AnyErr(texts)) => {
            if !texts.iter().any(|t| e.contains(t)) {
                return Err(format!("expected one of {texts:?}, got: {e}"));
            }
            e.clone()
        }
        (Ok(()), Expect::Opens) => "opens (recovers)".to_string(),
        (Ok(()), _) => return Err("the action succeeded".into()),
        (Err(e), _) => return Err(format!("expected success, got: {e}")),
    };
    // Nothing deleted or changed.
    let opens = matches!(row.expect, Expect::Opens);
    for (path, bytes) in &before {
        let in_cache = path.starts_with(ctx.cache_dir());
        // managedblob's own bookkeeping: the sidecar, and the remote's lease and etag
        // files, are replaced as a matter of course when an open or a write succeeds.
        let own = path == &ctx.sidecar()
            || path.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with('.') && (n.ends_with(".mb-lease") || n.ends_with(".mb-etag"))
            });
        match after.get(path) {
            _ if opens && own => {}
            None => return Err(format!("{} was deleted", path.display())),
            Some(now) if now == bytes => {}
            Some(_) if opens && path == &ctx.blob() && row.check.is_some() => {}
            Some(_) if row.cache_may_change && in_cache => {
                let kept = after.iter().any(|(p, b)| p != path && b == bytes);
                if !kept {
                    return Err(format!(
                        "{} was replaced without keeping its old bytes",
                        path.display()
                    ));
                }
            }
            Some(_) => return Err(format!("{} was changed", path.display())),
        }
    }
    // A failed open leaves no (empty) cache file behind where there was none.
    if let Err(e) = &outcome {
        let cache = ctx.cache();
        let created = !before.contains_key(&cache)
            && std::fs::symlink_metadata(&cache).is_ok_and(|m| m.is_file());
        if e.starts_with("open:") && created {
            return Err(format!("the failed open left {} behind", cache.display()));
        }
    }
    if let Some(check) = row.check {
        check(ctx)?;
    }
    if let Some(check) = &setup.remote_unchanged {
        check()?;
    }
    Ok(shown)
}

#[test]
fn hostile_inputs_fail_clearly_and_delete_nothing() {
    managedblob::register().unwrap();
    let table = rows();
    assert!(table.len() >= 25, "at least 25 rows");
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let (mut passed, mut skipped, mut pending) = (0, 0, 0);
    for (i, row) in table.iter().enumerate() {
        if let Expect::Pending(why) = row.expect {
            pending += 1;
            report.push(format!("| {} | {} | pending ({why}) | |", i + 1, row.name));
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let ctx = Ctx {
            dir: dir.path().to_path_buf(),
        };
        let mut setup = (row.setup)(&ctx);
        if let Some(why) = &setup.skip {
            skipped += 1;
            println!("SKIPPED {}: {why}", row.name);
            report.push(format!("| {} | {} | skipped: {why} | |", i + 1, row.name));
            continue;
        }
        let mechanism = setup.mechanism.clone();
        let result = check_row(row, &ctx, &setup);
        let redact = std::mem::take(&mut setup.redact);
        drop(setup);
        let via = mechanism.map(|m| format!(" (via {m})")).unwrap_or_default();
        match result {
            Ok(shown) => {
                passed += 1;
                let mut shown = shown.replace(&ctx.dir.display().to_string(), "<dir>");
                for (text, stand_in) in &redact {
                    shown = shown.replace(text, stand_in);
                }
                let shown = shown.replace('|', "\\|");
                let shown = match shown.char_indices().nth(240) {
                    Some((at, _)) => format!("{}…", &shown[..at]),
                    None => shown,
                };
                report.push(format!(
                    "| {} | {}{via} | ok | {} |",
                    i + 1,
                    row.name,
                    shown
                ));
            }
            Err(why) => {
                report.push(format!(
                    "| {} | {}{via} | FAILED | {} |",
                    i + 1,
                    row.name,
                    why.lines().next().unwrap_or("")
                ));
                failures.push(format!("row {} '{}'{via}: {why}", i + 1, row.name));
            }
        }
    }
    println!("| # | hostile input | result | error message |");
    println!("|---|---|---|---|");
    for line in &report {
        println!("{line}");
    }
    println!(
        "HOSTILE FIGURES: {} rows: {passed} passed, {} failed, {skipped} skipped, {pending} pending",
        table.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
