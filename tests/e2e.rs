//! The main job end to end, on a real SoftHSM token and a stand-in tenant on 127.0.0.1:
//! keygen, jwk, assert, token, get. Every signature is checked by code that did not make it
//! (PyJWT, openssl, and the stand-in's jsonwebtoken).

mod common;

use std::process::Command;

use common::softhsm::{self, openssl_verify, public_pem, pyjwt_verify, split_jws, SoftHsm, PIN};
use common::standin::Standin;

const CLIENT_ID: &str = "p11jwt-test-client";

#[test]
fn keygen_makes_a_sensitive_never_extractable_key() {
    let hsm = SoftHsm::new("e2e-keygen");

    // Generate, then ask another tool how the token sees the private key.
    hsm.ok(&["keygen", "--key", "ci-signer"]);
    let listing = hsm.pkcs11_tool(&["--list-objects", "--type", "privkey"]);

    assert!(listing.contains("label:      ci-signer"), "{listing}");
    let access = listing
        .lines()
        .find(|l| l.contains("Access:"))
        .expect("Access line");
    assert!(access.contains("sensitive"), "{access}");
    assert!(access.contains("always sensitive"), "{access}");
    assert!(access.contains("never extractable"), "{access}");
    assert!(!access.contains(" extractable,") || access.contains("never extractable"));
    let usage = listing
        .lines()
        .find(|l| l.contains("Usage:"))
        .expect("Usage line");
    assert!(usage.contains("sign"), "{usage}");
}

#[test]
fn jwk_agrees_with_keygen_and_its_kid_is_the_rfc7638_thumbprint() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use sha2::Digest as _;
    let hsm = SoftHsm::new("e2e-jwk");

    let from_keygen: serde_json::Value =
        serde_json::from_str(&hsm.ok(&["keygen", "--key", "k1", "--bits", "3072"])).unwrap();
    let from_jwk: serde_json::Value =
        serde_json::from_str(&hsm.ok(&["jwk", "--key", "k1"])).unwrap();
    assert_eq!(from_keygen, from_jwk);

    // RFC 7638 §3: the required members, sorted, no whitespace.
    let canonical = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        from_jwk["e"].as_str().unwrap(),
        from_jwk["n"].as_str().unwrap()
    );
    let thumbprint = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()));
    assert_eq!(from_jwk["kid"], thumbprint);
    assert_eq!(from_jwk["e"], "AQAB");
    assert_eq!(from_jwk["use"], "sig");
    assert_eq!(from_jwk["alg"], "RS256");
    let n = URL_SAFE_NO_PAD
        .decode(from_jwk["n"].as_str().unwrap())
        .unwrap();
    assert_eq!(n.len(), 384, "3072-bit modulus, no leading zero octet");
    assert_ne!(n[0], 0);

    // --kid sets another kid, for jwk as for assert.
    let named: serde_json::Value =
        serde_json::from_str(&hsm.ok(&["jwk", "--key", "k1", "--kid", "my-key-1"])).unwrap();
    assert_eq!(named["kid"], "my-key-1");
}

#[test]
fn assertion_verifies_with_pyjwt_and_openssl_and_has_exact_claims() {
    let hsm = SoftHsm::new("e2e-assert");
    let aud = "https://acme.eu.qlikcloud.com/oauth/token";
    let jwk = hsm.ok(&["keygen", "--key", "signer"]);

    for alg in ["RS256", "RS512"] {
        // Mint.
        let compact = hsm.ok(&[
            "assert",
            "--key",
            "signer",
            "--client-id",
            CLIENT_ID,
            "--audience",
            aud,
            "--alg",
            alg,
        ]);
        let (input, header, claims, sig) = split_jws(&compact);

        // Header and claims exactly as RFC 7523 and the Qlik tutorial ask.
        let jwk_value: serde_json::Value = serde_json::from_str(&jwk).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": alg, "kid": jwk_value["kid"], "typ": "JWT"})
        );
        let keys: Vec<&String> = claims.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["aud", "exp", "iat", "iss", "jti", "sub"]);
        assert_eq!(claims["iss"], CLIENT_ID);
        assert_eq!(claims["sub"], CLIENT_ID);
        assert_eq!(claims["aud"], aud);
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            300
        );
        let jti = uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).expect("jti is a UUID");
        assert_eq!(jti.get_version_num(), 4);

        // PyJWT, with the JWK that `jwk` printed (alg swapped to the one under test).
        let mut jwk_for_alg = jwk_value.clone();
        jwk_for_alg["alg"] = alg.into();
        let decoded = pyjwt_verify(&jwk_for_alg.to_string(), &compact, aud);
        assert_eq!(decoded, claims);

        // openssl, with the public key read from the token by pkcs11-tool.
        let pem = public_pem(&hsm, "signer");
        let digest = if alg == "RS256" { "sha256" } else { "sha512" };
        assert!(
            openssl_verify(&pem, digest, false, input.as_bytes(), &sig),
            "{alg}"
        );
        let mut tampered = input.clone().into_bytes();
        tampered[0] ^= 1;
        assert!(
            !openssl_verify(&pem, digest, false, &tampered, &sig),
            "openssl must refuse"
        );
    }
}

#[test]
fn two_assertions_have_distinct_jtis() {
    let hsm = SoftHsm::new("e2e-jti");
    hsm.ok(&["keygen", "--key", "signer"]);
    let args = [
        "assert",
        "--key",
        "signer",
        "--client-id",
        CLIENT_ID,
        "--audience",
        "https://a/oauth/token",
    ];
    let (_, _, a, _) = split_jws(&hsm.ok(&args));
    let (_, _, b, _) = split_jws(&hsm.ok(&args));
    assert_ne!(a["jti"], b["jti"]);
}

/// A token with a key registered at a fresh stand-in tenant.
fn tenant(label: &str) -> (SoftHsm, Standin) {
    let hsm = SoftHsm::new(label);
    hsm.ok(&["keygen", "--key", "signer"]);
    let jwks = hsm.ok(&["jwk", "--key", "signer", "--jwks"]);
    let standin = Standin::start(CLIENT_ID, &jwks);
    (hsm, standin)
}

#[test]
fn token_then_get_returns_the_user() {
    let (hsm, standin) = tenant("e2e-token");
    let endpoint = standin.token_endpoint();

    // An access token, then the whole response with --json.
    let access_token = hsm.ok(&[
        "token",
        "--key",
        "signer",
        "--client-id",
        CLIENT_ID,
        "--token-endpoint",
        &endpoint,
    ]);
    assert!(!access_token.trim().is_empty());
    let response: serde_json::Value = serde_json::from_str(&hsm.ok(&[
        "token",
        "--key",
        "signer",
        "--client-id",
        CLIENT_ID,
        "--token-endpoint",
        &endpoint,
        "--scope",
        "user_default",
        "--json",
    ]))
    .unwrap();
    assert_eq!(response["token_type"], "Bearer");
    assert_eq!(response["scope"], "user_default");

    // get mints its own access token and prints the body.
    let me = format!("{}/api/v1/users/me", standin.url);
    let body = hsm.ok(&[
        "get",
        &me,
        "--key",
        "signer",
        "--client-id",
        CLIENT_ID,
        "--token-endpoint",
        &endpoint,
    ]);
    let user: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(user["subject"], CLIENT_ID);
}

#[test]
fn refused_assertion_shows_the_oauth_error_and_a_hint() {
    let (hsm, standin) = tenant("e2e-refused");

    let out = hsm.run(&[
        "token",
        "--key",
        "signer",
        "--client-id",
        "someone-else",
        "--token-endpoint",
        &standin.token_endpoint(),
    ]);

    assert_eq!(out.status.code(), Some(8));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(stderr.contains("--client-id"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn audience_with_trailing_slash_is_refused_by_the_tenant() {
    let (hsm, standin) = tenant("e2e-aud");
    let endpoint = standin.token_endpoint();

    let out = hsm.run(&[
        "token",
        "--key",
        "signer",
        "--client-id",
        CLIENT_ID,
        "--token-endpoint",
        &endpoint,
        "--audience",
        &format!("{endpoint}/"),
    ]);

    assert_eq!(out.status.code(), Some(8));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("trailing slash"), "{stderr}");
}

#[test]
fn get_with_http_error_exits_9() {
    let (hsm, standin) = tenant("e2e-get-404");
    let missing = format!("{}/api/v1/nothing-here", standin.url);

    let out = hsm.run(&[
        "get",
        &missing,
        "--key",
        "signer",
        "--client-id",
        CLIENT_ID,
        "--token-endpoint",
        &standin.token_endpoint(),
    ]);

    assert_eq!(
        out.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn plain_http_to_a_remote_host_is_refused_before_signing() {
    let hsm = SoftHsm::new("e2e-http");
    hsm.ok(&["keygen", "--key", "signer"]);

    let out = hsm.run(&[
        "token",
        "--key",
        "signer",
        "--client-id",
        CLIENT_ID,
        "--token-endpoint",
        "http://tenant.example.com/oauth/token",
    ]);

    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stderr).contains("https"));
}

#[test]
fn secrets_never_reach_stderr_even_at_the_most_verbose_level() {
    let (hsm, standin) = tenant("e2e-secrets");
    let endpoint = standin.token_endpoint();
    let base = ["--key", "signer", "--client-id", CLIENT_ID];

    // The assertion and the access token, as printed on stdout when asked for.
    let mut assert_args = vec!["-vv", "assert"];
    assert_args.extend(base);
    assert_args.extend(["--audience", &endpoint]);
    let assertion_out = hsm.run(&assert_args);
    let assertion = String::from_utf8_lossy(&assertion_out.stdout)
        .trim()
        .to_owned();
    let mut token_args = vec!["-vv", "token"];
    token_args.extend(base);
    token_args.extend(["--token-endpoint", &endpoint]);
    let token_out = hsm.run(&token_args);
    let access_token = String::from_utf8_lossy(&token_out.stdout).trim().to_owned();

    // Neither the PIN, the assertion, its signature nor the access token is in any log.
    let signature = assertion.rsplit('.').next().unwrap().to_owned();
    for stderr in [&assertion_out.stderr, &token_out.stderr] {
        let stderr = String::from_utf8_lossy(stderr);
        assert!(stderr.contains("jti="), "logs show the jti: {stderr}");
        assert!(!stderr.contains(PIN), "{stderr}");
        assert!(!stderr.contains(&assertion), "{stderr}");
        assert!(!stderr.contains(&signature), "{stderr}");
        assert!(!stderr.contains(&access_token), "{stderr}");
    }
    assert!(!standin.log().contains(&access_token));
}

#[test]
fn wrong_pin_fails_once_with_exit_4_and_is_never_shown() {
    let hsm = SoftHsm::new("e2e-pin");
    hsm.ok(&["keygen", "--key", "signer"]);

    let out = hsm
        .p11jwt()
        .env("P11JWT_PIN", "999999")
        .args([
            "assert",
            "--key",
            "signer",
            "--client-id",
            "c",
            "--audience",
            "https://a/t",
        ])
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CKR_PIN_INCORRECT"), "{stderr}");
    assert!(!stderr.contains("999999"), "{stderr}");
    // Tried once: SoftHSM counts one failure, so the right PIN still works.
    hsm.ok(&[
        "assert",
        "--key",
        "signer",
        "--client-id",
        "c",
        "--audience",
        "https://a/t",
    ]);
}

#[test]
fn keygen_refuses_short_rsa_and_taken_labels_and_leaves_nothing() {
    let hsm = SoftHsm::new("e2e-keygen-refusals");
    hsm.ok(&["keygen", "--key", "taken"]);
    let before = hsm.object_count();

    let short = hsm.run(&["keygen", "--key", "short", "--bits", "1024"]);
    assert_eq!(short.status.code(), Some(2));
    let taken = hsm.run(&["keygen", "--key", "taken"]);
    assert_eq!(taken.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already has objects labelled"));

    assert_eq!(hsm.object_count(), before);
}

#[test]
fn missing_key_lists_the_keys_that_exist() {
    let hsm = SoftHsm::new("e2e-nokey");
    hsm.ok(&["keygen", "--key", "present"]);

    let out = hsm.run(&[
        "assert",
        "--key",
        "absent",
        "--client-id",
        "c",
        "--audience",
        "https://a/t",
    ]);

    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"absent\""), "{stderr}");
    assert!(stderr.contains("\"present\""), "{stderr}");
}

#[test]
fn pin_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let hsm = SoftHsm::new("e2e-pinfile");
    hsm.ok(&["keygen", "--key", "signer"]);
    let pin_file = hsm.path("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let args = [
        "assert",
        "--key",
        "signer",
        "--client-id",
        "c",
        "--audience",
        "https://a/t",
    ];

    let loose = hsm
        .p11jwt()
        .env_remove("P11JWT_PIN")
        .arg("--help")
        .output()
        .unwrap();
    assert!(loose.status.success());
    let out = hsm
        .p11jwt()
        .env_remove("P11JWT_PIN")
        .env("P11JWT_PIN_FILE", &pin_file)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));

    // Tightened, the same file works.
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = hsm
        .p11jwt()
        .env_remove("P11JWT_PIN")
        .env("P11JWT_PIN_FILE", &pin_file)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = softhsm::module();
}

#[test]
fn softhsm_env_script_reuses_its_token_when_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/softhsm-env.sh");

    // Run twice on one directory, as two CI jobs sharing a cached token dir would.
    for _ in 0..2 {
        let out = Command::new(script)
            .arg(dir.path())
            .args(["ci-token", "1234"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let slots = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", dir.path().join("softhsm2.conf"))
        .arg("--show-slots")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&slots.stdout);
    assert_eq!(listing.matches("ci-token").count(), 1, "{listing}");
}

#[test]
fn a_flag_beats_an_endpoint_from_the_environment() {
    let (hsm, standin) = tenant("e2e-flag-beats-env");
    let endpoint = standin.token_endpoint();
    let args = [
        "token",
        "--key",
        "signer",
        "--client-id",
        CLIENT_ID,
        "--token-endpoint",
        &endpoint,
    ];

    // P11JWT_TENANT in the environment, --token-endpoint on the command line: the flag wins.
    let out = hsm
        .p11jwt()
        .env("P11JWT_TENANT", "acme")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Two flags naming the endpoint are refused.
    let mut both = args.to_vec();
    both.extend(["--tenant", "acme"]);
    let out = hsm.run(&both);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give only one"));

    // P11JWT_NO_CACHE takes the usual spellings of yes.
    let out = hsm
        .p11jwt()
        .env("P11JWT_NO_CACHE", "1")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn assert_takes_its_audience_from_the_token_endpoint_variable() {
    let hsm = SoftHsm::new("e2e-assert-aud-env");
    hsm.ok(&["keygen", "--key", "signer"]);
    let aud = "https://acme.qlikcloud.com/oauth/token";

    let out = hsm
        .p11jwt()
        .env("P11JWT_TOKEN_ENDPOINT", aud)
        .args(["assert", "--key", "signer", "--client-id", CLIENT_ID])
        .output()
        .unwrap();

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, _, claims, _) = split_jws(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(claims["aud"], aud);
}

#[test]
fn nonsense_tenants_lifetimes_and_audiences_are_usage_errors() {
    let hsm = SoftHsm::new("e2e-nonsense");
    hsm.ok(&["keygen", "--key", "signer"]);
    let base = ["assert", "--key", "signer", "--client-id", CLIENT_ID];

    for extra in [
        vec!["--tenant", "https://acme.qlikcloud.com"],
        vec!["--tenant", "acme/"],
        vec!["--audience", ""],
        vec!["--audience", "https://a/t", "--lifetime", "0"],
        vec![
            "--audience",
            "https://a/t",
            "--lifetime",
            "18446744073709551615",
        ],
    ] {
        let mut args = base.to_vec();
        args.extend(&extra);
        let out = hsm.run(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn keygen_and_keys_without_a_pin_ask_for_one() {
    let hsm = SoftHsm::new("e2e-nopin");
    hsm.ok(&["keygen", "--key", "signer"]);

    for args in [vec!["keygen", "--key", "other"], vec!["keys"]] {
        let out = hsm
            .p11jwt()
            .env_remove("P11JWT_PIN")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("needs the user PIN"));
    }
}

#[test]
fn keygens_racing_for_one_label_leave_exactly_one_key_pair() {
    let hsm = SoftHsm::new("e2e-keygen-race");

    // Eight processes ask for the same label at once.
    let children: Vec<_> = (0..8)
        .map(|_| {
            hsm.p11jwt()
                .args(["keygen", "--key", "race", "--alg", "ES256"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<Option<i32>> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code())
        .collect();

    // One wins; the others say the label is taken; one key pair remains.
    assert!(
        codes.iter().all(|c| *c == Some(0) || *c == Some(5)),
        "{codes:?}"
    );
    assert!(codes.contains(&Some(0)), "{codes:?}");
    let listing = hsm.pkcs11_tool(&["--list-objects", "--type", "privkey"]);
    assert_eq!(listing.matches("label:      race").count(), 1, "{listing}");
    hsm.ok(&["jwk", "--key", "race"]);
}

#[test]
fn pin_stdin_reads_one_line_and_leaves_the_rest_to_the_command() {
    use std::io::Write as _;
    let (hsm, standin) = tenant("e2e-pin-stdin");
    let endpoint = standin.token_endpoint();

    let mut child = hsm
        .p11jwt()
        .env_remove("P11JWT_PIN")
        .args([
            "exec",
            "--pin-stdin",
            "--key",
            "signer",
            "--client-id",
            CLIENT_ID,
        ])
        .args(["--token-endpoint", &endpoint, "--no-cache", "--"])
        .args(["sh", "-c", "read line && test \"$line\" = after-the-pin"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{PIN}\nafter-the-pin\n").as_bytes())
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_empty_pin_value_in_a_uri_is_refused_before_login() {
    let hsm = SoftHsm::new("e2e-empty-pin-value");
    hsm.ok(&["keygen", "--key", "signer"]);

    let out = hsm
        .p11jwt()
        .env_remove("P11JWT_PIN")
        .args(["assert", "--key", "pkcs11:object=signer?pin-value="])
        .args([
            "--client-id",
            CLIENT_ID,
            "--audience",
            "https://a/oauth/token",
        ])
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));
    // No login was tried: the token does not report a failed one.
    let slots = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &hsm.conf)
        .arg("--module")
        .arg(softhsm::module())
        .arg("--list-token-slots")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&slots.stdout);
    assert!(!listing.contains("user PIN count low"), "{listing}");
}

#[test]
fn jwks_of_the_keys_named_by_repeated_key_flags() {
    let hsm = SoftHsm::new("e2e-jwks-rotation");
    let old: serde_json::Value =
        serde_json::from_str(&hsm.ok(&["keygen", "--key", "old"])).unwrap();
    let new: serde_json::Value =
        serde_json::from_str(&hsm.ok(&["keygen", "--key", "new", "--alg", "ES384"])).unwrap();
    hsm.ok(&["keygen", "--key", "unrelated"]);

    // Old and new, in the order given; the third key is not in the set.
    let jwks: serde_json::Value =
        serde_json::from_str(&hsm.ok(&["jwk", "--jwks", "--key", "old", "--key", "new"])).unwrap();
    assert_eq!(jwks["keys"], serde_json::json!([old, new]));

    // Several keys elsewhere are refused.
    let out = hsm.run(&["jwk", "--key", "old", "--key", "new"]);
    assert_eq!(out.status.code(), Some(2));
    let out = hsm.run(&["assert", "--key", "old", "--key", "new", "--client-id", "c"]);
    assert_eq!(out.status.code(), Some(2));
}
