//! The OAuth side: exchange a client assertion for an access token at the token endpoint
//! (RFC 6749 §4.4 with RFC 7521/7523 client authentication) and call APIs with it. Knows
//! nothing of PKCS#11: the caller hands in a closure that mints a fresh assertion, so that
//! every attempt, retries included, carries a new `jti`.
//!
//! [`discovery`] finds the token endpoint (RFC 8414), [`provider`] holds what each
//! authorization server is known to refuse, [`cache`] keeps access tokens between runs, and
//! [`retry`] decides when and how long to wait before trying again.

pub mod cache;
pub mod discovery;
pub mod provider;
pub mod retry;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use ureq::http::Uri;
use zeroize::Zeroizing;

use crate::secret::Secret;

pub use provider::Provider;
pub use retry::RetryPolicy;

/// RFC 7523 §2.2.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Form fields p11jwt sets itself; `--param` may not replace them.
const RESERVED_PARAMS: [&str; 6] = [
    "grant_type",
    "client_assertion",
    "client_assertion_type",
    "client_id",
    "scope",
    "resource",
];

/// Qlik Cloud's token endpoint for a tenant name, or for a full host such as
/// `NAME.eu.qlikcloud.com`, taken as given. Anything but a host name (a URL, a path, spaces)
/// is refused rather than glued into a URL that cannot be right.
pub fn qlik_token_endpoint(tenant: &str) -> Result<String, Error> {
    let is_host_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    let valid = !tenant.is_empty()
        && tenant.chars().all(is_host_char)
        && !tenant.starts_with(['.', '-'])
        && !tenant.ends_with(['.', '-'])
        && !tenant.contains("..");
    if !valid {
        return Err(Error::BadTenant {
            tenant: tenant.to_owned(),
        });
    }
    let host = if tenant.contains('.') {
        tenant.to_owned()
    } else {
        format!("{tenant}.qlikcloud.com")
    };
    Ok(format!("https://{host}/oauth/token"))
}

/// Accepts `https://` URLs, and `http://` only to loopback addresses (for tests and demos).
pub fn check_url(url: &str) -> Result<(), Error> {
    let uri: Uri = url.parse().map_err(|_| Error::BadUrl {
        url: url.to_owned(),
    })?;
    let host = uri.host().ok_or_else(|| Error::BadUrl {
        url: url.to_owned(),
    })?;
    if uri.scheme_str().is_none() {
        return Err(Error::BadUrl {
            url: url.to_owned(),
        });
    }
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

/// Splits `--param k=v` into its name and value, refusing the fields p11jwt sets itself.
pub fn parse_param(text: &str) -> Result<(String, String), Error> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(Error::BadParam {
            param: text.to_owned(),
            why: "it has no '='",
        });
    };
    if name.is_empty() {
        return Err(Error::BadParam {
            param: text.to_owned(),
            why: "the name is empty",
        });
    }
    if RESERVED_PARAMS.contains(&name) {
        return Err(Error::BadParam {
            param: name.to_owned(),
            why: "p11jwt sets this field itself (use --scope, --resource or --client-id)",
        });
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// One token request, without its assertion: [`Client::request_token`] asks for a fresh one
/// per attempt.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest<'a> {
    pub token_endpoint: &'a str,
    /// Sent as `client_id` in the form when present (Qlik's tutorial sends it; RFC 7521 §4.2
    /// makes it optional).
    pub client_id: Option<&'a str>,
    pub scope: Option<&'a str>,
    /// RFC 8707 §2 `resource` indicators, each an absolute URI.
    pub resources: &'a [String],
    /// Extra form fields (`--param k=v`), already checked by [`parse_param`].
    pub params: &'a [(String, String)],
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

/// An API request made with an access token.
#[derive(Debug)]
pub struct ApiRequest<'a> {
    pub method: &'a str,
    pub url: &'a str,
    /// Extra headers, name and value; `Authorization` is set by [`Client::call`].
    pub headers: &'a [(String, String)],
    pub body: Option<&'a [u8]>,
}

/// An API response.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    /// The `Location` header of a 3xx, summarised: redirects are not followed.
    pub location: Option<String>,
    pub body: Vec<u8>,
}

/// How the HTTP client behaves: timeouts, trust anchors, retries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time allowed to open a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time allowed for one exchange, all attempts and waits between them included.
    pub timeout: Duration,
    /// PEM file of CA certificates to trust instead of the built-in roots (like curl's
    /// `--cacert`).
    pub cacert: Option<PathBuf>,
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            cacert: None,
            retry: RetryPolicy::default(),
        }
    }
}

/// The longest `--timeout` or `--connect-timeout` taken: a day. Longer ones are cut to it,
/// since `Instant + Duration` panics on overflow and no exchange should hang a CI job longer.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest token response or metadata document read: real ones are a few kB, and a
/// server that sends more than this is broken.
const MAX_RESPONSE: u64 = 4 * 1024 * 1024;

/// An HTTP client with p11jwt's rules: HTTPS only (loopback http aside), no redirects,
/// bounded timeouts, proxies from the environment except for plain http to loopback.
#[derive(Debug, Clone)]
pub struct Client {
    /// Through the proxy the environment names, if any.
    agent: ureq::Agent,
    /// Never through a proxy: for plain http to loopback, whose bytes must not leave the host.
    direct: ureq::Agent,
    options: ClientOptions,
}

impl Client {
    pub fn new(mut options: ClientOptions) -> Result<Client, Error> {
        if options.timeout > MAX_TIMEOUT || options.connect_timeout > MAX_TIMEOUT {
            log::warn!(
                "timeouts longer than a day are cut to {} s",
                MAX_TIMEOUT.as_secs()
            );
        }
        options.timeout = options.timeout.min(MAX_TIMEOUT);
        options.connect_timeout = options.connect_timeout.min(MAX_TIMEOUT);
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &options.cacert {
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&read_cacert(path)?));
        }
        let tls = tls.build();
        let agent = |proxy: Option<ureq::Proxy>| {
            let config = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(options.timeout))
                .timeout_connect(Some(options.connect_timeout))
                // A redirect would carry the assertion or the bearer token elsewhere.
                .max_redirects(0)
                .proxy(proxy)
                .tls_config(tls.clone())
                .allow_non_standard_methods(true)
                .user_agent(concat!("p11jwt/", env!("CARGO_PKG_VERSION")))
                .build();
            ureq::Agent::new_with_config(config)
        };
        Ok(Client {
            // ALL_PROXY, HTTPS_PROXY or HTTP_PROXY (the first one set, in that order) and
            // NO_PROXY; HTTPS goes through a CONNECT tunnel.
            agent: agent(ureq::Proxy::try_from_env()),
            direct: agent(None),
            options,
        })
    }

    /// The agent for `url`. Plain http is allowed to loopback only because the bytes never
    /// leave the host (see [`check_url`]); a proxy would carry the assertion or the bearer
    /// token in clear to another one, so such URLs never use it, whatever NO_PROXY says.
    fn agent_for(&self, url: &str) -> &ureq::Agent {
        let plain_loopback = url.parse::<Uri>().is_ok_and(|uri| {
            uri.scheme_str() == Some("http") && uri.host().is_some_and(is_loopback)
        });
        if plain_loopback {
            &self.direct
        } else {
            &self.agent
        }
    }

    /// Posts a fresh assertion from `assertion` per attempt and returns the access token, or
    /// the server's error. Retries connection failures, 429 and 503 within the policy and the
    /// total timeout; never a 400 or 401, which a new attempt would not change.
    pub fn request_token<E: From<Error>>(
        &self,
        request: &TokenRequest<'_>,
        mut assertion: impl FnMut() -> Result<Secret, E>,
    ) -> Result<TokenResponse, E> {
        check_url(request.token_endpoint)?;
        // Client::new caps the timeout, so this cannot overflow; checked all the same.
        let now = Instant::now();
        let deadline = now.checked_add(self.options.timeout).unwrap_or(now);
        let mut attempt = 1;
        loop {
            let fresh = assertion()?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = self.post_token(request, &fresh, remaining);
            drop(fresh);

            let (error, retry_after) = match outcome {
                Attempt::Done(response) => return Ok(response),
                Attempt::Fatal(error) => return Err(error.into()),
                Attempt::Transient { error, retry_after } => (error, retry_after),
            };
            let wait = self.options.retry.wait(attempt, retry_after);
            let in_time = Instant::now()
                .checked_add(wait)
                .is_some_and(|next| next < deadline);
            if attempt >= self.options.retry.attempts || !in_time {
                return Err(error.gave_up_after(attempt).into());
            }
            log::warn!(
                "{}; attempt {} of {} in {} ms with a new assertion",
                error.first_line(),
                attempt + 1,
                self.options.retry.attempts,
                wait.as_millis()
            );
            std::thread::sleep(wait);
            attempt += 1;
        }
    }

    /// One POST to the token endpoint.
    fn post_token(
        &self,
        request: &TokenRequest<'_>,
        assertion: &Secret,
        remaining: Duration,
    ) -> Attempt {
        let endpoint = request.token_endpoint;
        let body = token_form(request, assertion);
        let sent = self
            .agent_for(endpoint)
            .post(endpoint)
            .config()
            .timeout_global(Some(remaining.max(Duration::from_millis(1))))
            .build()
            .header("Accept", "application/json")
            .content_type("application/x-www-form-urlencoded")
            .send(body.as_bytes());
        drop(body);
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return Attempt::from_transport(endpoint, e),
        };

        let status = response.status().as_u16();
        log::debug!("POST {endpoint} answered {status}");
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(retry::parse_retry_after);
        // RFC 9110 §15.4: a redirect is not followed (max_redirects(0) above); say where the
        // server pointed, so that the user can check and pass that URL if it is right.
        if (300..400).contains(&status) {
            let location = response
                .headers()
                .get("location")
                .map(|v| summarize(&String::from_utf8_lossy(v.as_bytes())));
            return Attempt::Fatal(Error::Redirected { status, location });
        }
        let read = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_string();
        let text = match read {
            Ok(text) => Zeroizing::new(text),
            // The server answered, with too much: its fault, not the network's.
            Err(ureq::Error::BodyExceedsLimit(limit)) => {
                return Attempt::Fatal(Error::TooLarge { status, limit })
            }
            Err(e) => return Attempt::from_transport(endpoint, e),
        };
        if status == 429 || status == 503 {
            let error = Error::Busy {
                status,
                summary: summarize(&text),
                attempts: None,
            };
            return Attempt::Transient { error, retry_after };
        }
        if !(200..300).contains(&status) {
            return Attempt::Fatal(server_error(status, &text));
        }
        match parse_success(status, &text) {
            Ok(response) => Attempt::Done(response),
            Err(e) => Attempt::Fatal(e),
        }
    }

    /// Fetches a JSON document with GET, e.g. RFC 8414 metadata; any status but 2xx is an
    /// error carrying the status.
    pub fn get_json(&self, url: &str) -> Result<(u16, String), Error> {
        check_url(url)?;
        let mut response = self
            .agent_for(url)
            .get(url)
            .header("Accept", "application/json")
            .call()
            .map_err(|e| Error::network(url, e))?;
        let status = response.status().as_u16();
        let text = match response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_string()
        {
            Ok(text) => text,
            Err(ureq::Error::BodyExceedsLimit(limit)) => {
                return Err(Error::TooLarge { status, limit })
            }
            Err(e) => return Err(Error::network(url, e)),
        };
        Ok((status, text))
    }

    /// An API call with `Authorization: Bearer`; any status is returned, the caller decides.
    pub fn call(
        &self,
        request: &ApiRequest<'_>,
        access_token: &Secret,
    ) -> Result<ApiResponse, Error> {
        check_url(request.url)?;
        let authorization = Zeroizing::new(format!("Bearer {}", access_token.expose()));
        let mut builder = ureq::http::Request::builder()
            .method(request.method)
            .uri(request.url)
            .header("Authorization", authorization.as_str());
        for (name, value) in request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let bad_request = |e: ureq::http::Error| Error::BadRequest {
            detail: e.to_string(),
        };
        let sent = match request.body {
            Some(body) => self
                .agent_for(request.url)
                .run(builder.body(body.to_vec()).map_err(bad_request)?),
            None => self
                .agent_for(request.url)
                .run(builder.body(()).map_err(bad_request)?),
        };
        let mut response = sent.map_err(|e| Error::network(request.url, e))?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|v| summarize(&String::from_utf8_lossy(v.as_bytes())));
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| Error::network(request.url, e))?;
        Ok(ApiResponse {
            status,
            location,
            body,
        })
    }

    /// A GET with `Authorization: Bearer`; any status is returned, the caller decides.
    pub fn get(&self, url: &str, access_token: &Secret) -> Result<ApiResponse, Error> {
        let request = ApiRequest {
            method: "GET",
            url,
            headers: &[],
            body: None,
        };
        self.call(&request, access_token)
    }
}

/// What one attempt at the token endpoint came to.
enum Attempt {
    Done(TokenResponse),
    Fatal(Error),
    Transient {
        error: Error,
        retry_after: Option<Duration>,
    },
}

impl Attempt {
    /// Connection failures and timeouts are worth another try; a TLS failure, an unknown host
    /// or a bad URL is not.
    fn from_transport(url: &str, e: ureq::Error) -> Attempt {
        let transient = match &e {
            ureq::Error::Io(io) => !matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            ),
            ureq::Error::ConnectionFailed | ureq::Error::Timeout(_) => true,
            _ => false,
        };
        let error = Error::network(url, e);
        if transient {
            Attempt::Transient {
                error,
                retry_after: None,
            }
        } else {
            Attempt::Fatal(error)
        }
    }
}

/// The RFC 6749 §4.4.2 form with RFC 7523 §2.2 client authentication. Zeroized on drop: it
/// holds the assertion.
fn token_form(request: &TokenRequest<'_>, assertion: &Secret) -> Zeroizing<String> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    if let Some(client_id) = request.client_id {
        form.append_pair("client_id", client_id);
    }
    form.append_pair("client_assertion_type", CLIENT_ASSERTION_TYPE);
    form.append_pair("client_assertion", assertion.expose());
    if let Some(scope) = request.scope {
        form.append_pair("scope", scope);
    }
    for resource in request.resources {
        form.append_pair("resource", resource);
    }
    for (name, value) in request.params {
        form.append_pair(name, value);
    }
    Zeroizing::new(form.finish())
}

/// RFC 6749 §5.1: `access_token` and `token_type` are required, `expires_in` recommended.
///
/// The body holds the access token, so no error made here quotes it: a field of the wrong
/// type is named, never shown.
fn parse_success(status: u16, text: &str) -> Result<TokenResponse, Error> {
    let malformed = |problem: String| Error::BadTokenResponse { status, problem };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|_| malformed("the body is not JSON".into()))?;
    let Some(fields) = value.as_object() else {
        return Err(malformed(format!(
            "the body is a JSON {}, not an object",
            json_type(&value)
        )));
    };
    let string = |name: &'static str| -> Result<Option<String>, Error> {
        match fields.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(malformed(format!(
                "{name} is a JSON {}, not a string",
                json_type(other)
            ))),
        }
    };
    let access_token = Secret::new(string("access_token")?.ok_or(Error::NoAccessToken)?);
    check_access_token(access_token.expose()).map_err(|why| malformed(why.into()))?;
    let token_type = string("token_type")?;
    let scope = string("scope")?;
    // Some servers send expires_in as a string; anything else unreadable leaves the lifetime
    // unknown, which only means the access token is not cached.
    let expires_in = fields.get("expires_in").and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    });
    Ok(TokenResponse {
        access_token,
        token_type: token_type.unwrap_or_else(|| "Bearer".into()),
        expires_in,
        scope,
        body: Secret::new(text.to_owned()),
    })
}

/// RFC 6750 §2.1: a bearer token is a b64token, `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
/// "+" / "/" ) *"="`. Servers stray from it, so any visible ASCII is let through; what is
/// refused is what would break the `Authorization` header or a shell line: nothing at all,
/// spaces, control characters (NUL included), quotes, backslashes and non-ASCII.
fn check_access_token(token: &str) -> Result<(), &'static str> {
    if token.is_empty() {
        return Err("access_token is empty");
    }
    let usable = |c: char| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\');
    if !token.chars().all(usable) {
        return Err(
            "access_token holds characters a bearer token cannot have (RFC 6750 §2.1: \
                    letters, digits and -._~+/=)",
        );
    }
    Ok(())
}

/// The JSON type of `value`, for messages that must not show the value itself.
fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// The CA certificates of a PEM file, for `--cacert`.
fn read_cacert(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, Error> {
    let cacert_error = |detail: String| Error::CaCert {
        path: path.to_owned(),
        detail,
    };
    let pem = std::fs::read(path).map_err(|e| cacert_error(e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => return Err(cacert_error(e.to_string())),
        }
    }
    if certs.is_empty() {
        return Err(cacert_error("no CERTIFICATE block in it".into()));
    }
    Ok(certs)
}

/// RFC 6749 §5.2 error body, or a one-line summary of whatever else came back. What the
/// server wrote is cleaned here, before it is stored, so that no later Display or Debug can
/// show an echoed assertion.
fn server_error(status: u16, text: &str) -> Error {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
        error_description: Option<String>,
    }
    match serde_json::from_str::<OAuthError>(text) {
        Ok(e) => Error::Refused {
            status,
            error: shorten(&redact_jws(&e.error), MAX_ERROR_CODE),
            description: e
                .error_description
                .map(|d| shorten(&redact_jws(&d), MAX_DESCRIPTION)),
        },
        Err(_) => Error::NotJson {
            status,
            summary: summarize(text),
        },
    }
}

/// How much of a server's `error` and `error_description` is shown: enough for any real
/// message, and a 1 MB one does not flood the terminal.
const MAX_ERROR_CODE: usize = 100;
const MAX_DESCRIPTION: usize = 300;
/// How much of any other body is shown.
const MAX_SUMMARY: usize = 120;

/// The first line of a body, shortened, stripped of control characters and of anything that
/// looks like a JWS, so that an HTML error page does not flood the terminal and a server
/// echoing the request does not print the assertion.
pub fn summarize(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let clean: String = redact_jws(&one_line)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if clean.is_empty() {
        "(empty body)".into()
    } else {
        shorten(&clean, MAX_SUMMARY)
    }
}

/// Text a server wrote, ready for a terminal: JWS-shaped parts redacted, cut at `max`
/// characters, control characters escaped.
pub(crate) fn server_text(text: &str, max: usize) -> String {
    crate::escape_for_terminal(&shorten(&redact_jws(text), max))
}

/// At most `max` characters, marked with "…" when cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Replaces every compact JWS (RFC 7515 §7.1: three base64url parts joined by dots; a JWE has
/// five) with `[redacted JWS]`. A server may echo the posted form or assertion in an error,
/// and a signed assertion is a credential until it expires. Each part must have at least
/// 16 characters (`MIN_JWS_PART`), so that version numbers and host names are left alone.
pub fn redact_jws(text: &str) -> String {
    let is_part_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_part_char) {
        out.push_str(&rest[..start]);
        let run_len = rest[start..]
            .find(|c: char| !is_part_char(c))
            .unwrap_or(rest.len() - start);
        let run = &rest[start..start + run_len];
        let parts: Vec<&str> = run.split('.').collect();
        let looks_like_jws = parts
            .windows(3)
            .any(|w| w.iter().all(|p| p.len() >= MIN_JWS_PART));
        out.push_str(if looks_like_jws {
            "[redacted JWS]"
        } else {
            run
        });
        rest = &rest[start + run_len..];
    }
    out.push_str(rest);
    out
}

/// The shortest base64url part [`redact_jws`] takes for a JWS part: a JOSE header is at least
/// `{"alg":"ES256"}`, 20 characters once encoded, and signatures are longer still.
const MIN_JWS_PART: usize = 16;

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
    if description.contains("lifetime")
        || description.contains("expired")
        || description.contains("exp ")
        || description.contains("iat")
    {
        return "the assertion's lifetime or times were refused: keep --lifetime within the \
                server's limit (300 s for Qlik) and check this host's clock";
    }
    if description.contains("alg") {
        return "the server does not accept this alg: pass one it accepts with --alg (Qlik: \
                RS256, RS512, ES384), or make a key for it with `p11jwt keygen --alg`";
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
    BadTenant {
        tenant: String,
    },
    InsecureUrl {
        url: String,
    },
    BadParam {
        param: String,
        why: &'static str,
    },
    BadRequest {
        detail: String,
    },
    CaCert {
        path: PathBuf,
        detail: String,
    },
    Network {
        url: String,
        detail: String,
    },
    /// 429 or 503; `attempts` is set once p11jwt gives up.
    Busy {
        status: u16,
        summary: String,
        attempts: Option<u32>,
    },
    /// A 3xx: redirects are not followed.
    Redirected {
        status: u16,
        location: Option<String>,
    },
    /// A body longer than p11jwt reads.
    TooLarge {
        status: u16,
        limit: u64,
    },
    /// A 2xx whose body is not a usable token response. `problem` is p11jwt's own words: the
    /// body holds an access token and is never shown.
    BadTokenResponse {
        status: u16,
        problem: String,
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
    Discovery(discovery::Error),
    Provider(provider::Refusal),
    Cache(cache::Error),
}

impl Error {
    fn network(url: &str, e: ureq::Error) -> Error {
        Error::Network {
            url: url.to_owned(),
            detail: e.to_string(),
        }
    }

    /// This error as the last one, after `attempts` attempts.
    fn gave_up_after(self, attempts: u32) -> Error {
        match self {
            Error::Busy {
                status, summary, ..
            } => Error::Busy {
                status,
                summary,
                attempts: Some(attempts),
            },
            other => other,
        }
    }

    /// The first line of the message, for logs about a retry.
    fn first_line(&self) -> String {
        self.to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadUrl { url } => write!(
                f,
                "{url:?} is not a URL with a host\npass a full URL such as \
                 https://tenant.example.com/oauth/token"
            ),
            Error::BadTenant { tenant } => write!(
                f,
                "--tenant {tenant:?} is not a tenant name or host\npass the tenant's name \
                 (acme for https://acme.qlikcloud.com) or its host (acme.eu.qlikcloud.com), \
                 or the whole URL with --token-endpoint"
            ),
            Error::InsecureUrl { url } => write!(
                f,
                "refusing {url:?}: p11jwt sends credentials over https only (plain http is \
                 allowed to loopback addresses only)\nuse the https:// URL"
            ),
            Error::BadParam { param, why } => {
                write!(
                    f,
                    "--param {param:?} is refused: {why}\nwrite it as --param NAME=VALUE"
                )
            }
            Error::BadRequest { detail } => write!(
                f,
                "cannot build the HTTP request: {detail}\ncheck -X METHOD and the -H headers"
            ),
            Error::CaCert { path, detail } => write!(
                f,
                "cannot use --cacert {}: {detail}\npass a PEM file with the CA certificates \
                 that issued the server's certificate",
                path.display()
            ),
            Error::Network { url, detail } => write!(
                f,
                "cannot reach {url}: {detail}\n\
                 check the network, the URL, proxy settings (HTTPS_PROXY, NO_PROXY), --cacert \
                 for an internal CA, and the tenant name"
            ),
            Error::Busy {
                status,
                summary,
                attempts: None,
            } => write!(
                f,
                "token endpoint answered {status} (busy or rate-limited): {summary}"
            ),
            Error::Busy {
                status,
                summary,
                attempts: Some(attempts),
            } => write!(
                f,
                "token endpoint answered {status} (busy or rate-limited) on attempt {attempts}, \
                 the last one: {summary}\ntry again later, or allow more with --retries and \
                 --timeout"
            ),
            Error::Redirected { status, location } => write!(
                f,
                "token endpoint answered {status}, a redirect to {}; p11jwt does not follow \
                 redirects, which would carry the assertion elsewhere\npass the URL it \
                 redirects to as --token-endpoint, if that is the token endpoint",
                location
                    .as_deref()
                    .map(crate::escape_for_terminal)
                    .unwrap_or_else(|| "nowhere (no Location header)".into())
            ),
            Error::TooLarge { status, limit } => write!(
                f,
                "the server answered {status} with a body over {limit} bytes, more than any \
                 token response or metadata document\ncheck that the URL is the token \
                 endpoint or the issuer"
            ),
            Error::BadTokenResponse { status, problem } => write!(
                f,
                "token endpoint answered {status} with an unusable token response: {problem} \
                 (the body is not shown: it may hold an access token)\ncheck that the URL is \
                 the token endpoint, and report this to the server's operator"
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
            Error::Discovery(e) => e.fmt(f),
            Error::Provider(e) => e.fmt(f),
            Error::Cache(e) => e.fmt(f),
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
            qlik_token_endpoint("acme").unwrap(),
            "https://acme.qlikcloud.com/oauth/token"
        );
        assert_eq!(
            qlik_token_endpoint("acme.eu.qlikcloud.com").unwrap(),
            "https://acme.eu.qlikcloud.com/oauth/token"
        );
    }

    #[test]
    fn jws_like_runs_are_redacted_and_the_rest_kept() {
        let jws =
            "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJjbGllbnQtMTIzNDUifQ.c2lnbmF0dXJlLWJ5dGVzLTEyMzQ1";
        assert_eq!(
            redact_jws(&format!("client_assertion={jws}&x=1 ({jws})")),
            "client_assertion=[redacted JWS]&x=1 ([redacted JWS])"
        );
        // Version numbers, host names and short dotted words stay.
        let plain = "p11jwt/0.1.0 at login.example.com said a.b.c";
        assert_eq!(redact_jws(plain), plain);
    }

    #[test]
    fn long_text_is_cut_with_a_mark() {
        assert_eq!(shorten("abcdef", 3), "abc…");
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(summarize(&"é".repeat(500)).chars().count(), MAX_SUMMARY + 1);
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
