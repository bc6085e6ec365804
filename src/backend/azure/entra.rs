//! Entra ID for Azure remotes over https: a chain of credentials tried in order
//! like DefaultAzureCredential's (environment client secret, workload identity,
//! managed identity, Azure CLI, Azure Developer CLI), narrowed by
//! `AZURE_TOKEN_CREDENTIALS`; the first that yields a token is kept.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_identity::{
    AzureCliCredential, AzureDeveloperCliCredential, ClientSecretCredential,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use super::auth::TOKEN_CREDENTIALS;

/// Entra ID credentials tried in order, like DefaultAzureCredential; the first one
/// that yields a token is used from then on.
pub struct ChainCredential {
    sources: Vec<Source>,
    chosen: AtomicUsize,
    pub(super) secrets: Vec<String>,
}

struct Source {
    name: &'static str,
    credential: Result<Arc<dyn TokenCredential>, String>,
}

const ENVIRONMENT: &str = "EnvironmentCredential";
const WORKLOAD: &str = "WorkloadIdentityCredential";
pub(super) const MANAGED: &str = "ManagedIdentityCredential";
const CLI: &str = "AzureCliCredential";
const AZD: &str = "AzureDeveloperCliCredential";
const ALL: [&str; 5] = [ENVIRONMENT, WORKLOAD, MANAGED, CLI, AZD];

impl ChainCredential {
    /// Build the chain `AZURE_TOKEN_CREDENTIALS` selects (all five by default).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<ChainCredential, String> {
        let selected: Vec<&'static str> = match env(TOKEN_CREDENTIALS)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
        {
            None => ALL.to_vec(),
            Some(v) if v.eq_ignore_ascii_case("dev") => vec![CLI, AZD],
            Some(v) if v.eq_ignore_ascii_case("prod") => vec![ENVIRONMENT, WORKLOAD, MANAGED],
            Some(v) => match ALL.iter().find(|name| name.eq_ignore_ascii_case(&v)) {
                Some(name) => vec![*name],
                None => {
                    return Err(format!(
                        "{TOKEN_CREDENTIALS} is '{v}'; expected dev, prod or one of {}",
                        ALL.join(", ")
                    ))
                }
            },
        };
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let mut secrets = Vec::new();
        let sources = selected
            .into_iter()
            .map(|name| {
                let credential: Result<Arc<dyn TokenCredential>, String> = match name {
                    ENVIRONMENT => match (
                        var("AZURE_TENANT_ID"),
                        var("AZURE_CLIENT_ID"),
                        var("AZURE_CLIENT_SECRET"),
                    ) {
                        (Some(tenant), Some(client), Some(secret)) => {
                            secrets.push(secret.clone());
                            ClientSecretCredential::new(&tenant, client, Secret::new(secret), None)
                                .map(|c| c as Arc<dyn TokenCredential>)
                                .map_err(|e| e.to_string())
                        }
                        _ => Err(
                            "not configured (needs AZURE_TENANT_ID, AZURE_CLIENT_ID and \
                                  AZURE_CLIENT_SECRET)"
                                .into(),
                        ),
                    },
                    WORKLOAD => match var("AZURE_FEDERATED_TOKEN_FILE") {
                        Some(file) => WorkloadIdentityCredential::new(Some(
                            WorkloadIdentityCredentialOptions {
                                client_id: var("AZURE_CLIENT_ID"),
                                tenant_id: var("AZURE_TENANT_ID"),
                                token_file_path: Some(file.into()),
                                ..Default::default()
                            },
                        ))
                        .map(|c| c as Arc<dyn TokenCredential>)
                        .map_err(|e| e.to_string()),
                        None => Err("not configured (needs AZURE_FEDERATED_TOKEN_FILE)".into()),
                    },
                    MANAGED => {
                        ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                            user_assigned_id: var("AZURE_CLIENT_ID").map(UserAssignedId::ClientId),
                            ..Default::default()
                        }))
                        .map(|c| c as Arc<dyn TokenCredential>)
                        .map_err(|e| e.to_string())
                    }
                    CLI => AzureCliCredential::new(None)
                        .map(|c| c as Arc<dyn TokenCredential>)
                        .map_err(|e| e.to_string()),
                    _ => AzureDeveloperCliCredential::new(None)
                        .map(|c| c as Arc<dyn TokenCredential>)
                        .map_err(|e| e.to_string()),
                };
                Source { name, credential }
            })
            .collect();
        Ok(ChainCredential {
            sources,
            chosen: AtomicUsize::new(usize::MAX),
            secrets,
        })
    }

    /// "tried in order: EnvironmentCredential (not configured), AzureCliCredential"
    pub fn describe(&self) -> String {
        let names: Vec<String> = self
            .sources
            .iter()
            .map(|s| match &s.credential {
                Ok(_) => s.name.to_string(),
                Err(_) => format!("{} (not configured)", s.name),
            })
            .collect();
        format!("credentials tried in order: {}", names.join(", "))
    }
}

impl fmt::Debug for ChainCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainCredential(")?;
        f.write_str(&self.describe())?;
        f.write_str(")")
    }
}

#[async_trait]
impl TokenCredential for ChainCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let chosen = self.chosen.load(Ordering::Relaxed);
        if let Some(Source {
            credential: Ok(credential),
            ..
        }) = self.sources.get(chosen)
        {
            return credential.get_token(scopes, options).await;
        }
        let mut failures = Vec::new();
        for (index, source) in self.sources.iter().enumerate() {
            match &source.credential {
                Err(why) => failures.push(format!("{}: {why}", source.name)),
                Ok(credential) => {
                    match probe(source.name, credential.get_token(scopes, options.clone())).await {
                        Ok(token) => {
                            tracing::info!(credential = source.name, "Entra ID token obtained");
                            self.chosen.store(index, Ordering::Relaxed);
                            return Ok(token);
                        }
                        Err(e) => failures.push(format!(
                            "{}: {}",
                            source.name,
                            super::errors::chain(&e).replace('\n', " ")
                        )),
                    }
                }
            }
        }
        Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            format!(
                "no Entra ID credential gave a token ({}). Set {TOKEN_CREDENTIALS} to pick one",
                failures.join("; ")
            ),
        ))
    }
}

/// How long the managed identity endpoint may take to answer while the chain is
/// still looking for a credential. Off Azure the IMDS endpoint may not answer at all,
/// and the SDK retries it for over a minute: a developer's `az login` further down the
/// chain should not wait that long (DefaultAzureCredential probes the same way).
const MANAGED_IDENTITY_PROBE: std::time::Duration = std::time::Duration::from_secs(2);

/// `fut`, bounded by [`MANAGED_IDENTITY_PROBE`] when it is the managed identity's first
/// try (inside a tokio runtime, where every call of this chain runs).
async fn probe<F>(name: &'static str, fut: F) -> azure_core::Result<AccessToken>
where
    F: std::future::Future<Output = azure_core::Result<AccessToken>>,
{
    if name != MANAGED || tokio::runtime::Handle::try_current().is_err() {
        return fut.await;
    }
    match tokio::time::timeout(MANAGED_IDENTITY_PROBE, fut).await {
        Ok(result) => result,
        Err(_) => Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            format!(
                "no managed identity endpoint answered within {}s (not on Azure?)",
                MANAGED_IDENTITY_PROBE.as_secs()
            ),
        )),
    }
}
