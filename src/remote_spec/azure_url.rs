//! The `remote` URL of an Azure container, parsed once, with its SAS token kept out
//! of every `Debug`, `Display` and error message.
//!
//! Two shapes are understood:
//!
//! * Azure: `https://<account>.blob.core.windows.net/<container>[?<SAS>]` (any host
//!   whose name contains `.blob.`, so sovereign clouds, private endpoints and
//!   `<account>.blob.localhost`-style proxies work too): the account is the first DNS
//!   label of the host.
//! * Path style, as Azurite and other emulators serve it:
//!   `http://127.0.0.1:10000/<account>/<container>` (any other host, `https` included,
//!   for an emulator behind a certificate): the account is the first path segment.
//!
//! The blob itself is never part of the URL: it comes from the `blob` setting.

use std::fmt;

use azure_core::http::Url;

/// A SAS token (the query string of the `remote` URL, without the `?`). Shown as
/// `<redacted>` everywhere; only [`SasToken::expose`] gives the value, to build
/// request URLs.
#[derive(Clone, PartialEq, Eq)]
pub struct SasToken(String);

impl SasToken {
    pub fn new(token: impl Into<String>) -> SasToken {
        SasToken(token.into().trim_start_matches('?').to_string())
    }

    /// The token itself, for request URLs only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The expiry (`se`, not a secret), if the token has one.
    pub fn expiry(&self) -> Option<String> {
        url::form_urlencoded::parse(self.0.as_bytes())
            .find(|(k, _)| k == "se")
            .map(|(_, v)| v.into_owned())
    }

    /// The value of the `sig` parameter (the part that is a real secret), if any.
    pub fn signature(&self) -> Option<String> {
        url::form_urlencoded::parse(self.0.as_bytes())
            .find(|(k, _)| k == "sig")
            .map(|(_, v)| v.into_owned())
    }
}

impl fmt::Debug for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SasToken(<redacted>)")
    }
}

/// One Azure Blob Storage container (or an emulator's), as named by `remote`.
#[derive(Clone, PartialEq, Eq)]
pub struct ContainerUrl {
    /// `http` or `https`.
    scheme: String,
    /// `host[:port]`.
    authority: String,
    /// The account name sits in the path (emulators) rather than in the host name.
    path_style: bool,
    account: String,
    container: String,
    sas: Option<SasToken>,
}

impl ContainerUrl {
    /// Parse a `remote` value. The error never contains the query string.
    pub fn parse(value: &str) -> Result<ContainerUrl, String> {
        let value = value.trim();
        let shown = redact_query(value);
        let url = Url::parse(value).map_err(|e| format!("{shown} is not a valid URL: {e}"))?;
        let scheme = url.scheme().to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return Err(format!(
                "{shown}: Azure remotes must be https:// (or http:// for an emulator)"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{shown}: user names and passwords do not belong in the URL; use a SAS token \
                 or AZURE_STORAGE_CONNECTION_STRING"
            ));
        }
        if url.fragment().is_some() {
            return Err(format!("{shown}: a '#' fragment is not allowed"));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{shown} has no host"))?
            .to_ascii_lowercase();
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let segments: Vec<&str> = url
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let path_style = !host.contains(".blob.");
        let (account, container) = if path_style {
            match segments.as_slice() {
                [account, container] => (account.to_string(), container.to_string()),
                _ => {
                    return Err(format!(
                        "{shown}: expected https://<account>.blob.core.windows.net/<container>, \
                         or http://<host>:<port>/<account>/<container> for an emulator such as \
                         Azurite (the blob name comes from the 'blob' setting)"
                    ))
                }
            }
        } else {
            let account = host.split('.').next().unwrap_or_default().to_string();
            match segments.as_slice() {
                [container] => (account, container.to_string()),
                _ => {
                    return Err(format!(
                        "{shown}: expected https://<account>.blob.core.windows.net/<container> \
                         with exactly one path segment, the container (the blob name comes \
                         from the 'blob' setting)"
                    ))
                }
            }
        };
        check_account(&account).map_err(|why| format!("{shown}: {why}"))?;
        check_container(&container).map_err(|why| format!("{shown}: {why}"))?;
        let sas = match url.query() {
            None | Some("") => None,
            Some(query) => {
                let token = SasToken::new(query);
                if token.signature().is_none() {
                    return Err(format!(
                        "{shown}: the URL has a query string but no SAS signature ('sig='); \
                         give a complete SAS token or none"
                    ));
                }
                Some(token)
            }
        };
        Ok(ContainerUrl {
            scheme,
            authority,
            path_style,
            account,
            container,
            sas,
        })
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn container(&self) -> &str {
        &self.container
    }

    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }

    pub fn sas(&self) -> Option<&SasToken> {
        self.sas.as_ref()
    }

    /// The blob service endpoint without a trailing slash or query:
    /// `https://acct.blob.core.windows.net` or `http://127.0.0.1:10000/devstoreaccount1`.
    pub fn service_endpoint(&self) -> String {
        if self.path_style {
            format!("{}://{}/{}", self.scheme, self.authority, self.account)
        } else {
            format!("{}://{}", self.scheme, self.authority)
        }
    }

    /// The container URL without any query: safe to show.
    pub fn redacted(&self) -> String {
        format!("{}/{}", self.service_endpoint(), self.container)
    }

    /// The request URL of `blob` (already validated), carrying `sas` when given.
    pub fn blob_url(&self, blob: &str, sas: Option<&SasToken>) -> Result<Url, String> {
        let mut url = Url::parse(&self.redacted())
            .map_err(|e| format!("{}: cannot build a blob URL: {e}", self.redacted()))?;
        url.path_segments_mut()
            .map_err(|_| format!("{} cannot be a base URL", self.redacted()))?
            .extend(blob.split('/'));
        if let Some(sas) = sas {
            url.set_query(Some(sas.expose()));
        }
        Ok(url)
    }
}

impl fmt::Debug for ContainerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerUrl")
            .field("url", &self.redacted())
            .field("sas", &self.sas)
            .finish()
    }
}

impl fmt::Display for ContainerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())?;
        if self.sas.is_some() {
            f.write_str("?<SAS redacted>")?;
        }
        Ok(())
    }
}

/// `value` with its query (everything from the first `?`) and any `user:password@`
/// replaced, for messages.
pub fn redact_query(value: &str) -> String {
    let mut shown = match value.split_once('?') {
        Some((before, _)) => format!("{before}?<redacted>"),
        None => value.to_string(),
    };
    if let Some(start) = shown.find("://").map(|i| i + 3) {
        let end = shown[start..].find('/').map_or(shown.len(), |i| start + i);
        if let Some(at) = shown[start..end].rfind('@') {
            shown.replace_range(start..start + at, "<redacted>");
        }
    }
    shown
}

/// Storage account names: 3 to 24 lowercase letters and digits.
fn check_account(account: &str) -> Result<(), String> {
    let ok = (3..=24).contains(&account.len())
        && account
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{account}' is not a storage account name (3 to 24 lowercase letters and digits)"
        ))
    }
}

/// Container names: 3 to 63 lowercase letters, digits and single hyphens, starting and
/// ending with a letter or digit (or the special `$root`).
fn check_container(container: &str) -> Result<(), String> {
    if container == "$root" {
        return Ok(());
    }
    let bytes = container.as_bytes();
    let ok = (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && !container.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{container}' is not a container name (3 to 63 lowercase letters, digits and \
             single hyphens, starting and ending with a letter or digit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "S3cr3tSig%2Babc%3D";

    #[test]
    fn azure_url_with_sas() {
        let u = ContainerUrl::parse(&format!(
            "https://myacct.blob.core.windows.net/data?sv=2022-11-02&sp=rw&sig={SIG}"
        ))
        .unwrap();
        assert_eq!(u.account(), "myacct");
        assert_eq!(u.container(), "data");
        assert!(u.is_https());
        assert_eq!(u.service_endpoint(), "https://myacct.blob.core.windows.net");
        assert_eq!(u.sas().unwrap().signature().unwrap(), "S3cr3tSig+abc=");
        for shown in [format!("{u}"), format!("{u:?}"), u.redacted()] {
            assert!(!shown.contains("S3cr3t"), "{shown}");
            assert!(!shown.contains("sv="), "{shown}");
        }
        let blob = u.blob_url("dir/a b.db", u.sas()).unwrap();
        assert_eq!(blob.path(), "/data/dir/a%20b.db");
        assert!(blob.query().unwrap().contains("sig="));
    }

    #[test]
    fn azurite_path_style() {
        let u = ContainerUrl::parse("http://127.0.0.1:10000/devstoreaccount1/c-1/").unwrap();
        assert_eq!(u.account(), "devstoreaccount1");
        assert_eq!(u.container(), "c-1");
        assert!(!u.is_https());
        assert!(u.sas().is_none());
        assert_eq!(
            u.service_endpoint(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(
            u.blob_url("x.db", None).unwrap().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/c-1/x.db"
        );
        let s = ContainerUrl::parse("https://localhost:10443/devstoreaccount1/ccc").unwrap();
        assert!(s.is_https());
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_the_sas() {
        for bad in [
            "https://myacct.blob.core.windows.net/?sig=SECRET1",
            "https://myacct.blob.core.windows.net/c/extra?sig=SECRET1",
            "https://myacct.blob.core.windows.net/UPPER?sig=SECRET1",
            "https://x.blob.core.windows.net/data?sig=SECRET1",
            "http://127.0.0.1:10000/onlyaccount?sig=SECRET1",
            "https://user:SECRET1@myacct.blob.core.windows.net/data",
            "https://myacct.blob.core.windows.net/data?sv=1&SECRET1=2",
            "ftp://myacct.blob.core.windows.net/data?sig=SECRET1",
        ] {
            let e = ContainerUrl::parse(bad).unwrap_err();
            assert!(!e.contains("SECRET1"), "{bad}: {e}");
        }
    }
}
