//! The managedblob pragmas, parsed from SQLite's SQLITE_FCNTL_PRAGMA arguments.

/// A pragma this VFS answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    BatchBegin,
    BatchEnd,
    Flush,
    Refresh,
    Status,
    /// A lazy cache fetches every chunk it lacks (`managedblob pull --all`).
    FetchAll,
}

/// SQLite's journal modes, in the order its `PRAGMA journal_mode=<value>` tries them
/// (`sqlite3JournalModename`): the first whose name starts with the value wins, so
/// `w` means WAL and `o` means OFF.
const JOURNAL_MODES: [&str; 6] = ["delete", "persist", "off", "truncate", "memory", "wal"];

/// `PRAGMA journal_mode=<value>` that asks for a mode a managed database cannot use:
/// the mode asked for and why. SQLite itself keeps the mode in force when a mode
/// cannot be set (WAL on a VFS without shared memory, OFF in defensive mode); so do we.
pub fn unavailable_journal_mode(
    name: &str,
    value: Option<&str>,
) -> Option<(&'static str, &'static str)> {
    if !name.eq_ignore_ascii_case("journal_mode") {
        return None;
    }
    let value = value?;
    let chosen = JOURNAL_MODES.iter().find(|mode| {
        mode.len() >= value.len() && mode[..value.len()].eq_ignore_ascii_case(value)
    })?;
    match *chosen {
        "wal" => Some(("WAL", "a WAL commit never reaches the remote")),
        "off" => Some(("OFF", "a failed upload could not be rolled back")),
        _ => None,
    }
}

/// Parse `PRAGMA name[=value]`. `None` when the pragma is SQLite's business;
/// `Some(Err(message))` for one of ours with a bad value.
pub fn parse(name: &str, value: Option<&str>) -> Option<Result<Command, String>> {
    let name = name.to_ascii_lowercase();
    let value = value.map(|v| {
        v.trim()
            .trim_matches(|c| c == '\'' || c == '"')
            .to_ascii_lowercase()
    });
    let command = match name.as_str() {
        "managedblob_batch" => match value.as_deref() {
            Some("begin") => Ok(Command::BatchBegin),
            Some("end") => Ok(Command::BatchEnd),
            other => Err(format!(
                "managedblob_batch takes 'begin' or 'end', got {}",
                other.map_or("nothing".to_string(), |v| format!("'{v}'"))
            )),
        },
        "managedblob_flush" => Ok(Command::Flush),
        "managedblob_refresh" => Ok(Command::Refresh),
        "managedblob_status" => Ok(Command::Status),
        "managedblob_fetch_all" => Ok(Command::FetchAll),
        _ => return None,
    };
    Some(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ours_and_ignores_sqlites() {
        assert_eq!(
            parse("managedblob_batch", Some("BEGIN")),
            Some(Ok(Command::BatchBegin))
        );
        assert_eq!(
            parse("MANAGEDBLOB_BATCH", Some("'end'")),
            Some(Ok(Command::BatchEnd))
        );
        assert_eq!(parse("managedblob_status", None), Some(Ok(Command::Status)));
        assert!(
            matches!(parse("managedblob_batch", Some("later")), Some(Err(m)) if m.contains("'later'"))
        );
        assert_eq!(parse("journal_mode", Some("delete")), None);
        assert_eq!(parse("cache_size", Some("10")), None);
    }

    #[test]
    fn wal_and_off_are_unavailable_as_sqlite_reads_the_value() {
        for v in ["wal", "WAL", "w", "Wa"] {
            assert_eq!(
                unavailable_journal_mode("journal_mode", Some(v)).unwrap().0,
                "WAL",
                "{v}"
            );
        }
        for v in ["off", "OFF", "o", "of"] {
            assert_eq!(
                unavailable_journal_mode("JOURNAL_MODE", Some(v)).unwrap().0,
                "OFF",
                "{v}"
            );
        }
        for v in [
            "", "delete", "d", "truncate", "persist", "memory", "m", "wall", "x",
        ] {
            assert_eq!(
                unavailable_journal_mode("journal_mode", Some(v)),
                None,
                "{v:?}"
            );
        }
        assert_eq!(unavailable_journal_mode("journal_mode", None), None);
        assert_eq!(unavailable_journal_mode("cache_size", Some("wal")), None);
    }
}
