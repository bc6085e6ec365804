//! The rows' setups (parent side: seeded remotes, unwritable directories, full
//! disks, Azurite) and their custom actions and checks.

use super::*;

/// The remote directory with a valid database `a.db` (table `t`, 40 rows of 1000
/// bytes: about a dozen 4 KiB pages); an empty cache directory.
pub(super) fn seeded(ctx: &Ctx) -> Setup {
    seed_rows(ctx, 40, 1000);
    Setup::default()
}

/// Like [`seeded`] with about 1 MiB of rows.
pub(super) fn seeded_big(ctx: &Ctx) -> Setup {
    seed_rows(ctx, 256, 4000);
    Setup::default()
}

pub(super) fn seed_rows(ctx: &Ctx, rows: u32, bytes: u32) {
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
pub(super) fn warm(ctx: &Ctx) -> Setup {
    let s = seeded(ctx);
    let c = open(&ctx.uri(""));
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 40);
    s
}

/// Another host commits: the remote moves to a bigger version.
pub(super) fn replace_remote_with_more_rows(ctx: &Ctx) {
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
pub(super) fn azure_seeded(ctx: &Ctx) -> (Setup, Option<String>) {
    use managedblob::internal::backend::{Backend, Condition};
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
pub(super) fn sas_signatures(sas: &str) -> Vec<String> {
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
pub(super) fn azure_expired_sas(ctx: &Ctx) -> Setup {
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
pub(super) fn azure_wrong_key(ctx: &Ctx) -> Setup {
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

pub(super) fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

pub(super) fn edit_sidecar(ctx: &Ctx, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ctx.sidecar()).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(ctx.sidecar(), serde_json::to_vec(&v).unwrap()).unwrap();
}

pub(super) fn pseudo_random(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(len as u64);
    (0..len).map(|_| rng.u8(..)).collect()
}

pub(super) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub(super) fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
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
pub(super) fn creating_fails(dir: &Path) -> bool {
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
pub(super) fn unwritable(dir: &Path, setup: &mut Setup) {
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
pub(super) fn small_tmpfs(dir: &Path, size: &str, setup: &mut Setup) {
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

pub(super) fn open_with_nul_remote(ctx: &Ctx) -> Result<(), String> {
    managedblob::register_with(
        managedblob::Options::new()
            .vfs_name("hostile-nul")
            .remote(format!("{}\0/etc", ctx.remote().display())),
    )
    .map_err(|e| format!("register_with: {e}"))?;
    let uri = format!("file:{}?vfs=hostile-nul", ctx.cache().display());
    probe(&uri, Action::Read)
}

pub(super) fn open_with_long_blob(ctx: &Ctx) -> Result<(), String> {
    probe(
        &ctx.uri(&format!("&blob={}", "b".repeat(1025))),
        Action::Read,
    )
}

pub(super) fn count_rows(path: &Path) -> i64 {
    read_remote(path, |c| {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    })
}

pub(super) fn remote_gained_one_row(ctx: &Ctx) -> Result<(), String> {
    match count_rows(&ctx.blob()) {
        41 => Ok(()),
        n => Err(format!("the remote has {n} rows, expected 40 + 1")),
    }
}

pub(super) fn cache_equals_remote(ctx: &Ctx) -> Result<(), String> {
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
