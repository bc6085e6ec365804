//! The managedblob pragmas, parsed from SQLite's SQLITE_FCNTL_PRAGMA arguments.

/// A pragma this VFS answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    BatchBegin,
    BatchEnd,
    Flush,
    Refresh,
    Status,
    /// A pragma we refuse on a managed database, with the reason.
    Refused(String),
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
        "journal_mode" => match value.as_deref() {
            Some("wal") => Ok(Command::Refused(
                "managedblob: journal_mode=WAL is not supported on a managed database (a WAL \
                 commit never reaches the remote); use DELETE, TRUNCATE, PERSIST or MEMORY"
                    .into(),
            )),
            Some("off") => Ok(Command::Refused(
                "managedblob: journal_mode=OFF is not supported on a managed database (a \
                 failed upload could not be rolled back); use DELETE, TRUNCATE, PERSIST or MEMORY"
                    .into(),
            )),
            _ => return None,
        },
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
    fn wal_and_off_are_refused_with_a_reason() {
        for v in ["wal", "WAL", "off"] {
            match parse("journal_mode", Some(v)) {
                Some(Ok(Command::Refused(m))) => assert!(m.contains("not supported"), "{m}"),
                other => panic!("{v}: {other:?}"),
            }
        }
    }
}
