//! The PKCS#11 side: load the module, pick the token, open a session, log in, find and
//! generate key pairs, sign. The only module that calls `cryptoki`; it knows nothing of JWT or
//! HTTP.

use std::cell::{OnceCell, RefCell};
use std::fmt;
use std::path::{Path, PathBuf};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::alg::{Curve, Hash, KeyKind, SignMechanism, ED25519_PARAMS_DER, MIN_RSA_BITS};
use crate::jwk::{hex, KeyError, PublicKey};
use crate::secret::Secret;
use crate::uri::{Pkcs11Uri, TokenFields};

mod error;
mod module;

pub use error::Error;
pub use module::{find_module_by_name, MODULE_DIRS};
use module::{load_module, resolve_module, retry_pause, select_token};

/// Where SoftHSM's module is found on common systems, tried in order when no module is given.
pub const SOFTHSM_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
];

/// How many times the open sequence is tried when a token answers with one of the transient
/// errors SoftHSM 2.6 gives under concurrent logins (see [`Error::is_transient`]).
/// Measured with 32 processes logging in to one SoftHSM token at once: six attempts left about
/// 1.5% of them failing, twelve left none (docs/benchmarks.md).
const OPEN_ATTEMPTS: u32 = 12;

/// A token label that matches nothing is retried only briefly: it is far more often a typo
/// than a token file being rewritten, and the user should not wait for the answer.
const NOT_FOUND_ATTEMPTS: u32 = 3;

/// How many times a C_Login that failed with a transient-looking error is tried again.
const MAX_LOGIN_RETRIES: u32 = 2;

/// Which token to open, and how.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The module; `None` looks for SoftHSM in [`SOFTHSM_PATHS`].
    pub module: Option<PathBuf>,
    /// The token label; `None` takes the only token present.
    pub token_label: Option<String>,
    /// A `pkcs11:` URI whose token attributes also select the token.
    pub uri: Option<Pkcs11Uri>,
    /// Keygen needs a read-write session; signing does not.
    pub read_write: bool,
    /// Log in even when the token says the next wrong PIN locks it (CKF_USER_PIN_FINAL_TRY).
    pub allow_final_pin_try: bool,
}

/// The CKF_USER_PIN_* flags of a token, read before logging in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinFlags {
    pub initialized: bool,
    pub count_low: bool,
    pub final_try: bool,
    pub locked: bool,
}

impl PinFlags {
    /// Whether a login may be tried in this state. A locked PIN, or one whose next wrong try
    /// locks it (unless the caller allows that), is never tried.
    pub fn check(self, token: &str, allow_final_try: bool) -> Result<(), Error> {
        if self.locked {
            return Err(Error::PinLocked);
        }
        if !self.initialized {
            return Err(Error::UserPinNotInitialized {
                token: token.to_owned(),
            });
        }
        if self.final_try && !allow_final_try {
            return Err(Error::PinFinalTry);
        }
        if self.final_try {
            log::warn!("token {token:?}: a wrong user PIN now locks it (CKF_USER_PIN_FINAL_TRY)");
        } else if self.count_low {
            log::warn!(
                "token {token:?} reports that a wrong user PIN was entered recently \
                 (CKF_USER_PIN_COUNT_LOW)"
            );
        }
        Ok(())
    }
}

/// Which key pair to use: by CKA_LABEL, CKA_ID, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySelector {
    pub label: Option<Vec<u8>>,
    pub id: Option<Vec<u8>>,
}

/// Token facts that are safe to show and log.
#[derive(Debug, Clone)]
pub struct TokenDescription {
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub slot_id: u64,
    pub login_required: bool,
    pub protected_authentication_path: bool,
}

/// CKA_* protection flags of a private key; `None` where the token did not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyFlags {
    pub sign: Option<bool>,
    pub sensitive: Option<bool>,
    pub extractable: Option<bool>,
    pub always_sensitive: Option<bool>,
    pub never_extractable: Option<bool>,
    pub always_authenticate: Option<bool>,
    pub private: Option<bool>,
    pub token: Option<bool>,
}

impl KeyFlags {
    /// True when the private key is, or once was, extractable: a copy may exist off the token.
    pub fn may_exist_off_token(&self) -> bool {
        self.extractable == Some(true)
            || self.never_extractable == Some(false)
            || self.always_sensitive == Some(false)
    }
}

/// Where the public half of a key pair came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicSource {
    PublicKeyObject,
    Certificate,
    PrivateKeyObject,
}

/// A key pair on the token: its private key object and its public key.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub label: Vec<u8>,
    pub id: Vec<u8>,
    pub public: PublicKey,
    pub public_source: PublicSource,
    pub certificate: Option<Vec<u8>>,
    pub flags: KeyFlags,
    private: Option<ObjectHandle>,
}

impl KeyPair {
    /// The label as text, with bytes that are not UTF-8 escaped.
    pub fn label_text(&self) -> String {
        escape_bytes(&self.label)
    }

    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }
}

/// What keygen makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    Rsa { bits: usize },
    Ec(Curve),
    Ed25519,
}

impl From<KeySpec> for KeyKind {
    fn from(spec: KeySpec) -> KeyKind {
        match spec {
            KeySpec::Rsa { bits } => KeyKind::Rsa { bits },
            KeySpec::Ec(curve) => KeyKind::Ec(curve),
            KeySpec::Ed25519 => KeyKind::Ed25519,
        }
    }
}

/// An open session on one token.
pub struct Token {
    // Declared before `ctx` so the session closes before the module is finalized.
    session: Session,
    ctx: Pkcs11,
    slot: Slot,
    description: TokenDescription,
    module_path: PathBuf,
    mechanisms: OnceCell<Vec<MechanismType>>,
    /// The PIN again, kept only until the key is known: a key with CKA_ALWAYS_AUTHENTICATE
    /// needs it once more, right before its signature (CKU_CONTEXT_SPECIFIC).
    context_pin: RefCell<Option<Secret>>,
    allow_final_pin_try: bool,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("module", &self.module_path)
            .field("token", &self.description)
            .finish()
    }
}

impl Token {
    /// Loads the module, finds the token, opens a session and, when `pin` is given or the
    /// token has a PIN pad, logs in.
    ///
    /// SoftHSM 2.6 rewrites its token file on every C_Login and drops its lock before the
    /// write lands; a process starting then sees no token or odd errors. Those answers are
    /// retried a few times from the start (finalize, initialize, find the token, log in). A
    /// wrong PIN is never retried.
    pub fn open(options: &OpenOptions, pin: Option<&Secret>) -> Result<Token, Error> {
        let mut attempt = 1;
        let mut failed_logins = 0;
        loop {
            // After a C_Login that failed oddly, the PIN is sent again only while the token
            // reports no recent failed login, and at most MAX_LOGIN_RETRIES times: a device
            // that answers a wrong PIN with CKR_GENERAL_ERROR must not be walked into a lock.
            match Token::open_once(options, pin, failed_logins > 0) {
                Ok(token) => return Ok(token),
                Err(err) if err.is_from_login() && failed_logins >= MAX_LOGIN_RETRIES => {
                    return Err(err)
                }
                Err(err) if err.is_transient() && attempt < err.open_attempts() => {
                    if err.is_from_login() {
                        failed_logins += 1;
                    }
                    let first_line = err.to_string();
                    let first_line = first_line.lines().next().unwrap_or_default();
                    log::info!(
                        "token open attempt {attempt} failed transiently ({first_line}); retrying"
                    );
                    std::thread::sleep(retry_pause(attempt));
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    fn open_once(
        options: &OpenOptions,
        pin: Option<&Secret>,
        login_retry: bool,
    ) -> Result<Token, Error> {
        let module_path = resolve_module(options.module.as_deref())?;
        let ctx = load_module(&module_path)?;
        let (slot, description) = select_token(&ctx, options)?;

        let session = if options.read_write {
            ctx.open_rw_session(slot)
        } else {
            ctx.open_ro_session(slot)
        }
        .map_err(|e| Error::ck("C_OpenSession", e))?;
        log::debug!(
            "opened session on slot {} (token {:?})",
            slot.id(),
            description.label
        );

        let token = Token {
            session,
            ctx,
            slot,
            description,
            module_path,
            mechanisms: OnceCell::new(),
            context_pin: RefCell::new(None),
            allow_final_pin_try: options.allow_final_pin_try,
        };
        if pin.is_some() || token.description.protected_authentication_path {
            token.login(pin, login_retry)?;
            *token.context_pin.borrow_mut() = pin.cloned();
        }
        Ok(token)
    }

    pub fn description(&self) -> &TokenDescription {
        &self.description
    }

    pub fn module_path(&self) -> &Path {
        &self.module_path
    }

    /// Logs the user in once. Already logged in is fine. The PIN is handed to the module and
    /// dropped (and wiped) right after.
    fn login(&self, pin: Option<&Secret>, login_retry: bool) -> Result<(), Error> {
        let info = self
            .ctx
            .get_token_info(self.slot)
            .map_err(|e| Error::ck("C_GetTokenInfo", e))?;
        let flags = PinFlags {
            initialized: info.user_pin_initialized(),
            count_low: info.user_pin_count_low(),
            final_try: info.user_pin_final_try(),
            locked: info.user_pin_locked(),
        };
        flags.check(&self.description.label, self.allow_final_pin_try)?;
        if login_retry && flags.count_low {
            return Err(Error::LoginNotRetried);
        }

        let auth = pin.map(|p| AuthPin::from(p.expose().to_owned()));
        if auth.is_none() && !info.protected_authentication_path() {
            return Err(Error::PinRequired);
        }
        match self.session.login(UserType::User, auth.as_ref()) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                log::debug!("logged in to token {:?}", self.description.label);
                Ok(())
            }
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(Error::PinIncorrect),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Error::PinLocked),
            Err(CkError::Pkcs11(RvError::PinLenRange, _)) => Err(Error::PinIncorrect),
            Err(e) => Err(Error::ck("C_Login", e)),
        }
    }

    /// Drops the PIN kept for a context-specific login: the key in use does not need it.
    fn forget_pin(&self) {
        self.context_pin.borrow_mut().take();
    }

    /// Finds the key pair whose private key matches `selector`. Needs a logged-in session on
    /// tokens that keep private keys private.
    pub fn find_key(&self, selector: &KeySelector) -> Result<KeyPair, Error> {
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        template.extend(selector_template(selector));
        let found = self.find(&template)?;
        let private = match found.as_slice() {
            [one] => *one,
            [] => {
                // Private keys are hidden until a login: without a PIN the missing piece is the
                // PIN, not the key.
                if !self.is_logged_in() && self.description.login_required {
                    return Err(Error::PinRequired);
                }
                return Err(Error::KeyNotFound {
                    wanted: describe_selector(selector),
                    available: self.private_key_names().unwrap_or_default(),
                    logged_in: self.is_logged_in(),
                });
            }
            many => {
                let mut names = Vec::new();
                for handle in many {
                    names.push(self.object_name_and_uri(*handle)?);
                }
                return Err(Error::SeveralKeys {
                    wanted: describe_selector(selector),
                    names,
                });
            }
        };
        let pair = self.key_pair(private)?;
        if pair.flags.always_authenticate != Some(true) {
            self.forget_pin();
        }
        Ok(pair)
    }

    /// Finds the public half of a key pair without logging in, when the token has a public key
    /// object or a certificate for it. `Ok(None)` when it has neither.
    pub fn find_public(&self, selector: &KeySelector) -> Result<Option<KeyPair>, Error> {
        self.forget_pin();
        let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
        template.extend(selector_template(selector));
        let found = self.find(&template)?;
        let [handle] = found.as_slice() else {
            return self.find_certificate(selector);
        };
        let attrs = self.attributes(*handle, &[AttributeType::Label, AttributeType::Id])?;
        let label = bytes_attr(&attrs, AttributeType::Label).unwrap_or_default();
        let id = bytes_attr(&attrs, AttributeType::Id).unwrap_or_default();
        let public = self.public_from_object(*handle)?;
        Ok(Some(KeyPair {
            certificate: None,
            label,
            id,
            public,
            public_source: PublicSource::PublicKeyObject,
            flags: KeyFlags::default(),
            private: None,
        }))
    }

    /// The public half from a certificate alone, for key pairs kept as a private key and a
    /// certificate (YubiKey PIV, many HSMs): certificates are public objects, so no login.
    fn find_certificate(&self, selector: &KeySelector) -> Result<Option<KeyPair>, Error> {
        let mut template = vec![Attribute::Class(ObjectClass::CERTIFICATE)];
        template.extend(selector_template(selector));
        let found = self.find(&template)?;
        let [handle] = found.as_slice() else {
            return Ok(None);
        };
        use AttributeType as A;
        let attrs = self.attributes(*handle, &[A::Label, A::Id, A::Value])?;
        let Some(cert) = bytes_attr(&attrs, A::Value) else {
            return Ok(None);
        };
        Ok(Some(KeyPair {
            public: PublicKey::from_certificate(&cert).map_err(Error::Key)?,
            certificate: Some(cert),
            label: bytes_attr(&attrs, A::Label).unwrap_or_default(),
            id: bytes_attr(&attrs, A::Id).unwrap_or_default(),
            public_source: PublicSource::Certificate,
            flags: KeyFlags::default(),
            private: None,
        }))
    }

    /// Every key pair whose private key is visible in this session.
    pub fn list_keys(&self) -> Result<Vec<Result<KeyPair, Error>>, Error> {
        self.forget_pin();
        let handles = self.find(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])?;
        Ok(handles.into_iter().map(|h| self.key_pair(h)).collect())
    }

    fn key_pair(&self, private: ObjectHandle) -> Result<KeyPair, Error> {
        use AttributeType as A;
        let wanted = [
            A::Label,
            A::Id,
            A::KeyType,
            A::Sign,
            A::Sensitive,
            A::Extractable,
            A::AlwaysSensitive,
            A::NeverExtractable,
            A::AlwaysAuthenticate,
            A::Private,
            A::Token,
        ];
        let attrs = self.attributes(private, &wanted)?;
        let label = bytes_attr(&attrs, A::Label).unwrap_or_default();
        let id = bytes_attr(&attrs, A::Id).unwrap_or_default();
        let flag = |t: AttributeType| {
            attrs.iter().find_map(|a| match (a, t) {
                (Attribute::Sign(v), A::Sign)
                | (Attribute::Sensitive(v), A::Sensitive)
                | (Attribute::Extractable(v), A::Extractable)
                | (Attribute::AlwaysSensitive(v), A::AlwaysSensitive)
                | (Attribute::NeverExtractable(v), A::NeverExtractable)
                | (Attribute::AlwaysAuthenticate(v), A::AlwaysAuthenticate)
                | (Attribute::Private(v), A::Private)
                | (Attribute::Token(v), A::Token) => Some(*v),
                _ => None,
            })
        };
        let flags = KeyFlags {
            sign: flag(A::Sign),
            sensitive: flag(A::Sensitive),
            extractable: flag(A::Extractable),
            always_sensitive: flag(A::AlwaysSensitive),
            never_extractable: flag(A::NeverExtractable),
            always_authenticate: flag(A::AlwaysAuthenticate),
            private: flag(A::Private),
            token: flag(A::Token),
        };
        let key_type = attrs.iter().find_map(|a| match a {
            Attribute::KeyType(k) => Some(*k),
            _ => None,
        });

        let (public, public_source, certificate) =
            self.public_for(private, key_type, &label, &id)?;
        Ok(KeyPair {
            label,
            id,
            public,
            public_source,
            certificate,
            flags,
            private: Some(private),
        })
    }

    /// The public key of a private key object: from the public key object with the same
    /// CKA_ID, else the certificate with that CKA_ID, else (RSA) the private object's own
    /// CKA_MODULUS and CKA_PUBLIC_EXPONENT.
    fn public_for(
        &self,
        private: ObjectHandle,
        key_type: Option<KeyType>,
        label: &[u8],
        id: &[u8],
    ) -> Result<(PublicKey, PublicSource, Option<Vec<u8>>), Error> {
        // The certificate is looked up only when there is no public key object: each
        // C_FindObjects makes SoftHSM re-read its token directory, and signing does not need
        // it. Callers that do (x5c, x5t) use `load_certificate`.
        let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
        if id.is_empty() {
            template.push(Attribute::Label(label.to_vec()));
        } else {
            template.push(Attribute::Id(id.to_vec()));
        }
        if let [handle] = self.find(&template)?.as_slice() {
            let public = self.public_from_object(*handle)?;
            return Ok((public, PublicSource::PublicKeyObject, None));
        }
        let certificate = self.certificate_for(id)?;
        if let Some(cert) = &certificate {
            let public = PublicKey::from_certificate(cert).map_err(Error::Key)?;
            return Ok((public, PublicSource::Certificate, certificate));
        }
        if key_type == Some(KeyType::RSA) {
            let attrs = self.attributes(
                private,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )?;
            let n = bytes_attr(&attrs, AttributeType::Modulus);
            let e = bytes_attr(&attrs, AttributeType::PublicExponent);
            if let (Some(n), Some(e)) = (n, e) {
                let public = PublicKey::rsa(&n, &e).map_err(Error::Key)?;
                return Ok((public, PublicSource::PrivateKeyObject, None));
            }
        }
        Err(Error::NoPublicKey {
            key: describe_object(label, id),
        })
    }

    /// Fills `key.certificate` from the certificate object with the key's CKA_ID, when the
    /// token has one and it was not read already.
    pub fn load_certificate(&self, key: &mut KeyPair) -> Result<(), Error> {
        if key.certificate.is_none() {
            key.certificate = self.certificate_for(&key.id)?;
        }
        Ok(())
    }

    fn certificate_for(&self, id: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if id.is_empty() {
            return Ok(None);
        }
        let template = [
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(id.to_vec()),
        ];
        let Some(handle) = self.find(&template)?.first().copied() else {
            return Ok(None);
        };
        let attrs = self.attributes(handle, &[AttributeType::Value])?;
        Ok(bytes_attr(&attrs, AttributeType::Value))
    }

    fn public_from_object(&self, handle: ObjectHandle) -> Result<PublicKey, Error> {
        use AttributeType as A;
        let attrs = self.attributes(handle, &[A::KeyType])?;
        let key_type = attrs.iter().find_map(|a| match a {
            Attribute::KeyType(k) => Some(*k),
            _ => None,
        });
        match key_type {
            Some(KeyType::RSA) => {
                let attrs = self.attributes(handle, &[A::Modulus, A::PublicExponent])?;
                let n = bytes_attr(&attrs, A::Modulus).unwrap_or_default();
                let e = bytes_attr(&attrs, A::PublicExponent).unwrap_or_default();
                PublicKey::rsa(&n, &e).map_err(Error::Key)
            }
            Some(KeyType::EC) | Some(KeyType::EC_EDWARDS) => {
                let attrs = self.attributes(handle, &[A::EcParams, A::EcPoint])?;
                let params = bytes_attr(&attrs, A::EcParams).unwrap_or_default();
                let point = bytes_attr(&attrs, A::EcPoint).unwrap_or_default();
                PublicKey::ec(&params, &point).map_err(Error::Key)
            }
            other => Err(Error::Key(KeyError::Unsupported(format!(
                "key type {}",
                other
                    .map(|k| k.to_string())
                    .unwrap_or_else(|| "unknown".into())
            )))),
        }
    }

    /// Generates a key pair on the token: the private key can sign and can never leave the
    /// token. Refuses a label already in use; on any failure after C_GenerateKeyPair, destroys
    /// what it made.
    pub fn generate(&self, spec: KeySpec, label: &str) -> Result<KeyPair, Error> {
        self.forget_pin();
        if let KeySpec::Rsa { bits } = spec {
            if bits < MIN_RSA_BITS {
                return Err(Error::Key(KeyError::Unsupported(format!(
                    "RSA keys of {bits} bits; use --bits 2048, 3072 or 4096"
                ))));
            }
        }
        let label_bytes = label.as_bytes().to_vec();
        // Held until this function returns: see `keygen_lock`.
        let _lock = self.keygen_lock();
        if !self
            .find(&[Attribute::Label(label_bytes.clone())])?
            .is_empty()
        {
            return Err(Error::LabelExists {
                label: label.to_owned(),
            });
        }
        let id = uuid::Uuid::new_v4().as_bytes().to_vec();

        let common = |private: bool| {
            vec![
                Attribute::Token(true),
                Attribute::Private(private),
                Attribute::Label(label_bytes.clone()),
                Attribute::Id(id.clone()),
            ]
        };
        // A signing key does nothing else: module defaults for decrypt, unwrap and derive
        // differ, and a key that can decrypt is a decryption oracle for whoever holds the PIN.
        let mut public_template = common(false);
        public_template.extend([
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Derive(false),
        ]);
        let mut private_template = common(true);
        private_template.extend([
            Attribute::Sign(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ]);
        let mechanism = match spec {
            KeySpec::Rsa { bits } => {
                public_template.push(Attribute::ModulusBits((bits as u64).into()));
                public_template.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                Mechanism::RsaPkcsKeyPairGen
            }
            KeySpec::Ec(curve) => {
                public_template.push(Attribute::EcParams(curve.params_der().to_vec()));
                Mechanism::EccKeyPairGen
            }
            KeySpec::Ed25519 => {
                public_template.push(Attribute::EcParams(ED25519_PARAMS_DER.to_vec()));
                Mechanism::EccEdwardsKeyPairGen
            }
        };

        // Some modules (SoftHSM 2.6 among them) generate with a mechanism they do not list;
        // the list is what the token promises, so it decides.
        let (mechanism_type, mechanism_name) = match spec {
            KeySpec::Rsa { .. } => (
                MechanismType::RSA_PKCS_KEY_PAIR_GEN,
                "CKM_RSA_PKCS_KEY_PAIR_GEN",
            ),
            KeySpec::Ec(_) => (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
            KeySpec::Ed25519 => (
                MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
                "CKM_EC_EDWARDS_KEY_PAIR_GEN",
            ),
        };
        if !self.mechanism_list()?.contains(&mechanism_type) {
            return Err(Error::MechanismMissing {
                alg: format!("generating a {} key pair", KeyKind::from(spec)),
                wanted: vec![mechanism_name],
            });
        }

        let (public, private) = self
            .session
            .generate_key_pair(&mechanism, &public_template, &private_template)
            .map_err(|e| match e {
                // A private token object needs a logged-in session.
                CkError::Pkcs11(RvError::UserNotLoggedIn, _) => Error::PinRequired,
                e => Error::ck("C_GenerateKeyPair", e),
            })?;
        let made = self.key_pair(private).and_then(|pair| {
            self.check_label_race(&label_bytes, &id)?;
            Ok(pair)
        });
        if made.is_err() {
            // Leave nothing half-made behind.
            let _ = self.session.destroy_object(private);
            let _ = self.session.destroy_object(public);
        }
        made
    }

    /// The label check and C_GenerateKeyPair are two calls, so two processes can both pass
    /// the check. On one host, an exclusive lock on a file named after the token serializes
    /// them (parallel CI jobs on one runner). Without the lock (another user's file, a
    /// read-only temp dir) keygen goes on: `check_label_race` still catches most races.
    fn keygen_lock(&self) -> Option<std::fs::File> {
        use sha2::Digest as _;
        let dir = std::env::var_os("XDG_RUNTIME_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let token = format!("{}\0{}", self.description.serial, self.description.label);
        let name = crate::jwk::hex(&sha2::Sha256::digest(token.as_bytes())[..8]);
        let path = dir.join(format!("p11jwt-keygen-{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .or_else(|_| std::fs::File::open(&path));
        match file.and_then(|f| f.lock().map(|()| f)) {
            Ok(file) => Some(file),
            Err(e) => {
                log::debug!("keygen goes on without the lock {}: {e}", path.display());
                None
            }
        }
    }

    /// The label check and C_GenerateKeyPair are two calls, so two processes can both pass
    /// the check. After generating, each looks again: when several private keys carry the
    /// label, only the one with the smallest CKA_ID stays; the others undo themselves.
    fn check_label_race(&self, label: &[u8], id: &[u8]) -> Result<(), Error> {
        let template = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.to_vec()),
        ];
        let mut ids = Vec::new();
        for handle in self.find(&template)? {
            let attrs = self.attributes(handle, &[AttributeType::Id])?;
            ids.push(bytes_attr(&attrs, AttributeType::Id).unwrap_or_default());
        }
        match ids.iter().min() {
            Some(first) if ids.len() > 1 && first.as_slice() != id => Err(Error::LabelExists {
                label: escape_bytes(label),
            }),
            _ => Ok(()),
        }
    }

    /// Whether the token offers a mechanism; the list is read once per session.
    pub fn has_mechanism(&self, mechanism: SignMechanism) -> Result<bool, Error> {
        let wanted = mechanism_type(mechanism);
        Ok(self.mechanism_list()?.contains(&wanted))
    }

    fn mechanism_list(&self) -> Result<&[MechanismType], Error> {
        if let Some(list) = self.mechanisms.get() {
            return Ok(list);
        }
        let list = self
            .ctx
            .get_mechanism_list(self.slot)
            .map_err(|e| Error::ck("C_GetMechanismList", e))?;
        Ok(self.mechanisms.get_or_init(|| list))
    }

    /// C_Sign with `mechanism` over `data` (already a digest for the digest mechanisms).
    pub fn sign(
        &self,
        key: &KeyPair,
        mechanism: SignMechanism,
        data: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let handle = key.private.ok_or_else(|| Error::NoPrivateKey {
            key: describe_object(&key.label, &key.id),
        })?;
        let pss = |h: Hash| PkcsPssParams {
            hash_alg: hash_mechanism(h),
            mgf: mgf1(h),
            s_len: (h.len() as u64).into(),
        };
        let ck_mechanism = match mechanism {
            SignMechanism::RsaPkcs(_) => Mechanism::RsaPkcs,
            SignMechanism::RsaPkcsPss(h) => Mechanism::RsaPkcsPss(pss(h)),
            SignMechanism::Ecdsa(_) => Mechanism::Ecdsa,
            SignMechanism::EdDsa => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
            SignMechanism::ShaRsaPkcs(Hash::Sha256) => Mechanism::Sha256RsaPkcs,
            SignMechanism::ShaRsaPkcs(Hash::Sha384) => Mechanism::Sha384RsaPkcs,
            SignMechanism::ShaRsaPkcs(Hash::Sha512) => Mechanism::Sha512RsaPkcs,
            SignMechanism::ShaRsaPkcsPss(Hash::Sha256) => {
                Mechanism::Sha256RsaPkcsPss(pss(Hash::Sha256))
            }
            SignMechanism::ShaRsaPkcsPss(Hash::Sha384) => {
                Mechanism::Sha384RsaPkcsPss(pss(Hash::Sha384))
            }
            SignMechanism::ShaRsaPkcsPss(Hash::Sha512) => {
                Mechanism::Sha512RsaPkcsPss(pss(Hash::Sha512))
            }
            SignMechanism::EcdsaSha(Hash::Sha256) => Mechanism::EcdsaSha256,
            SignMechanism::EcdsaSha(Hash::Sha384) => Mechanism::EcdsaSha384,
            SignMechanism::EcdsaSha(Hash::Sha512) => Mechanism::EcdsaSha512,
        };
        let sign_error = |function: &'static str| {
            move |e: CkError| match e {
                CkError::Pkcs11(RvError::KeyFunctionNotPermitted, _) => Error::NotSigningKey {
                    key: describe_object(&key.label, &key.id),
                },
                CkError::Pkcs11(RvError::UserNotLoggedIn, _) => Error::PinRequired,
                e => Error::ck(function, e),
            }
        };
        if key.flags.always_authenticate != Some(true) {
            return self
                .session
                .sign(&ck_mechanism, handle, data)
                .map_err(sign_error("C_Sign"));
        }

        // CKA_ALWAYS_AUTHENTICATE: C_SignInit, C_Login(CKU_CONTEXT_SPECIFIC), then the data.
        // cryptoki 0.12's single-part `sign` runs C_SignInit and C_Sign in one call, leaving no
        // room for the login, so only the multi-part mechanisms (those that hash on the token)
        // can be used here.
        if !hashes_on_token(mechanism) {
            return Err(Error::AlwaysAuthenticateSinglePart {
                key: describe_object(&key.label, &key.id),
                mechanism: mechanism.name(),
            });
        }
        self.session
            .sign_init(&ck_mechanism, handle)
            .map_err(sign_error("C_SignInit"))?;
        self.context_login()?;
        self.session
            .sign_update(data)
            .map_err(sign_error("C_SignUpdate"))?;
        self.session.sign_final().map_err(sign_error("C_SignFinal"))
    }

    /// The second login a CKA_ALWAYS_AUTHENTICATE key asks for, with the PIN kept from the
    /// first; the PIN is wiped right after.
    fn context_login(&self) -> Result<(), Error> {
        let pin = self.context_pin.borrow_mut().take();
        let auth = pin.as_ref().map(|p| AuthPin::from(p.expose().to_owned()));
        drop(pin);
        if auth.is_none() && !self.description.protected_authentication_path {
            return Err(Error::PinRequired);
        }
        match self.session.login(UserType::ContextSpecific, auth.as_ref()) {
            Ok(()) => Ok(()),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(Error::PinIncorrect),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Error::PinLocked),
            Err(e) => Err(Error::ck("C_Login(CKU_CONTEXT_SPECIFIC)", e)),
        }
    }

    /// Whether the session is logged in as the user (login state belongs to the token).
    pub fn is_logged_in(&self) -> bool {
        use cryptoki::session::SessionState;
        matches!(
            self.session.get_session_info().map(|i| i.session_state()),
            Ok(SessionState::RoUser | SessionState::RwUser)
        )
    }

    fn find(&self, template: &[Attribute]) -> Result<Vec<ObjectHandle>, Error> {
        self.session
            .find_objects(template)
            .map_err(|e| Error::ck("C_FindObjects", e))
    }

    fn attributes(
        &self,
        handle: ObjectHandle,
        types: &[AttributeType],
    ) -> Result<Vec<Attribute>, Error> {
        self.session
            .get_attributes(handle, types)
            .map_err(|e| Error::ck("C_GetAttributeValue", e))
    }

    fn object_name(&self, handle: ObjectHandle) -> Result<String, Error> {
        let attrs = self.attributes(handle, &[AttributeType::Label, AttributeType::Id])?;
        let label = bytes_attr(&attrs, AttributeType::Label).unwrap_or_default();
        let id = bytes_attr(&attrs, AttributeType::Id).unwrap_or_default();
        Ok(describe_object(&label, &id))
    }

    /// An object's name and the `pkcs:11` URI that selects exactly it.
    fn object_name_and_uri(&self, handle: ObjectHandle) -> Result<String, Error> {
        let attrs = self.attributes(handle, &[AttributeType::Label, AttributeType::Id])?;
        let label = bytes_attr(&attrs, AttributeType::Label).unwrap_or_default();
        let id = bytes_attr(&attrs, AttributeType::Id).unwrap_or_default();
        let d = &self.description;
        let fields = TokenFields {
            label: &d.label,
            manufacturer: &d.manufacturer,
            serial: &d.serial,
            model: &d.model,
        };
        let uri = Pkcs11Uri::for_key(&fields, Some(&label), Some(&id));
        Ok(format!("{}  {uri}", describe_object(&label, &id)))
    }

    fn private_key_names(&self) -> Result<Vec<String>, Error> {
        let handles = self.find(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])?;
        handles.into_iter().map(|h| self.object_name(h)).collect()
    }
}

fn selector_template(selector: &KeySelector) -> Vec<Attribute> {
    let mut template = Vec::new();
    if let Some(label) = &selector.label {
        template.push(Attribute::Label(label.clone()));
    }
    if let Some(id) = &selector.id {
        template.push(Attribute::Id(id.clone()));
    }
    template
}

fn describe_selector(selector: &KeySelector) -> String {
    match (&selector.label, &selector.id) {
        (Some(l), Some(i)) => format!("label {} and id {}", quoted(l), hex(i)),
        (Some(l), None) => format!("label {}", quoted(l)),
        (None, Some(i)) => format!("id {}", hex(i)),
        (None, None) => "any key".into(),
    }
}

fn describe_object(label: &[u8], id: &[u8]) -> String {
    format!("{} (id {})", quoted(label), hex(id))
}

/// A label in quotes, escaped once (Debug formatting would escape the escapes again).
fn quoted(bytes: &[u8]) -> String {
    format!("\"{}\"", escape_bytes(bytes))
}

/// Text as it is when it is UTF-8 without control characters, escaped otherwise, so that
/// labels from a device cannot drive the terminal.
pub fn escape_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => bytes.escape_ascii().to_string(),
    }
}

fn bytes_attr(attrs: &[Attribute], wanted: AttributeType) -> Option<Vec<u8>> {
    attrs.iter().find_map(|a| match (a, wanted) {
        (Attribute::Label(v), AttributeType::Label)
        | (Attribute::Id(v), AttributeType::Id)
        | (Attribute::Modulus(v), AttributeType::Modulus)
        | (Attribute::PublicExponent(v), AttributeType::PublicExponent)
        | (Attribute::EcParams(v), AttributeType::EcParams)
        | (Attribute::EcPoint(v), AttributeType::EcPoint)
        | (Attribute::Value(v), AttributeType::Value) => Some(v.clone()),
        _ => None,
    })
}

fn hash_mechanism(h: Hash) -> MechanismType {
    match h {
        Hash::Sha256 => MechanismType::SHA256,
        Hash::Sha384 => MechanismType::SHA384,
        Hash::Sha512 => MechanismType::SHA512,
    }
}

fn mgf1(h: Hash) -> PkcsMgfType {
    match h {
        Hash::Sha256 => PkcsMgfType::MGF1_SHA256,
        Hash::Sha384 => PkcsMgfType::MGF1_SHA384,
        Hash::Sha512 => PkcsMgfType::MGF1_SHA512,
    }
}

/// The mechanisms that hash on the token also take their data in parts (C_SignUpdate);
/// CKM_RSA_PKCS, CKM_RSA_PKCS_PSS, CKM_ECDSA and CKM_EDDSA are single-part only.
fn hashes_on_token(mechanism: SignMechanism) -> bool {
    use SignMechanism::*;
    matches!(mechanism, ShaRsaPkcs(_) | ShaRsaPkcsPss(_) | EcdsaSha(_))
}

fn mechanism_type(mechanism: SignMechanism) -> MechanismType {
    use SignMechanism::*;
    match mechanism {
        RsaPkcs(_) => MechanismType::RSA_PKCS,
        RsaPkcsPss(_) => MechanismType::RSA_PKCS_PSS,
        Ecdsa(_) => MechanismType::ECDSA,
        EdDsa => MechanismType::EDDSA,
        ShaRsaPkcs(Hash::Sha256) => MechanismType::SHA256_RSA_PKCS,
        ShaRsaPkcs(Hash::Sha384) => MechanismType::SHA384_RSA_PKCS,
        ShaRsaPkcs(Hash::Sha512) => MechanismType::SHA512_RSA_PKCS,
        ShaRsaPkcsPss(Hash::Sha256) => MechanismType::SHA256_RSA_PKCS_PSS,
        ShaRsaPkcsPss(Hash::Sha384) => MechanismType::SHA384_RSA_PKCS_PSS,
        ShaRsaPkcsPss(Hash::Sha512) => MechanismType::SHA512_RSA_PKCS_PSS,
        EcdsaSha(Hash::Sha256) => MechanismType::ECDSA_SHA256,
        EcdsaSha(Hash::Sha384) => MechanismType::ECDSA_SHA384,
        EcdsaSha(Hash::Sha512) => MechanismType::ECDSA_SHA512,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    fn from(rv: RvError) -> Error {
        Error::ck("C_Sign", CkError::Pkcs11(rv, Function::Sign))
    }

    #[test]
    fn a_lost_device_or_session_is_named_as_such() {
        // Pulling a token out mid-run cannot be staged on SoftHSM; the mapping is what we own.
        for rv in [
            RvError::DeviceRemoved,
            RvError::SessionHandleInvalid,
            RvError::TokenNotPresent,
            RvError::SessionClosed,
        ] {
            let err = from(rv);
            assert!(matches!(err, Error::DeviceLost { .. }), "{err:?}");
            assert!(err.to_string().contains("reconnect"), "{err}");
        }
        assert_eq!(from(RvError::DeviceRemoved).to_string().lines().count(), 2);
    }

    #[test]
    fn other_return_values_keep_the_function_and_ckr_name() {
        let err = from(RvError::MechanismInvalid);
        assert_eq!(err.to_string(), "C_Sign failed: CKR_MECHANISM_INVALID");
        assert!(!err.is_transient());
        assert!(!Error::PinIncorrect.is_transient());
    }

    #[test]
    fn pin_flags_decide_before_any_login() {
        let ready = PinFlags {
            initialized: true,
            ..PinFlags::default()
        };
        assert!(ready.check("t", false).is_ok());
        let low = PinFlags {
            count_low: true,
            ..ready
        };
        assert!(low.check("t", false).is_ok());
        let final_try = PinFlags {
            final_try: true,
            ..ready
        };
        assert!(matches!(
            final_try.check("t", false),
            Err(Error::PinFinalTry)
        ));
        assert!(final_try.check("t", true).is_ok());
        let locked = PinFlags {
            locked: true,
            ..final_try
        };
        assert!(matches!(locked.check("t", true), Err(Error::PinLocked)));
    }

    #[test]
    fn labels_from_a_device_are_escaped_once() {
        assert_eq!(escape_bytes(b"plain"), "plain");
        assert_eq!(escape_bytes(b"k\xff\x1b"), "k\\xff\\x1b");
        assert_eq!(quoted(b"k\xff"), "\"k\\xff\"");
    }
}
