//! The command line: clap definitions, one file per subcommand, output and exit codes. No
//! business logic lives here: each subcommand resolves its arguments and calls the library.

mod access;
mod assert;
mod config;
mod exec;
mod get;
mod jwk;
mod keygen;
mod keys;
mod token;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use p11jwt::alg::Alg;
use p11jwt::assertion::{self, Assertion, QLIK_MAX_LIFETIME};
use p11jwt::config::PinSource;
use p11jwt::oauth;
use p11jwt::secret::Secret;
use p11jwt::signer::Signer;
use p11jwt::token::{KeyPair, KeySelector, OpenOptions, Token};
use p11jwt::uri::{self, Pkcs11Uri};
use p11jwt::Error;

#[derive(Parser, Debug)]
#[command(
    name = "p11jwt",
    version,
    about = "Private Key JWT client assertions signed by a key that never leaves a PKCS#11 token",
    long_about = "Private Key JWT client assertions (RFC 7523) signed by a key that never \
                  leaves a PKCS#11 token, and the OAuth 2.0 client_credentials exchange \
                  that turns them into access tokens.\n\n\
                  Data (JWK, assertion, access token, response body) goes to stdout; \
                  messages go to stderr. Exit codes are listed in docs/errors.md."
)]
pub struct Cli {
    /// More logs on stderr (-v: steps and timings, -vv: PKCS#11 details). Never secrets.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Config file with [profiles.NAME] tables [default: $XDG_CONFIG_HOME/p11jwt/config.toml,
    /// then /etc/p11jwt/config.toml]
    #[arg(long, env = "P11JWT_CONFIG", value_name = "PATH", global = true)]
    config: Option<PathBuf>,

    /// Profile from the config file: fills the settings no flag or environment variable gave
    #[arg(long, env = "P11JWT_PROFILE", value_name = "NAME", global = true)]
    profile: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a key pair on the token; print its public JWK (stdout) and pkcs11: URI
    Keygen(keygen::KeygenArgs),
    /// List the key pairs on the token (or those --key names) with their protection flags
    Keys(keys::KeysArgs),
    /// Print the public JWK of a key (or a JWKS with --jwks)
    Jwk(jwk::JwkArgs),
    /// Print a signed client assertion (compact JWS)
    Assert(assert::AssertArgs),
    /// Exchange an assertion for an access token (or reuse the cached one) and print it
    Token(token::TokenArgs),
    /// Call an API URL with an access token; print the response body
    Get(get::GetArgs),
    /// Show the settings a command would use, and where each comes from
    Config(config::ConfigArgs),
    /// Run a command with an access token in its environment; exit with its code
    Exec(exec::ExecArgs),
}

/// Which module, token and key; shared by every command.
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// PKCS#11 module (.so) [default: SoftHSM's, when installed]
    #[arg(long, env = "P11JWT_MODULE", value_name = "PATH")]
    module: Option<PathBuf>,

    /// Token label
    #[arg(long, env = "P11JWT_TOKEN", value_name = "LABEL")]
    token: Option<String>,

    /// Key label (CKA_LABEL), or a full pkcs11: URI (RFC 7512); `jwk --jwks` takes several
    #[arg(long, env = "P11JWT_KEY", value_name = "LABEL|URI", action = clap::ArgAction::Append)]
    key: Vec<String>,

    /// File whose first line is the user PIN (mode 0600 or stricter). The PIN itself can be
    /// given in P11JWT_PIN; on a terminal p11jwt prompts without echo.
    #[arg(long, env = "P11JWT_PIN_FILE", value_name = "PATH")]
    pin_file: Option<PathBuf>,

    /// Read the user PIN from the first line of standard input
    #[arg(long)]
    pin_stdin: bool,

    /// Log in even when the token says the next wrong PIN locks it (CKF_USER_PIN_FINAL_TRY)
    #[arg(long)]
    allow_final_pin_try: bool,
}

/// What goes into an assertion; shared by `assert`, `token` and `get`.
#[derive(Args, Debug, Clone)]
pub struct ClaimArgs {
    /// OAuth client id: the assertion's iss and sub
    #[arg(long, env = "P11JWT_CLIENT_ID", value_name = "ID")]
    client_id: Option<String>,

    /// JWS alg [default: follows the key: RSA RS256, P-256 ES256, P-384 ES384, P-521 ES512,
    /// Ed25519 EdDSA]
    #[arg(long, env = "P11JWT_ALG", value_name = "ALG")]
    alg: Option<String>,

    /// kid header [default: the key's RFC 7638 thumbprint, as `p11jwt jwk` prints it]
    #[arg(long, env = "P11JWT_KID", value_name = "KID")]
    kid: Option<String>,

    /// Seconds between iat and exp; Qlik Cloud refuses more than 300
    #[arg(
        long,
        env = "P11JWT_LIFETIME",
        value_name = "SECONDS",
        default_value_t = 300
    )]
    lifetime: u64,
}

/// Where the token endpoint is and how to talk to it; shared by `token`, `get` and `exec`.
#[derive(Args, Debug, Clone)]
pub struct EndpointArgs {
    /// Token endpoint URL (also the default aud)
    #[arg(long, env = "P11JWT_TOKEN_ENDPOINT", value_name = "URL")]
    token_endpoint: Option<String>,

    /// Qlik Cloud tenant: NAME for https://NAME.qlikcloud.com/oauth/token, or a full host
    #[arg(long, env = "P11JWT_TENANT", value_name = "NAME")]
    tenant: Option<String>,

    /// Issuer URL: find the token endpoint in its metadata (OpenID Connect Discovery, then
    /// RFC 8414)
    #[arg(long, env = "P11JWT_ISSUER", value_name = "URL")]
    issuer: Option<String>,

    /// Apply the rules of one authorization server: qlik, okta, keycloak, entra, auth0,
    /// generic [default: qlik with --tenant, else generic]
    #[arg(long, env = "P11JWT_PROVIDER", value_name = "NAME")]
    provider: Option<oauth::Provider>,

    /// Scope to ask for [default: the provider's, e.g. user_default for qlik]
    #[arg(long, env = "P11JWT_SCOPE", value_name = "SCOPE")]
    scope: Option<String>,

    /// aud claim [default: the token endpoint, byte for byte; for auth0 https://HOST/]
    #[arg(long, env = "P11JWT_AUDIENCE", value_name = "URL")]
    audience: Option<String>,

    /// RFC 8707 resource indicator to send (repeatable)
    #[arg(long, value_name = "URI")]
    resource: Vec<String>,

    /// Extra form field for the token request, NAME=VALUE (repeatable)
    #[arg(long, value_name = "NAME=VALUE")]
    param: Vec<String>,

    /// PEM file of CA certificates to trust instead of the built-in roots (internal CAs)
    #[arg(long, env = "P11JWT_CACERT", value_name = "FILE")]
    cacert: Option<PathBuf>,

    /// Seconds allowed to connect
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    connect_timeout: u64,

    /// Seconds allowed for each exchange, retries and their waits included
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,

    /// Retries after a connection failure, 429 or 503 (each with a new assertion)
    #[arg(long, value_name = "N", default_value_t = 2)]
    retries: u32,

    /// Neither read nor write the access token cache
    #[arg(long, env = "P11JWT_NO_CACHE", value_parser = clap::builder::BoolishValueParser::new())]
    no_cache: bool,
}

impl EndpointArgs {
    /// The token endpoint when it is known without discovery.
    fn static_token_endpoint(&self) -> Result<Option<String>, Error> {
        Ok(match (&self.token_endpoint, &self.tenant) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(tenant)) => Some(oauth::qlik_token_endpoint(tenant)?),
            (None, None) => None,
        })
    }

    /// The preset: `--provider`, else qlik for `--tenant`, else generic.
    fn provider(&self) -> oauth::Provider {
        match (self.provider, &self.tenant) {
            (Some(provider), _) => provider,
            (None, Some(_)) => oauth::Provider::Qlik,
            (None, None) => oauth::Provider::Generic,
        }
    }

    fn client_options(&self) -> oauth::ClientOptions {
        oauth::ClientOptions {
            connect_timeout: Duration::from_secs(self.connect_timeout.max(1)),
            timeout: Duration::from_secs(self.timeout.max(1)),
            cacert: self.cacert.clone(),
            retry: oauth::RetryPolicy {
                attempts: self.retries.saturating_add(1),
                ..oauth::RetryPolicy::default()
            },
        }
    }
}

/// Runs the command, after filling unset settings from the profile (if one is chosen).
pub fn run(mut cli: Cli, matches: &clap::ArgMatches) -> Result<(), Error> {
    let report = config::apply_profile(&mut cli, matches)?;
    match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Keys(args) => keys::run(args),
        Command::Jwk(args) => jwk::run(args),
        Command::Assert(args) => assert::run(args),
        Command::Token(args) => token::run(args),
        Command::Get(args) => get::run(args),
        Command::Config(_) => config::run(report),
        Command::Exec(args) => exec::run(args),
    }
}

pub fn verbosity(cli: &Cli) -> u8 {
    cli.verbose
}

/// The token, key selector and PIN source that the key arguments name.
struct Resolved {
    options: OpenOptions,
    selector: KeySelector,
    pin_source: PinSource,
    key_given: bool,
}

impl KeyArgs {
    /// The same arguments naming one of the keys given, for commands that take several.
    fn each_key(&self) -> impl Iterator<Item = KeyArgs> + '_ {
        self.key.iter().map(|key| KeyArgs {
            key: vec![key.clone()],
            ..self.clone()
        })
    }

    fn resolve(&self, read_write: bool) -> Result<Resolved, Error> {
        if self.key.len() > 1 {
            return Err(Error::Usage(
                "--key is given more than once\nonly `p11jwt jwk --jwks` takes several keys".into(),
            ));
        }
        let mut options = OpenOptions {
            module: self.module.clone(),
            token_label: self.token.clone(),
            uri: None,
            read_write,
            allow_final_pin_try: self.allow_final_pin_try,
        };
        let mut selector = KeySelector::default();
        let mut pin_source = PinSource::choose(self.pin_file.as_deref(), self.pin_stdin);

        match self.key.first().map(String::as_str) {
            Some(key) if uri::is_pkcs11_uri(key) => {
                let parsed = Pkcs11Uri::parse(key)?;
                check_object_type(&parsed)?;
                apply_uri(&parsed, &mut options, &mut pin_source)?;
                selector.label = parsed.object.clone();
                selector.id = parsed.id.clone();
                options.uri = Some(parsed);
            }
            Some(label) => selector.label = Some(label.as_bytes().to_vec()),
            None => {}
        }
        Ok(Resolved {
            options,
            selector,
            pin_source,
            key_given: !self.key.is_empty(),
        })
    }
}

/// `--key` names a key pair. `type=public` or `type=cert` name its other halves, which share
/// the label and id, so they select the same pair; secret keys and data objects cannot sign.
fn check_object_type(uri: &Pkcs11Uri) -> Result<(), Error> {
    use p11jwt::uri::ObjectType;
    match uri.object_type {
        None | Some(ObjectType::Private) => Ok(()),
        Some(t @ (ObjectType::Public | ObjectType::Cert)) => {
            log::info!("type={t} in the pkcs11: URI: using the private key with that label and id");
            Ok(())
        }
        Some(t) => Err(Error::Usage(format!(
            "the pkcs11: URI has type={t}: p11jwt signs with a private key\n\
             use type=private (or leave type out); `p11jwt keys` prints each key's URI"
        ))),
    }
}

/// Takes module and PIN source from a URI's query attributes (RFC 7512 §2.4) where the flags
/// did not already say.
fn apply_uri(
    uri: &Pkcs11Uri,
    options: &mut OpenOptions,
    pin_source: &mut PinSource,
) -> Result<(), Error> {
    for name in &uri.ignored_vendor {
        log::warn!("ignoring vendor attribute {name:?} in the pkcs11: URI");
    }
    if options.module.is_none() {
        if let Some(path) = &uri.module_path {
            options.module = Some(PathBuf::from(path));
        } else if let Some(name) = &uri.module_name {
            options.module = Some(p11jwt::token::find_module_by_name(name)?);
        }
    }
    if let Some(source) = &uri.pin_source {
        // Refused even when another PIN source wins: the URI is wrong wherever it is used.
        let path = source.strip_prefix("file:").unwrap_or(source);
        if path.starts_with('|') {
            return Err(Error::Usage(
                "pin-source=|command is not supported: p11jwt does not run commands for \
                 PINs\nuse pin-source=file:/path or P11JWT_PIN"
                    .into(),
            ));
        }
        if matches!(pin_source, PinSource::None | PinSource::Prompt) {
            *pin_source = PinSource::File(PathBuf::from(path));
        }
    }
    if uri.pin_value.is_some() {
        log::warn!(
            "the pkcs11: URI carries pin-value: anyone who sees the URI sees the PIN; \
             prefer pin-source=file:/path"
        );
    }
    Ok(())
}

/// Reads the PIN once for the run.
fn read_pin(resolved: &Resolved) -> Result<Option<Secret>, Error> {
    if let Some(value) = resolved
        .options
        .uri
        .as_ref()
        .and_then(|u| u.pin_value.as_ref())
    {
        if matches!(resolved.pin_source, PinSource::None | PinSource::Prompt) {
            // Like every other source: an empty PIN is refused before it costs a try.
            if value.is_empty() {
                return Err(p11jwt::config::Error::EmptyPin {
                    source: "pin-value in the pkcs11: URI".into(),
                }
                .into());
            }
            return Ok(Some(Secret::new(value.to_string())));
        }
    }
    let label = resolved
        .options
        .token_label
        .as_deref()
        .unwrap_or("(default)");
    Ok(resolved.pin_source.read(label)?)
}

/// Opens the token and logs in with the PIN from its source.
fn open_logged_in(resolved: &Resolved) -> Result<Token, Error> {
    let started = Instant::now();
    let pin = read_pin(resolved)?;
    let token = Token::open(&resolved.options, pin.as_ref())?;
    drop(pin);
    log::info!(
        "token {:?} (serial {}) open in {} ms",
        token.description().label,
        token.description().serial,
        started.elapsed().as_millis()
    );
    Ok(token)
}

fn require_key(resolved: &Resolved) -> Result<(), Error> {
    if resolved.key_given {
        return Ok(());
    }
    Err(Error::Usage(
        "no key given\npass --key LABEL or a pkcs11: URI (or set P11JWT_KEY); \
         `p11jwt keys` lists the keys"
            .into(),
    ))
}

fn warn_if_extractable(key: &KeyPair) {
    if key.flags.may_exist_off_token() {
        log::warn!(
            "key {:?} is extractable, or was imported or extractable once (CKA_EXTRACTABLE, \
             CKA_NEVER_EXTRACTABLE, CKA_ALWAYS_SENSITIVE): its private key may exist off the token",
            key.label_text()
        );
    }
}

/// Header fields a provider may want besides alg and kid.
struct HeaderExtras<'a> {
    typ: &'a str,
    x5t: Option<&'a str>,
    x5t_s256: Option<&'a str>,
}

const PLAIN_HEADER: HeaderExtras<'static> = HeaderExtras {
    typ: "JWT",
    x5t: None,
    x5t_s256: None,
};

/// The client id, required for every assertion.
fn client_id(claims: &ClaimArgs) -> Result<&str, Error> {
    claims.client_id.as_deref().ok_or_else(|| {
        Error::Usage(
            "no client id\npass --client-id ID (or set P11JWT_CLIENT_ID): the OAuth client's id"
                .into(),
        )
    })
}

/// Binds the key to its alg and kid, refusing what does not fit before anything is signed.
fn signer<'t>(token: &'t Token, key: &'t KeyPair, claims: &ClaimArgs) -> Result<Signer<'t>, Error> {
    // A day is far beyond what any server accepts (Qlik: 300 s, Okta: an hour); beyond it the
    // number is a mistake, not a policy.
    const MAX_LIFETIME: u64 = 86_400;
    if claims.lifetime == 0 || claims.lifetime > MAX_LIFETIME {
        return Err(Error::Usage(format!(
            "--lifetime {} is out of range\npass 1 to {MAX_LIFETIME} seconds; 300 or less for \
             Qlik Cloud",
            claims.lifetime
        )));
    }
    let alg = claims.alg.as_deref().map(str::parse::<Alg>).transpose()?;
    warn_if_extractable(key);
    Signer::new(token, key, alg, claims.kid.clone())
}

/// Signs one assertion with a fresh jti, and logs what may be logged.
fn sign(
    signer: &Signer<'_>,
    client_id: &str,
    audience: &str,
    lifetime: u64,
    header: &HeaderExtras<'_>,
) -> Result<Assertion, Error> {
    let started = Instant::now();
    let request = assertion::Request {
        client_id,
        audience,
        lifetime,
        typ: header.typ,
        x5t: header.x5t,
        x5t_s256: header.x5t_s256,
    };
    let minted = assertion::mint(signer, &request)?;
    log::info!(
        "signed assertion alg={} kid={} jti={} aud={} iat={} exp={} with {} in {} ms",
        minted.alg,
        minted.kid,
        minted.jti,
        audience,
        minted.iat,
        minted.exp,
        signer.mechanism().name(),
        started.elapsed().as_millis()
    );
    Ok(minted)
}

/// Finds the key, signs one assertion for `audience`, and logs what may be logged.
fn mint(
    token: &Token,
    key: &KeyPair,
    claims: &ClaimArgs,
    audience: &str,
) -> Result<Assertion, Error> {
    let client_id = client_id(claims)?;
    if claims.lifetime > QLIK_MAX_LIFETIME {
        log::warn!(
            "--lifetime {} is over {QLIK_MAX_LIFETIME} s: Qlik Cloud refuses such assertions",
            claims.lifetime
        );
    }
    let signer = signer(token, key, claims)?;
    sign(&signer, client_id, audience, claims.lifetime, &PLAIN_HEADER)
}

/// A message for stderr that is not data; a stderr that cannot be written is no reason to fail
/// (or panic, as `eprintln!` would) after the work is done.
fn note(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// Writes data to stdout; a closed pipe is not an error.
fn print_stdout(text: &str) -> Result<(), Error> {
    print_bytes(text.as_bytes())
}

fn pretty(value: &serde_json::Value) -> String {
    // Serializing a Value cannot fail: every key is a string.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

fn print_bytes(bytes: &[u8]) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Usage(format!(
            "cannot write to standard output: {e}"
        ))),
        _ => Ok(()),
    }
}
