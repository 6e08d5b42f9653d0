//! Public keys as JWKs (RFC 7517, RFC 7518 §6, RFC 8037), their RFC 7638 thumbprints, and the
//! in-process check of a signature against them.
//!
//! Key material arrives here in the shapes tokens hand it out (big-endian integers, EC points
//! with or without their OCTET STRING wrapper, certificates) and leaves in the exact shapes JOSE
//! requires. This module never signs.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use crate::alg::{Alg, Curve, KeyKind, ED25519_PARAMS_DER};

/// A public key, held in the exact JWK encoding.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Modulus and exponent, big-endian, without leading zero octets (RFC 7518 §6.3.1).
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Affine coordinates, each exactly the curve's field length (RFC 7518 §6.2.1.2).
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    /// The 32-byte public key (RFC 8037 §2).
    Ed25519 { x: [u8; 32] },
}

/// Extra members of a JWK beyond the key itself.
#[derive(Debug, Clone, Default)]
pub struct JwkExtras<'a> {
    pub alg: Option<Alg>,
    pub kid: Option<&'a str>,
    /// DER certificates for `x5c`; the first one also gives `x5t#S256`.
    pub x5c: &'a [Vec<u8>],
}

impl PublicKey {
    /// An RSA key from the big-endian integers a token holds (CKA_MODULUS,
    /// CKA_PUBLIC_EXPONENT), which may carry leading zero octets.
    pub fn rsa(modulus: &[u8], exponent: &[u8]) -> Result<PublicKey, KeyError> {
        let n = strip_leading_zeros(modulus);
        let e = strip_leading_zeros(exponent);
        if n.is_empty() || e.is_empty() {
            return Err(KeyError::Malformed(
                "RSA modulus or public exponent is empty".into(),
            ));
        }
        Ok(PublicKey::Rsa {
            n: n.to_vec(),
            e: e.to_vec(),
        })
    }

    /// An EC key from CKA_EC_PARAMS and CKA_EC_POINT. The point may be wrapped in a DER OCTET
    /// STRING (PKCS#11 §2.3.3) or bare, as some modules return it.
    pub fn ec(params: &[u8], point: &[u8]) -> Result<PublicKey, KeyError> {
        match curve_from_params(params)? {
            ParamsCurve::Nist(curve) => {
                let bare = unwrap_point(point, 1 + 2 * curve.field_len())?;
                PublicKey::ec_uncompressed(curve, bare)
            }
            ParamsCurve::Ed25519 => {
                let bare = unwrap_point(point, 32)?;
                let x: [u8; 32] = bare
                    .try_into()
                    .map_err(|_| KeyError::Malformed("Ed25519 point is not 32 bytes".into()))?;
                Ok(PublicKey::Ed25519 { x })
            }
        }
    }

    /// An EC key from an uncompressed SEC1 point `04 || X || Y`, checked to be on the curve.
    pub fn ec_uncompressed(curve: Curve, sec1: &[u8]) -> Result<PublicKey, KeyError> {
        let len = curve.field_len();
        if sec1.len() != 1 + 2 * len || sec1[0] != 0x04 {
            return Err(KeyError::Malformed(format!(
                "{} point is not an uncompressed point of {} bytes (got {} bytes)",
                curve.jwk_name(),
                1 + 2 * len,
                sec1.len()
            )));
        }
        let key = PublicKey::Ec {
            curve,
            x: sec1[1..1 + len].to_vec(),
            y: sec1[1 + len..].to_vec(),
        };
        // Parsing with the curve's own library rejects points that are not on the curve.
        key.verifier_check()?;
        Ok(key)
    }

    /// The public key inside a DER X.509 certificate (RFC 5280 SubjectPublicKeyInfo).
    pub fn from_certificate(der_cert: &[u8]) -> Result<PublicKey, KeyError> {
        use der::Decode as _;
        let cert = x509_cert::Certificate::from_der(der_cert)
            .map_err(|e| KeyError::Malformed(format!("certificate is not valid DER: {e}")))?;
        PublicKey::from_spki(&cert.tbs_certificate.subject_public_key_info)
    }

    fn from_spki(spki: &x509_cert::spki::SubjectPublicKeyInfoOwned) -> Result<PublicKey, KeyError> {
        use der::{Decode as _, Encode as _};
        let oid = spki.algorithm.oid.to_string();
        let key_bits = spki.subject_public_key.raw_bytes();
        match oid.as_str() {
            // rsaEncryption (RFC 8017 A.1)
            "1.2.840.113549.1.1.1" => {
                let key = pkcs1::RsaPublicKey::from_der(key_bits)
                    .map_err(|e| KeyError::Malformed(format!("RSA public key: {e}")))?;
                PublicKey::rsa(key.modulus.as_bytes(), key.public_exponent.as_bytes())
            }
            // id-ecPublicKey (RFC 5480 §2.1.1)
            "1.2.840.10045.2.1" => {
                let params = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .ok_or_else(|| KeyError::Malformed("EC key without curve".into()))?
                    .to_der()
                    .map_err(|e| KeyError::Malformed(format!("EC parameters: {e}")))?;
                match curve_from_params(&params)? {
                    ParamsCurve::Nist(curve) => PublicKey::ec_uncompressed(curve, key_bits),
                    ParamsCurve::Ed25519 => Err(KeyError::Malformed("bad EC curve".into())),
                }
            }
            // id-Ed25519 (RFC 8410 §3)
            "1.3.101.112" => {
                let x: [u8; 32] = key_bits
                    .try_into()
                    .map_err(|_| KeyError::Malformed("Ed25519 key is not 32 bytes".into()))?;
                Ok(PublicKey::Ed25519 { x })
            }
            other => Err(KeyError::Unsupported(format!(
                "public key algorithm OID {other}"
            ))),
        }
    }

    pub fn kind(&self) -> KeyKind {
        match self {
            PublicKey::Rsa { n, .. } => KeyKind::Rsa { bits: bit_len(n) },
            PublicKey::Ec { curve, .. } => KeyKind::Ec(*curve),
            PublicKey::Ed25519 { .. } => KeyKind::Ed25519,
        }
    }

    /// The members RFC 7638 §3.2 requires, which are also the key's whole JWK.
    fn required_members(&self) -> Map<String, Value> {
        let b64 = |bytes: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(bytes));
        let mut m = Map::new();
        match self {
            PublicKey::Rsa { n, e } => {
                m.insert("e".into(), b64(e));
                m.insert("kty".into(), "RSA".into());
                m.insert("n".into(), b64(n));
            }
            PublicKey::Ec { curve, x, y } => {
                m.insert("crv".into(), curve.jwk_name().into());
                m.insert("kty".into(), "EC".into());
                m.insert("x".into(), b64(x));
                m.insert("y".into(), b64(y));
            }
            PublicKey::Ed25519 { x } => {
                m.insert("crv".into(), "Ed25519".into());
                m.insert("kty".into(), "OKP".into());
                m.insert("x".into(), b64(x));
            }
        }
        m
    }

    /// RFC 7638 thumbprint: SHA-256 over the required members, sorted, without whitespace,
    /// base64url without padding. This is the default `kid`.
    pub fn thumbprint(&self) -> String {
        // serde_json's Map is ordered by key (no preserve_order feature), which gives the
        // lexicographic order §3.3 asks for; to_string adds no whitespace.
        let canonical = Value::Object(self.required_members()).to_string();
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The public JWK with `use: "sig"` and the given extras.
    pub fn to_jwk(&self, extras: &JwkExtras<'_>) -> Value {
        let mut m = self.required_members();
        m.insert("use".into(), "sig".into());
        if let Some(alg) = extras.alg {
            m.insert("alg".into(), alg.as_str().into());
        }
        if let Some(kid) = extras.kid {
            m.insert("kid".into(), kid.into());
        }
        if let Some(first) = extras.x5c.first() {
            // RFC 7517 §4.7: standard base64 (not url-safe) DER, leaf first.
            use base64::engine::general_purpose::STANDARD;
            let chain: Vec<Value> = extras
                .x5c
                .iter()
                .map(|c| STANDARD.encode(c).into())
                .collect();
            m.insert("x5c".into(), Value::Array(chain));
            m.insert(
                "x5t#S256".into(),
                URL_SAFE_NO_PAD.encode(Sha256::digest(first)).into(),
            );
        }
        Value::Object(m)
    }

    /// Checks a JWS signature (in its JWS encoding) over `message`. Used on every signature
    /// before it leaves p11jwt, so that a device that signs wrongly fails here.
    ///
    /// ring does the work where it can (it is already linked for TLS, and its RSA and NIST
    /// curve code is several times faster than the pure-Rust crates); P-521, which ring lacks,
    /// goes to the p521 crate.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        use ring::signature as rs;
        let bad = || {
            KeyError::BadSignature(format!(
                "{alg}: signature does not verify with the public key"
            ))
        };
        match (self, alg) {
            (PublicKey::Rsa { n, e }, _) => {
                // RFC 7518 §3.3 and §3.5; ring's PSS verification requires a salt as long as
                // the hash, which catches devices that ignore sLen.
                let params: &rs::RsaParameters = match alg {
                    Alg::RS256 => &rs::RSA_PKCS1_2048_8192_SHA256,
                    Alg::RS384 => &rs::RSA_PKCS1_2048_8192_SHA384,
                    Alg::RS512 => &rs::RSA_PKCS1_2048_8192_SHA512,
                    Alg::PS256 => &rs::RSA_PSS_2048_8192_SHA256,
                    Alg::PS384 => &rs::RSA_PSS_2048_8192_SHA384,
                    Alg::PS512 => &rs::RSA_PSS_2048_8192_SHA512,
                    _ => return Err(bad()),
                };
                let key = rs::RsaPublicKeyComponents { n, e };
                key.verify(params, message, signature).map_err(|_| bad())
            }
            (
                PublicKey::Ec {
                    curve: Curve::P256,
                    x,
                    y,
                },
                Alg::ES256,
            ) => {
                let key = rs::UnparsedPublicKey::new(&rs::ECDSA_P256_SHA256_FIXED, sec1(x, y));
                key.verify(message, signature).map_err(|_| bad())
            }
            (
                PublicKey::Ec {
                    curve: Curve::P384,
                    x,
                    y,
                },
                Alg::ES384,
            ) => {
                let key = rs::UnparsedPublicKey::new(&rs::ECDSA_P384_SHA384_FIXED, sec1(x, y));
                key.verify(message, signature).map_err(|_| bad())
            }
            (
                PublicKey::Ec {
                    curve: Curve::P521,
                    x,
                    y,
                },
                Alg::ES512,
            ) => {
                use p521::ecdsa::signature::Verifier as _;
                let key =
                    p521::ecdsa::VerifyingKey::from_sec1_bytes(&sec1(x, y)).map_err(|_| bad())?;
                let sig = p521::ecdsa::Signature::from_slice(signature).map_err(|_| bad())?;
                key.verify(message, &sig).map_err(|_| bad())
            }
            (PublicKey::Ed25519 { x }, Alg::EdDSA) => {
                let key = rs::UnparsedPublicKey::new(&rs::ED25519, x);
                key.verify(message, signature).map_err(|_| bad())
            }
            _ => Err(KeyError::BadSignature(format!(
                "{alg} does not fit a {} key",
                self.kind()
            ))),
        }
    }

    /// Rejects EC points that are not on their curve.
    fn verifier_check(&self) -> Result<(), KeyError> {
        let PublicKey::Ec { curve, x, y } = self else {
            return Ok(());
        };
        let sec1 = sec1(x, y);
        let ok = match curve {
            Curve::P256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).is_ok(),
            Curve::P384 => p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).is_ok(),
            Curve::P521 => p521::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(KeyError::Malformed(format!(
                "the {} point is not on the curve",
                curve.jwk_name()
            )))
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({}, kid {})", self.kind(), self.thumbprint())
    }
}

/// A JWKS (RFC 7517 §5) of the given JWKs.
pub fn jwks(keys: Vec<Value>) -> Value {
    json!({ "keys": keys })
}

enum ParamsCurve {
    Nist(Curve),
    Ed25519,
}

/// Recognises a curve from CKA_EC_PARAMS: a named-curve OID, or the PrintableString names some
/// modules use for Edwards curves (PKCS#11 3.0 §2.3.10).
fn curve_from_params(params: &[u8]) -> Result<ParamsCurve, KeyError> {
    for curve in [Curve::P256, Curve::P384, Curve::P521] {
        if params == curve.params_der() {
            return Ok(ParamsCurve::Nist(curve));
        }
    }
    if params == ED25519_PARAMS_DER {
        return Ok(ParamsCurve::Ed25519);
    }
    // PrintableString (tag 0x13) with a curve name.
    if params.len() > 2 && params[0] == 0x13 && params[1] as usize == params.len() - 2 {
        let name = String::from_utf8_lossy(&params[2..]).to_ascii_lowercase();
        return match name.as_str() {
            "edwards25519" | "ed25519" => Ok(ParamsCurve::Ed25519),
            "prime256v1" | "secp256r1" | "p-256" => Ok(ParamsCurve::Nist(Curve::P256)),
            "secp384r1" | "p-384" => Ok(ParamsCurve::Nist(Curve::P384)),
            "secp521r1" | "p-521" => Ok(ParamsCurve::Nist(Curve::P521)),
            _ => Err(KeyError::Unsupported(format!("curve {name:?}"))),
        };
    }
    Err(KeyError::Unsupported(format!(
        "curve with CKA_EC_PARAMS {} (supported: P-256, P-384, P-521, Ed25519)",
        hex(params)
    )))
}

/// Accepts a point as a DER OCTET STRING of exactly `bare_len` bytes, or bare; anything else,
/// including trailing bytes, is refused.
fn unwrap_point(point: &[u8], bare_len: usize) -> Result<&[u8], KeyError> {
    if point.len() == bare_len {
        return Ok(point);
    }
    let header: &[u8] = if bare_len < 0x80 {
        &[0x04, bare_len as u8]
    } else {
        &[0x04, 0x81, bare_len as u8]
    };
    if point.len() == header.len() + bare_len && point.starts_with(header) {
        return Ok(&point[header.len()..]);
    }
    Err(KeyError::Malformed(format!(
        "CKA_EC_POINT has {} bytes; expected {bare_len} bytes, bare or in a DER OCTET STRING \
         (compressed points are not supported)",
        point.len()
    )))
}

/// The uncompressed SEC1 point `04 || X || Y`.
fn sec1(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut point = Vec::with_capacity(1 + x.len() + y.len());
    point.push(0x04);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    point
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn bit_len(n: &[u8]) -> usize {
    match n.first() {
        Some(&top) => n.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a public key or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Malformed(String),
    Unsupported(String),
    BadSignature(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Malformed(what) => write!(f, "malformed public key: {what}"),
            KeyError::Unsupported(what) => write!(f, "unsupported key: {what}"),
            KeyError::BadSignature(what) => write!(
                f,
                "the token's signature failed the in-process check ({what})\n\
                 the token signed wrongly, or the public key found for this key belongs to \
                 another key; nothing was sent"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    #[test]
    fn rfc7638_section_3_1_example() {
        let n = concat!(
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aP",
            "FFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl9",
            "3lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdA",
            "ZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3",
            "XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        );
        let key = PublicKey::rsa(&b64(n), &b64("AQAB")).unwrap();
        assert_eq!(
            key.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn rsa_members_are_minimal() {
        let key = PublicKey::rsa(&[0, 0, 0xc1, 0x02], &[0, 1, 0, 1]).unwrap();
        let jwk = key.to_jwk(&JwkExtras::default());
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(jwk["n"], URL_SAFE_NO_PAD.encode([0xc1, 0x02]));
        assert_eq!(jwk["use"], "sig");
    }

    #[test]
    fn ec_point_accepted_wrapped_or_bare() {
        // The P-256 generator point.
        let x = b64("axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY");
        let y = b64("T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU");
        let mut bare = vec![4];
        bare.extend_from_slice(&x);
        bare.extend_from_slice(&y);
        let mut wrapped = vec![0x04, 65];
        wrapped.extend_from_slice(&bare);
        let params = Curve::P256.params_der();
        let a = PublicKey::ec(params, &bare).unwrap();
        let b = PublicKey::ec(params, &wrapped).unwrap();
        assert_eq!(a, b);
        wrapped.push(0);
        assert!(PublicKey::ec(params, &wrapped).is_err());
    }

    #[test]
    fn ec_point_off_curve_is_refused() {
        let mut bare = vec![4];
        bare.extend_from_slice(&[1u8; 64]);
        assert!(PublicKey::ec(Curve::P256.params_der(), &bare).is_err());
    }

    #[test]
    fn ed25519_params_as_printable_string() {
        let mut params = vec![0x13, 12];
        params.extend_from_slice(b"edwards25519");
        let x = [7u8; 32];
        let key = PublicKey::ec(&params, &x).unwrap();
        let jwk = key.to_jwk(&JwkExtras::default());
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
    }
}
