//! Which credential an Azure remote uses, resolved once when the remote is opened.
//!
//! The order (the first that applies wins):
//!
//! 1. **A SAS token in the `remote` URL** (`https://acct.blob.core.windows.net/c?sv=..&sig=..`).
//! 2. **`AZURE_STORAGE_CONNECTION_STRING`**, when it is for the remote's account:
//!    `AccountName` + `AccountKey` (Shared Key signing), or `SharedAccessSignature`, or
//!    `UseDevelopmentStorage=true` (Azurite's well-known `devstoreaccount1` key).
//!    The account is `AccountName`, else the one `BlobEndpoint` names; `BlobEndpoint`,
//!    `DefaultEndpointsProtocol` and `EndpointSuffix` are checked against the remote
//!    URL (a mismatch is logged, not fatal: `localhost` and `127.0.0.1` are one host).
//!    A connection string for another account is skipped (and said so).
//! 3. **`AZURE_STORAGE_KEY`** (with `AZURE_STORAGE_ACCOUNT`, which must name the remote's
//!    account when set): Shared Key signing.
//! 4. **Entra ID**, https only, through a chain like DefaultAzureCredential's: the
//!    environment's client secret (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//!    `AZURE_CLIENT_SECRET`), workload identity (`AZURE_FEDERATED_TOKEN_FILE`), managed
//!    identity (user-assigned when `AZURE_CLIENT_ID` is set), then the developer tools
//!    (Azure CLI, Azure Developer CLI). `AZURE_TOKEN_CREDENTIALS` narrows the chain as
//!    in the other Azure SDKs: `dev`, `prod`, or one credential's name.
//!
//! When nothing applies the error lists what was tried. No secret is ever formatted:
//! keys are [`Secret`]s, SAS tokens [`SasToken`]s, and every secret value is handed to
//! the error scrubber.

use std::fmt;
use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};

use super::entra::ChainCredential;
use super::url::{ContainerUrl, SasToken};

pub const CONNECTION_STRING: &str = "AZURE_STORAGE_CONNECTION_STRING";
pub const STORAGE_ACCOUNT: &str = "AZURE_STORAGE_ACCOUNT";
pub const STORAGE_KEY: &str = "AZURE_STORAGE_KEY";
pub const TOKEN_CREDENTIALS: &str = "AZURE_TOKEN_CREDENTIALS";

/// Azurite's published development account and key.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How requests are authorized.
pub enum Credential {
    /// A SAS token appended to every request URL.
    Sas(SasToken),
    /// Shared Key signing with the account key.
    SharedKey { account: String, key: Secret },
    /// Entra ID bearer tokens.
    Token(Arc<dyn TokenCredential>),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Sas(_) => f.write_str("Sas(<redacted>)"),
            Credential::SharedKey { account, .. } => {
                write!(f, "SharedKey {{ account: {account:?}, key: <redacted> }}")
            }
            Credential::Token(_) => f.write_str("Token(..)"),
        }
    }
}

/// A resolved credential, with a secret-free description for messages.
pub struct Resolved {
    pub credential: Credential,
    /// For example "the account key in AZURE_STORAGE_CONNECTION_STRING (account 'x')".
    pub description: String,
    /// Every secret value involved, so error messages can be scrubbed of them.
    pub secrets: Vec<String>,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved")
            .field("credential", &self.credential)
            .field("description", &self.description)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .finish()
    }
}

/// Resolve the credential for `url`; `env` reads an environment variable.
pub fn resolve(
    url: &ContainerUrl,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, String> {
    let account = url.account();
    let mut tried: Vec<String> = Vec::new();

    // (a) A SAS token in the URL.
    if let Some(sas) = url.sas() {
        // Say so when the token has already expired: the service only answers 403.
        let description = match sas
            .expiry()
            .filter(|se| se.as_str() < crate::utc::Utc::now().iso8601().as_str())
        {
            Some(se) => format!("the SAS token in the remote URL (it expired at {se})"),
            None => "the SAS token in the remote URL".into(),
        };
        return Ok(Resolved {
            description,
            secrets: sas_secrets(sas),
            credential: Credential::Sas(sas.clone()),
        });
    }
    tried.push("(a) no SAS token in the remote URL".into());

    // (b) A connection string.
    match env(CONNECTION_STRING).filter(|v| !v.trim().is_empty()) {
        None => tried.push(format!("(b) {CONNECTION_STRING} is not set")),
        Some(text) => {
            let cs = ConnectionString::parse(&text)?;
            if cs.account.as_deref() == Some(account) {
                cs.check_endpoint(url);
                if let Some(key) = cs.key {
                    let description = if cs.development {
                        format!("Azurite's development account key (UseDevelopmentStorage=true in {CONNECTION_STRING})")
                    } else {
                        format!("the account key in {CONNECTION_STRING} (account '{account}')")
                    };
                    return shared_key(account, key, description);
                }
                if let Some(sas) = cs.sas {
                    return Ok(Resolved {
                        description: format!("the SAS token in {CONNECTION_STRING}"),
                        secrets: sas_secrets(&sas),
                        credential: Credential::Sas(sas),
                    });
                }
                return Err(format!(
                    "{CONNECTION_STRING} is for account '{account}' but has neither AccountKey \
                     nor SharedAccessSignature"
                ));
            }
            tried.push(match cs.account {
                Some(other) => format!(
                    "(b) {CONNECTION_STRING} is for account '{other}', not '{account}': skipped"
                ),
                None => format!("(b) {CONNECTION_STRING} names no account: skipped"),
            });
        }
    }

    // (c) An account key in AZURE_STORAGE_KEY.
    match (
        env(STORAGE_ACCOUNT).filter(|v| !v.is_empty()),
        env(STORAGE_KEY).filter(|v| !v.is_empty()),
    ) {
        (Some(other), Some(_)) if other != account => tried.push(format!(
            "(c) {STORAGE_ACCOUNT} is '{other}', not '{account}': {STORAGE_KEY} skipped"
        )),
        (_, Some(key)) => {
            let description = format!("the account key in {STORAGE_KEY} (account '{account}')");
            return shared_key(account, Secret::new(key), description);
        }
        (_, None) => tried.push(format!("(c) {STORAGE_KEY} is not set")),
    }

    // (d) Entra ID.
    if !url.is_https() {
        tried.push("(d) Entra ID needs an https:// remote".into());
        return Err(format!(
            "no credential found: {}. Give a SAS token in the URL, set \
             {CONNECTION_STRING} (for Azurite: UseDevelopmentStorage=true), or set {STORAGE_KEY}",
            tried.join("; ")
        ));
    }
    let chain = ChainCredential::from_env(env)?;
    let description = format!("Entra ID ({})", chain.describe());
    Ok(Resolved {
        description,
        secrets: chain.secrets.clone(),
        credential: Credential::Token(Arc::new(chain)),
    })
}

fn shared_key(account: &str, key: Secret, description: String) -> Result<Resolved, String> {
    if azure_core::base64::decode(key.secret()).is_err() {
        return Err(format!("{description}: the key is not valid base64"));
    }
    Ok(Resolved {
        secrets: vec![key.secret().to_string()],
        credential: Credential::SharedKey {
            account: account.to_string(),
            key,
        },
        description,
    })
}

fn sas_secrets(sas: &SasToken) -> Vec<String> {
    let mut secrets = vec![sas.expose().to_string()];
    if let Some(sig) = sas.signature() {
        secrets.push(url::form_urlencoded::byte_serialize(sig.as_bytes()).collect());
        secrets.push(sig);
    }
    secrets
}

/// The parts of a storage connection string that matter here.
#[derive(Default)]
struct ConnectionString {
    account: Option<String>,
    key: Option<Secret>,
    sas: Option<SasToken>,
    development: bool,
    protocol: Option<String>,
    blob_endpoint: Option<String>,
    suffix: Option<String>,
}

impl ConnectionString {
    /// Parse `Key=Value;...`. Errors name the variable and the key, never a value.
    fn parse(text: &str) -> Result<ConnectionString, String> {
        let mut cs = ConnectionString::default();
        let mut account_name = None;
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = part.split_once('=') else {
                return Err(format!(
                    "{CONNECTION_STRING} is malformed: expected Key=Value pairs separated by ';'"
                ));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "accountname" => account_name = Some(value.to_string()),
                "accountkey" => cs.key = Some(Secret::new(value.to_string())),
                "sharedaccesssignature" => cs.sas = Some(SasToken::new(value)),
                "defaultendpointsprotocol" => cs.protocol = Some(value.to_ascii_lowercase()),
                "blobendpoint" => cs.blob_endpoint = Some(value.trim_end_matches('/').to_string()),
                "endpointsuffix" => cs.suffix = Some(value.to_string()),
                "usedevelopmentstorage" => cs.development = value.eq_ignore_ascii_case("true"),
                "developmentstorageproxyuri" => {
                    cs.blob_endpoint = Some(format!(
                        "{}:10000/{DEV_ACCOUNT}",
                        value.trim_end_matches('/')
                    ))
                }
                // Other services' endpoints and unknown keys do not matter here.
                _ => {}
            }
        }
        if cs.development {
            account_name = Some(DEV_ACCOUNT.to_string());
            cs.key = Some(Secret::new(DEV_KEY));
            if cs.blob_endpoint.is_none() {
                cs.blob_endpoint = Some(format!("http://127.0.0.1:10000/{DEV_ACCOUNT}"));
            }
        }
        cs.account = account_name.or_else(|| {
            let endpoint = ContainerUrl::parse(&format!("{}/probe", cs.blob_endpoint.as_ref()?));
            endpoint.ok().map(|u| u.account().to_string())
        });
        Ok(cs)
    }

    /// Log (without failing) when the connection string's endpoint is not the remote's.
    fn check_endpoint(&self, url: &ContainerUrl) {
        let remote = url.service_endpoint();
        let expected = match (&self.blob_endpoint, &self.account) {
            (Some(endpoint), _) => Some(endpoint.clone()),
            (None, Some(account)) => Some(format!(
                "{}://{account}.blob.{}",
                self.protocol.as_deref().unwrap_or("https"),
                self.suffix.as_deref().unwrap_or("core.windows.net")
            )),
            _ => None,
        };
        if let Some(expected) = expected {
            if !expected.eq_ignore_ascii_case(&remote) {
                tracing::info!(
                    remote = %remote,
                    connection_string_endpoint = %expected,
                    "{CONNECTION_STRING} names another blob endpoint than the remote URL; \
                     using its key for the remote's account anyway"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::azure::entra::MANAGED;

    const KEY: &str = "c2VjcmV0LWtleS1ieXRlcw==";

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn azurite() -> ContainerUrl {
        ContainerUrl::parse("http://127.0.0.1:10000/devstoreaccount1/cont1").unwrap()
    }

    fn azure() -> ContainerUrl {
        ContainerUrl::parse("https://acct1.blob.core.windows.net/cont1").unwrap()
    }

    #[test]
    fn sas_in_the_url_comes_first() {
        let url =
            ContainerUrl::parse("https://acct1.blob.core.windows.net/cont1?sv=1&sig=SIGSECRET")
                .unwrap();
        let env = env_of(&[(STORAGE_KEY, KEY)]);
        let r = resolve(&url, &env).unwrap();
        assert!(matches!(r.credential, Credential::Sas(_)));
        assert!(r.secrets.iter().any(|s| s == "SIGSECRET"));
        assert!(!format!("{r:?}").contains("SIGSECRET"));
    }

    #[test]
    fn development_storage_connection_string() {
        let env = env_of(&[(CONNECTION_STRING, "UseDevelopmentStorage=true")]);
        let r = resolve(&azurite(), &env).unwrap();
        match &r.credential {
            Credential::SharedKey { account, key } => {
                assert_eq!(account, DEV_ACCOUNT);
                assert_eq!(key.secret(), DEV_KEY);
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{r:?}").contains(DEV_KEY));
        assert!(r.description.contains("UseDevelopmentStorage"));
    }

    #[test]
    fn full_connection_string_and_account_mismatch() {
        let cs = format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};\
             BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
        );
        let env = env_of(&[(CONNECTION_STRING, &cs)]);
        let r = resolve(&azurite(), &env).unwrap();
        assert!(matches!(r.credential, Credential::SharedKey { .. }));
        // The same string for another account is skipped, and the error says so.
        let e = resolve(
            &ContainerUrl::parse("http://127.0.0.1:10000/otheraccount/cont1").unwrap(),
            &env,
        )
        .unwrap_err();
        assert!(e.contains("is for account 'devstoreaccount1'"), "{e}");
        assert!(e.contains("(d) Entra ID needs an https"), "{e}");
        assert!(!e.contains(KEY), "{e}");
        // BlobEndpoint alone names the account.
        let cs = format!("BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;AccountKey={KEY}");
        let env = env_of(&[(CONNECTION_STRING, &cs)]);
        assert!(resolve(&azurite(), &env).is_ok());
    }

    #[test]
    fn connection_string_errors_do_not_echo_it() {
        let env = env_of(&[(
            CONNECTION_STRING,
            "AccountName=devstoreaccount1;garbageSECRET",
        )]);
        let e = resolve(&azurite(), &env).unwrap_err();
        assert!(
            e.contains(CONNECTION_STRING) && !e.contains("SECRET"),
            "{e}"
        );
        let env = env_of(&[(
            CONNECTION_STRING,
            "AccountName=devstoreaccount1;AccountKey=!!SECRET",
        )]);
        let e = resolve(&azurite(), &env).unwrap_err();
        assert!(e.contains("base64") && !e.contains("SECRET"), "{e}");
    }

    #[test]
    fn account_key_variables() {
        let env = env_of(&[(STORAGE_ACCOUNT, "acct1"), (STORAGE_KEY, KEY)]);
        let r = resolve(&azure(), &env).unwrap();
        assert!(r.description.contains(STORAGE_KEY), "{}", r.description);
        let env = env_of(&[(STORAGE_ACCOUNT, "other"), (STORAGE_KEY, KEY)]);
        let e = resolve(&azurite(), &env).unwrap_err();
        assert!(e.contains("AZURE_STORAGE_ACCOUNT is 'other'"), "{e}");
    }

    #[test]
    fn nothing_over_http_lists_what_was_tried() {
        let e = resolve(&azurite(), &env_of(&[])).unwrap_err();
        for part in ["(a)", "(b)", "(c)", "(d)", CONNECTION_STRING, STORAGE_KEY] {
            assert!(e.contains(part), "{part}: {e}");
        }
    }

    #[test]
    fn entra_chain_is_chosen_for_https_and_narrowed_by_the_variable() {
        // Only builds the chain: asking for a token here would probe the network.
        let env = env_of(&[(TOKEN_CREDENTIALS, "dev")]);
        let r = resolve(&azure(), &env).unwrap();
        assert!(matches!(r.credential, Credential::Token(_)));
        assert!(
            r.description.contains("AzureCliCredential"),
            "{}",
            r.description
        );
        assert!(!r.description.contains(MANAGED), "{}", r.description);
        let env = env_of(&[
            (TOKEN_CREDENTIALS, "environmentcredential"),
            ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
            ("AZURE_CLIENT_ID", "client"),
            ("AZURE_CLIENT_SECRET", "CLIENTSECRET"),
        ]);
        let r = resolve(&azure(), &env).unwrap();
        assert!(r.secrets.iter().any(|s| s == "CLIENTSECRET"));
        assert!(!format!("{r:?}").contains("CLIENTSECRET"));
        let e = resolve(&azure(), &env_of(&[(TOKEN_CREDENTIALS, "bogus")])).unwrap_err();
        assert!(e.contains(TOKEN_CREDENTIALS), "{e}");
    }
}

#[cfg(test)]
mod expiry_tests {
    use super::*;

    #[test]
    fn an_expired_sas_is_named_as_such() {
        let url = ContainerUrl::parse(
            "https://acct1.blob.core.windows.net/data?sv=2022-11-02&se=2020-01-01T00%3A00%3A00Z&sig=SECRET",
        )
        .unwrap();
        let r = resolve(&url, &|_| None).unwrap();
        assert!(
            r.description.contains("expired at 2020-01-01T00:00:00Z"),
            "{}",
            r.description
        );
        assert!(!r.description.contains("SECRET"));
        let url = ContainerUrl::parse(
            "https://acct1.blob.core.windows.net/data?sv=2022-11-02&se=2999-01-01T00%3A00%3A00Z&sig=S",
        )
        .unwrap();
        assert!(!resolve(&url, &|_| None)
            .unwrap()
            .description
            .contains("expired"));
    }
}
