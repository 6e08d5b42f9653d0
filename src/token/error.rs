//! Errors of the PKCS#11 side, with their messages: each says what failed, in PKCS#11's own
//! words, then what to do next.

use std::fmt;
use std::path::PathBuf;

use cryptoki::error::{Error as CkError, RvError};

use crate::jwk::KeyError;

use super::{NOT_FOUND_ATTEMPTS, OPEN_ATTEMPTS};

/// The spec's name for a return value: `PinIncorrect` -> `CKR_PIN_INCORRECT`.
pub(super) fn ckr(rv: RvError) -> String {
    let debug = format!("{rv:?}");
    let mut out = String::from("CKR");
    for c in debug.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// What went wrong on the PKCS#11 side. Each message says what to do next.
#[derive(Debug)]
pub enum Error {
    /// A C_Login failed oddly, and the token now reports a recent failed login: the PIN is not
    /// sent again.
    LoginNotRetried,
    ModuleNameNotFound {
        name: String,
        searched: Vec<String>,
    },
    ModuleMissing {
        path: PathBuf,
    },
    NoDefaultModule,
    ModuleLoad {
        path: PathBuf,
        detail: String,
    },
    NotPkcs11Module {
        path: PathBuf,
    },
    Initialize {
        path: PathBuf,
        rv: String,
    },
    NoToken,
    TokenNotInitialized {
        slots: Vec<u64>,
    },
    LibraryMismatch {
        wanted: String,
        actual: String,
    },
    TokenNotFound {
        wanted: String,
        available: Vec<String>,
    },
    SeveralTokens {
        names: Vec<String>,
    },
    UserPinNotInitialized {
        token: String,
    },
    PinRequired,
    PinIncorrect,
    PinLocked,
    PinFinalTry,
    KeyNotFound {
        wanted: String,
        available: Vec<String>,
        logged_in: bool,
    },
    SeveralKeys {
        wanted: String,
        names: Vec<String>,
    },
    NoPublicKey {
        key: String,
    },
    NoPrivateKey {
        key: String,
    },
    NotSigningKey {
        key: String,
    },
    LabelExists {
        label: String,
    },
    MechanismMissing {
        alg: String,
        wanted: Vec<&'static str>,
    },
    DeviceLost {
        function: &'static str,
        rv: String,
    },
    AlwaysAuthenticateSinglePart {
        key: String,
        mechanism: &'static str,
    },
    Key(KeyError),
    Call {
        function: &'static str,
        rv: String,
    },
}

impl Error {
    pub(super) fn ck(function: &'static str, e: CkError) -> Error {
        match e {
            CkError::Pkcs11(
                rv @ (RvError::DeviceRemoved
                | RvError::SessionHandleInvalid
                | RvError::TokenNotPresent
                | RvError::DeviceError
                | RvError::SessionClosed),
                _,
            ) => Error::DeviceLost {
                function,
                rv: ckr(rv),
            },
            CkError::Pkcs11(rv, _) => Error::Call {
                function,
                rv: ckr(rv),
            },
            other => Error::Call {
                function,
                rv: other.to_string(),
            },
        }
    }

    /// Answers SoftHSM 2.6 gives while another process rewrites its token file.
    /// How many times the open sequence may be tried for this error.
    /// Whether C_Login itself failed (so the PIN reached the token).
    pub(super) fn is_from_login(&self) -> bool {
        matches!(self, Error::Call { function, .. } if *function == "C_Login")
    }

    pub(super) fn open_attempts(&self) -> u32 {
        match self {
            Error::TokenNotFound { .. } => NOT_FOUND_ATTEMPTS,
            _ => OPEN_ATTEMPTS,
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            Error::NoToken
            | Error::TokenNotInitialized { .. }
            | Error::TokenNotFound { .. }
            | Error::UserPinNotInitialized { .. } => true,
            Error::Initialize { rv, .. } | Error::Call { rv, .. } => {
                rv == "CKR_GENERAL_ERROR" || rv == "CKR_USER_PIN_NOT_INITIALIZED"
            }
            _ => false,
        }
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        return "  (none)".into();
    }
    items
        .iter()
        .map(|i| format!("  {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::LoginNotRetried => write!(
                f,
                "C_Login failed, and the token now reports a failed login \
                 (CKF_USER_PIN_COUNT_LOW); the PIN was not sent again\n\
                 check the PIN before running again: more wrong tries can lock it"
            ),
            Error::ModuleNameNotFound { name, searched } => write!(
                f,
                "no PKCS#11 module named {name:?} (module-name in the pkcs11: URI): neither \
                 {name}.so nor lib{name}.so is in {}\n\
                 use module-path=/full/path/to/module.so in the URI, or --module PATH",
                searched.join(", ")
            ),
            Error::ModuleMissing { path } => write!(
                f,
                "PKCS#11 module {} does not exist\n\
                 check --module / P11JWT_MODULE (for SoftHSM: apt-get install softhsm2)",
                path.display()
            ),
            Error::NoDefaultModule => write!(
                f,
                "no PKCS#11 module given and SoftHSM's was not found in the usual places\n\
                 pass --module PATH or set P11JWT_MODULE to your token's module (.so)"
            ),
            Error::ModuleLoad { path, detail } => write!(
                f,
                "cannot load PKCS#11 module {}: {detail}\n\
                 check that it is a shared library for this machine's architecture and that \
                 its dependencies are installed (ldd shows which are missing)",
                path.display()
            ),
            Error::NotPkcs11Module { path } => write!(
                f,
                "{} is a shared library but not a PKCS#11 module (no C_GetFunctionList)\n\
                 point --module at your token vendor's PKCS#11 module",
                path.display()
            ),
            Error::Initialize { path, rv } => {
                write!(f, "C_Initialize of {} failed: {rv}", path.display())?;
                if path.to_string_lossy().contains("softhsm") {
                    let conf = std::env::var("SOFTHSM2_CONF")
                        .unwrap_or_else(|_| "/etc/softhsm/softhsm2.conf (default)".into());
                    write!(
                        f,
                        "\nSoftHSM read its configuration from {conf}; check that the file \
                         exists and that its directories.tokendir exists and is readable"
                    )?;
                }
                Ok(())
            }
            Error::NoToken => write!(
                f,
                "the PKCS#11 module reports no token present in any slot\n\
                 plug the device in, or check that the module is the one for your device"
            ),
            Error::TokenNotInitialized { slots } => {
                let slots: Vec<String> = slots.iter().map(u64::to_string).collect();
                write!(
                    f,
                    "the PKCS#11 module reports no initialized token; slot {} holds a token \
                     that is not initialized\n\
                     initialize one (SoftHSM: softhsm2-util --init-token --free --label NAME)",
                    slots.join(", ")
                )
            }
            Error::LibraryMismatch { wanted, actual } => write!(
                f,
                "the PKCS#11 module is {actual}, not the library {wanted} asks for\n\
                 point --module (or module-path=) at that library, or drop the library-* \
                 attributes from the URI"
            ),
            Error::TokenNotFound { wanted, available } => write!(
                f,
                "no token matches {wanted}; the tokens present are:\n{}\n\
                 pass one of those with --token, or a pkcs11: URI with --key",
                list(available)
            ),
            Error::SeveralTokens { names } => write!(
                f,
                "several tokens match:\n{}\n\
                 choose one with --token LABEL, or serial= in a pkcs11: URI",
                list(names)
            ),
            Error::UserPinNotInitialized { token } => write!(
                f,
                "the user PIN of token {token:?} is not initialized \
                 (CKR_USER_PIN_NOT_INITIALIZED)\n\
                 set it with your token's tools (SoftHSM: softhsm2-util --init-token ... --pin)"
            ),
            Error::PinRequired => write!(
                f,
                "this token needs the user PIN to log in\n\
                 set P11JWT_PIN, pass --pin-file PATH or --pin-stdin, or run on a terminal to be \
                 prompted"
            ),
            Error::PinIncorrect => write!(
                f,
                "the token refused the user PIN (CKR_PIN_INCORRECT); it was tried once and will \
                 not be retried\ncheck the PIN source; a few more wrong tries lock the PIN"
            ),
            Error::PinLocked => write!(
                f,
                "the user PIN is locked (CKR_PIN_LOCKED / CKF_USER_PIN_LOCKED)\n\
                 the security officer must unlock or reset it; p11jwt will not try it"
            ),
            Error::PinFinalTry => write!(
                f,
                "the token says the next wrong user PIN locks it (CKF_USER_PIN_FINAL_TRY); \
                 p11jwt does not log in in that state\n\
                 check the PIN, then log in once with your token's own tools, or pass \
                 --allow-final-pin-try to let p11jwt make that last try"
            ),
            Error::KeyNotFound {
                wanted,
                available,
                logged_in,
            } => {
                writeln!(
                    f,
                    "no private key with {wanted} on the token; the private keys are:"
                )?;
                write!(f, "{}", list(available))?;
                if !logged_in {
                    let note = "(not logged in: private keys may be hidden until a PIN is given)";
                    write!(f, "\n{note}")?;
                }
                write!(
                    f,
                    "\npass one of those with --key, or create one with `p11jwt keygen`"
                )
            }
            Error::SeveralKeys { wanted, names } => write!(
                f,
                "several private keys match {wanted}:\n{}\n\
                 choose one by its id (id=%.. in a pkcs11: URI)",
                list(names)
            ),
            Error::NoPublicKey { key } => write!(
                f,
                "key {key} has no public key object, no certificate with its CKA_ID, and no \
                 CKA_MODULUS/CKA_PUBLIC_EXPONENT on the private key\n\
                 import its public key or certificate with the same CKA_ID"
            ),
            Error::NoPrivateKey { key } => write!(
                f,
                "key {key} was found without its private key; log in with the user PIN to sign"
            ),
            Error::NotSigningKey { key } => write!(
                f,
                "the token does not allow key {key} to sign (CKA_SIGN false, \
                 CKR_KEY_FUNCTION_NOT_PERMITTED)\nuse a signing key, or make one with \
                 `p11jwt keygen`"
            ),
            Error::LabelExists { label } => write!(
                f,
                "the token already has objects labelled {label:?}; nothing was generated\n\
                 choose another --key label (p11jwt keys lists the existing ones)"
            ),
            Error::MechanismMissing { alg, wanted } => write!(
                f,
                "the token offers none of the mechanisms {alg} needs ({})\n\
                 choose another --alg, or a key on a token that supports it",
                wanted.join(" or ")
            ),
            Error::DeviceLost { function, rv } => write!(
                f,
                "{function} failed: {rv}: the token was removed or the session was lost\n\
                 reconnect the device and run again"
            ),
            Error::AlwaysAuthenticateSinglePart { key, mechanism } => write!(
                f,
                "key {key} has CKA_ALWAYS_AUTHENTICATE, and the token offers only {mechanism} for \
                 this alg, a single-part mechanism: p11jwt cannot log in (CKU_CONTEXT_SPECIFIC) \
                 between C_SignInit and C_Sign with cryptoki 0.12\n\
                 use an alg whose hashing mechanism the token offers (e.g. CKM_SHA256_RSA_PKCS \
                 for RS256), or a key without CKA_ALWAYS_AUTHENTICATE"
            ),
            Error::Key(e) => write!(f, "{e}"),
            Error::Call { function, rv } => write!(f, "{function} failed: {rv}"),
        }
    }
}

impl std::error::Error for Error {}
