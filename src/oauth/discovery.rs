//! Finding the token endpoint from the issuer: OpenID Connect Discovery 1.0 §4
//! (`/.well-known/openid-configuration`), then RFC 8414 §3
//! (`/.well-known/oauth-authorization-server`).

use std::fmt;

use serde::Deserialize;

use super::{Client, Error as OAuthError};

/// The client authentication method of RFC 7523 §2.2, as OpenID Connect Core §9 names it.
pub const PRIVATE_KEY_JWT: &str = "private_key_jwt";

/// What p11jwt reads from authorization server metadata (RFC 8414 §2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub token_endpoint: String,
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    pub token_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
}

/// Something about the metadata worth telling the user before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The server publishes its list and it lacks what we are about to use.
    Mismatch(String),
    /// The server does not publish the list, so nothing could be checked.
    Unpublished(String),
}

impl Metadata {
    /// Compares the published lists with `private_key_jwt` and `alg`.
    pub fn check(&self, alg: &str) -> Vec<Finding> {
        let mut findings = Vec::new();
        match &self.token_endpoint_auth_methods_supported {
            Some(methods) if !methods.iter().any(|m| m == PRIVATE_KEY_JWT) => {
                findings.push(Finding::Mismatch(format!(
                    "the issuer's metadata lists token_endpoint_auth_methods_supported {} \
                     without private_key_jwt: the server may refuse the assertion",
                    shown(methods)
                )))
            }
            Some(_) => {}
            // RFC 8414 §2: when omitted, the default is client_secret_basic.
            None => findings.push(Finding::Unpublished(
                "the issuer's metadata has no token_endpoint_auth_methods_supported (RFC 8414 \
                 default: client_secret_basic); cannot confirm private_key_jwt is accepted"
                    .into(),
            )),
        }
        match &self.token_endpoint_auth_signing_alg_values_supported {
            Some(algs) if !algs.iter().any(|a| a == alg) => {
                findings.push(Finding::Mismatch(format!(
                    "the issuer's metadata lists token_endpoint_auth_signing_alg_values_supported \
                     {} without {alg}: pass one of those with --alg, or a key that has one",
                    shown(algs)
                )))
            }
            Some(_) => {}
            None => findings.push(Finding::Unpublished(format!(
                "the issuer's metadata has no token_endpoint_auth_signing_alg_values_supported; \
                 cannot confirm {alg} is accepted"
            ))),
        }
        findings
    }
}

/// A list from the metadata, cleaned and cut: a server could publish anything there.
fn shown(values: &[String]) -> String {
    super::server_text(&format!("{values:?}"), 300)
}

/// The metadata URLs for an issuer, in the order they are tried.
///
/// OpenID Connect Discovery §4 appends the well-known path to the issuer; RFC 8414 §3 inserts
/// it between the host and the issuer's path. Servers that followed the OpenID habit for
/// RFC 8414 as well get the appended form last.
pub fn metadata_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let mut urls = vec![format!("{trimmed}/.well-known/openid-configuration")];

    let after_scheme = trimmed.find("://").map(|i| i + 3).unwrap_or(0);
    let (origin, path) = match trimmed[after_scheme..].find('/') {
        Some(i) => trimmed.split_at(after_scheme + i),
        None => (trimmed, ""),
    };
    urls.push(format!(
        "{origin}/.well-known/oauth-authorization-server{path}"
    ));
    if !path.is_empty() {
        urls.push(format!("{trimmed}/.well-known/oauth-authorization-server"));
    }
    urls
}

impl Client {
    /// Fetches the issuer's metadata from the first well-known URL that has it, and checks
    /// that it names the same issuer (RFC 8414 §3.3), byte for byte.
    pub fn discover(&self, issuer: &str) -> Result<Metadata, OAuthError> {
        super::check_url(issuer)?;
        let mut tried = Vec::new();
        for url in metadata_urls(issuer) {
            let (status, text) = self.get_json(&url)?;
            if !(200..300).contains(&status) {
                tried.push(format!("{url} ({status})"));
                continue;
            }
            let metadata: Metadata =
                serde_json::from_str(&text).map_err(|e| Error::BadMetadata {
                    url: url.clone(),
                    detail: e.to_string(),
                })?;
            if metadata.issuer != issuer {
                return Err(Error::IssuerMismatch {
                    given: issuer.to_owned(),
                    published: metadata.issuer,
                    url,
                }
                .into());
            }
            super::check_url(&metadata.token_endpoint)?;
            log::info!(
                "discovered token endpoint {} from {url}",
                metadata.token_endpoint
            );
            return Ok(metadata);
        }
        Err(Error::NotFound {
            issuer: issuer.to_owned(),
            tried,
        }
        .into())
    }
}

/// What went wrong while discovering.
#[derive(Debug)]
pub enum Error {
    NotFound {
        issuer: String,
        tried: Vec<String>,
    },
    BadMetadata {
        url: String,
        detail: String,
    },
    IssuerMismatch {
        given: String,
        published: String,
        url: String,
    },
}

impl From<Error> for OAuthError {
    fn from(e: Error) -> OAuthError {
        OAuthError::Discovery(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound { issuer, tried } => write!(
                f,
                "no authorization server metadata for issuer {issuer}: tried {}\n\
                 check --issuer, or pass --token-endpoint URL instead",
                tried.join(", ")
            ),
            Error::BadMetadata { url, detail } => write!(
                f,
                "the metadata at {url} is not usable: {}\n\
                 it needs at least issuer and token_endpoint; pass --token-endpoint URL instead",
                super::server_text(detail, 300)
            ),
            Error::IssuerMismatch {
                given,
                published,
                url,
            } => write!(
                f,
                "the metadata at {url} names issuer {:?}, not {given:?} (RFC 8414 §3.3 wants \
                 them identical)\npass --issuer exactly as the server spells it",
                super::server_text(published, 300)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_in_discovery_errors_is_cut_and_redacted() {
        let jws =
            "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJjbGllbnQtMTIzNDUifQ.c2lnbmF0dXJlLWJ5dGVzLTEyMzQ1";
        let e = Error::IssuerMismatch {
            given: "https://as.example".into(),
            published: format!("https://as.example/{jws}/{}", "x".repeat(100_000)),
            url: "https://as.example/.well-known/openid-configuration".into(),
        };
        let text = e.to_string();
        assert!(text.len() < 1000, "{} bytes", text.len());
        assert!(
            text.contains("[redacted JWS]") && !text.contains(jws),
            "{text}"
        );
    }

    #[test]
    fn well_known_urls_for_issuers_with_and_without_path() {
        assert_eq!(
            metadata_urls("https://as.example"),
            [
                "https://as.example/.well-known/openid-configuration",
                "https://as.example/.well-known/oauth-authorization-server",
            ]
        );
        assert_eq!(
            metadata_urls("https://kc.example/realms/ci"),
            [
                "https://kc.example/realms/ci/.well-known/openid-configuration",
                "https://kc.example/.well-known/oauth-authorization-server/realms/ci",
                "https://kc.example/realms/ci/.well-known/oauth-authorization-server",
            ]
        );
    }

    fn metadata(methods: Option<&[&str]>, algs: Option<&[&str]>) -> Metadata {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Metadata {
            issuer: "https://as.example".into(),
            token_endpoint: "https://as.example/token".into(),
            token_endpoint_auth_methods_supported: methods.map(owned),
            token_endpoint_auth_signing_alg_values_supported: algs.map(owned),
        }
    }

    #[test]
    fn findings_name_what_is_missing() {
        let good = metadata(Some(&["private_key_jwt"]), Some(&["RS256", "ES384"]));
        assert!(good.check("ES384").is_empty());

        let bad = metadata(Some(&["client_secret_basic"]), Some(&["RS256"]));
        let findings = bad.check("ES384");
        assert_eq!(findings.len(), 2);
        assert!(findings.iter().all(|f| matches!(f, Finding::Mismatch(_))));

        let silent = metadata(None, None);
        assert!(silent
            .check("RS256")
            .iter()
            .all(|f| matches!(f, Finding::Unpublished(_))));
    }
}
