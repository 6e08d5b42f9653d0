//! JWS `alg` values and what each one needs from a key and from a PKCS#11 token.
//!
//! This is the one place where the JOSE vocabulary (RFC 7518, RFC 8037) meets the PKCS#11 one:
//! every other module asks this table which key type, digest and mechanism an `alg` takes.
//! No I/O happens here.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A JWS signature algorithm that p11jwt can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
}

/// Every algorithm, in the order `--help` and the docs list them.
pub const ALL: [Alg; 10] = [
    Alg::RS256,
    Alg::RS384,
    Alg::RS512,
    Alg::PS256,
    Alg::PS384,
    Alg::PS512,
    Alg::ES256,
    Alg::ES384,
    Alg::ES512,
    Alg::EdDSA,
];

/// The SHA-2 digests the JWS algorithms use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// NIST curves, named as JWK `crv` names them (RFC 7518 §6.2.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    P256,
    P384,
    P521,
}

/// What a key is, as far as choosing an `alg` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Rsa { bits: usize },
    Ec(Curve),
    Ed25519,
}

/// How the token is asked to sign. `Digest*` variants take a digest computed here; the others
/// take the whole signing input and hash it on the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignMechanism {
    /// CKM_RSA_PKCS over DER DigestInfo || digest (RFC 8017 §9.2).
    RsaPkcs(Hash),
    /// CKM_RSA_PKCS_PSS over the digest, MGF1 with the same hash, salt = hash length
    /// (RFC 7518 §3.5).
    RsaPkcsPss(Hash),
    /// CKM_ECDSA over the digest.
    Ecdsa(Hash),
    /// CKM_EDDSA over the message (pure Ed25519, RFC 8032).
    EdDsa,
    /// CKM_SHA{256,384,512}_RSA_PKCS over the message.
    ShaRsaPkcs(Hash),
    /// CKM_SHA{256,384,512}_RSA_PKCS_PSS over the message.
    ShaRsaPkcsPss(Hash),
    /// CKM_ECDSA_SHA{256,384,512} over the message.
    EcdsaSha(Hash),
}

/// RSA keys shorter than this are refused (RFC 7518 §3.3 and §3.5).
pub const MIN_RSA_BITS: usize = 2048;

/// RSA keys longer than this are refused: the in-process signature check (ring) stops here,
/// and no provider we know of accepts more.
pub const MAX_RSA_BITS: usize = 8192;

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::ES512 => "ES512",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// The digest the signature covers. EdDSA hashes inside the algorithm itself; SHA-512 is
    /// what Ed25519 uses internally, which callers never need.
    pub fn hash(self) -> Option<Hash> {
        match self {
            Alg::RS256 | Alg::PS256 | Alg::ES256 => Some(Hash::Sha256),
            Alg::RS384 | Alg::PS384 | Alg::ES384 => Some(Hash::Sha384),
            Alg::RS512 | Alg::PS512 | Alg::ES512 => Some(Hash::Sha512),
            Alg::EdDSA => None,
        }
    }

    /// The default `alg` for a key: RSA -> RS256, each curve -> its ES alg, Ed25519 -> EdDSA.
    pub fn default_for(kind: KeyKind) -> Alg {
        match kind {
            KeyKind::Rsa { .. } => Alg::RS256,
            KeyKind::Ec(Curve::P256) => Alg::ES256,
            KeyKind::Ec(Curve::P384) => Alg::ES384,
            KeyKind::Ec(Curve::P521) => Alg::ES512,
            KeyKind::Ed25519 => Alg::EdDSA,
        }
    }

    /// The algorithms a key can produce, in the order they are usually preferred.
    pub fn fitting(kind: KeyKind) -> Vec<Alg> {
        ALL.iter().copied().filter(|alg| alg.fits(kind)).collect()
    }

    /// Whether this `alg` can be made with `kind`; the error names the key and what it can do.
    pub fn check_key(self, kind: KeyKind) -> Result<(), AlgError> {
        if let KeyKind::Rsa { bits } = kind {
            if bits < MIN_RSA_BITS && self.is_rsa() {
                return Err(AlgError::RsaTooSmall { bits });
            }
            if bits > MAX_RSA_BITS && self.is_rsa() {
                return Err(AlgError::RsaTooLarge { bits });
            }
        }
        if self.fits(kind) {
            return Ok(());
        }
        Err(AlgError::KeyMismatch {
            alg: self,
            kind,
            fitting: Alg::fitting(kind),
        })
    }

    fn is_rsa(self) -> bool {
        matches!(
            self,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512
        )
    }

    /// The key-type rule alone: RSA of at least 2048 bits for RS*/PS* (RFC 7518 §3.3, §3.5),
    /// one curve per ES alg (§3.4), Ed25519 for EdDSA (RFC 8037 §3.1).
    fn fits(self, kind: KeyKind) -> bool {
        match (self, kind) {
            (_, KeyKind::Rsa { bits }) => {
                self.is_rsa() && (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits)
            }
            (Alg::ES256, KeyKind::Ec(Curve::P256))
            | (Alg::ES384, KeyKind::Ec(Curve::P384))
            | (Alg::ES512, KeyKind::Ec(Curve::P521))
            | (Alg::EdDSA, KeyKind::Ed25519) => true,
            _ => false,
        }
    }

    /// The mechanisms that make this `alg`: first the one fed a local digest, then the combined
    /// one that hashes on the token (for devices that offer only that).
    pub fn mechanisms(self) -> [SignMechanism; 2] {
        use SignMechanism::*;
        match (self, self.hash()) {
            (Alg::EdDSA, _) | (_, None) => [EdDsa, EdDsa],
            (Alg::RS256 | Alg::RS384 | Alg::RS512, Some(h)) => [RsaPkcs(h), ShaRsaPkcs(h)],
            (Alg::PS256 | Alg::PS384 | Alg::PS512, Some(h)) => [RsaPkcsPss(h), ShaRsaPkcsPss(h)],
            (Alg::ES256 | Alg::ES384 | Alg::ES512, Some(h)) => [Ecdsa(h), EcdsaSha(h)],
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Alg {
    type Err = AlgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // JWS alg values are case-sensitive (RFC 7515 §4.1.1).
        ALL.iter()
            .copied()
            .find(|alg| alg.as_str() == s)
            .ok_or_else(|| AlgError::Unknown(s.to_owned()))
    }
}

impl Hash {
    /// Digest length in bytes. (A digest size, not a container: no `is_empty`.)
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "SHA-256",
            Hash::Sha384 => "SHA-384",
            Hash::Sha512 => "SHA-512",
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// The DER DigestInfo prefix that CKM_RSA_PKCS needs in front of the digest
    /// (RFC 8017 §9.2, note 1).
    pub fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

impl Curve {
    /// JWK `crv` (RFC 7518 §6.2.1.1).
    pub fn jwk_name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// Bytes of one coordinate, and of r or s in a JWS signature (RFC 7518 §3.4).
    pub fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// DER of the named-curve OID, as CKA_EC_PARAMS holds it.
    pub fn params_der(self) -> &'static [u8] {
        match self {
            // 1.2.840.10045.3.1.7
            Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            // 1.3.132.0.34
            Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            // 1.3.132.0.35
            Curve::P521 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        }
    }
}

/// DER of id-Ed25519 (1.3.101.112, RFC 8410), as CKA_EC_PARAMS holds it for CKK_EC_EDWARDS.
pub const ED25519_PARAMS_DER: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA {bits}"),
            KeyKind::Ec(curve) => write!(f, "EC {}", curve.jwk_name()),
            KeyKind::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

impl SignMechanism {
    /// The PKCS#11 name, for messages.
    pub fn name(self) -> &'static str {
        use SignMechanism::*;
        match self {
            RsaPkcs(_) => "CKM_RSA_PKCS",
            RsaPkcsPss(_) => "CKM_RSA_PKCS_PSS",
            Ecdsa(_) => "CKM_ECDSA",
            EdDsa => "CKM_EDDSA",
            ShaRsaPkcs(Hash::Sha256) => "CKM_SHA256_RSA_PKCS",
            ShaRsaPkcs(Hash::Sha384) => "CKM_SHA384_RSA_PKCS",
            ShaRsaPkcs(Hash::Sha512) => "CKM_SHA512_RSA_PKCS",
            ShaRsaPkcsPss(Hash::Sha256) => "CKM_SHA256_RSA_PKCS_PSS",
            ShaRsaPkcsPss(Hash::Sha384) => "CKM_SHA384_RSA_PKCS_PSS",
            ShaRsaPkcsPss(Hash::Sha512) => "CKM_SHA512_RSA_PKCS_PSS",
            EcdsaSha(Hash::Sha256) => "CKM_ECDSA_SHA256",
            EcdsaSha(Hash::Sha384) => "CKM_ECDSA_SHA384",
            EcdsaSha(Hash::Sha512) => "CKM_ECDSA_SHA512",
        }
    }

    /// The bytes handed to C_Sign for this signing input.
    pub fn sign_input(self, signing_input: &[u8]) -> Vec<u8> {
        use SignMechanism::*;
        match self {
            RsaPkcs(h) => {
                let mut data = h.digest_info_prefix().to_vec();
                data.extend_from_slice(&h.digest(signing_input));
                data
            }
            RsaPkcsPss(h) | Ecdsa(h) => h.digest(signing_input),
            EdDsa | ShaRsaPkcs(_) | ShaRsaPkcsPss(_) | EcdsaSha(_) => signing_input.to_vec(),
        }
    }
}

/// Why an `alg` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlgError {
    Unknown(String),
    RsaTooSmall {
        bits: usize,
    },
    RsaTooLarge {
        bits: usize,
    },
    KeyMismatch {
        alg: Alg,
        kind: KeyKind,
        fitting: Vec<Alg>,
    },
}

impl fmt::Display for AlgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlgError::Unknown(s) => {
                let names: Vec<&str> = ALL.iter().map(|a| a.as_str()).collect();
                write!(f, "unknown alg {s:?}; use one of {}", names.join(", "))
            }
            AlgError::RsaTooSmall { bits } => write!(
                f,
                "the RSA key has {bits} bits, fewer than the {MIN_RSA_BITS} that RS*/PS* require\n\
                 make a new key with `p11jwt keygen --bits 2048` (4096 recommended)"
            ),
            AlgError::RsaTooLarge { bits } => write!(
                f,
                "the RSA key has {bits} bits, more than the {MAX_RSA_BITS} p11jwt can check its \
                 signatures with\nuse a key of 2048 to 4096 bits (`p11jwt keygen --bits 4096`)"
            ),
            AlgError::KeyMismatch { alg, kind, fitting } => {
                let names: Vec<&str> = fitting.iter().map(|a| a.as_str()).collect();
                write!(
                    f,
                    "alg {alg} does not fit this {kind} key; it can make {}\n\
                     pass one of those with --alg, or choose another key",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                )
            }
        }
    }
}

impl std::error::Error for AlgError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for alg in ALL {
            assert_eq!(alg.as_str().parse::<Alg>(), Ok(alg));
        }
        assert!("rs256".parse::<Alg>().is_err());
    }

    #[test]
    fn refuses_es384_on_p256_key() {
        let err = Alg::ES384.check_key(KeyKind::Ec(Curve::P256)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("EC P-256"), "{text}");
        assert!(text.contains("ES256"), "{text}");
    }

    #[test]
    fn every_misfit_names_the_algs_the_key_can_make() {
        // Regression: check_key and fitting used to call each other without end.
        let kinds = [
            KeyKind::Rsa { bits: 2048 },
            KeyKind::Rsa { bits: 1024 },
            KeyKind::Ec(Curve::P256),
            KeyKind::Ec(Curve::P384),
            KeyKind::Ec(Curve::P521),
            KeyKind::Ed25519,
        ];
        for kind in kinds {
            for alg in ALL {
                match alg.check_key(kind) {
                    Ok(()) => assert!(Alg::fitting(kind).contains(&alg)),
                    Err(AlgError::KeyMismatch { fitting, .. }) => {
                        assert_eq!(fitting, Alg::fitting(kind));
                        assert!(!fitting.contains(&alg));
                    }
                    Err(AlgError::RsaTooSmall { bits }) => assert_eq!(bits, 1024),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert_eq!(Alg::fitting(KeyKind::Ec(Curve::P521)), [Alg::ES512]);
        assert!(Alg::fitting(KeyKind::Rsa { bits: 1024 }).is_empty());
    }

    #[test]
    fn refuses_rsa_under_2048_bits() {
        let err = Alg::RS256
            .check_key(KeyKind::Rsa { bits: 1024 })
            .unwrap_err();
        assert_eq!(err, AlgError::RsaTooSmall { bits: 1024 });
    }

    #[test]
    fn refuses_rsa_over_8192_bits() {
        let err = Alg::PS256
            .check_key(KeyKind::Rsa { bits: 8704 })
            .unwrap_err();
        assert_eq!(err, AlgError::RsaTooLarge { bits: 8704 });
        assert!(Alg::fitting(KeyKind::Rsa { bits: 8704 }).is_empty());
        assert!(Alg::RS256.check_key(KeyKind::Rsa { bits: 8192 }).is_ok());
    }

    #[test]
    fn digest_info_prefix_announces_digest_length() {
        for h in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            let prefix = h.digest_info_prefix();
            // Last byte is the OCTET STRING length; second byte the SEQUENCE length.
            assert_eq!(prefix[prefix.len() - 1] as usize, h.len());
            assert_eq!(prefix[1] as usize, prefix.len() - 2 + h.len());
        }
    }

    #[test]
    fn rsa_pkcs_input_is_digest_info() {
        let input = SignMechanism::RsaPkcs(Hash::Sha256).sign_input(b"abc");
        assert_eq!(input.len(), 19 + 32);
        assert_eq!(&input[19..], &Hash::Sha256.digest(b"abc")[..]);
    }
}
