//! SQLite `file:` URI pieces, shared by the tests and benches/remote.rs.

/// Escape `value` for the query string of a SQLite `file:` URI: SQLite splits the
/// query at `&` and `=`, ends it at `#`, and decodes `%HH`, so everything but
/// unreserved characters (and `/`, `:`, `,`) is written as `%HH`.
pub fn uri_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'/'
            | b':'
            | b',' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
