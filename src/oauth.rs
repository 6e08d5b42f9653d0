//! The OAuth side: exchange a client assertion for an access token at the token endpoint
//! (RFC 6749 §4.4 with RFC 7521/7523 client authentication) and call APIs with it. Knows
//! nothing of PKCS#11.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use ureq::http::Uri;
use zeroize::Zeroizing;

use crate::secret::Secret;

/// RFC 7523 §2.2.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Qlik Cloud's token endpoint for a tenant name, or for a full host such as
/// `NAME.eu.qlikcloud.com`, taken as given.
pub fn qlik_token_endpoint(tenant: &str) -> String {
    let host = if tenant.contains('.') {
        tenant.to_owned()
    } else {
        format!("{tenant}.qlikcloud.com")
    };
    format!("https://{host}/oauth/token")
}

/// Accepts `https://` URLs, and `http://` only to loopback addresses (for tests and demos).
pub fn check_url(url: &str) -> Result<(), Error> {
    let uri: Uri = url.parse().map_err(|_| Error::BadUrl {
        url: url.to_owned(),
    })?;
    let host = uri.host().ok_or_else(|| Error::BadUrl {
        url: url.to_owned(),
    })?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        _ => Err(Error::InsecureUrl {
            url: url.to_owned(),
        }),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// One token request.
#[derive(Debug)]
pub struct TokenRequest<'a> {
    pub token_endpoint: &'a str,
    /// Sent as `client_id` in the form when present (Qlik's tutorial sends it).
    pub client_id: Option<&'a str>,
    pub assertion: &'a Secret,
    pub scope: Option<&'a str>,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug)]
pub struct TokenResponse {
    pub access_token: Secret,
    pub token_type: String,
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
    /// The whole response body, for `--json`; it holds the access token.
    pub body: Secret,
}

/// An API response.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// An HTTP client with p11jwt's rules: HTTPS only (loopback http aside), no redirects for the
/// token endpoint, bounded timeouts.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
}

impl Client {
    pub fn new(timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
            // A redirect would carry the assertion or the bearer token elsewhere.
            .max_redirects(0)
            .user_agent(concat!("p11jwt/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Posts the assertion and returns the access token, or the server's error.
    pub fn request_token(&self, request: &TokenRequest<'_>) -> Result<TokenResponse, Error> {
        check_url(request.token_endpoint)?;
        let body = Zeroizing::new({
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(client_id) = request.client_id {
                form.append_pair("client_id", client_id);
            }
            form.append_pair("client_assertion_type", CLIENT_ASSERTION_TYPE);
            form.append_pair("client_assertion", request.assertion.expose());
            if let Some(scope) = request.scope {
                form.append_pair("scope", scope);
            }
            form.finish()
        });

        let mut response = self
            .agent
            .post(request.token_endpoint)
            .header("Accept", "application/json")
            .content_type("application/x-www-form-urlencoded")
            .send(body.as_bytes())
            .map_err(|e| Error::network(request.token_endpoint, e))?;
        let status = response.status().as_u16();
        let text = Zeroizing::new(
            response
                .body_mut()
                .read_to_string()
                .map_err(|e| Error::network(request.token_endpoint, e))?,
        );

        if !(200..300).contains(&status) {
            return Err(server_error(status, &text));
        }
        #[derive(Deserialize)]
        struct Success {
            access_token: Option<String>,
            token_type: Option<String>,
            expires_in: Option<serde_json::Value>,
            scope: Option<String>,
        }
        let parsed: Success = serde_json::from_str(&text).map_err(|_| Error::NotJson {
            status,
            summary: summarize(&text),
        })?;
        let access_token = parsed.access_token.ok_or(Error::NoAccessToken)?;
        // Some servers send expires_in as a string.
        let expires_in = parsed.expires_in.and_then(|v| match v {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        });
        Ok(TokenResponse {
            access_token: Secret::new(access_token),
            token_type: parsed.token_type.unwrap_or_else(|| "Bearer".into()),
            expires_in,
            scope: parsed.scope,
            body: Secret::new(text.to_string()),
        })
    }

    /// A GET with `Authorization: Bearer`; any status is returned, the caller decides.
    pub fn get(&self, url: &str, access_token: &Secret) -> Result<ApiResponse, Error> {
        check_url(url)?;
        let authorization = Zeroizing::new(format!("Bearer {}", access_token.expose()));
        let mut response = self
            .agent
            .get(url)
            .header("Authorization", authorization.as_str())
            .call()
            .map_err(|e| Error::network(url, e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_vec()
            .map_err(|e| Error::network(url, e))?;
        Ok(ApiResponse { status, body })
    }
}

/// RFC 6749 §5.2 error body, or a one-line summary of whatever else came back.
fn server_error(status: u16, text: &str) -> Error {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
        error_description: Option<String>,
    }
    match serde_json::from_str::<OAuthError>(text) {
        Ok(e) => Error::Refused {
            status,
            error: e.error,
            description: e.error_description,
        },
        Err(_) => Error::NotJson {
            status,
            summary: summarize(text),
        },
    }
}

/// The first line of a body, shortened and stripped of control characters, so that an HTML
/// error page does not flood the terminal.
pub fn summarize(text: &str) -> String {
    let one_line: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect();
    if one_line.is_empty() {
        "(empty body)".into()
    } else {
        one_line
    }
}

/// What the tutorial's troubleshooting table says to do for each OAuth error code.
fn hint(error: &str, description: Option<&str>) -> &'static str {
    let description = description.unwrap_or("").to_ascii_lowercase();
    if description.contains("audience") || description.contains("aud") {
        return "aud must be exactly the token endpoint, e.g. \
                https://TENANT.qlikcloud.com/oauth/token, with no trailing slash";
    }
    if description.contains("kid") {
        return "the kid must be the one registered with the OAuth client: \
                compare `p11jwt jwk` with the registered JWK";
    }
    if description.contains("signature") {
        return "the registered public key does not match this key or alg: register the JWK \
                that `p11jwt jwk` prints (RS256, RS512 or ES384 for Qlik)";
    }
    match error {
        "invalid_client" | "unauthorized_client" => {
            "check that --client-id is the OAuth client's id (it becomes iss and sub), that the \
             client exists and is enabled, and that the registered JWK is `p11jwt jwk`'s"
        }
        "unsupported_client_assertion_type" => {
            "the server wants client_assertion_type \
             urn:ietf:params:oauth:client-assertion-type:jwt-bearer; report this as a bug"
        }
        "unsupported_grant_type" => "the client must allow the client_credentials grant",
        "invalid_scope" => "ask for a scope the OAuth client is allowed (--scope)",
        "invalid_grant" => "the assertion was refused: check its lifetime and the clock",
        _ => "see the server's description above",
    }
}

/// What went wrong on the OAuth side.
#[derive(Debug)]
pub enum Error {
    BadUrl {
        url: String,
    },
    InsecureUrl {
        url: String,
    },
    Network {
        url: String,
        detail: String,
    },
    Refused {
        status: u16,
        error: String,
        description: Option<String>,
    },
    NotJson {
        status: u16,
        summary: String,
    },
    NoAccessToken,
}

impl Error {
    fn network(url: &str, e: ureq::Error) -> Error {
        Error::Network {
            url: url.to_owned(),
            detail: e.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadUrl { url } => write!(f, "{url:?} is not a URL with a host"),
            Error::InsecureUrl { url } => write!(
                f,
                "refusing {url:?}: p11jwt sends credentials over https only (plain http is \
                 allowed to loopback addresses only)\nuse the https:// URL"
            ),
            Error::Network { url, detail } => write!(
                f,
                "cannot reach {url}: {detail}\n\
                 check the network, the URL, proxy settings (HTTPS_PROXY) and the tenant name"
            ),
            Error::Refused {
                status,
                error,
                description,
            } => {
                let description = description.as_deref().map(crate::escape_for_terminal);
                write!(
                    f,
                    "token endpoint answered {status} {}",
                    crate::escape_for_terminal(error)
                )?;
                if let Some(d) = &description {
                    write!(f, ": {d}")?;
                }
                write!(f, "\n{}", hint(error, description.as_deref()))
            }
            Error::NotJson { status, summary } => write!(
                f,
                "token endpoint answered {status} with a body that is not an OAuth response: \
                 {summary}\ncheck that the URL is the token endpoint"
            ),
            Error::NoAccessToken => write!(
                f,
                "the token endpoint's response has no access_token\n\
                 check that the URL is the token endpoint"
            ),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_or_loopback_http_only() {
        assert!(check_url("https://t.eu.qlikcloud.com/oauth/token").is_ok());
        assert!(check_url("http://127.0.0.1:8080/oauth/token").is_ok());
        assert!(check_url("http://[::1]:8080/oauth/token").is_ok());
        assert!(check_url("http://localhost/oauth/token").is_ok());
        assert!(matches!(
            check_url("http://t.qlikcloud.com/oauth/token"),
            Err(Error::InsecureUrl { .. })
        ));
        assert!(check_url("ftp://127.0.0.1/").is_err());
    }

    #[test]
    fn qlik_endpoint_from_tenant() {
        assert_eq!(
            qlik_token_endpoint("acme"),
            "https://acme.qlikcloud.com/oauth/token"
        );
        assert_eq!(
            qlik_token_endpoint("acme.eu.qlikcloud.com"),
            "https://acme.eu.qlikcloud.com/oauth/token"
        );
    }

    #[test]
    fn html_error_page_is_summarised() {
        let e = server_error(
            502,
            "<html>\n<head><title>502 Bad Gateway</title></head>\n</html>",
        );
        let text = e.to_string();
        assert!(text.contains("502"), "{text}");
        assert!(!text.contains('\n') || text.lines().count() == 2, "{text}");
    }
}
