//! The API server's ServiceAccount token issuer and keys, as it publishes them for
//! OIDC discovery: what broker hosts check ServiceAccount tokens against.

use serde::Deserialize;

use crate::error::Error;

/// The issuer and its key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerKeys {
    /// The `iss` claim of the cluster's ServiceAccount tokens.
    pub issuer: String,
    /// The JSON Web Key Set, as served.
    pub jwks: String,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
}

/// Reads `/.well-known/openid-configuration` and `/openid/v1/jwks` (ServiceAccounts
/// may read both: `system:service-account-issuer-discovery`).
pub async fn fetch(client: &kube::Client) -> Result<IssuerKeys, Error> {
    let discovery = get(client, "/.well-known/openid-configuration").await?;
    let discovery: Discovery = serde_json::from_str(&discovery)?;
    let jwks = get(client, "/openid/v1/jwks").await?;
    // Refuse what is not a key set rather than publish it to the hosts.
    let parsed: serde_json::Value = serde_json::from_str(&jwks)?;
    if !parsed["keys"].is_array() {
        return Err(Error::MissingField(
            "keys in the API server's /openid/v1/jwks",
        ));
    }
    Ok(IssuerKeys {
        issuer: discovery.issuer,
        jwks,
    })
}

async fn get(client: &kube::Client, path: &str) -> Result<String, Error> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|err| Error::Kube(kube::Error::HttpError(err)))?;
    Ok(client.request_text(request).await?)
}
