//! HTTP requests counted as Azure bills and throttles them: one per request the SDK
//! sends (a pipeline policy, so a download in ranges counts each range), by
//! operation. `PRAGMA managedblob_status` reports them beside the backend calls.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Method, Request};

/// Azure's operation names, as the status report spells them, and `waiter_mark`:
/// the reads and writes of the waiter queue (`<blob>.mb-waiting`, a Get Blob
/// Properties, Get Blob or Put Blob as Azure bills them),
/// apart so that they are not taken for the database's own stats and uploads.
const KINDS: [&str; 11] = [
    "get_blob_properties",
    "get_blob",
    "list_blobs",
    "get_block_list",
    "put_blob",
    "put_block",
    "put_block_list",
    "lease_blob",
    "create_container",
    "waiter_mark",
    "other",
];

/// Requests sent, per kind of [`KINDS`].
#[derive(Debug, Default)]
pub struct HttpCounts([AtomicU64; KINDS.len()]);

impl HttpCounts {
    /// `(kind, requests)` for every kind.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        KINDS
            .iter()
            .zip(&self.0)
            .map(|(k, n)| (*k, n.load(Relaxed)))
            .collect()
    }
}

/// Which of [`KINDS`] a request is, from its method, path and query.
fn kind_of(method: Method, path: &str, query: &str) -> usize {
    let has = |item: &str| query.split('&').any(|kv| kv == item);
    let name = match method {
        _ if path.ends_with(".mb-waiting") => "waiter_mark",
        Method::Head => "get_blob_properties",
        Method::Get if has("comp=blocklist") => "get_block_list",
        Method::Get if has("comp=list") => "list_blobs",
        Method::Get => "get_blob",
        Method::Put if has("comp=block") => "put_block",
        Method::Put if has("comp=blocklist") => "put_block_list",
        Method::Put if has("comp=lease") => "lease_blob",
        Method::Put if has("restype=container") => "create_container",
        Method::Put => "put_blob",
        _ => "other",
    };
    KINDS
        .iter()
        .position(|k| *k == name)
        .unwrap_or(KINDS.len() - 1)
}

/// The policy that counts every try.
#[derive(Debug)]
pub struct CountingPolicy(pub Arc<HttpCounts>);

#[async_trait]
impl Policy for CountingPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let url = request.url();
        let kind = kind_of(request.method(), url.path(), url.query().unwrap_or(""));
        self.0 .0[kind].fetch_add(1, Relaxed);
        next[0].send(ctx, request, &next[1..]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_as_azure_names_its_operations() {
        let name = |m: Method, q: &str| KINDS[kind_of(m, "/acct/c/a.db", q)];
        assert_eq!(name(Method::Head, ""), "get_blob_properties");
        assert_eq!(
            name(Method::Get, "comp=blocklist&blocklisttype=committed"),
            "get_block_list"
        );
        assert_eq!(name(Method::Get, ""), "get_blob");
        assert_eq!(
            name(Method::Get, "restype=container&comp=list"),
            "list_blobs"
        );
        assert_eq!(name(Method::Put, "comp=block&blockid=AA"), "put_block");
        assert_eq!(name(Method::Put, "comp=blocklist"), "put_block_list");
        assert_eq!(name(Method::Put, "comp=lease"), "lease_blob");
        assert_eq!(name(Method::Put, "restype=container"), "create_container");
        assert_eq!(name(Method::Put, "sv=2019&sig=x"), "put_blob");
        assert_eq!(name(Method::Delete, ""), "other");
        let mark = |m: Method| KINDS[kind_of(m, "/acct/c/a.db.mb-waiting", "")];
        assert_eq!(mark(Method::Head), "waiter_mark");
        assert_eq!(mark(Method::Put), "waiter_mark");
    }
}
