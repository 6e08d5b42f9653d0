//! Every JOSE signing algorithm on SoftHSM: keys made by `p11jwt keygen` and keys provisioned by
//! other tools, the mechanism fallbacks of devices imitated with `slots.mechanisms`, and every
//! refused combination. Signatures are checked by code that did not make them: PyJWT against
//! the JWK `p11jwt jwk` printed, and openssl against the public key pkcs11-tool read.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::Value;
use sha2::Digest as _;

use common::softhsm::{
    ecdsa_raw_to_der, openssl, openssl_verify, public_pem, pyjwt_verify, split_jws, SoftHsm,
};
use common::standin::Standin;

const CLIENT_ID: &str = "p11jwt-alg-client";
const AUD: &str = "https://acme.eu.qlikcloud.com/oauth/token";

/// The keygen mechanisms every limited token below keeps, so that keys can still be made.
const KEYGEN_MECHANISMS: &str =
    "CKM_RSA_PKCS_KEY_PAIR_GEN,CKM_EC_KEY_PAIR_GEN,CKM_EC_EDWARDS_KEY_PAIR_GEN";

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn b64url(value: &Value) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(value.as_str().expect("a string member"))
        .expect("base64url")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `assert` for `key` with `alg`, returning the compact JWS.
fn assert_with(hsm: &SoftHsm, key: &str, alg: &str) -> String {
    let args = [
        "assert",
        "--key",
        key,
        "--alg",
        alg,
        "--client-id",
        CLIENT_ID,
        "--audience",
        AUD,
    ];
    hsm.ok(&args).trim().to_owned()
}

/// Ed25519 has no separate digest: openssl verifies the message itself (`-rawin`).
fn openssl_verify_ed25519(pem: &Path, input: &[u8], sig: &[u8]) -> bool {
    let dir = tempfile::tempdir().expect("temp dir");
    let (data, sigf) = (dir.path().join("data"), dir.path().join("sig"));
    std::fs::write(&data, input).expect("write data");
    std::fs::write(&sigf, sig).expect("write sig");
    let out = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
        .arg(pem)
        .arg("-in")
        .arg(&data)
        .arg("-sigfile")
        .arg(&sigf)
        .output()
        .expect("openssl runs");
    out.status.success()
}

/// Checks one JWS with openssl against `pem`, in the form openssl wants for `alg`.
fn openssl_accepts(pem: &Path, alg: &str, input: &[u8], sig: &[u8]) -> bool {
    let digest = match &alg[2..] {
        "256" => "sha256",
        "384" => "sha384",
        "512" => "sha512",
        _ => return openssl_verify_ed25519(pem, input, sig),
    };
    match &alg[..2] {
        "RS" => openssl_verify(pem, digest, false, input, sig),
        // RFC 7518 §3.5: salt length = digest length, which `rsa_pss_saltlen:digest` asks for.
        "PS" => openssl_verify(pem, digest, true, input, sig),
        _ => openssl_verify(pem, digest, false, input, &ecdsa_raw_to_der(sig)),
    }
}

/// The JWS signature length RFC 7518 §3.4 fixes for ECDSA: r || s, each the field size.
fn ecdsa_signature_len(alg: &str) -> Option<usize> {
    match alg {
        "ES256" => Some(64),
        "ES384" => Some(96),
        "ES512" => Some(132),
        _ => None,
    }
}

/// keygen, jwk, assert; then PyJWT with the printed JWK and openssl with the token's public key.
fn round_trip(alg: &str) {
    let hsm = SoftHsm::new(&format!("alg-{}", alg.to_lowercase()));

    // keygen and jwk print the same JWK, with the alg asked for.
    let from_keygen = json(&hsm.ok(&["keygen", "--alg", alg, "--key", "k"]));
    let jwk_text = hsm.ok(&["jwk", "--key", "k", "--alg", alg]);
    let jwk = json(&jwk_text);
    assert_eq!(from_keygen, jwk);
    assert_eq!(jwk["alg"], alg);
    check_jwk_members(&jwk);

    // assert: the header names the alg and the JWK's kid.
    let compact = assert_with(&hsm, "k", alg);
    let (input, header, claims, sig) = split_jws(&compact);
    assert_eq!(header["alg"], alg);
    assert_eq!(header["kid"], jwk["kid"]);
    if let Some(len) = ecdsa_signature_len(alg) {
        assert_eq!(sig.len(), len, "{alg}: r || s, each the field size");
    }

    // PyJWT, with the JWK exactly as printed.
    let decoded = pyjwt_verify(&jwk_text, &compact, AUD);
    assert_eq!(decoded, claims);

    // openssl, with the public key pkcs11-tool read; and a tampered input must fail.
    let pem = public_pem(&hsm, "k");
    assert!(
        openssl_accepts(&pem, alg, input.as_bytes(), &sig),
        "openssl refused {alg}"
    );
    let mut tampered = input.into_bytes();
    tampered[3] ^= 1;
    assert!(
        !openssl_accepts(&pem, alg, &tampered, &sig),
        "openssl accepted a tampered {alg}"
    );
}

/// The exact JWK shapes: RSA `n` without a leading zero and `e` minimal, EC coordinates padded
/// to the field size (RFC 7518 §6.2.1.2, §6.3.1.1), Ed25519 x of 32 bytes (RFC 8037 §2).
fn check_jwk_members(jwk: &Value) {
    assert_eq!(jwk["use"], "sig");
    match jwk["kty"].as_str() {
        Some("RSA") => {
            assert_eq!(jwk["e"], "AQAB");
            assert_ne!(b64url(&jwk["n"])[0], 0, "n has no leading zero octet");
        }
        Some("EC") => {
            let len = match jwk["crv"].as_str() {
                Some("P-256") => 32,
                Some("P-384") => 48,
                Some("P-521") => 66,
                other => panic!("unexpected crv {other:?}"),
            };
            assert_eq!(b64url(&jwk["x"]).len(), len, "x padded to the field size");
            assert_eq!(b64url(&jwk["y"]).len(), len, "y padded to the field size");
        }
        Some("OKP") => {
            assert_eq!(jwk["crv"], "Ed25519");
            assert_eq!(b64url(&jwk["x"]).len(), 32);
        }
        other => panic!("unexpected kty {other:?}"),
    }
}

#[test]
fn rs256_round_trips_and_verifies_with_pyjwt_and_openssl() {
    round_trip("RS256");
}

#[test]
fn rs384_round_trips_and_verifies_with_pyjwt_and_openssl() {
    round_trip("RS384");
}

#[test]
fn rs512_round_trips_and_verifies_with_pyjwt_and_openssl() {
    round_trip("RS512");
}

#[test]
fn ps256_round_trips_and_verifies_with_pyjwt_and_openssl() {
    round_trip("PS256");
}

#[test]
fn ps384_round_trips_and_verifies_with_pyjwt_and_openssl() {
    round_trip("PS384");
}

#[test]
fn ps512_round_trips_and_verifies_with_pyjwt_and_openssl() {
    round_trip("PS512");
}

#[test]
fn es256_round_trips_and_verifies_with_pyjwt_and_openssl() {
    round_trip("ES256");
}

#[test]
fn es384_round_trips_and_verifies_with_pyjwt_and_openssl() {
    round_trip("ES384");
}

#[test]
fn es512_round_trips_and_verifies_with_pyjwt_and_openssl() {
    round_trip("ES512");
}

#[test]
fn eddsa_round_trips_and_verifies_with_pyjwt_and_openssl() {
    round_trip("EdDSA");
}

#[test]
fn default_alg_follows_the_key() {
    let hsm = SoftHsm::new("alg-defaults");
    let cases = [
        ("RS512", "RS256"),
        ("PS384", "RS256"),
        ("ES256", "ES256"),
        ("ES384", "ES384"),
        ("ES512", "ES512"),
        ("EdDSA", "EdDSA"),
    ];

    for (keygen_alg, default_alg) in cases {
        // A key made for one alg; jwk and assert without --alg use the key's default.
        let label = format!("k-{keygen_alg}");
        hsm.ok(&["keygen", "--alg", keygen_alg, "--key", &label]);
        let jwk = json(&hsm.ok(&["jwk", "--key", &label]));
        assert_eq!(
            jwk["alg"], default_alg,
            "jwk of a key made for {keygen_alg}"
        );
        let args = [
            "assert",
            "--key",
            &label,
            "--client-id",
            CLIENT_ID,
            "--audience",
            AUD,
        ];
        let (_, header, _, _) = split_jws(&hsm.ok(&args));
        assert_eq!(
            header["alg"], default_alg,
            "assert with a key made for {keygen_alg}"
        );
    }
}

/// A token whose mechanism list SoftHSM limits to the keygen mechanisms and `mechanisms`, the
/// way a device that offers less than SoftHSM does.
fn limited_token(label: &str, mechanisms: &str) -> SoftHsm {
    let line = format!("slots.mechanisms = {KEYGEN_MECHANISMS},{mechanisms}");
    SoftHsm::with_config(label, &line)
}

/// `-vv assert` with `alg`: the compact JWS and the mechanism the signer logged it chose.
fn assert_logging_mechanism(hsm: &SoftHsm, key: &str, alg: &str) -> (String, String) {
    let args = [
        "-vv",
        "assert",
        "--key",
        key,
        "--alg",
        alg,
        "--client-id",
        CLIENT_ID,
    ];
    let out = hsm.run(&[&args[..], &["--audience", AUD]].concat());
    let log = stderr(&out);
    assert!(out.status.success(), "{alg}: {log}");
    let prefix = format!("p11jwt: debug: {alg} with ");
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .expect("mechanism logged");
    let mechanism = line
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        mechanism,
    )
}

/// Signs with `alg` on `key`, checks the mechanism, and verifies with PyJWT.
fn signs_with(hsm: &SoftHsm, key: &str, alg: &str, mechanism: &str) {
    let (compact, used) = assert_logging_mechanism(hsm, key, alg);
    assert_eq!(used, mechanism, "{alg}");
    let mut jwk = json(&hsm.ok(&["jwk", "--key", key]));
    jwk["alg"] = alg.into();
    pyjwt_verify(&jwk.to_string(), &compact, AUD);
}

#[test]
fn token_with_only_raw_mechanisms_signs_local_digests() {
    let mechanisms = "CKM_RSA_PKCS,CKM_RSA_PKCS_PSS,CKM_ECDSA,CKM_EDDSA";
    let hsm = limited_token("alg-raw-only", mechanisms);
    hsm.ok(&["keygen", "--key", "rsa"]);
    hsm.ok(&["keygen", "--alg", "ES384", "--key", "ec"]);
    hsm.ok(&["keygen", "--alg", "EdDSA", "--key", "ed"]);

    // Hashed here, signed on the token (RFC 8017 §9.2 DigestInfo for CKM_RSA_PKCS).
    signs_with(&hsm, "rsa", "RS256", "CKM_RSA_PKCS");
    signs_with(&hsm, "rsa", "RS512", "CKM_RSA_PKCS");
    signs_with(&hsm, "rsa", "PS384", "CKM_RSA_PKCS_PSS");
    signs_with(&hsm, "ec", "ES384", "CKM_ECDSA");
    signs_with(&hsm, "ed", "EdDSA", "CKM_EDDSA");
}

#[test]
fn token_with_only_combined_mechanisms_hashes_on_the_token() {
    let mechanisms = "CKM_SHA256_RSA_PKCS,CKM_SHA512_RSA_PKCS,CKM_SHA256_RSA_PKCS_PSS";
    let hsm = limited_token("alg-combined-only", mechanisms);
    hsm.ok(&["keygen", "--key", "rsa"]);
    hsm.ok(&["keygen", "--alg", "ES256", "--key", "ec"]);

    // The fallback: the token hashes and signs in one mechanism.
    signs_with(&hsm, "rsa", "RS256", "CKM_SHA256_RSA_PKCS");
    signs_with(&hsm, "rsa", "RS512", "CKM_SHA512_RSA_PKCS");
    signs_with(&hsm, "rsa", "PS256", "CKM_SHA256_RSA_PKCS_PSS");

    // RS384 and ES256 have neither form here (SoftHSM has no CKM_ECDSA_SHA* at all).
    let rs384 = hsm.run(&[
        "assert",
        "--key",
        "rsa",
        "--alg",
        "RS384",
        "--client-id",
        CLIENT_ID,
        "--audience",
        AUD,
    ]);
    assert_eq!(rs384.status.code(), Some(6), "{}", stderr(&rs384));
    assert!(
        stderr(&rs384).contains("CKM_RSA_PKCS or CKM_SHA384_RSA_PKCS"),
        "{}",
        stderr(&rs384)
    );
    let es256 = hsm.run(&[
        "assert",
        "--key",
        "ec",
        "--client-id",
        CLIENT_ID,
        "--audience",
        AUD,
    ]);
    assert_eq!(es256.status.code(), Some(6), "{}", stderr(&es256));
    assert!(
        stderr(&es256).contains("CKM_ECDSA or CKM_ECDSA_SHA256"),
        "{}",
        stderr(&es256)
    );
    assert!(es256.stdout.is_empty());
}

#[test]
fn token_without_any_signing_mechanism_names_the_missing_ones() {
    let hsm = limited_token("alg-no-sign", "CKM_SHA256");
    hsm.ok(&["keygen", "--key", "rsa"]);
    hsm.ok(&["keygen", "--alg", "EdDSA", "--key", "ed"]);

    for (key, alg, wanted) in [
        ("rsa", "RS256", "(CKM_RSA_PKCS or CKM_SHA256_RSA_PKCS)"),
        (
            "rsa",
            "PS512",
            "(CKM_RSA_PKCS_PSS or CKM_SHA512_RSA_PKCS_PSS)",
        ),
        ("ed", "EdDSA", "(CKM_EDDSA)"),
    ] {
        let args = [
            "assert",
            "--key",
            key,
            "--alg",
            alg,
            "--client-id",
            CLIENT_ID,
        ];
        let out = hsm.run(&[&args[..], &["--audience", AUD]].concat());
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(6), "{alg}: {text}");
        assert!(
            text.contains(&format!("none of the mechanisms {alg} needs {wanted}")),
            "{text}"
        );
        assert!(out.stdout.is_empty(), "{alg}: nothing printed");
    }
}

/// Runs `assert` with `alg` on `key` and checks it was refused with `code`, before signing,
/// with a message containing each of `needles`.
fn refused(hsm: &SoftHsm, key: &str, alg: Option<&str>, code: i32, needles: &[&str]) {
    let mut args = vec![
        "assert",
        "--key",
        key,
        "--client-id",
        CLIENT_ID,
        "--audience",
        AUD,
    ];
    if let Some(alg) = alg {
        args.extend(["--alg", alg]);
    }
    let out = hsm.run(&args);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{alg:?} on {key}: {text}");
    for needle in needles {
        assert!(
            text.contains(needle),
            "{alg:?} on {key}: {needle:?} not in {text}"
        );
    }
    assert!(out.stdout.is_empty(), "{alg:?} on {key}: nothing printed");
}

#[test]
fn algs_that_do_not_fit_the_key_are_refused_naming_the_key_and_its_algs() {
    let hsm = SoftHsm::new("alg-refusals");
    hsm.ok(&["keygen", "--alg", "ES256", "--key", "p256"]);
    hsm.ok(&["keygen", "--alg", "ES384", "--key", "p384"]);
    hsm.ok(&["keygen", "--key", "rsa"]);
    hsm.ok(&["keygen", "--alg", "EdDSA", "--key", "ed"]);

    // Exit 2 (usage): the key is fine, the alg asked for is not one it can make.
    let rsa_algs = "RS256, RS384, RS512, PS256, PS384, PS512";
    refused(
        &hsm,
        "p256",
        Some("ES384"),
        2,
        &["ES384 does not fit this EC P-256 key", "ES256"],
    );
    refused(
        &hsm,
        "p256",
        Some("PS256"),
        2,
        &["PS256 does not fit this EC P-256 key", "ES256"],
    );
    refused(
        &hsm,
        "p384",
        Some("RS256"),
        2,
        &["RS256 does not fit this EC P-384 key", "ES384"],
    );
    refused(
        &hsm,
        "rsa",
        Some("EdDSA"),
        2,
        &["EdDSA does not fit this RSA 2048 key", rsa_algs],
    );
    refused(
        &hsm,
        "rsa",
        Some("ES256"),
        2,
        &["ES256 does not fit this RSA 2048 key", rsa_algs],
    );
    refused(
        &hsm,
        "ed",
        Some("ES256"),
        2,
        &["ES256 does not fit this Ed25519 key", "EdDSA"],
    );

    // jwk refuses the same way.
    let jwk = hsm.run(&["jwk", "--key", "p256", "--alg", "ES384"]);
    assert_eq!(jwk.status.code(), Some(2), "{}", stderr(&jwk));
    assert!(stderr(&jwk).contains("EC P-256"), "{}", stderr(&jwk));
}

/// A key pair made by openssl, outside any token: the private key as PKCS#8 DER, its public key
/// as PEM, and a self-signed certificate as DER. `algorithm` is `RSA` or `EC`.
struct OffTokenKey {
    private_der: PathBuf,
    public_pem: PathBuf,
    cert_der: PathBuf,
}

fn off_token_key(hsm: &SoftHsm, name: &str, algorithm: &str, option: &str) -> OffTokenKey {
    let path = |suffix: &str| hsm.path(&format!("{name}.{suffix}"));
    let (pem, private_der, public_pem, cert_der) = (
        path("key.pem"),
        path("key.der"),
        path("pub.pem"),
        path("crt.der"),
    );
    let s = |p: &PathBuf| p.to_str().expect("UTF-8 temp path").to_owned();
    let genpkey = [
        "genpkey",
        "-algorithm",
        algorithm,
        "-pkeyopt",
        option,
        "-out",
        &s(&pem),
    ];
    openssl(&genpkey);
    openssl(&[
        "pkey",
        "-in",
        &s(&pem),
        "-outform",
        "DER",
        "-out",
        &s(&private_der),
    ]);
    openssl(&["pkey", "-in", &s(&pem), "-pubout", "-out", &s(&public_pem)]);
    let subject = format!("/CN={name}");
    let req = [
        "req",
        "-x509",
        "-new",
        "-key",
        &s(&pem),
        "-subj",
        &subject,
        "-days",
        "2",
    ];
    openssl(&[&req[..], &["-outform", "DER", "-out", &s(&cert_der)]].concat());
    OffTokenKey {
        private_der,
        public_pem,
        cert_der,
    }
}

/// Writes an object to the token with pkcs11-tool: `kind` is privkey, pubkey or cert.
fn import(hsm: &SoftHsm, file: &Path, kind: &str, id: &str, label: &str, extra: &[&str]) {
    let file = file.to_str().expect("UTF-8 temp path");
    let args = [
        "--write-object",
        file,
        "--type",
        kind,
        "--id",
        id,
        "--label",
        label,
    ];
    hsm.pkcs11_tool(&[&args[..], extra].concat());
}

/// The key's entry in `keys --json`.
fn listed(hsm: &SoftHsm, label: &str) -> Value {
    let keys = json(&hsm.ok(&["keys", "--json"]));
    let found = keys["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["label"] == label));
    found
        .cloned()
        .unwrap_or_else(|| panic!("{label} not in keys --json: {keys}"))
}

/// `token` with `key` and `alg` against `standin`; returns what it printed on stderr.
fn token_from(hsm: &SoftHsm, standin: &Standin, key: &str, alg: &str) -> String {
    let endpoint = standin.token_endpoint();
    let args = [
        "token",
        "--key",
        key,
        "--alg",
        alg,
        "--client-id",
        CLIENT_ID,
    ];
    let out = hsm.run(&[&args[..], &["--token-endpoint", &endpoint]].concat());
    assert!(out.status.success(), "token with {key}: {}", stderr(&out));
    assert!(!out.stdout.is_empty(), "an access token for {key}");
    stderr(&out)
}

#[test]
fn key_pairs_made_by_pkcs11_tool_work_with_jwk_assert_and_token() {
    let hsm = SoftHsm::new("alg-pkcs11-tool");
    let gen = |key_type: &str, id: &str, label: &str| {
        hsm.pkcs11_tool(&[
            "--keypairgen",
            "--key-type",
            key_type,
            "--id",
            id,
            "--label",
            label,
        ]);
    };
    gen("rsa:2048", "01", "tool-rsa");
    gen("EC:secp384r1", "02", "tool-ec");

    for (label, algs) in [
        ("tool-rsa", ["RS256", "RS512"]),
        ("tool-ec", ["ES384", "ES384"]),
    ] {
        // jwk, then assert checked by PyJWT against it and by openssl against the token's key.
        let pem = public_pem(&hsm, label);
        for alg in algs {
            let jwk = hsm.ok(&["jwk", "--key", label, "--alg", alg]);
            let compact = assert_with(&hsm, label, alg);
            pyjwt_verify(&jwk, &compact, AUD);
            let (input, _, _, sig) = split_jws(&compact);
            assert!(
                openssl_accepts(&pem, alg, input.as_bytes(), &sig),
                "{label} {alg}"
            );
        }
    }

    // jwk --jwks with no --key: every signing key, registered at the stand-in at once.
    let jwks = json(&hsm.ok(&["jwk", "--jwks"]));
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2), "{jwks}");
    let standin = Standin::start(CLIENT_ID, &jwks.to_string());
    token_from(&hsm, &standin, "tool-rsa", "RS512");
    token_from(&hsm, &standin, "tool-ec", "ES384");
    assert_eq!(listed(&hsm, "tool-rsa")["may_exist_off_token"], false);
}

#[test]
fn private_key_and_certificate_without_public_key_object_work_with_jwk_assert_and_token() {
    let hsm = SoftHsm::new("alg-cert-only");
    let rsa = off_token_key(&hsm, "cert-rsa", "RSA", "rsa_keygen_bits:2048");
    let ec = off_token_key(&hsm, "cert-ec", "EC", "ec_paramgen_curve:P-384");
    for (key, id, label) in [(&rsa, "10", "cert-rsa"), (&ec, "11", "cert-ec")] {
        import(&hsm, &key.private_der, "privkey", id, label, &[]);
        import(&hsm, &key.cert_der, "cert", id, label, &[]);
    }
    assert!(!hsm
        .pkcs11_tool(&["--list-objects"])
        .contains("Public Key Object"));

    for (key, label, alg) in [(&rsa, "cert-rsa", "RS256"), (&ec, "cert-ec", "ES384")] {
        // jwk --x5c: the certificate as x5c (standard base64, RFC 7517 §4.7), and x5t#S256 its
        // base64url SHA-256 (§4.9).
        let cert = std::fs::read(&key.cert_der).expect("certificate");
        let jwk = json(&hsm.ok(&["jwk", "--key", label, "--x5c"]));
        assert_eq!(jwk["x5c"], serde_json::json!([STANDARD.encode(&cert)]));
        let x5t = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&cert));
        assert_eq!(jwk["x5t#S256"], x5t);
        assert_eq!(listed(&hsm, label)["public_key_from"], "Certificate");

        // The certificate is a public object: jwk needs no PIN for it.
        let no_pin = hsm
            .p11jwt()
            .env_remove("P11JWT_PIN")
            .args(["jwk", "--key", label])
            .output();
        let no_pin = no_pin.expect("p11jwt runs");
        assert!(
            no_pin.status.success(),
            "{label} without PIN: {}",
            stderr(&no_pin)
        );
        let mut without_x5c = jwk.clone();
        without_x5c
            .as_object_mut()
            .map(|m| (m.remove("x5c"), m.remove("x5t#S256")));
        assert_eq!(json(&String::from_utf8_lossy(&no_pin.stdout)), without_x5c);

        // assert: PyJWT with that JWK, openssl with the key openssl made.
        let compact = assert_with(&hsm, label, alg);
        pyjwt_verify(&jwk.to_string(), &compact, AUD);
        let (input, _, _, sig) = split_jws(&compact);
        assert!(
            openssl_accepts(&key.public_pem, alg, input.as_bytes(), &sig),
            "{label}"
        );
    }

    // token, against a stand-in that has both keys registered.
    let jwks = hsm.ok(&["jwk", "--jwks", "--x5c"]);
    let standin = Standin::start(CLIENT_ID, &jwks);
    for (label, alg) in [("cert-rsa", "RS256"), ("cert-ec", "ES384")] {
        // Imported keys: token warns, as assert does.
        let warnings = token_from(&hsm, &standin, label, alg);
        assert!(
            warnings.contains("private key may exist off the token"),
            "{warnings}"
        );
    }
}

#[test]
fn certificate_of_another_key_is_refused_by_the_self_test_and_nothing_is_sent() {
    let hsm = SoftHsm::new("alg-wrong-cert");
    let mine = off_token_key(&hsm, "mine", "EC", "ec_paramgen_curve:P-384");
    let other = off_token_key(&hsm, "other", "EC", "ec_paramgen_curve:P-384");
    import(&hsm, &mine.private_der, "privkey", "20", "paired", &[]);
    import(&hsm, &other.cert_der, "cert", "20", "paired", &[]);

    // jwk cannot tell (it never signs), so the stand-in registers the certificate's key.
    let jwks = hsm.ok(&["jwk", "--jwks", "--key", "paired"]);
    let standin = Standin::start(CLIENT_ID, &jwks);

    // assert and token both stop at the in-process check: exit 6, nothing printed or sent.
    let assert = hsm.run(&[
        "assert",
        "--key",
        "paired",
        "--client-id",
        CLIENT_ID,
        "--audience",
        AUD,
    ]);
    assert_eq!(assert.status.code(), Some(6), "{}", stderr(&assert));
    assert!(
        stderr(&assert).contains("failed the in-process check"),
        "{}",
        stderr(&assert)
    );
    assert!(
        stderr(&assert).contains("belongs to another key"),
        "{}",
        stderr(&assert)
    );
    assert!(assert.stdout.is_empty());
    let endpoint = standin.token_endpoint();
    let token = hsm.run(&[
        "token",
        "--key",
        "paired",
        "--client-id",
        CLIENT_ID,
        "--token-endpoint",
        &endpoint,
    ]);
    assert_eq!(token.status.code(), Some(6), "{}", stderr(&token));
    assert!(
        !standin.log().contains("POST"),
        "nothing reached the stand-in: {}",
        standin.log()
    );
}

#[test]
fn imported_private_keys_are_flagged_and_warned_about() {
    let hsm = SoftHsm::new("alg-imported");
    let key = off_token_key(&hsm, "imported", "RSA", "rsa_keygen_bits:2048");
    import(&hsm, &key.private_der, "privkey", "30", "imported", &[]);
    import(
        &hsm,
        &key.private_der,
        "privkey",
        "31",
        "extractable",
        &["--extractable"],
    );
    hsm.ok(&["keygen", "--key", "made-here"]);

    // keys --json: an imported key was never always-sensitive, nor never-extractable.
    let imported = listed(&hsm, "imported");
    assert_eq!(imported["may_exist_off_token"], true, "{imported}");
    assert_eq!(
        imported["flags"]["CKA_ALWAYS_SENSITIVE"], false,
        "{imported}"
    );
    assert_eq!(
        imported["flags"]["CKA_NEVER_EXTRACTABLE"], false,
        "{imported}"
    );
    let extractable = listed(&hsm, "extractable");
    assert_eq!(
        extractable["flags"]["CKA_EXTRACTABLE"], true,
        "{extractable}"
    );
    assert_eq!(extractable["may_exist_off_token"], true, "{extractable}");
    let made_here = listed(&hsm, "made-here");
    assert_eq!(made_here["may_exist_off_token"], false, "{made_here}");
    assert_eq!(
        made_here["flags"]["CKA_NEVER_EXTRACTABLE"], true,
        "{made_here}"
    );

    // With neither public key object nor certificate, RSA's CKA_MODULUS gives the public key.
    assert_eq!(
        imported["public_key_from"], "PrivateKeyObject",
        "{imported}"
    );

    // assert warns on stderr for the imported keys only, and still signs.
    for (label, warned) in [
        ("imported", true),
        ("extractable", true),
        ("made-here", false),
    ] {
        let out = hsm.run(&[
            "assert",
            "--key",
            label,
            "--client-id",
            CLIENT_ID,
            "--audience",
            AUD,
        ]);
        assert!(out.status.success(), "{label}: {}", stderr(&out));
        let warning = stderr(&out).contains("private key may exist off the token");
        assert_eq!(warning, warned, "{label}: {}", stderr(&out));
    }
}

#[test]
fn ec_private_key_alone_says_what_is_missing() {
    let hsm = SoftHsm::new("alg-ec-alone");
    let key = off_token_key(&hsm, "alone", "EC", "ec_paramgen_curve:P-256");
    import(&hsm, &key.private_der, "privkey", "40", "alone", &[]);

    let out = hsm.run(&[
        "assert",
        "--key",
        "alone",
        "--client-id",
        CLIENT_ID,
        "--audience",
        AUD,
    ]);

    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("has no public key object, no certificate"),
        "{text}"
    );
    assert!(
        text.contains("import its public key or certificate with the same CKA_ID"),
        "{text}"
    );
}

#[test]
fn rsa_key_under_2048_bits_is_refused_and_left_out_of_the_jwks() {
    let hsm = SoftHsm::new("alg-rsa-1024");
    let key = off_token_key(&hsm, "short", "RSA", "rsa_keygen_bits:1024");
    import(&hsm, &key.private_der, "privkey", "50", "short", &[]);
    import(&hsm, &key.public_pem, "pubkey", "50", "short", &[]);
    hsm.ok(&["keygen", "--alg", "ES256", "--key", "fine"]);

    // assert, with the default alg or an RSA one: exit 5, the key's size and what to do.
    let needles = [
        "RSA key has 1024 bits",
        "fewer than the 2048",
        "p11jwt keygen",
    ];
    refused(&hsm, "short", None, 5, &needles);
    refused(&hsm, "short", Some("PS256"), 5, &needles);
    refused(
        &hsm,
        "short",
        Some("ES256"),
        2,
        &["ES256 does not fit this RSA 1024 key", "none"],
    );

    // keys lists it without a default alg.
    assert_eq!(listed(&hsm, "short")["alg"], Value::Null);
    assert_eq!(listed(&hsm, "short")["type"], "RSA 1024");

    // jwk refuses it; jwk --jwks of the whole token leaves it out and keeps the other key.
    let jwk = hsm.run(&["jwk", "--key", "short"]);
    assert_eq!(jwk.status.code(), Some(5), "{}", stderr(&jwk));
    let out = hsm.run(&["jwk", "--jwks"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jwks = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1), "{jwks}");
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
    assert!(
        stderr(&out).contains("leaving key \"short\" out of the JWKS"),
        "{}",
        stderr(&out)
    );
}

/// Finds a secret key on `$curve` whose public coordinate `$which` (0 = x, 1 = y) starts with a
/// zero byte, trying the scalars SHA-256(name || counter) in turn; about 1 in 256 does, and the
/// loop gives up after 20 000. Returns (PKCS#8 DER private key, SPKI PEM public key, x, y).
macro_rules! key_with_leading_zero {
    ($curve:ident, $which:expr, $name:expr) => {{
        use $curve::elliptic_curve::sec1::ToEncodedPoint as _;
        use $curve::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
        let len = $curve::FieldBytes::default().len();
        let found = (0u32..20_000).find_map(|counter| {
            let seed = sha2::Sha512::digest(format!("{}-{counter}", $name));
            let secret = $curve::SecretKey::from_slice(&seed[..len]).ok()?;
            let point = secret.public_key().to_encoded_point(false);
            let (x, y) = (
                point.as_bytes()[1..1 + len].to_vec(),
                point.as_bytes()[1 + len..].to_vec(),
            );
            let coordinate = if $which == 0 { &x } else { &y };
            (coordinate[0] == 0).then_some((secret, x, y))
        });
        let (secret, x, y) = found.expect("a key with a leading zero byte within 20 000 tries");
        let private = secret.to_pkcs8_der().expect("PKCS#8").as_bytes().to_vec();
        let public = secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI PEM");
        (private, public, x, y)
    }};
}

#[test]
fn ec_coordinates_with_leading_zero_bytes_stay_padded_in_the_jwk() {
    let hsm = SoftHsm::new("alg-leading-zero");
    let cases = [
        (
            "p256-x0",
            "ES256",
            key_with_leading_zero!(p256, 0, "p256-x0"),
        ),
        (
            "p256-y0",
            "ES256",
            key_with_leading_zero!(p256, 1, "p256-y0"),
        ),
        (
            "p384-x0",
            "ES384",
            key_with_leading_zero!(p384, 0, "p384-x0"),
        ),
        (
            "p384-y0",
            "ES384",
            key_with_leading_zero!(p384, 1, "p384-y0"),
        ),
    ];

    for (index, (label, alg, (private, public, x, y))) in cases.into_iter().enumerate() {
        // Import the key pair with pkcs11-tool: the token holds it as any device would.
        let (private_path, public_path) = (hsm.path(&format!("{label}.der")), hsm.path(label));
        std::fs::write(&private_path, &private).expect("write private key");
        std::fs::write(&public_path, &public).expect("write public key");
        let id = format!("6{index}");
        import(&hsm, &private_path, "privkey", &id, label, &[]);
        import(&hsm, &public_path, "pubkey", &id, label, &[]);

        // x and y keep their full field length, leading zero included (RFC 7518 §6.2.1.2).
        let jwk_text = hsm.ok(&["jwk", "--key", label]);
        let jwk = json(&jwk_text);
        assert_eq!(b64url(&jwk["x"]), x, "{label}");
        assert_eq!(b64url(&jwk["y"]), y, "{label}");

        // PyJWT takes the JWK and verifies an assertion with it.
        let compact = assert_with(&hsm, label, alg);
        pyjwt_verify(&jwk_text, &compact, AUD);
    }
}

#[test]
fn ecdsa_der_signatures_from_openssl_become_verifying_jws_signatures() {
    use p11jwt::alg::{Alg, Curve};
    use p11jwt::assertion::ecdsa_jws_candidates;
    use p11jwt::jwk::PublicKey;
    let hsm = SoftHsm::new("alg-der");
    let curves = [
        (Curve::P256, Alg::ES256, "P-256", "-sha256"),
        (Curve::P384, Alg::ES384, "P-384", "-sha384"),
        (Curve::P521, Alg::ES512, "P-521", "-sha512"),
    ];

    for (curve, alg, name, digest) in curves {
        // A key made by openssl, whose public key p11jwt reads from the certificate.
        let option = format!("ec_paramgen_curve:{name}");
        let key = off_token_key(&hsm, name, "EC", &option);
        let cert = std::fs::read(&key.cert_der).expect("certificate");
        let public = PublicKey::from_certificate(&cert).expect("the certificate's key");
        let pem = hsm.path(&format!("{name}.key.pem"));

        // openssl signs in DER, as some modules' CKM_ECDSA does: r and s are minimal INTEGERs,
        // with a zero byte in front when their top bit is set.
        for i in 0..24 {
            let message = format!("header.claims-{i}");
            let data = hsm.path("message");
            std::fs::write(&data, &message).expect("write message");
            let args = [
                "dgst",
                digest,
                "-sign",
                pem.to_str().unwrap(),
                data.to_str().unwrap(),
            ];
            let der = openssl(&args);

            // Exactly r || s, each the field size (RFC 7518 §3.4), and it verifies.
            let candidates = ecdsa_jws_candidates(curve, &der);
            let verifying: Vec<&Vec<u8>> = candidates
                .iter()
                .filter(|c| public.verify(alg, message.as_bytes(), c).is_ok())
                .collect();
            assert_eq!(verifying.len(), 1, "{name} #{i}: one reading verifies");
            assert_eq!(verifying[0].len(), 2 * curve.field_len(), "{name} #{i}");
        }
    }
}
