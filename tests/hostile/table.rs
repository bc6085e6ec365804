//! The table of hostile inputs: one row per setting, name, file or environment.

use super::setups::*;
use super::*;

/// The table.
pub(super) fn rows() -> Vec<Row> {
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
