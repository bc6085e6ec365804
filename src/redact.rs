//! The one redaction every message that can hold a URI or a credential goes through
//! before anybody sees it: the VFS's messages to SQLite (open errors, pragma answers),
//! the Azure backend's errors, the `managedblob` command's output.
//!
//! Messages are built secret-free where they are formatted (the Azure URL and
//! credential types print `<redacted>`), but some quote text managedblob did not
//! build: a driver's copy of the `file:` URI, a transport error's request URL, an
//! argument echoed by the command line parser. [`redact`] is the net under all of
//! them. It replaces, with `<redacted>`:
//!
//! - the value of every secret-bearing parameter: `sig` (a SAS signature),
//!   `AccountKey` and `SharedAccessSignature` (connection strings), `client_secret`,
//!   `access_token`, `refresh_token`, `token`; whatever the case, and also when the
//!   parameter is percent-encoded once or more inside another URI (`%26sig%3D...`,
//!   `%2526sig%253D...`, as in a `file:` URI that carries a SAS in `remote=`);
//! - the credential after `Bearer ` and `SharedKey ` (Authorization header values);
//! - the secret values this process has in its environment
//!   (`AZURE_STORAGE_KEY`, `AZURE_CLIENT_SECRET`, the `AccountKey` and
//!   `SharedAccessSignature` of `AZURE_STORAGE_CONNECTION_STRING`, the `sig` of
//!   `MANAGEDBLOB_REMOTE`), wherever they appear, as written and percent-encoded.
//!
//! A value ends at `&`, `;`, a quote, a bracket, `,`, `\`, whitespace or an encoded
//! `&` or `;` (`%26`, `%3B`, at any depth of encoding); a SAS signature is base64,
//! whose `+`, `/` and `=` are encoded as `%2B`, `%2F`, `%3D`, so no signature holds
//! one of those.

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Parameters whose values are secrets (compared without regard to case).
const SECRET_KEYS: &[&str] = &[
    "sig",
    "accountkey",
    "sharedaccesssignature",
    "client_secret",
    "access_token",
    "refresh_token",
    "token",
];

/// Authorization schemes whose next word is a credential.
const SCHEMES: &[&str] = &["bearer ", "sharedkey "];

/// `text` with every secret it may hold replaced by `<redacted>` (see the module
/// documentation for what counts). Idempotent; text without secrets is returned as is.
pub fn redact(text: &str) -> String {
    let mut out = redact_patterns(text);
    for secret in environment_secrets() {
        for form in encodings(&secret) {
            if out.contains(&form) {
                out = out.replace(&form, REDACTED);
            }
        }
    }
    out
}

/// The parameter and scheme rules alone (no environment).
fn redact_patterns(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        let Some(value_start) = secret_value_at(text, &lower, at) else {
            at += 1;
            continue;
        };
        let value_end = value_end(text, value_start);
        let value = &text[value_start..value_end];
        if value.is_empty() || value == REDACTED || value == "REDACTED" {
            at = value_end.max(at + 1);
            continue;
        }
        out.push_str(&text[copied..value_start]);
        out.push_str(REDACTED);
        copied = value_end;
        at = value_end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Where the secret value starts when a secret parameter or scheme begins at `at`.
fn secret_value_at(text: &str, lower: &str, at: usize) -> Option<usize> {
    if !text.is_char_boundary(at) {
        return None;
    }
    let rest = &lower[at..];
    for scheme in SCHEMES {
        if rest.starts_with(scheme) && starts_a_word(text, at) {
            return Some(at + scheme.len());
        }
    }
    for key in SECRET_KEYS {
        if rest.starts_with(key) && starts_a_word(text, at) {
            if let Some(sep) = separator_len(&rest[key.len()..]) {
                return Some(at + key.len() + sep);
            }
        }
    }
    None
}

/// Whether a parameter name may start at `at`: at the start, after a character that
/// is not part of a name, or after an encoded `?`, `&` or `;`.
fn starts_a_word(text: &str, at: usize) -> bool {
    let before = &text[..at];
    match before.chars().next_back() {
        None => true,
        Some(c) if !(c.is_ascii_alphanumeric() || c == '_' || c == '-') => true,
        Some(_) => ends_with_encoded(before, &[b"26", b"3f", b"3b"]),
    }
}

/// `=` or an encoded `=` (`%3D`, `%253D`, ...): its length.
fn separator_len(text: &str) -> Option<usize> {
    if text.starts_with('=') {
        return Some(1);
    }
    encoded_len(text.as_bytes(), b"3d")
}

/// The length of `%` (`25`)* `code` at the start of `bytes` (`code` in lower case).
fn encoded_len(bytes: &[u8], code: &[u8; 2]) -> Option<usize> {
    if bytes.first() != Some(&b'%') {
        return None;
    }
    let mut i = 1;
    loop {
        let pair = bytes.get(i..i + 2)?;
        if pair.eq_ignore_ascii_case(code) {
            return Some(i + 2);
        }
        if pair != b"25" {
            return None;
        }
        i += 2;
    }
}

/// Whether `text` ends with `%` (`25`)* one of `codes`.
fn ends_with_encoded(text: &str, codes: &[&[u8; 2]]) -> bool {
    let bytes = text.as_bytes();
    let from = bytes.len().saturating_sub(32);
    (from..bytes.len()).filter(|&i| bytes[i] == b'%').any(|i| {
        codes
            .iter()
            .any(|c| encoded_len(&bytes[i..], c) == Some(bytes.len() - i))
    })
}

/// Where the value starting at `start` ends.
fn value_end(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    for (i, c) in text[start..].char_indices() {
        let at = start + i;
        if c.is_whitespace() || "&;\"'<>()[]{},\\".contains(c) {
            return at;
        }
        if c == '%'
            && [b"26", b"3b"]
                .iter()
                .any(|code| encoded_len(&bytes[at..], code).is_some())
        {
            return at;
        }
    }
    text.len()
}

/// The secret values in this process's environment.
fn environment_secrets() -> Vec<String> {
    let mut found = Vec::new();
    for name in ["AZURE_STORAGE_KEY", "AZURE_CLIENT_SECRET"] {
        if let Ok(value) = std::env::var(name) {
            found.push(value);
        }
    }
    if let Ok(conn) = std::env::var("AZURE_STORAGE_CONNECTION_STRING") {
        for part in conn.split(';') {
            if let Some((key, value)) = part.split_once('=') {
                if key.eq_ignore_ascii_case("AccountKey")
                    || key.eq_ignore_ascii_case("SharedAccessSignature")
                {
                    found.push(value.to_string());
                }
            }
        }
    }
    if let Ok(remote) = std::env::var("MANAGEDBLOB_REMOTE") {
        if let Some((_, query)) = remote.split_once('?') {
            found.extend(
                query
                    .split('&')
                    .filter_map(|p| p.split_once('='))
                    .filter(|(k, _)| k.eq_ignore_ascii_case("sig"))
                    .map(|(_, v)| v.to_string()),
            );
        }
    }
    // Short values could match innocent text; real keys and signatures are long.
    found.retain(|s| s.len() >= 8);
    found
}

/// `secret` as written and percent-encoded once and twice.
fn encodings(secret: &str) -> Vec<String> {
    let once = percent_encode(secret);
    let twice = percent_encode(&once);
    let mut forms = vec![secret.to_string(), once, twice];
    forms.dedup();
    forms
}

/// Every byte outside `A-Za-z0-9-._~` as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sas_signatures_in_every_encoding() {
        for (text, want) in [
            ("https://a.blob.core.windows.net/c?sv=1&sig=AbC%2Bd%3D&se=2", "https://a.blob.core.windows.net/c?sv=1&sig=<redacted>&se=2"),
            ("?SIG=abc", "?SIG=<redacted>"),
            // A SAS inside a file: URI (as the CLI and Python build it).
            (
                "file:nodir/big.db?vfs=managedblob&remote=http://h/c%3Fsv%3D1%26sig%3D0inSt%252Bx%253D&blob=big.db: Error code 14",
                "file:nodir/big.db?vfs=managedblob&remote=http://h/c%3Fsv%3D1%26sig%3D<redacted>&blob=big.db: Error code 14",
            ),
            // Encoded twice, ending at an encoded '&'.
            ("x%253Fsig%253Dabc%25252B%2526se%253D2", "x%253Fsig%253D<redacted>%2526se%253D2"),
            // As the first parameter, and in a JSON string.
            ("{\"error\":\"c?sig=abc\"}", "{\"error\":\"c?sig=<redacted>\"}"),
            ("sig=abc def", "sig=<redacted> def"),
        ] {
            assert_eq!(redact(text), want, "{text}");
        }
    }

    #[test]
    fn keys_tokens_and_authorization_values() {
        assert_eq!(
            redact(
                "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k3y+/==;EndpointSuffix=x"
            ),
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=<redacted>;EndpointSuffix=x"
        );
        assert_eq!(
            redact("SharedAccessSignature=sv=1&sig=abc;BlobEndpoint=x"),
            "SharedAccessSignature=<redacted>&sig=<redacted>;BlobEndpoint=x"
        );
        assert_eq!(
            redact("Authorization: Bearer eyJ0.eyJ1.c2ln"),
            "Authorization: Bearer <redacted>"
        );
        assert_eq!(
            redact("SharedKey acct:c2lnbmF0dXJl"),
            "SharedKey <redacted>"
        );
        assert_eq!(
            redact("a?client_secret=s3cr3t&x=1"),
            "a?client_secret=<redacted>&x=1"
        );
        assert_eq!(redact("access_token%3Dabc"), "access_token%3D<redacted>");
    }

    #[test]
    fn innocent_text_is_left_alone() {
        for text in [
            "managedblob: setting 'remote' is missing",
            "design=1&config=2&signature=3",
            "blob big.db does not exist in azure:http://127.0.0.1:1/devstoreaccount1/c",
            "sig",
            "sig=",
            "sig=<redacted>&se=2",
            "sig=REDACTED",
            "100%",
            "ünïcödé sig",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn redacting_twice_changes_nothing_more() {
        let once = redact("c%3Fsig%3Dabc%26x=1 and sig=def");
        assert_eq!(redact(&once), once);
    }

    #[test]
    fn encodings_cover_one_and_two_levels() {
        assert_eq!(encodings("a+b="), ["a+b=", "a%2Bb%3D", "a%252Bb%253D"]);
    }
}
