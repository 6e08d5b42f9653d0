//! p11jwt: OAuth 2.0 Private Key JWT client assertions (RFC 7523) signed by a key that never
//! leaves a PKCS#11 token.
//!
//! The data path, one module per step:
//! key selector ([`uri`]) -> [`token`] (module, slot, session, login) -> key pair ->
//! [`signer`] ([`alg`]: digest and mechanism) -> [`assertion`] -> [`oauth`] (token endpoint)
//! -> access token -> API call. [`jwk`] turns public keys into JWKs; [`config`] finds the PIN.
//!
//! The library never prints, prompts (except through [`config::PinSource::Prompt`]) or exits.

#![forbid(unsafe_code)]

pub mod alg;
pub mod assertion;
pub mod config;
pub mod jwk;
pub mod oauth;
pub mod secret;
pub mod signer;
pub mod token;
pub mod uri;

use std::fmt;

/// Exit codes, documented in `docs/errors.md`. Grouped by who has to act.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A bug in p11jwt, or an error nobody anticipated.
    pub const INTERNAL: u8 = 1;
    /// Bad arguments, flags or configuration.
    pub const USAGE: u8 = 2;
    /// The PKCS#11 module or token could not be set up (module, slot, token).
    pub const PKCS11_SETUP: u8 = 3;
    /// Logging in failed: PIN missing, wrong, locked.
    pub const AUTHENTICATION: u8 = 4;
    /// The key: not found, ambiguous, wrong type, too small, label taken.
    pub const KEY: u8 = 5;
    /// Signing failed: mechanism missing, device error, signature check failed.
    pub const SIGNING: u8 = 6;
    /// The network: cannot connect, TLS, timeouts, non-https URLs, a server still busy (429,
    /// 503) after the retries: running again later may succeed.
    pub const NETWORK: u8 = 7;
    /// The authorization server refused the assertion or answered nonsense.
    pub const AUTHORIZATION_SERVER: u8 = 8;
    /// An API call with the access token answered with an HTTP error status.
    pub const API: u8 = 9;
}

/// Any error the library returns.
#[derive(Debug)]
pub enum Error {
    Token(token::Error),
    OAuth(oauth::Error),
    Config(config::Error),
    Alg(alg::AlgError),
    Uri(uri::UriError),
    /// A bad combination of inputs, with what to do about it.
    Usage(String),
    /// An API answered with an HTTP error status.
    Api {
        status: u16,
        summary: String,
    },
}

impl Error {
    /// The documented exit code for this error.
    pub fn exit_code(&self) -> u8 {
        use token::Error as T;
        match self {
            // A key too small for any alg is the key's fault; any other alg error the caller's.
            Error::Alg(alg::AlgError::RsaTooSmall { .. })
            | Error::Alg(alg::AlgError::RsaTooLarge { .. }) => exit::KEY,
            Error::Usage(_) | Error::Alg(_) | Error::Uri(_) => exit::USAGE,
            Error::Config(
                config::Error::LoosePermissions { .. }
                | config::Error::EmptyPin { .. }
                | config::Error::PinRead { .. }
                | config::Error::PinEnvNotUnicode,
            ) => exit::AUTHENTICATION,
            Error::Config(_) => exit::USAGE,
            Error::Token(e) => match e {
                T::ModuleMissing { .. }
                | T::ModuleNameNotFound { .. }
                | T::NoDefaultModule
                | T::ModuleLoad { .. }
                | T::NotPkcs11Module { .. }
                | T::Initialize { .. }
                | T::NoToken
                | T::TokenNotInitialized { .. }
                | T::LibraryMismatch { .. }
                | T::TokenNotFound { .. }
                | T::SeveralTokens { .. }
                | T::UserPinNotInitialized { .. } => exit::PKCS11_SETUP,
                T::LoginNotRetried
                | T::PinRequired
                | T::PinIncorrect
                | T::PinLocked
                | T::PinFinalTry => exit::AUTHENTICATION,
                T::KeyNotFound { .. }
                | T::SeveralKeys { .. }
                | T::NoPublicKey { .. }
                | T::NoPrivateKey { .. }
                | T::NotSigningKey { .. }
                | T::LabelExists { .. } => exit::KEY,
                T::Key(jwk::KeyError::BadSignature(_)) => exit::SIGNING,
                T::Key(_) => exit::KEY,
                T::MechanismMissing { .. }
                | T::AlwaysAuthenticateSinglePart { .. }
                | T::DeviceLost { .. }
                | T::Call { .. } => exit::SIGNING,
            },
            Error::OAuth(e) => match e {
                oauth::Error::BadUrl { .. }
                | oauth::Error::BadTenant { .. }
                | oauth::Error::BadParam { .. }
                | oauth::Error::BadRequest { .. }
                | oauth::Error::Provider(_)
                | oauth::Error::Cache(_) => exit::USAGE,
                oauth::Error::InsecureUrl { .. }
                | oauth::Error::CaCert { .. }
                | oauth::Error::Network { .. }
                | oauth::Error::Busy { .. } => exit::NETWORK,
                oauth::Error::Refused { .. }
                | oauth::Error::NotJson { .. }
                | oauth::Error::Redirected { .. }
                | oauth::Error::TooLarge { .. }
                | oauth::Error::BadTokenResponse { .. }
                | oauth::Error::NoAccessToken
                | oauth::Error::Discovery(_) => exit::AUTHORIZATION_SERVER,
            },
            Error::Api { .. } => exit::API,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Token(e) => e.fmt(f),
            Error::OAuth(e) => e.fmt(f),
            Error::Config(e) => e.fmt(f),
            Error::Alg(e) => e.fmt(f),
            Error::Uri(e) => e.fmt(f),
            Error::Usage(s) => f.write_str(s),
            Error::Api { status, summary } => {
                write!(f, "the API answered {status}: {summary}")
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<token::Error> for Error {
    fn from(e: token::Error) -> Error {
        Error::Token(e)
    }
}

impl From<oauth::Error> for Error {
    fn from(e: oauth::Error) -> Error {
        Error::OAuth(e)
    }
}

impl From<config::Error> for Error {
    fn from(e: config::Error) -> Error {
        Error::Config(e)
    }
}

impl From<alg::AlgError> for Error {
    fn from(e: alg::AlgError) -> Error {
        Error::Alg(e)
    }
}

impl From<uri::UriError> for Error {
    fn from(e: uri::UriError) -> Error {
        Error::Uri(e)
    }
}

/// Text from outside (a server's error_description, a token label) made safe for a terminal:
/// control characters are escaped.
pub fn escape_for_terminal(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}
