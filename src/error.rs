//! The one public error type, and its mapping onto SQLite result codes; and the
//! backends' error, which it lifts. Both live here, at the bottom of the crate, so
//! that every layer (the settings and the remote's address included) may name them
//! without importing the backends.

/// Everything that can go wrong in managedblob. Messages name the setting, file or
/// blob involved and never contain a secret. A variant that wraps another error
/// (the backend's, the operating system's, the JSON parser's) returns it from
/// [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is missing or invalid; the message names it.
    #[error("managedblob: {0}")]
    Config(String),
    /// A setting's value was refused by the code that would use it: the remote's
    /// directory or container cannot be used, or the blob name breaks the naming
    /// rule. `what` names the setting; `source` is the refusal.
    #[error("managedblob: {what}: {source}")]
    Setting {
        what: String,
        #[source]
        source: BackendError,
    },
    /// The remote store failed.
    #[error("managedblob: {0}")]
    Backend(#[from] BackendError),
    /// Another writer holds the remote lease, or the remote moved under this snapshot:
    /// retry later (SQLite's busy handler does).
    #[error("managedblob: {0}")]
    Busy(String),
    /// Busy: another writer holds the lease on `blob`; `source` is the backend's answer.
    #[error("managedblob: the lease on blob '{blob}' is held by another writer: {source}")]
    LeaseHeld {
        blob: String,
        #[source]
        source: BackendError,
    },
    /// Busy: a commit lost the race for `blob` (`why`: it was created by another
    /// writer, it moved on, or the lease lapsed); `source` is the backend's refusal.
    /// SQLite rolls the transaction back, and its retry reads the new version.
    #[error(
        "managedblob: blob '{blob}' was not published: {why} ({source}); retry the transaction"
    )]
    NotPublished {
        blob: String,
        why: &'static str,
        #[source]
        source: BackendError,
    },
    /// Busy: `managedblob_batch=begin` waited for the lease as long as the busy
    /// handler allowed; `what` says how long and what that says of the holder,
    /// `source` is the last refusal.
    #[error("managedblob: {what} ({source})")]
    BatchWaited {
        what: String,
        #[source]
        source: Box<Error>,
    },
    /// The local cache is not in a state managedblob can work with.
    #[error("managedblob: {0}")]
    Local(String),
    /// A local file (the cache, its sidecar, a side file) could not be read or
    /// written; `source` is the operating system's error, whose kind makes a full
    /// disk SQLITE_FULL wherever it happens.
    #[error("managedblob: {what}: {source}")]
    LocalIo {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The sidecar beside the cache (its durable state) does not parse; `source` is
    /// the parser's error.
    #[error(
        "managedblob: sidecar {} is corrupt ({source}); move it away to resync this cache \
         from the remote",
        .path.display()
    )]
    CorruptSidecar {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The remote blob or the local cache is not a usable SQLite database.
    #[error("managedblob: {0}")]
    NotADatabase(String),
    /// An operation that is not allowed in the current state.
    #[error("managedblob: {0}")]
    Misuse(String),
    /// The VFS is already registered with other options.
    #[error("managedblob: {0}")]
    Registration(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Why a backend call failed, as far as the state machine cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The blob (or its container / directory) does not exist.
    NotFound,
    /// If-Match failed: the blob moved to another version.
    ConditionFailed,
    /// If-None-Match:* failed: the blob exists already.
    AlreadyExists,
    /// Somebody else holds the lease (or the write carried no lease on a leased blob).
    LeaseHeld,
    /// Our lease expired, was broken, or was taken over.
    LeaseLost,
    /// A network hiccup, throttling, a timeout: retry with backoff.
    Transient,
    /// The caller is not allowed (credentials, permissions).
    Denied,
    /// A setting or name is invalid.
    Invalid,
    /// Anything else that retrying will not fix.
    Permanent,
}

impl BackendErrorKind {
    /// The kind of a failed file operation: interrupted calls are transient, a
    /// missing file is `NotFound`, a refused one `Denied`, the rest permanent.
    pub fn for_io(err: &std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        match err.kind() {
            Io::NotFound => BackendErrorKind::NotFound,
            Io::PermissionDenied => BackendErrorKind::Denied,
            Io::Interrupted | Io::WouldBlock => BackendErrorKind::Transient,
            _ => BackendErrorKind::Permanent,
        }
    }
}

/// An error from a backend, with a message that names the blob and the cause
/// (and never a secret).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub kind: BackendErrorKind,
    pub message: String,
    /// The operating system's reason when a local file operation failed (the local
    /// backend), so that a full disk reaches SQLite as SQLITE_FULL.
    pub io_kind: Option<std::io::ErrorKind>,
}

impl BackendError {
    pub fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            message: message.into(),
            io_kind: None,
        }
    }

    /// The same error, remembering the operating system's reason.
    pub fn with_io(mut self, kind: std::io::ErrorKind) -> Self {
        self.io_kind = Some(kind);
        self
    }

    /// Whether a retry with backoff may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == BackendErrorKind::Transient
    }
}

pub type BackendResult<T> = std::result::Result<T, BackendError>;

impl Error {
    pub(crate) fn local(what: impl std::fmt::Display, err: std::io::Error) -> Self {
        Error::LocalIo {
            what: what.to_string(),
            source: err,
        }
    }

    /// The operating system's reason, when a local file operation failed (here, or
    /// in the local backend).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            Error::LocalIo { source, .. } => Some(source.kind()),
            Error::Backend(e) => e.io_kind,
            _ => None,
        }
    }

    /// Whether the error means the disk (or a file size limit) is full.
    pub fn is_full(&self) -> bool {
        use std::io::ErrorKind::{FileTooLarge, QuotaExceeded, StorageFull};
        matches!(
            self.io_kind(),
            Some(StorageFull | QuotaExceeded | FileTooLarge)
        )
    }

    /// Whether this error means "try again later" to SQLite.
    pub fn is_busy(&self) -> bool {
        match self {
            Error::Busy(_)
            | Error::LeaseHeld { .. }
            | Error::NotPublished { .. }
            | Error::BatchWaited { .. } => true,
            Error::Backend(e) => e.kind == BackendErrorKind::LeaseHeld,
            _ => false,
        }
    }
}

/// Primary SQLite result codes used by the mapping below (kept here so the mapping
/// is testable without the FFI bindings).
pub mod code {
    pub const ERROR: i32 = 1;
    pub const BUSY: i32 = 5;
    pub const IOERR: i32 = 10;
    pub const FULL: i32 = 13;
    pub const CANTOPEN: i32 = 14;
    pub const NOTADB: i32 = 26;
    pub const IOERR_READ: i32 = IOERR | (1 << 8);
    pub const IOERR_FSYNC: i32 = IOERR | (4 << 8);
    pub const IOERR_LOCK: i32 = IOERR | (15 << 8);
}

/// What the operation was doing, which picks the IOERR flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    // Nothing maps an error of these two through here today: xOpen answers with its
    // own code (`install_failed` in src/ffi/open.rs: SQLITE_FULL or SQLITE_ERROR),
    // and reads go to the cache file, never to the store.
    #[allow(dead_code)]
    Open,
    #[allow(dead_code)]
    Read,
    Lock,
    Commit,
}

/// Map an error to the SQLite code returned from a VFS method.
pub fn sqlite_code(err: &Error, phase: Phase) -> i32 {
    if err.is_busy() {
        // At the commit point plain BUSY makes SQLite keep the transaction open for a
        // COMMIT retry that can never succeed; BUSY_SNAPSHOT rolls it back.
        return if phase == Phase::Commit {
            code::BUSY | (2 << 8)
        } else {
            code::BUSY
        };
    }
    let io = match phase {
        Phase::Open => code::CANTOPEN,
        Phase::Read => code::IOERR_READ,
        Phase::Lock => code::IOERR_LOCK,
        Phase::Commit => code::IOERR_FSYNC,
    };
    match err {
        Error::Config(_) | Error::Setting { .. } | Error::Registration(_) => match phase {
            Phase::Open => code::CANTOPEN,
            _ => code::ERROR,
        },
        _ if err.is_full() => code::FULL,
        Error::NotADatabase(_) => code::NOTADB,
        Error::Misuse(_) => code::ERROR,
        _ => io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_their_source() {
        use std::error::Error as _;
        let local = Error::local(
            "writing cache x",
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no"),
        );
        let io = local
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(|e| e.kind()),
            Some(std::io::ErrorKind::PermissionDenied)
        );
        assert_eq!(local.to_string(), "managedblob: writing cache x: no");
        let backend = Error::from(BackendError::new(BackendErrorKind::Transient, "timeout"));
        assert!(backend
            .source()
            .is_some_and(|s| s.downcast_ref::<BackendError>().is_some()));
    }

    /// Each error in `err`'s `source()` chain, `err` first, as text.
    fn chain(err: &dyn std::error::Error) -> Vec<String> {
        std::iter::successors(Some(err), |e| e.source())
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn every_wrapping_variant_returns_what_it_wraps_from_source() {
        let held = || BackendError::new(BackendErrorKind::LeaseHeld, "held by 'other'");
        let setting = Error::Setting {
            what: "setting 'remote' names an unusable directory".into(),
            source: BackendError::new(BackendErrorKind::NotFound, "local remote /x: missing"),
        };
        assert_eq!(
            chain(&setting),
            [
                "managedblob: setting 'remote' names an unusable directory: local remote /x: \
                 missing",
                "local remote /x: missing"
            ]
        );
        let lease = Error::LeaseHeld {
            blob: "a.db".into(),
            source: held(),
        };
        assert_eq!(
            chain(&lease),
            [
                "managedblob: the lease on blob 'a.db' is held by another writer: held by \
                 'other'",
                "held by 'other'"
            ]
        );
        let lost = Error::NotPublished {
            blob: "a.db".into(),
            why: "it moved on since this transaction began",
            source: BackendError::new(BackendErrorKind::ConditionFailed, "etag differs"),
        };
        assert_eq!(
            chain(&lost),
            [
                "managedblob: blob 'a.db' was not published: it moved on since this \
                 transaction began (etag differs); retry the transaction",
                "etag differs"
            ]
        );
        // Two levels: the batch's wait, the lease refusal, the backend's answer.
        let waited = Error::BatchWaited {
            what: "managedblob_batch=begin waited 1.0 s for the lease on blob 'a.db': busy".into(),
            source: Box::new(lease),
        };
        let texts = chain(&waited);
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert!(texts[0].ends_with(": busy (managedblob: the lease on blob 'a.db' is held by another writer: held by 'other')"), "{texts:?}");
        assert_eq!(texts[2], "held by 'other'");
        for busy in [&waited, &lost] {
            assert!(busy.is_busy(), "{busy}");
            assert_eq!(sqlite_code(busy, Phase::Commit), code::BUSY | (2 << 8));
        }
        assert_eq!(sqlite_code(&setting, Phase::Open), code::CANTOPEN);
        assert_eq!(sqlite_code(&setting, Phase::Commit), code::ERROR);

        let json = serde_json::from_slice::<serde_json::Value>(b"{not json").unwrap_err();
        let json_text = json.to_string();
        let corrupt = Error::CorruptSidecar {
            path: "/c/a.db-managedblob.json".into(),
            source: json,
        };
        use std::error::Error as _;
        assert!(corrupt
            .source()
            .is_some_and(|s| s.downcast_ref::<serde_json::Error>().is_some()));
        assert_eq!(
            chain(&corrupt),
            [
                format!(
                    "managedblob: sidecar /c/a.db-managedblob.json is corrupt ({json_text}); \
                     move it away to resync this cache from the remote"
                ),
                json_text
            ]
        );
        assert_eq!(sqlite_code(&corrupt, Phase::Lock), code::IOERR_LOCK);
    }

    #[test]
    fn lease_held_is_busy_so_busy_timeout_applies() {
        let e = Error::Backend(BackendError::new(BackendErrorKind::LeaseHeld, "held"));
        assert_eq!(sqlite_code(&e, Phase::Lock), code::BUSY);
    }

    #[test]
    fn failed_upload_fails_the_commit_with_an_io_error() {
        let e = Error::Backend(BackendError::new(BackendErrorKind::Transient, "timeout"));
        assert_eq!(sqlite_code(&e, Phase::Commit), code::IOERR_FSYNC);
    }

    #[test]
    fn a_busy_commit_is_busy_snapshot_so_sqlite_rolls_back() {
        let e = Error::Busy("another writer created the blob first".into());
        assert_eq!(sqlite_code(&e, Phase::Commit), code::BUSY | (2 << 8));
        assert_eq!(sqlite_code(&e, Phase::Lock), code::BUSY);
    }

    #[test]
    fn a_full_disk_is_sqlite_full_in_every_phase() {
        let local = Error::local(
            "writing cache x",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        let too_big = Error::local(
            "writing cache x",
            std::io::Error::from(std::io::ErrorKind::FileTooLarge),
        );
        let remote = Error::Backend(
            BackendError::new(BackendErrorKind::Permanent, "writing blob x: no space left")
                .with_io(std::io::ErrorKind::StorageFull),
        );
        for phase in [Phase::Open, Phase::Read, Phase::Lock, Phase::Commit] {
            for e in [&local, &too_big, &remote] {
                assert_eq!(sqlite_code(e, phase), code::FULL, "{e} in {phase:?}");
            }
        }
        // The words alone do not make it full: only the kind does.
        let worded = Error::Backend(BackendError::new(
            BackendErrorKind::Permanent,
            "no space left",
        ));
        assert_eq!(sqlite_code(&worded, Phase::Commit), code::IOERR_FSYNC);
    }

    #[test]
    fn config_errors_fail_the_open() {
        let e = Error::Config("remote is missing".into());
        assert_eq!(sqlite_code(&e, Phase::Open), code::CANTOPEN);
        assert!(e.to_string().contains("remote is missing"));
    }
}
