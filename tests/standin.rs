//! The stand-in tenant (`examples/standin.rs`) enforces the rules of the Qlik token endpoint.
//!
//! The assertions here are signed with software keys from `openssl genpkey` and the
//! `jsonwebtoken` encoder, not with p11jwt: these tests pin the verifier, so that the tests of
//! p11jwt that rely on it prove something.

mod common;

use std::error::Error;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use common::standin::Standin;

type TestResult = Result<(), Box<dyn Error>>;

const CLIENT_ID: &str = "3a6b0c6d2e9f4b1c8d7e6f5a4b3c2d1e";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The software keys, made once per test binary: RSA keys are slow to generate.
struct Keys {
    rsa: EncodingKey,
    ec: EncodingKey,
    /// Registered nowhere: signs assertions whose signature must not verify.
    stranger: EncodingKey,
    /// Registers `rsa` as kid "rsa" and `ec` as kid "ec".
    jwks: String,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| match make_keys() {
        Ok(keys) => keys,
        Err(e) => panic!("cannot make the test keys with openssl: {e}"),
    })
}

fn make_keys() -> Result<Keys, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let rsa = EncodingKey::from_rsa_pem(&genpkey(dir.path(), "rsa", "rsa_keygen_bits:2048")?)?;
    let ec = EncodingKey::from_ec_pem(&genpkey(dir.path(), "ec", "ec_paramgen_curve:P-384")?)?;
    let stranger = EncodingKey::from_rsa_pem(&genpkey(dir.path(), "rsa", "rsa_keygen_bits:2048")?)?;

    let jwks =
        json!({"keys": [jwk(&rsa, Algorithm::RS256, "rsa")?, jwk(&ec, Algorithm::ES384, "ec")?]});
    Ok(Keys {
        rsa,
        ec,
        stranger,
        jwks: jwks.to_string(),
    })
}

/// A PEM private key from `openssl genpkey`.
fn genpkey(
    dir: &std::path::Path,
    algorithm: &str,
    option: &str,
) -> Result<Vec<u8>, Box<dyn Error>> {
    let path = dir.join(format!("{}.pem", uuid::Uuid::new_v4().simple()));
    // output(), not status(): openssl draws progress dots on stderr, shown only on failure.
    let output = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            algorithm,
            "-pkeyopt",
            option,
            "-out",
        ])
        .arg(&path)
        .output()?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("openssl genpkey -algorithm {algorithm}: {stderr}").into());
    }
    Ok(std::fs::read(path)?)
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Result<Jwk, Box<dyn Error>> {
    let mut jwk = Jwk::from_encoding_key(key, alg)?;
    jwk.common.key_id = Some(kid.to_owned());
    Ok(jwk)
}

fn start() -> Standin {
    Standin::start(CLIENT_ID, &keys().jwks)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Claims that the stand-in accepts; each refusal test spoils one of them.
fn good_claims(standin: &Standin) -> Value {
    let now = unix_now();
    json!({
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "aud": standin.token_endpoint(),
        "iat": now,
        "exp": now + 60,
        "jti": uuid::Uuid::new_v4().to_string(),
    })
}

fn header(alg: Algorithm, kid: &str) -> Header {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    header
}

/// An RS256 assertion from the registered RSA key.
fn sign(claims: &Value) -> Result<String, Box<dyn Error>> {
    Ok(jsonwebtoken::encode(
        &header(Algorithm::RS256, "rsa"),
        claims,
        &keys().rsa,
    )?)
}

fn sign_with(header: &Header, claims: &Value, key: &EncodingKey) -> Result<String, Box<dyn Error>> {
    Ok(jsonwebtoken::encode(header, claims, key)?)
}

/// A compact JWS with any header at all, which jsonwebtoken's encoder would not write.
fn forge(header: &Value, claims: &Value) -> String {
    let part = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    format!(
        "{}.{}.{}",
        part(header),
        part(claims),
        URL_SAFE_NO_PAD.encode([7u8; 64])
    )
}

/// An HTTP client that hands back 4xx answers instead of turning them into errors, and never
/// goes through a proxy from the environment.
fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .build();
    ureq::Agent::new_with_config(config)
}

/// POSTs a form to the token endpoint; returns the status and the JSON body.
fn post_form(standin: &Standin, form: &[(&str, &str)]) -> Result<(u16, Value), Box<dyn Error>> {
    let mut response = agent()
        .post(standin.token_endpoint())
        .send_form(form.iter().copied())?;
    let body = response.body_mut().read_to_string()?;
    Ok((response.status().as_u16(), serde_json::from_str(&body)?))
}

/// Exchanges an assertion the way p11jwt does.
fn exchange(standin: &Standin, assertion: &str) -> Result<(u16, Value), Box<dyn Error>> {
    post_form(
        standin,
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ],
    )
}

/// Asserts an RFC 6749 §5.2 error response and returns its error_description.
fn assert_refused(answer: (u16, Value), status: u16, error: &str) -> String {
    let (got_status, body) = answer;
    assert_eq!(
        (got_status, body["error"].as_str()),
        (status, Some(error)),
        "body: {body}"
    );
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(!description.is_empty(), "no error_description in {body}");
    description.to_owned()
}

fn users_me(
    standin: &Standin,
    authorization: Option<&str>,
) -> Result<ureq::http::Response<ureq::Body>, Box<dyn Error>> {
    let mut request = agent().get(format!("{}/api/v1/users/me", standin.url));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    Ok(request.call()?)
}

fn assert_unauthorized(mut response: ureq::http::Response<ureq::Body>) -> TestResult {
    assert_eq!(response.status().as_u16(), 401);
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.as_bytes());
    assert_eq!(challenge, Some(&b"Bearer"[..]));
    let body: Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
    assert_eq!(
        body,
        json!({"errors": [{"title": "Unauthorized", "code": "401"}]})
    );
    Ok(())
}

#[test]
fn issues_access_token_that_users_me_accepts() -> TestResult {
    let standin = start();

    // A good RS256 assertion is exchanged for an opaque access token.
    let (status, body) = exchange(&standin, &sign(&good_claims(&standin))?)?;
    assert_eq!(status, 200, "body: {body}");
    let access_token = body["access_token"].as_str().unwrap_or_default().to_owned();
    assert!(
        access_token.starts_with("sat_") && access_token.len() > 20,
        "{access_token}"
    );
    let expected = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": "user_default",
    });
    assert_eq!(body, expected);

    // The access token is accepted by the API, which names the client.
    let mut response = users_me(&standin, Some(&format!("Bearer {access_token}")))?;
    assert_eq!(response.status().as_u16(), 200);
    let me: Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
    assert_eq!(me["subject"], CLIENT_ID);
    assert_eq!(me["name"], "p11jwt demo client");
    assert_eq!(me["status"], "active");
    assert!(me["id"].is_string() && me["tenantId"].is_string(), "{me}");
    Ok(())
}

#[test]
fn accepts_es384_and_rs512_and_echoes_scope() -> TestResult {
    let standin = start();

    // ES384 from the registered P-384 key, asking for a scope.
    let assertion = sign_with(
        &header(Algorithm::ES384, "ec"),
        &good_claims(&standin),
        &keys().ec,
    )?;
    let (status, body) = post_form(
        &standin,
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &assertion),
            ("scope", "user_default admin_classic"),
            ("client_id", CLIENT_ID),
        ],
    )?;
    assert_eq!(
        (status, &body["scope"]),
        (200, &json!("user_default admin_classic")),
        "{body}"
    );

    // RS512 from the registered RSA key.
    let assertion = sign_with(
        &header(Algorithm::RS512, "rsa"),
        &good_claims(&standin),
        &keys().rsa,
    )?;
    let (status, body) = exchange(&standin, &assertion)?;
    assert_eq!(status, 200, "body: {body}");
    Ok(())
}

#[test]
fn refuses_grant_type_other_than_client_credentials() -> TestResult {
    let standin = start();
    let assertion = sign(&good_claims(&standin))?;

    for grant_type in [
        "authorization_code",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "",
    ] {
        let answer = post_form(
            &standin,
            &[
                ("grant_type", grant_type),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &assertion),
            ],
        )?;
        assert_refused(answer, 400, "unsupported_grant_type");
    }
    Ok(())
}

#[test]
fn refuses_client_assertion_type_other_than_jwt_bearer() -> TestResult {
    let standin = start();
    let assertion = sign(&good_claims(&standin))?;

    // Qlik names this error unsupported_client_assertion_type.
    let answer = post_form(
        &standin,
        &[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            ),
            ("client_assertion", &assertion),
        ],
    )?;
    let description = assert_refused(answer, 400, "unsupported_client_assertion_type");
    assert!(
        description.contains("client_assertion_type"),
        "{description}"
    );
    Ok(())
}

#[test]
fn refuses_missing_client_assertion() -> TestResult {
    let standin = start();

    let answer = post_form(
        &standin,
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
        ],
    )?;
    assert_refused(answer, 400, "invalid_request");
    Ok(())
}

#[test]
fn refuses_alg_other_than_rs256_rs512_es384() -> TestResult {
    let standin = start();
    let claims = good_claims(&standin);

    // Valid signatures from the registered RSA key, under algs Qlik does not take.
    for alg in [Algorithm::RS384, Algorithm::PS256] {
        let assertion = sign_with(&header(alg, "rsa"), &claims, &keys().rsa)?;
        assert_refused(exchange(&standin, &assertion)?, 401, "invalid_client");
    }

    // HMAC, "none" and made-up algs.
    let hs256 = sign_with(
        &header(Algorithm::HS256, "rsa"),
        &claims,
        &EncodingKey::from_secret(b"k"),
    )?;
    assert_refused(exchange(&standin, &hs256)?, 401, "invalid_client");
    for alg in ["none", "ES512", "RS256 "] {
        let assertion = forge(&json!({"alg": alg, "kid": "rsa", "typ": "JWT"}), &claims);
        let description = assert_refused(exchange(&standin, &assertion)?, 401, "invalid_client");
        assert!(description.contains("alg"), "{description}");
    }
    Ok(())
}

#[test]
fn refuses_missing_kid() -> TestResult {
    let standin = start();

    let assertion = sign_with(
        &Header::new(Algorithm::RS256),
        &good_claims(&standin),
        &keys().rsa,
    )?;
    let description = assert_refused(exchange(&standin, &assertion)?, 401, "invalid_client");
    assert!(description.contains("kid"), "{description}");
    Ok(())
}

#[test]
fn refuses_kid_not_in_jwks() -> TestResult {
    let standin = start();

    let assertion = sign_with(
        &header(Algorithm::RS256, "other"),
        &good_claims(&standin),
        &keys().rsa,
    )?;
    let description = assert_refused(exchange(&standin, &assertion)?, 401, "invalid_client");
    assert!(description.contains("kid is invalid"), "{description}");
    Ok(())
}

#[test]
fn refuses_invalid_signature() -> TestResult {
    let standin = start();
    let claims = good_claims(&standin);

    // Signed by a key that is not the one registered under the kid.
    let assertion = sign_with(&header(Algorithm::RS256, "rsa"), &claims, &keys().stranger)?;
    let description = assert_refused(exchange(&standin, &assertion)?, 401, "invalid_client");
    assert!(description.contains("signature"), "{description}");

    // A good signature over other claims.
    let good = sign(&claims)?;
    let mut parts: Vec<&str> = good.split('.').collect();
    let altered = URL_SAFE_NO_PAD.encode(json!({"sub": "someone else"}).to_string());
    parts[1] = &altered;
    assert_refused(exchange(&standin, &parts.join("."))?, 401, "invalid_client");

    // ES384 named with the RSA key's kid.
    let assertion = sign_with(&header(Algorithm::ES384, "rsa"), &claims, &keys().ec)?;
    assert_refused(exchange(&standin, &assertion)?, 401, "invalid_client");
    Ok(())
}

#[test]
fn refuses_iss_other_than_client_id() -> TestResult {
    let standin = start();

    for iss in [json!("someone-else"), json!([CLIENT_ID]), Value::Null] {
        let mut claims = good_claims(&standin);
        claims["iss"] = iss;
        assert_refused(exchange(&standin, &sign(&claims)?)?, 401, "invalid_client");
    }
    Ok(())
}

#[test]
fn refuses_sub_other_than_client_id() -> TestResult {
    let standin = start();

    let mut claims = good_claims(&standin);
    claims["sub"] = json!("someone-else");
    assert_refused(exchange(&standin, &sign(&claims)?)?, 401, "invalid_client");
    Ok(())
}

#[test]
fn refuses_client_id_field_other_than_client_id() -> TestResult {
    let standin = start();

    let assertion = sign(&good_claims(&standin))?;
    let answer = post_form(
        &standin,
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &assertion),
            ("client_id", "someone-else"),
        ],
    )?;
    assert_refused(answer, 401, "invalid_client");
    Ok(())
}

#[test]
fn refuses_aud_other_than_exact_token_endpoint() -> TestResult {
    let standin = start();
    let endpoint = standin.token_endpoint();
    let wrong = [
        json!(format!("{endpoint}/")),
        json!(standin.url),
        json!("https://tenant.eu.qlikcloud.com/oauth/token"),
        json!([endpoint, "https://elsewhere.example/"]),
        json!([]),
    ];

    for aud in wrong {
        let mut claims = good_claims(&standin);
        claims["aud"] = aud;
        let description =
            assert_refused(exchange(&standin, &sign(&claims)?)?, 401, "invalid_client");
        assert!(description.contains("invalid audience"), "{description}");
    }

    // A one-element array is the same audience.
    let mut claims = good_claims(&standin);
    claims["aud"] = json!([endpoint]);
    assert_eq!(exchange(&standin, &sign(&claims)?)?.0, 200);
    Ok(())
}

#[test]
fn refuses_missing_exp_iat_or_jti() -> TestResult {
    let standin = start();

    for claim in ["exp", "iat", "jti"] {
        let mut claims = good_claims(&standin);
        claims.as_object_mut().map(|c| c.remove(claim));
        let description =
            assert_refused(exchange(&standin, &sign(&claims)?)?, 401, "invalid_client");
        assert!(description.contains(claim), "{claim}: {description}");
    }
    Ok(())
}

#[test]
fn refuses_lifetime_over_300_seconds() -> TestResult {
    let standin = start();
    let now = unix_now();

    let mut claims = good_claims(&standin);
    claims["exp"] = json!(now + 301);
    assert_refused(exchange(&standin, &sign(&claims)?)?, 401, "invalid_client");

    // Exactly 300 s is allowed.
    claims["exp"] = json!(now + 300);
    assert_eq!(exchange(&standin, &sign(&claims)?)?.0, 200);
    Ok(())
}

#[test]
fn refuses_expired_assertion() -> TestResult {
    let standin = start();
    let now = unix_now();

    let mut claims = good_claims(&standin);
    claims["iat"] = json!(now - 70);
    claims["exp"] = json!(now - 10);
    let description = assert_refused(exchange(&standin, &sign(&claims)?)?, 401, "invalid_client");
    assert!(description.contains("expired"), "{description}");

    // Within the 5 s leeway is still accepted.
    claims["exp"] = json!(now - 2);
    assert_eq!(exchange(&standin, &sign(&claims)?)?.0, 200);
    Ok(())
}

#[test]
fn refuses_iat_in_the_future() -> TestResult {
    let standin = start();
    let now = unix_now();

    let mut claims = good_claims(&standin);
    claims["iat"] = json!(now + 30);
    claims["exp"] = json!(now + 90);
    let description = assert_refused(exchange(&standin, &sign(&claims)?)?, 401, "invalid_client");
    assert!(description.contains("iat"), "{description}");
    Ok(())
}

#[test]
fn refuses_reused_jti() -> TestResult {
    let standin = start();
    let claims = good_claims(&standin);

    // The same assertion twice.
    let assertion = sign(&claims)?;
    assert_eq!(exchange(&standin, &assertion)?.0, 200);
    let description = assert_refused(exchange(&standin, &assertion)?, 401, "invalid_client");
    assert!(description.contains("jti has been used"), "{description}");

    // A fresh assertion that repeats the jti.
    let mut again = good_claims(&standin);
    again["jti"] = claims["jti"].clone();
    assert_refused(exchange(&standin, &sign(&again)?)?, 401, "invalid_client");
    Ok(())
}

#[test]
fn refuses_typ_other_than_jwt() -> TestResult {
    let standin = start();

    let mut header = header(Algorithm::RS256, "rsa");
    header.typ = Some("at+jwt".to_owned());
    let assertion = sign_with(&header, &good_claims(&standin), &keys().rsa)?;
    let description = assert_refused(exchange(&standin, &assertion)?, 401, "invalid_client");
    assert!(description.contains("typ"), "{description}");

    // typ is compared without case, and may be left out.
    for typ in [Some("jwt"), None] {
        header.typ = typ.map(str::to_owned);
        let assertion = sign_with(&header, &good_claims(&standin), &keys().rsa)?;
        assert_eq!(exchange(&standin, &assertion)?.0, 200, "typ {typ:?}");
    }
    Ok(())
}

#[test]
fn refuses_garbage_instead_of_assertion() -> TestResult {
    let standin = start();

    for assertion in ["", "a.b", "a.b.c", "....", "\u{1F600}.x.y"] {
        let answer = exchange(&standin, assertion)?;
        let status = answer.0;
        assert!(status == 400 || status == 401, "{assertion:?}: {status}");
    }

    // Still serving after all that.
    assert_eq!(exchange(&standin, &sign(&good_claims(&standin))?)?.0, 200);
    Ok(())
}

#[test]
fn users_me_refuses_unknown_or_missing_bearer_token() -> TestResult {
    let standin = start();

    assert_unauthorized(users_me(&standin, Some("Bearer sat_0123456789abcdef"))?)?;
    assert_unauthorized(users_me(&standin, None)?)?;
    Ok(())
}

#[test]
fn users_me_refuses_expired_access_token() -> TestResult {
    let standin = Standin::start_with(CLIENT_ID, &keys().jwks, &["--access-token-lifetime", "0"]);

    // An access token that expires as it is issued.
    let (status, body) = exchange(&standin, &sign(&good_claims(&standin))?)?;
    assert_eq!((status, &body["expires_in"]), (200, &json!(0)), "{body}");
    let access_token = body["access_token"].as_str().ok_or("no access_token")?;

    assert_unauthorized(users_me(&standin, Some(&format!("Bearer {access_token}")))?)?;
    Ok(())
}

#[test]
fn answers_unknown_path_with_404_json() -> TestResult {
    let standin = start();

    let mut response = agent()
        .get(format!("{}/api/v1/items", standin.url))
        .call()?;
    assert_eq!(response.status().as_u16(), 404);
    let body: Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
    assert_eq!(body["errors"][0]["code"], "404");
    Ok(())
}

#[test]
fn announces_base_url_on_stdout_and_port_file() -> TestResult {
    let standin = start();

    // Standin::start read the port file; stdout says the same.
    assert!(
        standin.url.starts_with("http://127.0.0.1:"),
        "{}",
        standin.url
    );
    assert_eq!(standin.stdout(), format!("{}\n", standin.url));
    Ok(())
}

#[test]
fn skips_unusable_jwks_entries() -> TestResult {
    // Keys it cannot use, around the RSA key registered as "rsa".
    let mut jwks: Value = serde_json::from_str(&keys().jwks)?;
    let good = jwks["keys"][0].clone();
    let mut no_kid = good.clone();
    no_kid.as_object_mut().map(|k| k.remove("kid"));
    jwks["keys"] = json!([
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed",
         "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
         "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "kid": "p256"},
        {"kty": "AKP", "alg": "ML-DSA-44", "pub": "AAAA", "kid": "pq"},
        {"kty": "RSA", "n": "not base64!", "e": "AQAB", "kid": "broken"},
        42,
        no_kid,
        good,
    ]);
    let standin = Standin::start(CLIENT_ID, &jwks.to_string());

    // The usable key still works, and an unusable one reads as an unknown kid.
    assert_eq!(exchange(&standin, &sign(&good_claims(&standin))?)?.0, 200);
    let assertion = sign_with(
        &header(Algorithm::RS256, "ed"),
        &good_claims(&standin),
        &keys().rsa,
    )?;
    assert_refused(exchange(&standin, &assertion)?, 401, "invalid_client");
    Ok(())
}

#[test]
fn logs_kid_and_jti_but_never_assertion_or_access_token() -> TestResult {
    let standin = start();

    // One exchange that succeeds and one that is refused.
    let claims = good_claims(&standin);
    let assertion = sign(&claims)?;
    let (_, body) = exchange(&standin, &assertion)?;
    let access_token = body["access_token"].as_str().ok_or("no access_token")?;
    exchange(&standin, &assertion)?;
    users_me(&standin, Some(&format!("Bearer {access_token}")))?;

    // The log names the kid, the jti and the refusal, and holds no secret.
    let log = standin.log();
    let jti = claims["jti"].as_str().ok_or("no jti")?;
    assert!(log.contains("kid=\"rsa\"") && log.contains(jti), "{log}");
    assert!(log.contains("jti has been used"), "{log}");
    let signature = assertion.rsplit('.').next().ok_or("no signature")?;
    for secret in [assertion.as_str(), signature, access_token] {
        assert!(!log.contains(secret), "log holds a secret:\n{log}");
    }
    Ok(())
}

#[test]
fn shuts_down_on_post_from_loopback() -> TestResult {
    let mut standin = start();

    let response = agent()
        .post(format!("{}/shutdown", standin.url))
        .send_empty()?;
    assert_eq!(response.status().as_u16(), 200);
    let status = standin.wait_for_exit(Duration::from_secs(5))?;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    Ok(())
}
