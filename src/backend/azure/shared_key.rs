//! Shared Key request signing (an account name and key, as in a connection string or
//! Azurite's well-known development account).
//!
//! The GA SDK has no Shared Key credential (azure-sdk-for-rust issue #2975), so this is
//! a pipeline [`Policy`] placed in `ClientOptions::per_try_policies`: it runs after
//! every header is set, just before the logging and transport policies, and signs each
//! try afresh (with a fresh `x-ms-date`). The string to sign is the documented one
//! (<https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key>):
//!
//! ```text
//! VERB \n Content-Encoding \n Content-Language \n Content-Length \n Content-MD5 \n
//! Content-Type \n Date \n If-Modified-Since \n If-Match \n If-None-Match \n
//! If-Unmodified-Since \n Range \n CanonicalizedHeaders CanonicalizedResource
//! ```
//!
//! The key is held as an [`azure_core::credentials::Secret`] and never formatted.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::Secret;
use azure_core::hmac::hmac_sha256;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Body, Context, Request};
use azure_core::time::OffsetDateTime;

/// Signs requests with an account key.
pub struct SharedKeyPolicy {
    account: String,
    key: Secret,
}

impl SharedKeyPolicy {
    /// `key` is the base64 account key. Fails (without echoing it) when it is not
    /// valid base64.
    pub fn new(account: impl Into<String>, key: Secret) -> Result<SharedKeyPolicy, String> {
        if azure_core::base64::decode(key.secret()).is_err() {
            return Err("the account key is not valid base64".into());
        }
        Ok(SharedKeyPolicy {
            account: account.into(),
            key,
        })
    }
}

impl fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKeyPolicy")
            .field("account", &self.account)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        request.insert_header("x-ms-date", rfc1123(OffsetDateTime::now_utc()));
        let to_sign = string_to_sign(&self.account, request);
        let signature = hmac_sha256(&to_sign, &self.key)?;
        request.insert_header(
            "authorization",
            format!("SharedKey {}:{signature}", self.account),
        );
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// The Shared Key string to sign for `request` (service version 2015-02-21 or later:
/// a zero Content-Length is signed as an empty string).
pub fn string_to_sign(account: &str, request: &Request) -> String {
    let mut headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.as_str().to_string()))
        .collect();
    headers.sort();
    let get = |name: &str| -> String {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let content_length = {
        let given = get("content-length");
        let length = if given.is_empty() {
            match request.body() {
                Body::Bytes(bytes) => bytes.len() as u64,
                Body::SeekableStream(stream) => stream.len().unwrap_or(0),
            }
        } else {
            given.trim().parse().unwrap_or(0)
        };
        if length == 0 {
            String::new()
        } else {
            length.to_string()
        }
    };
    let mut out = String::with_capacity(256);
    out.push_str(request.method().as_ref());
    out.push('\n');
    for name in ["content-encoding", "content-language"] {
        out.push_str(&get(name));
        out.push('\n');
    }
    out.push_str(&content_length);
    out.push('\n');
    for name in [
        "content-md5",
        "content-type",
        "date",
        "if-modified-since",
        "if-match",
        "if-none-match",
        "if-unmodified-since",
        "range",
    ] {
        out.push_str(&get(name));
        out.push('\n');
    }
    for (name, value) in headers.iter().filter(|(k, _)| k.starts_with("x-ms-")) {
        out.push_str(name);
        out.push(':');
        out.push_str(&unfold(value));
        out.push('\n');
    }
    out.push_str(&canonicalized_resource(account, request));
    out
}

/// `/account/path` then one `\nname:v1,v2` line per query parameter, names lowercased
/// and sorted, values decoded and sorted.
fn canonicalized_resource(account: &str, request: &Request) -> String {
    let url = request.url();
    let mut out = format!("/{account}{}", url.path());
    let mut params: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in url.query_pairs() {
        let name = name.to_ascii_lowercase();
        match params.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value.into_owned()),
            None => params.push((name, vec![value.into_owned()])),
        }
    }
    params.sort();
    for (name, mut values) in params {
        values.sort();
        out.push('\n');
        out.push_str(&name);
        out.push(':');
        out.push_str(&values.join(","));
    }
    out
}

/// A header value with surrounding whitespace trimmed and inner runs of whitespace
/// folded to one space.
fn unfold(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (`t` must be in UTC, as `now_utc()` is).
pub fn rfc1123(t: OffsetDateTime) -> String {
    let weekday = &t.weekday().to_string()[..3];
    let month = &t.month().to_string()[..3];
    format!(
        "{weekday}, {:02} {month} {} {:02}:{:02}:{:02} GMT",
        t.day(),
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::{Method, Url};

    #[test]
    fn date_format() {
        let t = OffsetDateTime::from_unix_timestamp(784111777).unwrap();
        assert_eq!(rfc1123(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn string_to_sign_layout() {
        let url = Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/c/x.db?comp=lease&timeout=30&Comp=b",
        )
        .unwrap();
        let mut r = Request::new(url, Method::Put);
        r.insert_header("x-ms-version", "2026-04-06");
        r.insert_header("x-ms-date", "Sun, 06 Nov 1994 08:49:37 GMT");
        r.insert_header("x-ms-lease-action", "  acquire   now ");
        r.insert_header("if-match", "\"0x1\"");
        r.set_body(vec![1u8, 2, 3]);
        let s = string_to_sign("devstoreaccount1", &r);
        assert_eq!(
            s,
            "PUT\n\n\n3\n\n\n\n\n\"0x1\"\n\n\n\n\
             x-ms-date:Sun, 06 Nov 1994 08:49:37 GMT\n\
             x-ms-lease-action:acquire now\n\
             x-ms-version:2026-04-06\n\
             /devstoreaccount1/devstoreaccount1/c/x.db\ncomp:b,lease\ntimeout:30"
        );
    }

    #[test]
    fn key_is_checked_and_never_shown() {
        assert!(SharedKeyPolicy::new("a", Secret::new("not base64!")).is_err());
        let p = SharedKeyPolicy::new("acct", Secret::new("c2VjcmV0a2V5")).unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("c2VjcmV0a2V5"), "{shown}");
    }
}
