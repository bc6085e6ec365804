//! Logs for the processes that have no tracing subscriber of their own: the loadable
//! extension inside `sqlite3` or Python, and the `managedblob` command.
//!
//! The library only emits `tracing` events; an application that installs a subscriber
//! gets them there, and the library never installs one. These processes are not Rust
//! applications with a subscriber, so their entry points call [`init_from_env`]:
//!
//! - `MANAGEDBLOB_LOG=<filter>` turns logging on, to stderr. The filter is a level or
//!   comma-separated `target=level` pairs, as in `RUST_LOG`: `info`,
//!   `managedblob=debug`, `managedblob=trace,azure_core=info` (tracing's [`Targets`]:
//!   `EnvFilter`'s syntax without span and field filters, whose regex engine would add
//!   0.6 MB to the extension). Unset or empty: off.
//! - `MANAGEDBLOB_LOG_FILE=<path>` sends the lines to that file instead (appended to,
//!   created 0600). It does nothing without `MANAGEDBLOB_LOG`.
//!
//! A filter that does not parse or a file that cannot be opened gives one line on
//! stderr and logging stays off: a log setting never stops a database from opening.
//! Secrets are redacted where they are formatted (the Azure backend's URL and
//! credential types), so no filter level shows them.
//!
//! Only with the `log-subscriber` feature (the extension and the command enable it).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Once};

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// The variable holding the filter; unset or empty means no logging.
pub const FILTER_VAR: &str = "MANAGEDBLOB_LOG";

/// The variable holding the file the lines are appended to instead of stderr.
pub const FILE_VAR: &str = "MANAGEDBLOB_LOG_FILE";

/// Install a subscriber from `MANAGEDBLOB_LOG` and `MANAGEDBLOB_LOG_FILE`, once per
/// process (later calls do nothing). Never panics; when the settings are unusable, or
/// another subscriber is installed already, it says so in one stderr line and logging
/// stays as it was.
pub fn init_from_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let outcome = std::panic::catch_unwind(|| {
            install(std::env::var_os(FILTER_VAR), std::env::var_os(FILE_VAR))
        });
        let why = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(why)) => why,
            Err(_) => "a panic was caught while setting it up".to_string(),
        };
        // Not eprintln!: it panics when stderr cannot be written.
        let _ = writeln!(std::io::stderr(), "managedblob: logging stays off: {why}");
    });
}

/// Install the subscriber the two settings describe, if any.
fn install(filter: Option<OsString>, file: Option<OsString>) -> Result<(), String> {
    let Some(subscriber) = subscriber_for(filter, file)? else {
        return Ok(());
    };
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|_| "a tracing subscriber is installed in this process already".to_string())
}

/// The subscriber for a filter and an optional file; `None` when the filter is unset
/// or empty; `Err` saying which setting is wrong.
fn subscriber_for(
    filter: Option<OsString>,
    file: Option<OsString>,
) -> Result<Option<impl tracing::Subscriber + Send + Sync>, String> {
    let Some(filter) = filter.filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let filter = filter
        .to_str()
        .ok_or_else(|| format!("{FILTER_VAR} is not valid UTF-8"))?;
    let filter = filter.parse::<Targets>().map_err(|e| {
        format!(
            "{FILTER_VAR}={filter:?} is not a valid filter (a level, or target=level pairs): {e}"
        )
    })?;
    let (writer, ansi) = match file.filter(|f| !f.is_empty()) {
        Some(path) => (BoxMakeWriter::new(Arc::new(open_log_file(&path)?)), false),
        None => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    Ok(Some(
        tracing_subscriber::registry().with(filter).with(lines),
    ))
}

/// The log file, opened for appending (each line is one write, so processes sharing
/// the file do not interleave within a line); created owner-only, as logs name paths.
fn open_log_file(path: &OsString) -> Result<File, String> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot open {FILE_VAR}={path:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn unset_or_empty_filter_installs_nothing() {
        assert!(subscriber_for(None, None).unwrap().is_none());
        assert!(subscriber_for(os(""), None).unwrap().is_none());
        // A file alone does not turn logging on (and is not created).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        assert!(subscriber_for(None, Some(path.clone().into()))
            .unwrap()
            .is_none());
        assert!(!path.exists());
    }

    #[test]
    fn levels_and_target_level_pairs_are_accepted() {
        for filter in [
            "info",
            "managedblob=debug",
            "managedblob::store=trace,azure_core=off",
        ] {
            assert!(
                subscriber_for(os(filter), None).unwrap().is_some(),
                "{filter}"
            );
        }
    }

    #[test]
    fn a_bad_filter_names_the_variable() {
        let Err(why) = subscriber_for(os("managedblob=loud"), None) else {
            panic!("a bad filter was accepted");
        };
        assert!(why.contains(FILTER_VAR), "{why}");
    }

    #[test]
    fn an_unwritable_file_names_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("log");
        let Err(why) = subscriber_for(os("info"), Some(path.into())) else {
            panic!("an unopenable log file was accepted");
        };
        assert!(why.contains(FILE_VAR), "{why}");
    }

    #[test]
    fn the_log_file_is_appended_to_and_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "earlier line\n").unwrap();
        let subscriber = subscriber_for(os("info"), Some(path.clone().into()))
            .unwrap()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || tracing::info!("a later line"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("earlier line\n"), "{text}");
        assert!(text.contains("a later line"), "{text}");
        let fresh = dir.path().join("fresh");
        subscriber_for(os("info"), Some(fresh.clone().into())).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
