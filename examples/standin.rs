//! A local stand-in for a Qlik Cloud tenant, for `make demo` and the integration tests.
//!
//! It serves a token endpoint that verifies Private Key JWT client assertions (RFC 7523) against
//! registered JWKs, and one API (`GET /api/v1/users/me`) that accepts the access tokens it
//! issued. Assertions are verified with the `jsonwebtoken` crate and nothing from the p11jwt
//! library: this program is the independent verifier, so it must not share code with `src/`.
//!
//! ```text
//! standin --client-id ID --jwks FILE [--addr 127.0.0.1:0] [--port-file FILE]
//!         [--access-token-lifetime SECS]
//! ```
//!
//! It prints its base URL on stdout (and to `--port-file`), logs one line per request on
//! stderr, and serves until killed or until `POST /shutdown` arrives from loopback.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Map, Value};
use tiny_http::{Header, Method, Request, Response, Server};

const USAGE: &str = "\
usage: standin --client-id ID --jwks FILE [--addr 127.0.0.1:0] [--port-file FILE]
               [--access-token-lifetime SECS]

A local stand-in for a Qlik Cloud tenant. Verifies Private Key JWT client assertions
(RFC 7523) at POST <url>/oauth/token and answers GET <url>/api/v1/users/me.

  --client-id ID                 the only client id accepted as iss, sub and client_id
  --jwks FILE                    JWKS with the client's public keys (RSA, EC P-384), each with kid
  --addr ADDR                    address to listen on [default: 127.0.0.1:0]
  --port-file FILE               also write the base URL to FILE, atomically
  --access-token-lifetime SECS   expires_in of issued access tokens [default: 3600]";

/// RFC 7523 §2.2: the only client_assertion_type the token endpoint accepts.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Qlik refuses assertions whose exp - iat exceeds this, in seconds.
const MAX_ASSERTION_LIFETIME: u64 = 300;

/// Clock skew tolerated on exp and iat, in seconds.
const LEEWAY: u64 = 5;

/// An assertion is a few KiB; anything far larger is refused before it is parsed.
const MAX_FORM_BYTES: u64 = 64 * 1024;

fn main() -> ExitCode {
    let config = match Config::parse(std::env::args().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => {
            // `standin --help | head` closing the pipe early is not a failure.
            let _ = writeln!(io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("standin: {message}\nrun `standin --help` for the usage");
            return ExitCode::from(2);
        }
    };
    match serve(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("standin: {message}");
            ExitCode::FAILURE
        }
    }
}

const FLAGS: [&str; 5] = [
    "--client-id",
    "--jwks",
    "--addr",
    "--port-file",
    "--access-token-lifetime",
];

/// The command line, parsed but not yet acted on.
struct Config {
    client_id: String,
    jwks: PathBuf,
    addr: String,
    port_file: Option<PathBuf>,
    access_token_lifetime: u64,
}

impl Config {
    /// Returns `None` for `--help`.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Config>, String> {
        let mut client_id = None;
        let mut jwks = None;
        let mut addr = "127.0.0.1:0".to_owned();
        let mut port_file = None;
        let mut access_token_lifetime = 3600;

        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Ok(None);
            }
            // Accept both `--flag value` and `--flag=value`.
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
                None => (arg, None),
            };
            if !FLAGS.contains(&flag.as_str()) {
                return Err(format!("unknown argument {flag:?}"));
            }
            let value = match inline.or_else(|| args.next()) {
                Some(value) => value,
                None => return Err(format!("{flag} needs a value")),
            };
            match flag.as_str() {
                "--client-id" => client_id = Some(value),
                "--jwks" => jwks = Some(PathBuf::from(value)),
                "--addr" => addr = value,
                "--port-file" => port_file = Some(PathBuf::from(value)),
                _ => access_token_lifetime = parse_lifetime(&value)?,
            }
        }

        Ok(Some(Config {
            client_id: client_id.ok_or("--client-id is required")?,
            jwks: jwks.ok_or("--jwks is required")?,
            addr,
            port_file,
            access_token_lifetime,
        }))
    }
}

/// Capped at a year so that the expiry instant cannot overflow.
fn parse_lifetime(value: &str) -> Result<u64, String> {
    const YEAR: u64 = 365 * 24 * 3600;
    match value.parse() {
        Ok(seconds) if seconds <= YEAR => Ok(seconds),
        _ => Err(format!(
            "--access-token-lifetime must be whole seconds up to {YEAR}, not {value:?}"
        )),
    }
}

/// Loads the keys, binds, announces the base URL, then answers requests until shut down.
fn serve(config: &Config) -> Result<(), String> {
    let jwks = fs::read_to_string(&config.jwks)
        .map_err(|e| format!("cannot read JWKS {}: {e}", config.jwks.display()))?;
    let keys = load_jwks(&jwks).map_err(|e| {
        format!(
            "{} is not a JWKS: {e}\nexpected {{\"keys\": [...]}}",
            config.jwks.display()
        )
    })?;
    if keys.is_empty() {
        eprintln!(
            "standin: no usable key in {}; every assertion will be refused",
            config.jwks.display()
        );
    }

    let server =
        Server::http(&config.addr).map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
    let local = server
        .server_addr()
        .to_ip()
        .ok_or("listening address is not an IP address")?;
    let base_url = base_url(local);
    announce(&base_url, config.port_file.as_deref())?;

    let mut tenant = Tenant::new(config, keys, &base_url);
    for request in server.incoming_requests() {
        if tenant.handle(request) == Next::Stop {
            break;
        }
    }
    Ok(())
}

/// The URL clients should use; an unspecified bind address is reached through loopback.
fn base_url(mut local: SocketAddr) -> String {
    if local.ip().is_unspecified() {
        local.set_ip([127, 0, 0, 1].into());
    }
    format!("http://{local}")
}

/// Prints the base URL, and writes it to the port file under a temp name first, so that a
/// reader polling for the file never sees half a line.
fn announce(base_url: &str, port_file: Option<&Path>) -> Result<(), String> {
    if let Some(path) = port_file {
        let mut temp = OsString::from(path.as_os_str());
        temp.push(format!(".{}.tmp", std::process::id()));
        fs::write(&temp, format!("{base_url}\n"))
            .and_then(|()| fs::rename(&temp, path))
            .map_err(|e| format!("cannot write port file {}: {e}", path.display()))?;
    }
    let mut stdout = io::stdout().lock();
    // A reader that went away is not a reason to stop serving: the port file may be its way in.
    if let Err(e) = writeln!(stdout, "{base_url}").and_then(|()| stdout.flush()) {
        eprintln!("standin: cannot print the base URL: {e}");
    }
    eprintln!("standin: listening on {base_url}, token endpoint {base_url}/oauth/token");
    Ok(())
}

/// A registered public key, with the algs it may verify.
struct RegisteredKey {
    key: DecodingKey,
    algs: &'static [Algorithm],
}

/// Reads a JWKS, keeping the keys an RS256, RS512 or ES384 assertion could name by kid.
/// Keys it cannot use are skipped with a note on stderr, never fatal.
fn load_jwks(text: &str) -> Result<HashMap<String, RegisteredKey>, String> {
    let jwks: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let entries = jwks["keys"].as_array().ok_or("no \"keys\" array")?;

    let mut keys = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let Some(kid) = entry["kid"].as_str() else {
            eprintln!("standin: ignoring JWK #{index}: it has no kid");
            continue;
        };
        let kid_shown = kid.escape_debug();
        if keys.contains_key(kid) {
            eprintln!("standin: ignoring JWK #{index}: kid \"{kid_shown}\" is already taken");
            continue;
        }
        match usable_key(entry) {
            Ok(key) => {
                keys.insert(kid.to_owned(), key);
            }
            Err(why) => eprintln!("standin: ignoring JWK #{index} (kid \"{kid_shown}\"): {why}"),
        }
    }
    Ok(keys)
}

/// The algs Qlik accepts, narrowed by what the JWK's kty and crv can verify.
fn usable_key(entry: &Value) -> Result<RegisteredKey, String> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    let algs: &'static [Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[Algorithm::RS256, Algorithm::RS512],
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P384 => {
            &[Algorithm::ES384]
        }
        _ => return Err("only RSA and EC P-384 keys can verify RS256, RS512 or ES384".into()),
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok(RegisteredKey { key, algs })
}

#[derive(PartialEq)]
enum Next {
    Serve,
    Stop,
}

/// What the tenant remembers between requests.
struct Tenant {
    client_id: String,
    token_endpoint: String,
    keys: HashMap<String, RegisteredKey>,
    access_token_lifetime: u64,
    tenant_id: String,
    user_id: String,
    /// jti -> exp of every accepted assertion, kept until it would be refused as expired anyway.
    used_jtis: HashMap<String, u64>,
    /// access token -> (client id, expiry).
    access_tokens: HashMap<String, (String, Instant)>,
}

/// An answer, plus what the log line should say about it (never a secret).
struct Reply {
    status: u16,
    body: Value,
    www_authenticate: bool,
    note: String,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body,
            www_authenticate: false,
            note: String::new(),
        }
    }
}

impl Tenant {
    fn new(config: &Config, keys: HashMap<String, RegisteredKey>, base_url: &str) -> Tenant {
        Tenant {
            client_id: config.client_id.clone(),
            token_endpoint: format!("{base_url}/oauth/token"),
            keys,
            access_token_lifetime: config.access_token_lifetime,
            tenant_id: uuid::Uuid::new_v4().simple().to_string(),
            user_id: uuid::Uuid::new_v4().simple().to_string(),
            used_jtis: HashMap::new(),
            access_tokens: HashMap::new(),
        }
    }

    /// Answers one request and logs one line about it.
    fn handle(&mut self, mut request: Request) -> Next {
        let method = request.method().clone();
        let path = request
            .url()
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned();

        let mut next = Next::Serve;
        let reply = match (&method, path.as_str()) {
            (Method::Post, "/oauth/token") => self.token_request(&mut request),
            (Method::Get, "/api/v1/users/me") => self.users_me(&request),
            (Method::Post, "/shutdown") => {
                let from_loopback = request.remote_addr().is_some_and(|a| a.ip().is_loopback());
                if from_loopback {
                    next = Next::Stop;
                    Reply::json(200, json!({"status": "shutting down"}))
                } else {
                    Reply::json(
                        403,
                        json!({"errors": [{"title": "Forbidden", "code": "403"}]}),
                    )
                }
            }
            (_, "/oauth/token" | "/api/v1/users/me" | "/shutdown") => Reply::json(
                405,
                json!({"errors": [{"title": "Method Not Allowed", "code": "405"}]}),
            ),
            _ => Reply::json(
                404,
                json!({"errors": [{"title": "Not Found", "code": "404"}]}),
            ),
        };

        eprintln!(
            "standin: {method} {} {}{}",
            path.escape_debug(),
            reply.status,
            reply.note
        );
        if let Err(e) = request.respond(response(&reply)) {
            eprintln!("standin: could not send the response: {e}");
        }
        next
    }

    /// RFC 6749 §4.4 with RFC 7523 §2.2 client authentication, as Qlik implements it.
    fn token_request(&mut self, request: &mut Request) -> Reply {
        let mut seen = Seen::default();
        let outcome = read_form(request).and_then(|form| self.exchange(&form, &mut seen));
        let mut reply = match outcome {
            Ok(body) => Reply::json(200, body),
            Err(refusal) => {
                seen.error = Some(format!("{} ({})", refusal.error, refusal.description));
                let body = json!({
                    "error": refusal.error,
                    "error_description": refusal.description,
                });
                Reply::json(refusal.status, body)
            }
        };
        reply.note = seen.to_string();
        reply
    }

    /// Checks the form and the assertion; on success issues an access token.
    fn exchange(&mut self, form: &Form, seen: &mut Seen) -> Result<Value, Refusal> {
        check_grant(form)?;
        let assertion = form
            .get("client_assertion")
            .ok_or_else(|| Refusal::invalid_request("client_assertion is missing"))?;
        if form
            .get("client_id")
            .is_some_and(|id| *id != self.client_id)
        {
            return Err(Refusal::invalid_client(
                "client_id is not the client of this assertion",
            ));
        }

        let claims = self.verify(assertion, seen)?;
        let jti = self.check_claims(&claims)?;

        let scope = form.get("scope").map_or("user_default", String::as_str);
        Ok(self.issue(jti, &claims, scope))
    }

    /// Verifies header and signature, plus the claims jsonwebtoken can check on its own.
    fn verify(&self, assertion: &str, seen: &mut Seen) -> Result<Map<String, Value>, Refusal> {
        let header = UnverifiedHeader::parse(assertion)?;
        seen.kid.clone_from(&header.kid);

        let alg = accepted_alg(&header.alg)?;
        if header
            .typ
            .as_ref()
            .is_some_and(|typ| !typ.eq_ignore_ascii_case("JWT"))
        {
            return Err(Refusal::invalid_client("typ must be JWT"));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| Refusal::invalid_client("kid is missing"))?;
        let registered = self
            .keys
            .get(kid)
            .ok_or_else(|| Refusal::invalid_client("kid is invalid: no key registered under it"))?;
        if !registered.algs.contains(&alg) {
            let why = format!("alg {alg:?} does not fit the type of the key registered under kid");
            return Err(Refusal::invalid_client(why));
        }

        // jsonwebtoken checks the signature first, then these claims, so each refusal below
        // is about a signed assertion. exp gets the same 5 s leeway as iat gets further down.
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.set_issuer(&[&self.client_id]);
        validation.sub = Some(self.client_id.clone());
        validation.set_audience(&[&self.token_endpoint]);
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(assertion, &registered.key, &validation)
                .map_err(|e| self.refusal_from(e))?;

        seen.jti = data
            .claims
            .get("jti")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(data.claims)
    }

    fn refusal_from(&self, error: jsonwebtoken::errors::Error) -> Refusal {
        let description = match error.kind() {
            ErrorKind::InvalidSignature => "signature is invalid".to_owned(),
            ErrorKind::ExpiredSignature => "assertion has expired: exp is in the past".to_owned(),
            ErrorKind::InvalidIssuer => "iss must be the client id".to_owned(),
            ErrorKind::InvalidSubject => "sub must be the client id".to_owned(),
            ErrorKind::InvalidAudience => self.invalid_audience(),
            ErrorKind::MissingRequiredClaim(claim) => format!("{claim} is missing"),
            ErrorKind::InvalidClaimFormat(claim) => format!("{claim} is not a NumericDate"),
            ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
                "the JWK registered under kid is not a valid public key".to_owned()
            }
            _ => format!("assertion is malformed: {error}"),
        };
        Refusal::invalid_client(description)
    }

    fn invalid_audience(&self) -> String {
        format!(
            "invalid audience: aud must be exactly {}",
            self.token_endpoint
        )
    }

    /// The rules Qlik adds on top of a signature check, each with its own description.
    /// Returns the jti.
    fn check_claims<'c>(&self, claims: &'c Map<String, Value>) -> Result<&'c str, Refusal> {
        // jsonwebtoken accepts iss and aud arrays that merely contain the expected value.
        let is_client_id =
            |claim: &str| claims.get(claim).and_then(Value::as_str) == Some(&self.client_id);
        if !is_client_id("iss") {
            return Err(Refusal::invalid_client("iss must be the client id"));
        }
        if !is_client_id("sub") {
            return Err(Refusal::invalid_client("sub must be the client id"));
        }
        let aud = match claims.get("aud") {
            Some(Value::Array(items)) if items.len() == 1 => items.first(),
            other => other,
        };
        if aud.and_then(Value::as_str) != Some(&self.token_endpoint) {
            return Err(Refusal::invalid_client(self.invalid_audience()));
        }

        let exp = numeric_date(claims, "exp")?;
        let iat = numeric_date(claims, "iat")?;
        if iat > unix_now() + LEEWAY {
            return Err(Refusal::invalid_client("iat is in the future"));
        }
        if exp <= iat {
            return Err(Refusal::invalid_client("exp must be later than iat"));
        }
        if exp - iat > MAX_ASSERTION_LIFETIME {
            let why = format!(
                "assertion lifetime exp - iat is {} s; at most {MAX_ASSERTION_LIFETIME} s allowed",
                exp - iat
            );
            return Err(Refusal::invalid_client(why));
        }

        let jti = match claims.get("jti").and_then(Value::as_str) {
            Some(jti) if !jti.is_empty() => jti,
            _ => return Err(Refusal::invalid_client("jti is missing")),
        };
        if self.used_jtis.contains_key(jti) {
            return Err(Refusal::invalid_client("jti has been used"));
        }
        Ok(jti)
    }

    /// Remembers the jti and issues an opaque access token (RFC 6749 §5.1).
    fn issue(&mut self, jti: &str, claims: &Map<String, Value>, scope: &str) -> Value {
        // An assertion past exp + leeway is refused anyway, so its jti need not be kept.
        let now = unix_now();
        self.used_jtis
            .retain(|_, exp| exp.saturating_add(LEEWAY) >= now);
        let exp = numeric_date(claims, "exp").unwrap_or(now);
        self.used_jtis.insert(jti.to_owned(), exp);

        let now = Instant::now();
        self.access_tokens.retain(|_, (_, expiry)| *expiry > now);
        let access_token = format!("sat_{}", uuid::Uuid::new_v4().simple());
        let expiry = now + Duration::from_secs(self.access_token_lifetime);
        self.access_tokens
            .insert(access_token.clone(), (self.client_id.clone(), expiry));

        json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.access_token_lifetime,
            "scope": scope,
        })
    }

    /// RFC 6750 §2.1 bearer token; refusals in the shape Qlik's APIs use.
    fn users_me(&self, request: &Request) -> Reply {
        let known = bearer_token(request)
            .and_then(|token| self.access_tokens.get(token))
            .filter(|(_, expiry)| Instant::now() < *expiry);
        let Some((client_id, _)) = known else {
            let body = json!({"errors": [{"title": "Unauthorized", "code": "401"}]});
            let mut reply = Reply::json(401, body);
            reply.www_authenticate = true;
            return reply;
        };
        Reply::json(
            200,
            json!({
                "id": self.user_id,
                "tenantId": self.tenant_id,
                "name": "p11jwt demo client",
                "subject": client_id,
                "status": "active",
            }),
        )
    }
}

/// RFC 6749 §4.4.2 grant_type, then RFC 7523 §2.2 client_assertion_type.
fn check_grant(form: &Form) -> Result<(), Refusal> {
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return Err(Refusal {
            status: 400,
            error: "unsupported_grant_type",
            description: "grant_type must be client_credentials".to_owned(),
        });
    }
    if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
        return Err(Refusal {
            status: 400,
            // Qlik's own error code; RFC 6749 would say invalid_request.
            error: "unsupported_client_assertion_type",
            description: format!("unsupported client_assertion_type: it must be {JWT_BEARER}"),
        });
    }
    Ok(())
}

/// The algs Qlik accepts for client assertions.
fn accepted_alg(alg: &str) -> Result<Algorithm, Refusal> {
    match alg {
        "RS256" => Ok(Algorithm::RS256),
        "RS512" => Ok(Algorithm::RS512),
        "ES384" => Ok(Algorithm::ES384),
        _ => Err(Refusal::invalid_client(format!(
            "alg {:?} is not accepted: use RS256, RS512 or ES384",
            alg
        ))),
    }
}

/// RFC 7519 §2 NumericDate: seconds since the epoch; fractions are dropped.
fn numeric_date(claims: &Map<String, Value>, claim: &str) -> Result<u64, Refusal> {
    let Some(value) = claims.get(claim) else {
        return Err(Refusal::invalid_client(format!("{claim} is missing")));
    };
    let seconds = value.as_u64().or_else(|| {
        let float = value.as_f64()?;
        // Truncation is the intent; the range check keeps the cast exact.
        (float.is_finite() && (0.0..1e15).contains(&float)).then_some(float as u64)
    });
    seconds.ok_or_else(|| Refusal::invalid_client(format!("{claim} is not a NumericDate")))
}

fn unix_now() -> u64 {
    // A clock before 1970 would be a broken host; treating it as the epoch refuses everything.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn bearer_token(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))?
        .value
        .as_str();
    let (scheme, token) = value.split_once(' ')?;
    // RFC 7235 §2.1: the auth-scheme is case-insensitive.
    scheme.eq_ignore_ascii_case("Bearer").then(|| token.trim())
}

/// An RFC 6749 §5.2 error response.
struct Refusal {
    status: u16,
    error: &'static str,
    description: String,
}

impl Refusal {
    fn invalid_request(description: impl Into<String>) -> Refusal {
        Refusal {
            status: 400,
            error: "invalid_request",
            description: description.into(),
        }
    }

    fn invalid_client(description: impl Into<String>) -> Refusal {
        Refusal {
            status: 401,
            error: "invalid_client",
            description: description.into(),
        }
    }
}

/// What the log line may say about a token request: kid, jti and the refusal, never the
/// assertion or the access token. Values come from the client, so they are escaped.
#[derive(Default)]
struct Seen {
    kid: Option<String>,
    jti: Option<String>,
    error: Option<String>,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields = [
            ("kid", &self.kid),
            ("jti", &self.jti),
            ("error", &self.error),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                write!(f, " {name}=\"{}\"", value.escape_debug())?;
            }
        }
        Ok(())
    }
}

/// The JOSE header, read before any key is chosen. Parsed here rather than by jsonwebtoken,
/// which refuses to parse a header whose alg it does not know, losing kid and the reason.
struct UnverifiedHeader {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
}

impl UnverifiedHeader {
    fn parse(assertion: &str) -> Result<UnverifiedHeader, Refusal> {
        let malformed = || Refusal::invalid_client("assertion is not a compact JWS");
        if assertion.split('.').count() != 3 {
            return Err(malformed());
        }
        let encoded = assertion.split('.').next().unwrap_or_default();
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed())?;
        let header: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|_| malformed())?;

        let text = |name: &str| header.get(name).and_then(Value::as_str).map(str::to_owned);
        Ok(UnverifiedHeader {
            alg: text("alg").ok_or_else(|| Refusal::invalid_client("alg is missing"))?,
            kid: text("kid"),
            typ: text("typ"),
        })
    }
}

/// A form-urlencoded body (RFC 6749 §3.2 requires it at the token endpoint).
type Form = HashMap<String, String>;

fn read_form(request: &mut Request) -> Result<Form, Refusal> {
    let content_type = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Content-Type"))
        .map(|h| h.value.as_str().to_ascii_lowercase());
    let is_form = content_type.is_some_and(|t| {
        t.split(';').next().map(str::trim) == Some("application/x-www-form-urlencoded")
    });
    if !is_form {
        return Err(Refusal::invalid_request(
            "body must be application/x-www-form-urlencoded",
        ));
    }

    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(MAX_FORM_BYTES + 1)
        .read_to_end(&mut body);
    if read.is_err() || body.len() as u64 > MAX_FORM_BYTES {
        return Err(Refusal::invalid_request(
            "body could not be read or is too large",
        ));
    }
    parse_form(&body)
}

fn parse_form(body: &[u8]) -> Result<Form, Refusal> {
    let mut form = Form::new();
    for pair in body.split(|b| *b == b'&').filter(|pair| !pair.is_empty()) {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        let name = form_decode(name)?;
        // RFC 6749 §3.2: parameters must not be included more than once.
        if form.contains_key(&name) {
            return Err(Refusal::invalid_request(format!("{name} is repeated")));
        }
        form.insert(name, form_decode(value)?);
    }
    Ok(form)
}

fn form_decode(raw: &[u8]) -> Result<String, Refusal> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    String::from_utf8(bytes).map_err(|_| Refusal::invalid_request("form is not UTF-8"))
}

fn response(reply: &Reply) -> Response<io::Cursor<Vec<u8>>> {
    let mut response = Response::from_string(reply.body.to_string()).with_status_code(reply.status);
    // RFC 6749 §5.1: token responses must not be cached; harmless on the others.
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Cache-Control", "no-store"),
    ];
    if reply.www_authenticate {
        headers.push(("WWW-Authenticate", "Bearer"));
    }
    for (name, value) in headers {
        // Both halves are ASCII constants, which is all Header::from_bytes asks for.
        if let Ok(header) = Header::from_bytes(name, value) {
            response.add_header(header);
        }
    }
    response
}
