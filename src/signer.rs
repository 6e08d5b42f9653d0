//! A key pair on a token, bound to one `alg` and `kid`: picks the mechanism, hashes locally,
//! has the token sign, puts the signature in its JWS form, and checks it before it leaves.

use std::cell::Cell;

use crate::alg::{Alg, KeyKind, SignMechanism};
use crate::assertion::{ecdsa_jws_candidates, JwsSigner};
use crate::jwk::KeyError;
use crate::token::{Error, KeyPair, Token};

pub struct Signer<'t> {
    token: &'t Token,
    key: &'t KeyPair,
    alg: Alg,
    kid: String,
    mechanism: SignMechanism,
    checks: Checks,
    checked_once: Cell<bool>,
}

/// How often the in-process signature check runs.
///
/// RSA signatures are always checked: a faulty RSA-CRT signature, once published, can reveal
/// the private key (the Bellcore attack), and checking one costs a few percent of making it.
/// For ECDSA and EdDSA, what the check catches (a certificate paired with another key, a
/// module returning an unexpected encoding or ignoring parameters) is a property of the device
/// and key, so the first signature of a signer tells; a faulty ECDSA signature reveals nothing
/// and is refused by the server. Checking every one costs more than SoftHSM's signature itself
/// (docs/benchmarks.md), so by default only the first is checked, and every signature whose
/// encoding is ambiguous. A one-shot process such as the CLI checks its one signature either
/// way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checks {
    /// Every signature.
    Every,
    /// RSA: every signature; ECDSA and EdDSA: the first one this signer makes (the default).
    #[default]
    FirstForEc,
}

impl<'t> Signer<'t> {
    /// Binds `key` to `alg` (default: the key's own, see [`Alg::default_for`]) and `kid`
    /// (default: the RFC 7638 thumbprint, so `jwk` and `assert` agree with nothing stored).
    /// Refuses an `alg` that does not fit the key before anything is signed: the error is
    /// [`crate::Error::Alg`], naming the key's type and the algs it can make.
    pub fn new(
        token: &'t Token,
        key: &'t KeyPair,
        alg: Option<Alg>,
        kid: Option<String>,
    ) -> Result<Signer<'t>, crate::Error> {
        let kind = key.public.kind();
        let alg = alg.unwrap_or_else(|| Alg::default_for(kind));
        alg.check_key(kind)?;

        // Prefer hashing here and signing the digest; fall back to the mechanism that hashes on
        // the token when that is all the token offers.
        let mut candidates = alg.mechanisms();
        // A CKA_ALWAYS_AUTHENTICATE key needs a login between C_SignInit and the data, which
        // only the multi-part mechanisms (those that hash on the token) allow here.
        if key.flags.always_authenticate == Some(true) {
            candidates.reverse();
        }
        let mut mechanism = None;
        for candidate in candidates {
            if token.has_mechanism(candidate)? {
                mechanism = Some(candidate);
                break;
            }
        }
        let mut wanted: Vec<&'static str> = candidates.iter().map(|m| m.name()).collect();
        // EdDSA has one mechanism, listed twice in the table.
        wanted.dedup();
        let mechanism = mechanism.ok_or_else(|| Error::MechanismMissing {
            alg: alg.to_string(),
            wanted,
        })?;
        log::debug!(
            "{alg} with {} on key {}",
            mechanism.name(),
            key.label_text()
        );

        let kid = kid.unwrap_or_else(|| key.public.thumbprint());
        Ok(Signer {
            token,
            key,
            alg,
            kid,
            mechanism,
            checks: Checks::default(),
            checked_once: Cell::new(false),
        })
    }

    /// Sets how often signatures are checked in-process; see [`Checks`].
    pub fn with_checks(mut self, checks: Checks) -> Self {
        self.checks = checks;
        self
    }

    pub fn mechanism(&self) -> SignMechanism {
        self.mechanism
    }
}

impl JwsSigner for Signer<'_> {
    type Error = Error;

    fn alg(&self) -> Alg {
        self.alg
    }

    fn kid(&self) -> &str {
        &self.kid
    }

    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, Error> {
        let data = self.mechanism.sign_input(signing_input);
        let raw = self.token.sign(self.key, self.mechanism, &data)?;

        // Every signature is checked against the public key before it is used: a device that
        // ignores the PSS salt length, or a certificate paired with another key, fails here.
        let kind = self.key.public.kind();
        let mut candidates = match kind {
            KeyKind::Ec(curve) => ecdsa_jws_candidates(curve, &raw),
            _ => vec![raw],
        };
        let skip_check = self.checks == Checks::FirstForEc
            && !matches!(kind, KeyKind::Rsa { .. })
            && self.checked_once.get();
        // Only an unambiguous signature skips the check: a DER signature as long as r || s has
        // two readings, and only verification tells which one is right.
        if skip_check && candidates.len() == 1 {
            return Ok(candidates.swap_remove(0));
        }
        let mut last = KeyError::BadSignature(format!(
            "{}: the token returned a signature of an unexpected length",
            self.alg
        ));
        for candidate in candidates {
            match self.key.public.verify(self.alg, signing_input, &candidate) {
                Ok(()) => {
                    self.checked_once.set(true);
                    return Ok(candidate);
                }
                Err(e) => last = e,
            }
        }
        Err(Error::Key(last))
    }
}
