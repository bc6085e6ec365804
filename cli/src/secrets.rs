//! The last line of defence for "no secret printed": the library's messages are
//! secret-free already; every line this tool prints about a failure is also scrubbed
//! of the SAS tokens and keys it could have seen (arguments and environment).

/// `text` with every known secret replaced by `<redacted>`.
pub fn scrub(text: &str) -> String {
    let mut out = text.to_string();
    for secret in known() {
        if secret.len() >= 8 {
            out = out.replace(&secret, "<redacted>");
        }
    }
    out
}

/// SAS queries and signatures in the arguments and `MANAGEDBLOB_REMOTE`, and the
/// Azure keys and secrets in the environment.
fn known() -> Vec<String> {
    let mut found = Vec::new();
    let mut add_query = |text: &str| {
        if let Some((_, query)) = text.split_once('?') {
            found.push(query.to_string());
            for pair in query.split('&') {
                if let Some(("sig", value)) = pair.split_once('=') {
                    found.push(value.to_string());
                }
            }
        }
    };
    for arg in std::env::args() {
        add_query(&arg);
    }
    if let Ok(remote) = std::env::var("MANAGEDBLOB_REMOTE") {
        add_query(&remote);
    }
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
    found
}
