//! The client assertion: JOSE header, claims (RFC 7523 §3), signing input and compact
//! serialization (RFC 7515 §7.1), and the JWS form of ECDSA signatures (RFC 7518 §3.4).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;

use crate::alg::{Alg, Curve};
use crate::secret::Secret;

/// Lifetime above which a warning is due: Qlik Cloud refuses assertions living longer.
pub const QLIK_MAX_LIFETIME: u64 = 300;

/// Something that produces a JWS signature over a signing input.
pub trait JwsSigner {
    type Error;

    fn alg(&self) -> Alg;
    fn kid(&self) -> &str;
    /// The signature in its JWS encoding (for ECDSA: r || s).
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, Self::Error>;
}

/// What goes into one assertion besides the key.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `iss` and `sub` (RFC 7523 §3, items A and B).
    pub client_id: &'a str,
    /// `aud`, byte for byte as configured: never normalised.
    pub audience: &'a str,
    /// `exp` - `iat`, in seconds.
    pub lifetime: u64,
    /// `typ` header; "JWT" unless a provider wants otherwise.
    pub typ: &'a str,
    /// `x5t` header (RFC 7515 §4.1.7): base64url SHA-1 of the certificate, for servers that
    /// find the key by certificate (Entra ID).
    pub x5t: Option<&'a str>,
    /// `x5t#S256` header (RFC 7515 §4.1.8): base64url SHA-256 of the certificate.
    pub x5t_s256: Option<&'a str>,
}

/// A signed assertion and the facts about it that may be logged.
#[derive(Debug)]
pub struct Assertion {
    pub compact: Secret,
    pub alg: Alg,
    pub kid: String,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
}

/// Builds, signs and serializes one assertion with a fresh `jti`.
pub fn mint<S: JwsSigner>(signer: &S, request: &Request<'_>) -> Result<Assertion, S::Error> {
    // RFC 7519 §2 NumericDate, floored: servers reject an `iat` even a second in the future.
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let exp = iat.saturating_add(request.lifetime);
    let jti = uuid::Uuid::new_v4().to_string();

    let mut header =
        json!({ "alg": signer.alg().as_str(), "kid": signer.kid(), "typ": request.typ });
    if let Some(x5t) = request.x5t {
        header["x5t"] = x5t.into();
    }
    if let Some(x5t_s256) = request.x5t_s256 {
        header["x5t#S256"] = x5t_s256.into();
    }
    let claims = json!({
        "iss": request.client_id,
        "sub": request.client_id,
        "aud": request.audience,
        "jti": jti,
        "iat": iat,
        "exp": exp,
    });

    let mut compact = String::with_capacity(1024);
    compact.push_str(&URL_SAFE_NO_PAD.encode(header.to_string()));
    compact.push('.');
    compact.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = signer.sign(compact.as_bytes())?;
    compact.push('.');
    compact.push_str(&URL_SAFE_NO_PAD.encode(signature));

    Ok(Assertion {
        compact: Secret::new(compact),
        alg: signer.alg(),
        kid: signer.kid().to_owned(),
        jti,
        iat,
        exp,
    })
}

/// The readings of an ECDSA signature from a token that could be the JWS r || s.
///
/// PKCS#11 says CKM_ECDSA returns r || s, but some modules return a DER SEQUENCE. A raw
/// signature can start with 0x30 too, so the length decides first and strict DER parsing
/// second; when both readings are possible, both are returned and the in-process verification
/// picks the one that verifies. Any other length yields nothing: it is never sent.
pub fn ecdsa_jws_candidates(curve: Curve, signature: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(2);
    if signature.len() == 2 * curve.field_len() {
        out.push(signature.to_vec());
    }
    if let Some(raw) = ecdsa_der_to_raw(curve, signature) {
        if !out.contains(&raw) {
            out.push(raw);
        }
    }
    out
}

/// Strict DER `SEQUENCE { INTEGER r, INTEGER s }` to r || s, each left-padded to the field
/// length (RFC 7518 §3.4). Uses the curve crates' own strict DER decoders.
fn ecdsa_der_to_raw(curve: Curve, der: &[u8]) -> Option<Vec<u8>> {
    match curve {
        Curve::P256 => p256::ecdsa::Signature::from_der(der)
            .ok()
            .map(|s| s.to_vec()),
        Curve::P384 => p384::ecdsa::Signature::from_der(der)
            .ok()
            .map(|s| s.to_vec()),
        Curve::P521 => p521::ecdsa::Signature::from_der(der)
            .ok()
            .map(|s| s.to_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl JwsSigner for Fixed {
        type Error = ();
        fn alg(&self) -> Alg {
            Alg::RS256
        }
        fn kid(&self) -> &str {
            "kid-1"
        }
        fn sign(&self, _: &[u8]) -> Result<Vec<u8>, ()> {
            Ok(vec![1, 2, 3])
        }
    }

    fn part(compact: &str, i: usize) -> serde_json::Value {
        let seg = compact.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(seg).unwrap()).unwrap()
    }

    #[test]
    fn header_and_claims_are_as_rfc7523_asks() {
        let req = Request {
            client_id: "cid",
            audience: "https://t.example/oauth/token",
            lifetime: 300,
            typ: "JWT",
            x5t: None,
            x5t_s256: None,
        };
        let a = mint(&Fixed, &req).unwrap();
        let compact = a.compact.expose();
        assert_eq!(
            part(compact, 0),
            json!({"alg":"RS256","kid":"kid-1","typ":"JWT"})
        );
        let claims = part(compact, 1);
        assert_eq!(claims["iss"], "cid");
        assert_eq!(claims["sub"], "cid");
        assert_eq!(claims["aud"], "https://t.example/oauth/token");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            300
        );
        assert_eq!(claims["jti"], a.jti.as_str());
        assert_eq!(compact.split('.').nth(2), Some("AQID"));
        assert_ne!(mint(&Fixed, &req).unwrap().jti, a.jti);
    }

    #[test]
    fn certificate_thumbprints_go_in_the_header_when_asked() {
        let req = Request {
            client_id: "cid",
            audience: "https://t.example/token",
            lifetime: 60,
            typ: "JWT",
            x5t: Some("c2hhMQ"),
            x5t_s256: Some("c2hhMjU2"),
        };
        let header = part(mint(&Fixed, &req).unwrap().compact.expose(), 0);
        assert_eq!(header["x5t"], "c2hhMQ");
        assert_eq!(header["x5t#S256"], "c2hhMjU2");
    }

    #[test]
    fn der_signature_becomes_padded_raw() {
        // r = 1, s = 0x80 (needs a leading zero in DER).
        let der = [0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0x80];
        let c = ecdsa_jws_candidates(Curve::P256, &der);
        assert_eq!(c.len(), 1);
        let mut want = vec![0u8; 64];
        want[31] = 1;
        want[63] = 0x80;
        assert_eq!(c[0], want);
    }

    #[test]
    fn raw_signature_starting_with_0x30_stays_raw() {
        let mut raw = vec![0x30u8; 96];
        raw[1] = 0x5e;
        let c = ecdsa_jws_candidates(Curve::P384, &raw);
        assert_eq!(c, vec![raw]);
    }

    /// DER `SEQUENCE { INTEGER r, INTEGER s }` of two positive integers without leading zeros.
    fn der_of(r: &[u8], s: &[u8]) -> Vec<u8> {
        let mut body = vec![0x02, r.len() as u8];
        body.extend_from_slice(r);
        body.extend([0x02, s.len() as u8]);
        body.extend_from_slice(s);
        let mut out = vec![0x30];
        if body.len() >= 0x80 {
            out.push(0x81);
        }
        out.push(body.len() as u8);
        out.extend(body);
        out
    }

    #[test]
    fn der_signature_of_exactly_raw_length_gives_both_readings() {
        // r and s of 29 bytes: the DER is 64 bytes, as long as a P-256 r || s.
        let der = der_of(&[0x11; 29], &[0x22; 29]);
        assert_eq!(der.len(), 64);
        let c = ecdsa_jws_candidates(Curve::P256, &der);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], der);
        assert_eq!(&c[1][..3], &[0, 0, 0]);
        assert_eq!(&c[1][3..32], &[0x11; 29]);
        assert_eq!(&c[1][35..], &[0x22; 29]);
    }

    #[test]
    fn p521_der_signature_with_long_form_length_is_padded_to_66_bytes() {
        // P-521 r and s are up to 66 bytes, so the SEQUENCE needs the 0x81 length form.
        let r = [0x01; 66];
        let s = [0x01; 65];
        let der = der_of(&r, &s);
        assert_eq!(der[1], 0x81);
        let c = ecdsa_jws_candidates(Curve::P521, &der);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].len(), 132);
        assert_eq!(&c[0][..66], &r);
        assert_eq!(c[0][66], 0);
        assert_eq!(&c[0][67..], &s);
    }

    #[test]
    fn wrong_length_signature_yields_nothing() {
        assert!(ecdsa_jws_candidates(Curve::P256, &[0u8; 63]).is_empty());
        let mut der = vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01];
        der.push(0); // trailing byte: not strict DER
        assert!(ecdsa_jws_candidates(Curve::P256, &der).is_empty());
    }
}
