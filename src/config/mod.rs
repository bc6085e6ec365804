//! Settings of one managed database: URI parameters, then `MANAGEDBLOB_*`
//! environment variables, then the defaults given to [`crate::register_with`],
//! then built-in defaults. Every error names the setting and where it came from.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

mod fetch;

use crate::error::{Error, Result};
/// The remote's address is a plain value below the settings (src/remote_spec/), so
/// that the settings and the backends need not import each other.
pub use crate::remote_spec::{parse_remote, RemoteSpec};
pub use fetch::{parse_size, FetchMode, MIN_CACHE_MAX};

/// The settings a user can give, with their URI parameter names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Remote,
    Blob,
    LeaseSecs,
    LeaseLingerMs,
    StalenessMs,
    RetryAttempts,
    RetryBaseMs,
    RetryTotalMs,
    Sync,
    History,
    FlushMs,
    Fetch,
    CacheMax,
}

impl Key {
    pub const ALL: [Key; 13] = [
        Key::Remote,
        Key::Blob,
        Key::LeaseSecs,
        Key::LeaseLingerMs,
        Key::StalenessMs,
        Key::RetryAttempts,
        Key::RetryBaseMs,
        Key::RetryTotalMs,
        Key::Sync,
        Key::History,
        Key::FlushMs,
        Key::Fetch,
        Key::CacheMax,
    ];

    /// The URI parameter name.
    pub fn uri_name(self) -> &'static str {
        match self {
            Key::Remote => "remote",
            Key::Blob => "blob",
            Key::LeaseSecs => "lease_secs",
            Key::LeaseLingerMs => "lease_linger_ms",
            Key::StalenessMs => "staleness_ms",
            Key::RetryAttempts => "retry_attempts",
            Key::RetryBaseMs => "retry_base_ms",
            Key::RetryTotalMs => "retry_total_ms",
            Key::Sync => "sync",
            Key::History => "history",
            Key::FlushMs => "flush_ms",
            Key::Fetch => "fetch",
            Key::CacheMax => "cache_max",
        }
    }

    /// The environment variable name.
    pub fn env_name(self) -> &'static str {
        match self {
            Key::Remote => "MANAGEDBLOB_REMOTE",
            Key::Blob => "MANAGEDBLOB_BLOB",
            Key::LeaseSecs => "MANAGEDBLOB_LEASE_SECS",
            Key::LeaseLingerMs => "MANAGEDBLOB_LEASE_LINGER_MS",
            Key::StalenessMs => "MANAGEDBLOB_STALENESS_MS",
            Key::RetryAttempts => "MANAGEDBLOB_RETRY_ATTEMPTS",
            Key::RetryBaseMs => "MANAGEDBLOB_RETRY_BASE_MS",
            Key::RetryTotalMs => "MANAGEDBLOB_RETRY_TOTAL_MS",
            Key::Sync => "MANAGEDBLOB_SYNC",
            Key::History => "MANAGEDBLOB_HISTORY",
            Key::FlushMs => "MANAGEDBLOB_FLUSH_MS",
            Key::Fetch => "MANAGEDBLOB_FETCH",
            Key::CacheMax => "MANAGEDBLOB_CACHE_MAX",
        }
    }
}

/// Process-wide defaults, given to [`crate::register_with`]: one for any setting
/// of the README's table. URI parameters and environment variables override them.
///
/// ```
/// use managedblob::{Key, TransferMode};
/// let options = managedblob::Options::new()
///     .remote("/srv/remote")
///     .blob("corpus.db")
///     .retry_total_ms(10_000)
///     .sync(TransferMode::Full);
/// assert_eq!(options.get(Key::Sync), Some("full"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Register under this VFS name instead of `managedblob`.
    pub vfs_name: Option<String>,
    /// Default values by setting, as they would be written in a URI.
    defaults: BTreeMap<Key, String>,
}

/// A builder method per numeric setting: `Options::lease_secs(30)` and so on.
macro_rules! numeric_settings {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $key:expr;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(self, value: $ty) -> Self {
                self.set($key, value)
            }
        )*
    };
}

impl Options {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn vfs_name(mut self, name: impl Into<String>) -> Self {
        self.vfs_name = Some(name.into());
        self
    }

    /// The default for `key`, written as in a URI (checked when a database opens,
    /// with the same messages as a URI parameter).
    pub fn set(mut self, key: Key, value: impl ToString) -> Self {
        self.defaults.insert(key, value.to_string());
        self
    }

    /// The default given for `key`, if any.
    pub fn get(&self, key: Key) -> Option<&str> {
        self.defaults.get(&key).map(String::as_str)
    }

    pub fn remote(self, remote: impl Into<String>) -> Self {
        self.set(Key::Remote, remote.into())
    }

    pub fn blob(self, blob: impl Into<String>) -> Self {
        self.set(Key::Blob, blob.into())
    }

    /// The `history` setting: `"off"`, a count (`"100"`) or an age (`"7d"`).
    pub fn history(self, value: impl Into<String>) -> Self {
        self.set(Key::History, value.into())
    }

    pub fn sync(self, mode: TransferMode) -> Self {
        self.set(Key::Sync, mode.name())
    }

    /// `fetch=lazy`: keep a sparse cache that fetches chunks as reads need them.
    pub fn fetch(self, mode: FetchMode) -> Self {
        self.set(Key::Fetch, mode.name())
    }

    /// `cache_max`: the bytes a lazy cache keeps before it drops the least recently
    /// used chunks, as a size (`"512MiB"`, `"4GiB"`) or bytes.
    pub fn cache_max(self, size: impl Into<String>) -> Self {
        self.set(Key::CacheMax, size.into())
    }

    numeric_settings! {
        lease_secs: u64 => Key::LeaseSecs;
        /// How long the lease is kept after a write transaction (0: released at once).
        lease_linger_ms: u64 => Key::LeaseLingerMs;
        staleness_ms: u64 => Key::StalenessMs;
        retry_attempts: u32 => Key::RetryAttempts;
        retry_base_ms: u64 => Key::RetryBaseMs;
        retry_total_ms: u64 => Key::RetryTotalMs;
        /// Defer uploads: a commit returns once durable in the cache, and the
        /// commits of the next `flush_ms` milliseconds are uploaded together.
        flush_ms: u64 => Key::FlushMs;
    }
}

pub const DEFAULT_LEASE_SECS: u64 = 30;
/// Measured (docs/BENCHMARKS.md): commits less than this apart reuse the lease.
pub const DEFAULT_LEASE_LINGER_MS: u64 = 1000;
/// The longest linger: other hosts' writers wait at most this through busy_timeout.
pub const MAX_LEASE_LINGER_MS: u64 = 60_000;
pub const DEFAULT_STALENESS_MS: u64 = 1000;
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 5;
pub const DEFAULT_RETRY_BASE_MS: u64 = 100;
pub const DEFAULT_RETRY_TOTAL_MS: u64 = 30_000;
/// 0: COMMIT returns after the upload.
pub const DEFAULT_FLUSH_MS: u64 = 0;

/// How transient remote failures are retried: exponential backoff with jitter,
/// bounded in attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max_delay: Duration,
    /// No retry starts once this much time has passed since the first attempt.
    pub total: Duration,
}

impl RetryPolicy {
    /// The pause before retry number `retry` (1-based): base * 2^(retry-1), capped,
    /// less up to 25 % jitter so parallel writers do not retry in lockstep.
    pub fn delay(&self, retry: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << (retry.saturating_sub(1)).min(16));
        let capped = exp.min(self.max_delay);
        capped.mul_f64(1.0 - fastrand::f64() * 0.25)
    }
}

/// The resolved settings of one managed database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub remote: RemoteSpec,
    /// The blob name in the remote.
    pub blob: String,
    pub lease: Duration,
    /// How long the lease is kept after a write transaction outside a batch, for the
    /// next one (renewed meanwhile); zero releases it at once.
    pub lease_linger: Duration,
    pub staleness: Duration,
    pub retry: RetryPolicy,
    pub sync: TransferMode,
    /// Which published versions the remote keeps ([`crate::backend::History`]).
    pub history: HistoryPolicy,
    /// How long a commit may wait in the cache before it is uploaded (zero: COMMIT
    /// uploads; see the README's durability window).
    pub flush: Duration,
    /// A whole copy, or chunks fetched as reads need them.
    pub fetch: FetchMode,
    /// Lazy only: the bytes of chunks kept before the least recently used go
    /// (`None`: unbounded).
    pub cache_max: Option<u64>,
}

/// The `history` setting: keep every published version until this drops it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryPolicy {
    /// Keep no versions (the default: history costs a request per commit).
    Off,
    /// Keep the newest `n` versions (`history=100`).
    Keep(u32),
    /// Keep versions younger than this (`history=7d`, `12h`, `30m`); the newest
    /// version is kept whatever its age.
    MaxAge(Duration),
}

impl HistoryPolicy {
    /// Parse `off`, a count (`100`) or an age (`7d`, `12h`, `30m`, `90s`).
    pub fn parse(value: &str) -> std::result::Result<HistoryPolicy, String> {
        let v = value.trim().to_ascii_lowercase();
        if v == "off" || v == "0" {
            return Ok(HistoryPolicy::Off);
        }
        if let Ok(n) = v.parse::<u32>() {
            return Ok(HistoryPolicy::Keep(n));
        }
        let unit = match v.chars().last() {
            Some('d') => 86_400,
            Some('h') => 3600,
            Some('m') => 60,
            Some('s') => 1,
            _ => 0,
        };
        match v[..v.len().saturating_sub(1)].parse::<u64>() {
            Ok(n) if unit > 0 && n > 0 => Ok(HistoryPolicy::MaxAge(Duration::from_secs(
                n.saturating_mul(unit),
            ))),
            _ => Err(format!(
                "must be 'off', a count of versions like 100, or an age like 7d, 12h, 30m; got {value:?}"
            )),
        }
    }

    pub fn is_on(self) -> bool {
        self != HistoryPolicy::Off
    }
}

/// How the database moves between the cache and the remote: the `sync` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferMode {
    /// Only the chunks that changed (when the store has block operations).
    Delta,
    /// The whole file every time.
    Full,
}

impl TransferMode {
    /// The setting's value for this mode.
    pub fn name(self) -> &'static str {
        match self {
            TransferMode::Delta => "delta",
            TransferMode::Full => "full",
        }
    }
}

impl Config {
    /// Resolve every setting for the cache file `cache_path`. `uri` looks up a URI
    /// parameter, `env` an environment variable.
    pub fn resolve(
        cache_path: &Path,
        options: &Options,
        uri: &dyn Fn(&str) -> Option<String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config> {
        let get = |key: Key| -> Option<(String, String)> {
            if let Some(v) = uri(key.uri_name()) {
                return Some((v, format!("URI parameter '{}'", key.uri_name())));
            }
            if let Some(v) = env(key.env_name()) {
                return Some((v, format!("environment variable {}", key.env_name())));
            }
            options.get(key).map(|v| {
                (
                    v.to_string(),
                    format!("option '{}' given to register_with", key.uri_name()),
                )
            })
        };

        let remote = match get(Key::Remote) {
            Some((value, origin)) => parse_remote(&value).map_err(|why| {
                Error::Config(format!("setting 'remote' ({origin}) is invalid: {why}"))
            })?,
            None => {
                return Err(Error::Config(
                    "setting 'remote' is missing: add '&remote=<dir or URL>' to the file: URI \
                     (open with SQLITE_OPEN_URI) or set MANAGEDBLOB_REMOTE"
                        .into(),
                ))
            }
        };
        let blob = match get(Key::Blob) {
            Some((value, origin)) => {
                crate::remote_spec::validate_blob_name(&value).map_err(|source| {
                    Error::Setting {
                        what: format!("setting 'blob' ({origin}) is invalid"),
                        source,
                    }
                })?;
                value
            }
            None => {
                let base = cache_path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "setting 'blob' is missing and the cache path {} has no usable file name",
                            cache_path.display()
                        ))
                    })?
                    .to_string();
                crate::remote_spec::validate_blob_name(&base).map_err(|source| Error::Setting {
                    what: "setting 'blob' defaults to the cache file's name, which is not \
                               usable"
                        .into(),
                    source,
                })?;
                base
            }
        };
        let lease_secs =
            number(get(Key::LeaseSecs), Key::LeaseSecs, 15, 60)?.unwrap_or(DEFAULT_LEASE_SECS);
        let linger_ms = number(
            get(Key::LeaseLingerMs),
            Key::LeaseLingerMs,
            0,
            MAX_LEASE_LINGER_MS,
        )?
        .unwrap_or(DEFAULT_LEASE_LINGER_MS);
        let staleness_ms = number(get(Key::StalenessMs), Key::StalenessMs, 0, 86_400_000)?
            .unwrap_or(DEFAULT_STALENESS_MS);
        let attempts = number(get(Key::RetryAttempts), Key::RetryAttempts, 1, 20)?
            .map(|v| v as u32)
            .unwrap_or(DEFAULT_RETRY_ATTEMPTS);
        let base_ms = number(get(Key::RetryBaseMs), Key::RetryBaseMs, 1, 60_000)?
            .unwrap_or(DEFAULT_RETRY_BASE_MS);
        let total_ms = number(get(Key::RetryTotalMs), Key::RetryTotalMs, 1, 600_000)?
            .unwrap_or(DEFAULT_RETRY_TOTAL_MS);
        let sync = match get(Key::Sync) {
            None => TransferMode::Delta,
            Some((value, origin)) => match value.trim().to_ascii_lowercase().as_str() {
                "delta" => TransferMode::Delta,
                "full" => TransferMode::Full,
                _ => {
                    return Err(Error::Config(format!(
                        "setting 'sync' ({origin}) must be 'delta' or 'full', got {value:?}"
                    )))
                }
            },
        };
        let history = match get(Key::History) {
            None => HistoryPolicy::Off,
            Some((value, origin)) => HistoryPolicy::parse(&value)
                .map_err(|why| Error::Config(format!("setting 'history' ({origin}) {why}")))?,
        };
        let flush_ms =
            number(get(Key::FlushMs), Key::FlushMs, 0, 3_600_000)?.unwrap_or(DEFAULT_FLUSH_MS);
        let fetch = match get(Key::Fetch) {
            None => FetchMode::default(),
            Some((value, origin)) => FetchMode::parse(&value).ok_or_else(|| {
                Error::Config(format!(
                    "setting 'fetch' ({origin}) must be 'full' or 'lazy', got {value:?}"
                ))
            })?,
        };
        let cache_max = match get(Key::CacheMax) {
            None => None,
            Some((value, origin)) => Some(cache_max_setting(&value, &origin, fetch)?),
        };
        Ok(Config {
            fetch,
            cache_max,
            flush: Duration::from_millis(flush_ms),
            history,
            remote,
            blob,
            lease: Duration::from_secs(lease_secs),
            lease_linger: Duration::from_millis(linger_ms),
            staleness: Duration::from_millis(staleness_ms),
            retry: RetryPolicy {
                attempts,
                base: Duration::from_millis(base_ms),
                max_delay: Duration::from_secs(5),
                total: Duration::from_millis(total_ms),
            },
            sync,
        })
    }
}

/// `cache_max` is a size of at least [`MIN_CACHE_MAX`], and only for a lazy cache (a
/// full cache holds the whole database by definition).
fn cache_max_setting(value: &str, origin: &str, fetch: FetchMode) -> Result<u64> {
    let bytes = parse_size(value)
        .map_err(|why| Error::Config(format!("setting 'cache_max' ({origin}) {why}")))?;
    if bytes < MIN_CACHE_MAX {
        return Err(Error::Config(format!(
            "setting 'cache_max' ({origin}) must be at least 1MiB, got {value:?}"
        )));
    }
    if fetch != FetchMode::Lazy {
        return Err(Error::Config(format!(
            "setting 'cache_max' ({origin}) needs fetch=lazy: a full cache keeps the whole \
             database"
        )));
    }
    Ok(bytes)
}

fn number(found: Option<(String, String)>, key: Key, min: u64, max: u64) -> Result<Option<u64>> {
    let Some((value, origin)) = found else {
        return Ok(None);
    };
    let parsed: u64 = value.trim().parse().map_err(|_| {
        Error::Config(format!(
            "setting '{}' ({origin}) must be a whole number, got {value:?}",
            key.uri_name()
        ))
    })?;
    if !(min..=max).contains(&parsed) {
        return Err(Error::Config(format!(
            "setting '{}' ({origin}) must be between {min} and {max}, got {parsed}",
            key.uri_name()
        )));
    }
    Ok(Some(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(uri: &[(&str, &str)], env: &[(&str, &str)]) -> Result<Config> {
        let uri: Vec<(String, String)> = uri
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::resolve(
            Path::new("/cache/corpus.db"),
            &Options::default(),
            &|k| uri.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            &|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
        )
    }

    #[test]
    fn defaults_apply_and_blob_is_the_file_name() {
        let c = resolve(&[("remote", "/srv/r")], &[]).unwrap();
        assert_eq!(c.remote, RemoteSpec::Local("/srv/r".into()));
        assert_eq!(c.blob, "corpus.db");
        assert_eq!(c.lease, Duration::from_secs(30));
        assert_eq!(c.staleness, Duration::from_millis(1000));
        assert_eq!(
            c.lease_linger,
            Duration::from_millis(DEFAULT_LEASE_LINGER_MS)
        );
    }

    #[test]
    fn uri_overrides_env_which_overrides_defaults() {
        let c = resolve(
            &[("lease_secs", "20")],
            &[
                ("MANAGEDBLOB_REMOTE", "file:///env/dir"),
                ("MANAGEDBLOB_LEASE_SECS", "40"),
                ("MANAGEDBLOB_STALENESS_MS", "5"),
                ("MANAGEDBLOB_LEASE_LINGER_MS", "0"),
            ],
        )
        .unwrap();
        assert_eq!(c.lease_linger, Duration::ZERO);
        assert_eq!(c.remote, RemoteSpec::Local("/env/dir".into()));
        assert_eq!(c.lease, Duration::from_secs(20));
        assert_eq!(c.staleness, Duration::from_millis(5));
    }

    #[test]
    fn register_with_can_default_every_setting() {
        let options = Options::new()
            .remote("file:///opt/remote")
            .blob("shared/app.db")
            .lease_secs(45)
            .lease_linger_ms(250)
            .staleness_ms(7)
            .retry_attempts(3)
            .retry_base_ms(9)
            .retry_total_ms(1234)
            .sync(TransferMode::Full)
            .history("7d")
            .flush_ms(250)
            .fetch(FetchMode::Lazy)
            .cache_max("64MiB");
        for key in Key::ALL {
            assert!(options.get(key).is_some(), "{key:?} cannot be defaulted");
        }
        let c = Config::resolve(Path::new("/cache/x.db"), &options, &|_| None, &|_| None).unwrap();
        assert_eq!(c.remote, RemoteSpec::Local("/opt/remote".into()));
        assert_eq!(c.blob, "shared/app.db");
        assert_eq!(c.lease, Duration::from_secs(45));
        assert_eq!(c.lease_linger, Duration::from_millis(250));
        assert_eq!(c.staleness, Duration::from_millis(7));
        assert_eq!(c.retry.attempts, 3);
        assert_eq!(
            c.history,
            HistoryPolicy::MaxAge(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(c.retry.base, Duration::from_millis(9));
        assert_eq!(c.retry.total, Duration::from_millis(1234));
        assert_eq!(c.sync, TransferMode::Full);
        assert_eq!(c.flush, Duration::from_millis(250));
        assert_eq!((c.fetch, c.cache_max), (FetchMode::Lazy, Some(64 << 20)));
        // A bad default is named as one.
        let bad = Options::new().remote("/r").retry_total_ms(0);
        let e = Config::resolve(Path::new("/c/x.db"), &bad, &|_| None, &|_| None).unwrap_err();
        assert!(
            e.to_string()
                .contains("option 'retry_total_ms' given to register_with"),
            "{e}"
        );
    }

    #[test]
    fn missing_remote_names_the_setting() {
        let e = resolve(&[], &[]).unwrap_err().to_string();
        assert!(e.contains("'remote' is missing"), "{e}");
        assert!(e.contains("MANAGEDBLOB_REMOTE"), "{e}");
    }

    #[test]
    fn invalid_values_name_setting_and_origin() {
        type Pairs = &'static [(&'static str, &'static str)];
        // (URI parameters, environment, words the message must hold)
        let cases: [(Pairs, Pairs, &[&str]); 7] = [
            (
                &[("remote", "/r"), ("lease_linger_ms", "60001")],
                &[],
                &["'lease_linger_ms'", "between 0 and 60000"],
            ),
            (
                &[("remote", "/r"), ("lease_secs", "5")],
                &[],
                &["'lease_secs'", "between 15 and 60"],
            ),
            (
                &[("remote", "/r")],
                &[("MANAGEDBLOB_STALENESS_MS", "soon")],
                &["MANAGEDBLOB_STALENESS_MS", "whole number"],
            ),
            (&[("remote", "s3://bucket")], &[], &["unknown scheme"]),
            (
                &[("remote", "/r"), ("sync", "sometimes")],
                &[],
                &["'sync'", "'delta' or 'full'"],
            ),
            (
                &[("remote", "/r")],
                &[("MANAGEDBLOB_HISTORY", "forever")],
                &["'history'", "MANAGEDBLOB_HISTORY", "7d"],
            ),
            (
                &[("remote", "/r"), ("blob", "../escape.db")],
                &[],
                &["'blob'"],
            ),
        ];
        for (uri, env, words) in cases {
            let e = resolve(uri, env).unwrap_err().to_string();
            assert!(words.iter().all(|w| e.contains(w)), "{words:?} in {e}");
        }
    }

    #[test]
    fn history_is_off_by_default_and_takes_a_count_or_an_age() {
        assert_eq!(
            resolve(&[("remote", "/r")], &[]).unwrap().history,
            HistoryPolicy::Off
        );
        let cases = [
            ("off", HistoryPolicy::Off),
            ("100", HistoryPolicy::Keep(100)),
            ("7d", HistoryPolicy::MaxAge(Duration::from_secs(7 * 86_400))),
            ("12H", HistoryPolicy::MaxAge(Duration::from_secs(12 * 3600))),
        ];
        for (value, want) in cases {
            let c = resolve(&[("remote", "/r"), ("history", value)], &[]).unwrap();
            assert_eq!(c.history, want, "{value}");
        }
        for bad in ["", "7w", "d", "-1", "0d"] {
            assert!(HistoryPolicy::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flush_ms_is_off_by_default_and_set_by_uri_or_env() {
        let off = resolve(&[("remote", "/r")], &[]).unwrap();
        assert_eq!(off.flush, Duration::ZERO);
        let env = resolve(&[("remote", "/r")], &[("MANAGEDBLOB_FLUSH_MS", "100")]).unwrap();
        assert_eq!(env.flush, Duration::from_millis(100));
        let uri = resolve(&[("remote", "/r"), ("flush_ms", "5")], &[]).unwrap();
        assert_eq!(uri.flush, Duration::from_millis(5));
        let e = resolve(&[("remote", "/r"), ("flush_ms", "soon")], &[]).unwrap_err();
        assert!(e.to_string().contains("'flush_ms'"), "{e}");
    }

    #[test]
    fn fetch_is_full_by_default_and_cache_max_needs_lazy() {
        let default = resolve(&[("remote", "/r")], &[]).unwrap();
        assert_eq!((default.fetch, default.cache_max), (FetchMode::Full, None));
        let lazy = resolve(
            &[("remote", "/r"), ("fetch", "lazy"), ("cache_max", "512MiB")],
            &[],
        )
        .unwrap();
        assert_eq!(
            (lazy.fetch, lazy.cache_max),
            (FetchMode::Lazy, Some(512 << 20))
        );
        let env = resolve(
            &[("remote", "/r")],
            &[
                ("MANAGEDBLOB_FETCH", "lazy"),
                ("MANAGEDBLOB_CACHE_MAX", "4GiB"),
            ],
        )
        .unwrap();
        assert_eq!((env.fetch, env.cache_max), (FetchMode::Lazy, Some(4 << 30)));
        let e = resolve(&[("remote", "/r"), ("fetch", "some")], &[]).unwrap_err();
        assert!(
            e.to_string().contains("'fetch'") && e.to_string().contains("'lazy'"),
            "{e}"
        );
        let e = resolve(&[("remote", "/r"), ("cache_max", "1GiB")], &[]).unwrap_err();
        assert!(e.to_string().contains("needs fetch=lazy"), "{e}");
        let e = resolve(
            &[("remote", "/r"), ("fetch", "lazy"), ("cache_max", "4k")],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("at least 1MiB"), "{e}");
        let e = resolve(
            &[("remote", "/r"), ("fetch", "lazy"), ("cache_max", "lots")],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("'cache_max'"), "{e}");
        let o = Options::new().fetch(FetchMode::Lazy).cache_max("2GiB");
        assert_eq!(
            (o.get(Key::Fetch), o.get(Key::CacheMax)),
            (Some("lazy"), Some("2GiB"))
        );
    }

    #[test]
    fn sas_tokens_are_never_echoed() {
        let e = parse_remote("ftp://host/c?sig=SECRETSIG").unwrap_err();
        assert!(!e.contains("SECRETSIG"), "{e}");
    }

    #[test]
    fn https_remotes_need_the_azure_feature_or_parse_without_echoing_the_sas() {
        let value = "https://acct1.blob.core.windows.net/data?sv=1&sig=SECRETSIG";
        #[cfg(not(feature = "azure"))]
        {
            let e = parse_remote(value).unwrap_err();
            assert!(e.contains("`azure` cargo feature"), "{e}");
            assert!(!e.contains("SECRETSIG"), "{e}");
        }
        #[cfg(feature = "azure")]
        {
            let spec = parse_remote(value).unwrap();
            assert!(matches!(spec, RemoteSpec::Azure(_)));
            assert!(!format!("{spec:?}").contains("SECRETSIG"));
            let e = resolve(
                &[(
                    "remote",
                    "https://acct1.blob.core.windows.net/a/b?sig=SECRETSIG",
                )],
                &[],
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("'remote'") && !e.contains("SECRETSIG"), "{e}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            total: Duration::from_secs(30),
        };
        assert!(p.delay(1) <= Duration::from_millis(100));
        assert!(p.delay(1) >= Duration::from_millis(75));
        assert!(p.delay(10) <= Duration::from_millis(300));
    }
}
