//! Public key objects in the encodings devices really use, created on SoftHSM with C_CreateObject
//! (pkcs11-tool always writes the canonical form): a modulus with leading zero octets, a bare
//! CKA_EC_POINT, curves named by PrintableString, and points p11jwt must refuse.
//!
//! This file holds one test on purpose: it loads SoftHSM into the test process, and one cryptoki
//! context per process is all a PKCS#11 module promises to handle.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use serde_json::Value;

use common::softhsm::{module, SoftHsm, PIN};

/// DER of prime256v1 (1.2.840.10045.3.1.7).
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn b64url(value: &Value) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(value.as_str().expect("a string member"))
        .expect("base64url")
}

/// A DER PrintableString, as some modules put curve names in CKA_EC_PARAMS.
fn printable(name: &str) -> Vec<u8> {
    let mut out = vec![0x13, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out
}

/// Creates public key objects on the token, each `(label, key type, attributes)`, from a
/// session of its own that is closed before p11jwt runs.
fn create_public_keys(hsm: &SoftHsm, objects: &[(&str, KeyType, Vec<Attribute>)]) {
    // SoftHSM reads SOFTHSM2_CONF in C_Initialize; this process loads it only here.
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
    let ctx = Pkcs11::new(module()).expect("load SoftHSM");
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = ctx
        .get_slots_with_token()
        .expect("C_GetSlotList")
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .map(|t| t.label() == hsm.label)
                .unwrap_or(false)
        })
        .expect("the test token");
    let session = ctx.open_rw_session(slot).expect("C_OpenSession");
    session
        .login(UserType::User, Some(&AuthPin::from(PIN.to_owned())))
        .expect("C_Login");

    for (index, (label, key_type, attributes)) in objects.iter().enumerate() {
        let mut template = vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(*key_type),
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(vec![0x70, index as u8]),
        ];
        template.extend(attributes.iter().cloned());
        session.create_object(&template).expect("C_CreateObject");
    }
}

#[test]
fn public_keys_in_device_encodings_give_exact_jwks_or_clear_refusals() {
    let hsm = SoftHsm::new("encodings");

    // Reference keys made on the token; their JWKs are what the odd encodings must give.
    let rsa = json(&hsm.ok(&["keygen", "--key", "rsa-ref"]));
    let ec = json(&hsm.ok(&["keygen", "--alg", "ES256", "--key", "ec-ref"]));
    let ed = json(&hsm.ok(&["keygen", "--alg", "EdDSA", "--key", "ed-ref"]));
    let (n, x, y, ed_x) = (
        b64url(&rsa["n"]),
        b64url(&ec["x"]),
        b64url(&ec["y"]),
        b64url(&ed["x"]),
    );
    let uncompressed = [&[0x04][..], &x, &y].concat();
    let wrapped = [&[0x04, 65][..], &uncompressed].concat();
    // y with its lowest bit flipped is not on the curve for that x.
    let mut off_curve = wrapped.clone();
    let last = off_curve.len() - 1;
    off_curve[last] ^= 1;
    let compressed = [&[0x02 | (y[31] & 1)][..], &x].concat();

    create_public_keys(
        &hsm,
        &[
            // CKA_MODULUS and CKA_PUBLIC_EXPONENT with leading zero octets.
            (
                "rsa-zeros",
                KeyType::RSA,
                vec![
                    Attribute::Modulus([&[0, 0][..], &n].concat()),
                    Attribute::PublicExponent(vec![0, 1, 0, 1]),
                ],
            ),
            // The bare point, without its DER OCTET STRING.
            (
                "ec-bare",
                KeyType::EC,
                vec![
                    Attribute::EcParams(P256_OID.to_vec()),
                    Attribute::EcPoint(uncompressed),
                ],
            ),
            // The curve by name, as a PrintableString.
            (
                "ec-named",
                KeyType::EC,
                vec![
                    Attribute::EcParams(printable("prime256v1")),
                    Attribute::EcPoint(wrapped.clone()),
                ],
            ),
            // PKCS#11 3.0 §2.3.10: Edwards curves by name, and the point bare.
            (
                "ed-named",
                KeyType::EC_EDWARDS,
                vec![
                    Attribute::EcParams(printable("edwards25519")),
                    Attribute::EcPoint(ed_x),
                ],
            ),
            // Refused: a compressed point, a trailing byte, a point off the curve.
            (
                "ec-compressed",
                KeyType::EC,
                vec![
                    Attribute::EcParams(P256_OID.to_vec()),
                    Attribute::EcPoint(compressed),
                ],
            ),
            (
                "ec-trailing",
                KeyType::EC,
                vec![
                    Attribute::EcParams(P256_OID.to_vec()),
                    Attribute::EcPoint([&wrapped[..], &[0]].concat()),
                ],
            ),
            (
                "ec-off-curve",
                KeyType::EC,
                vec![
                    Attribute::EcParams(P256_OID.to_vec()),
                    Attribute::EcPoint(off_curve),
                ],
            ),
        ],
    );

    // Each odd encoding gives exactly the reference JWK, kid included (RFC 7638 over the
    // minimal n and the padded x, y).
    for (label, reference) in [
        ("rsa-zeros", &rsa),
        ("ec-bare", &ec),
        ("ec-named", &ec),
        ("ed-named", &ed),
    ] {
        let jwk = json(&hsm.ok(&["jwk", "--key", label]));
        assert_eq!(&jwk, reference, "{label}");
    }

    // The points p11jwt cannot use are refused with the reason, exit 5.
    for (label, reason) in [
        ("ec-compressed", "compressed points"),
        ("ec-trailing", "CKA_EC_POINT has 68 bytes"),
        ("ec-off-curve", "not on the curve"),
    ] {
        let out = hsm.run(&["jwk", "--key", label]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{label}: {stderr}");
        assert!(stderr.contains(reason), "{label}: {stderr}");
        assert!(out.stdout.is_empty(), "{label}");
    }
}
