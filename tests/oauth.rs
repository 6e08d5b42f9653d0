//! The token exchange as real clients need it, against servers made for each test on
//! 127.0.0.1: retries with a fresh assertion per attempt, the access token cache (provably
//! without the PKCS#11 module), output formats, `exec`, `get` as an API client, `--cacert`
//! with an openssl-made CA, discovery findings, and provider presets refusing before signing.

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use common::softhsm::{public_pem, SoftHsm, PIN};
use common::standin::Standin;

const CLIENT_ID: &str = "p11jwt-oauth-test";

/// One request as the fake server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn form(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.body.as_bytes())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The claims of the client assertion in the form.
    fn assertion_claims(&self) -> Value {
        let assertion = self
            .form("client_assertion")
            .expect("client_assertion in the form");
        let payload = assertion.split('.').nth(1).expect("a compact JWS");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }
}

/// What the fake server answers.
struct Reply {
    status: u16,
    body: String,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            headers: vec![],
        }
    }

    fn token(access_token: &str) -> Reply {
        Reply::json(
            200,
            json!({"access_token": access_token, "token_type": "Bearer", "expires_in": 3600}),
        )
    }
}

/// A tiny_http server on 127.0.0.1 that records every request and answers with `handler`
/// (given the request's index and the request).
struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Fake {
    fn start(mut handler: impl FnMut(usize, &Seen) -> Reply + Send + 'static) -> Fake {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("listen"));
        let url = format!(
            "http://{}",
            server.server_addr().to_ip().expect("an IP address")
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (server2, seen2) = (Arc::clone(&server), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            for mut request in server2.incoming_requests() {
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let entry = Seen {
                    method: request.method().to_string(),
                    path: request.url().to_owned(),
                    headers: request
                        .headers()
                        .iter()
                        .map(|h| (h.field.to_string(), h.value.to_string()))
                        .collect(),
                    body,
                };
                let index = {
                    let mut all = seen2.lock().unwrap();
                    all.push(entry.clone());
                    all.len() - 1
                };
                let reply = handler(index, &entry);
                let mut response = tiny_http::Response::from_string(reply.body)
                    .with_status_code(reply.status)
                    .with_header(
                        tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap(),
                    );
                for (name, value) in reply.headers {
                    response = response.with_header(
                        tiny_http::Header::from_bytes(name, value.as_bytes()).unwrap(),
                    );
                }
                let _ = request.respond(response);
            }
        });
        Fake {
            url,
            seen,
            server,
            thread: Some(thread),
        }
    }

    fn token_endpoint(&self) -> String {
        format!("{}/oauth/token", self.url)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A token with one RSA key labelled `signer`.
fn token_with_key(label: &str) -> SoftHsm {
    let hsm = SoftHsm::new(label);
    hsm.ok(&["keygen", "--key", "signer"]);
    hsm
}

fn base(endpoint: &str) -> Vec<&str> {
    vec![
        "--key",
        "signer",
        "--client-id",
        CLIENT_ID,
        "--token-endpoint",
        endpoint,
    ]
}

fn args<'a>(command: &'a str, endpoint: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![command];
    all.extend(base(endpoint));
    all.extend(more);
    all
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn busy_503_with_retry_after_then_200_yields_a_token_with_a_fresh_jti_per_attempt() {
    let hsm = token_with_key("oauth-retry");
    let fake = Fake::start(|i, _| match i {
        0 => Reply {
            status: 503,
            body: "<html>busy</html>".into(),
            headers: vec![("Retry-After", "1".into())],
        },
        _ => Reply::token("retried-access-token"),
    });
    let endpoint = fake.token_endpoint();

    // The most verbose level, to check below that no secret reaches the logs.
    let started = Instant::now();
    let out = hsm.run(&[vec!["-vv"], args("token", &endpoint, &["--no-cache"])].concat());

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "retried-access-token"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    let (first, second) = (seen[0].assertion_claims(), seen[1].assertion_claims());
    assert_ne!(
        first["jti"], second["jti"],
        "every attempt carries a new assertion"
    );

    // Neither the assertions nor the access token nor the PIN are in stderr.
    let log = stderr(&out);
    assert!(log.contains("503"), "{log}");
    for request in &seen {
        let assertion = request.form("client_assertion").unwrap();
        assert!(!log.contains(&assertion), "{log}");
        assert!(
            !log.contains(assertion.rsplit('.').next().unwrap()),
            "{log}"
        );
    }
    assert!(!log.contains("retried-access-token"), "{log}");
    assert!(!log.contains(PIN), "{log}");
}

#[test]
fn bad_request_400_and_unauthorized_401_are_not_retried() {
    let hsm = token_with_key("oauth-400");
    for (status, error) in [(400, "invalid_request"), (401, "invalid_client")] {
        let fake = Fake::start(move |_, _| {
            Reply::json(status, json!({"error": error, "error_description": "no"}))
        });
        let endpoint = fake.token_endpoint();

        let out = hsm.run(&args("token", &endpoint, &["--retries", "5"]));

        assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
        assert_eq!(fake.seen().len(), 1, "{status} is answered once");
        assert!(stderr(&out).contains(error), "{}", stderr(&out));
    }
}

#[test]
fn busy_on_every_attempt_gives_up_with_exit_7() {
    let hsm = token_with_key("oauth-429");
    let fake = Fake::start(|_, _| Reply {
        status: 429,
        body: "slow down".into(),
        headers: vec![("Retry-After", "0".into())],
    });
    let endpoint = fake.token_endpoint();

    let out = hsm.run(&args("token", &endpoint, &["--retries", "2"]));

    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(fake.seen().len(), 3);
    let log = stderr(&out);
    assert!(log.contains("429"), "{log}");

    // The warnings announcing a retry do not call their attempt the last; the error does.
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("429")).collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(lines[..2].iter().all(|l| !l.contains("last")), "{log}");
    assert!(lines[2].contains("on attempt 3, the last one"), "{log}");
}

#[test]
fn form_carries_scope_resource_and_params() {
    let hsm = token_with_key("oauth-form");
    let fake = Fake::start(|_, _| Reply::token("t"));
    let endpoint = fake.token_endpoint();

    hsm.ok(&args(
        "token",
        &endpoint,
        &[
            "--scope",
            "read",
            "--resource",
            "https://api.example/",
            "--param",
            "audience=x",
        ],
    ));

    let seen = &fake.seen()[0];
    assert_eq!(
        seen.form("grant_type").as_deref(),
        Some("client_credentials")
    );
    assert_eq!(seen.form("scope").as_deref(), Some("read"));
    assert_eq!(
        seen.form("resource").as_deref(),
        Some("https://api.example/")
    );
    assert_eq!(seen.form("audience").as_deref(), Some("x"));
    assert_eq!(
        seen.assertion_claims()["aud"],
        endpoint.as_str(),
        "aud byte for byte"
    );

    // p11jwt's own fields cannot be overridden.
    let out = hsm.run(&args(
        "token",
        &endpoint,
        &["--param", "grant_type=password"],
    ));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn cached_access_token_is_used_without_loading_the_module() {
    let hsm = token_with_key("oauth-cache");
    let jwks = hsm.ok(&["jwk", "--key", "signer", "--jwks"]);
    let standin = Standin::start(CLIENT_ID, &jwks);
    let endpoint = standin.token_endpoint();

    // First run signs and caches.
    let first = hsm.ok(&args("token", &endpoint, &[]));

    // Second run: the module path points nowhere, and the cached access token comes back.
    let nowhere = hsm.path("no-such-module.so");
    let second = hsm
        .p11jwt()
        .env("P11JWT_MODULE", &nowhere)
        .args(args("token", &endpoint, &[]))
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(String::from_utf8_lossy(&second.stdout), first);

    // The file holds no assertion and only its owner can read it.
    let dir = hsm.path("cache").join("p11jwt");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        !text.contains("client_assertion") && !text.contains("eyJhbGciOi"),
        "{text}"
    );

    // --no-cache and --forget both go back to the (missing) module.
    let with_nowhere = |extra: &[&str]| {
        hsm.p11jwt()
            .env("P11JWT_MODULE", &nowhere)
            .args(args("token", &endpoint, extra))
            .output()
    };
    assert_eq!(
        with_nowhere(&["--no-cache"]).unwrap().status.code(),
        Some(3)
    );
    assert!(with_nowhere(&["--forget"]).unwrap().status.success());
    assert_eq!(with_nowhere(&[]).unwrap().status.code(), Some(3));
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
}

#[test]
fn response_without_expires_in_is_not_cached() {
    let hsm = token_with_key("oauth-noexp");
    let fake = Fake::start(|i, _| {
        Reply::json(
            200,
            json!({"access_token": format!("t{i}"), "token_type": "Bearer"}),
        )
    });
    let endpoint = fake.token_endpoint();

    assert_eq!(hsm.ok(&args("token", &endpoint, &[])).trim(), "t0");
    assert_eq!(hsm.ok(&args("token", &endpoint, &[])).trim(), "t1");
}

#[test]
fn formats_header_env_and_json() {
    let hsm = token_with_key("oauth-formats");
    let fake = Fake::start(|_, _| Reply::token("tok.en-1"));
    let endpoint = fake.token_endpoint();

    let header = hsm.ok(&args("token", &endpoint, &["--format", "header"]));
    assert_eq!(header, "Authorization: Bearer tok.en-1\n");

    let json: Value =
        serde_json::from_str(&hsm.ok(&args("token", &endpoint, &["--json"]))).unwrap();
    assert_eq!(json["access_token"], "tok.en-1");
    assert!(json["expires_in"].as_u64().unwrap() <= 3600);

    // The env line, evaluated by a real shell.
    let env = hsm.ok(&args(
        "token",
        &endpoint,
        &["--format", "env", "--env-name", "API_TOKEN"],
    ));
    let status = Command::new("sh")
        .args(["-c", &format!("{env} test \"$API_TOKEN\" = tok.en-1")])
        .status()
        .unwrap();
    assert!(status.success(), "{env}");
}

#[test]
fn exec_runs_the_command_with_the_access_token_and_its_exit_code() {
    let hsm = token_with_key("oauth-exec");
    let fake = Fake::start(|_, _| Reply::token("exec-token"));
    let endpoint = fake.token_endpoint();

    let ok = hsm.run(&args(
        "exec",
        &endpoint,
        &["--", "sh", "-c", "test -n \"$P11JWT_ACCESS_TOKEN\""],
    ));
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));

    // At the most verbose level, the access token reaches the command and no log.
    let mut verbose = vec!["-vv"];
    verbose.extend(args(
        "exec",
        &endpoint,
        &["--no-cache", "--", "sh", "-c", "exit 0"],
    ));
    let out = hsm.run(&verbose);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("jti="), "{}", stderr(&out));
    assert!(!stderr(&out).contains("exec-token"), "{}", stderr(&out));

    // Another name, the command's own exit code, and no PIN handed down.
    let script = "test \"$MY_TOKEN\" = exec-token && test -z \"$P11JWT_PIN\" \
                  && test -z \"$P11JWT_PIN_FILE\" && exit 42";
    let out = hsm
        .p11jwt()
        .env("P11JWT_PIN_FILE", "/nonexistent/pin")
        .args(args(
            "exec",
            &endpoint,
            &["--env-name", "MY_TOKEN", "--", "sh", "-c", script],
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(42), "{}", stderr(&out));
}

#[test]
fn get_sends_method_body_headers_and_retries_once_after_401_with_a_fresh_token() {
    let hsm = token_with_key("oauth-get");
    let fake = Fake::start(|_, seen| {
        if seen.path == "/oauth/token" {
            let n = seen.assertion_claims()["jti"].as_str().unwrap().to_owned();
            return Reply::token(&format!("fresh-{n}"));
        }
        if seen.path != "/api/things" {
            return Reply::json(404, json!({"errors": [{"title": "Not Found"}]}));
        }
        match seen.header("Authorization") {
            Some(auth) if auth.starts_with("Bearer fresh-") => Reply::json(
                200,
                json!({"method": seen.method, "body": seen.body, "x": seen.header("X-Test")}),
            ),
            _ => Reply::json(401, json!({"error": "invalid_token"})),
        }
    });
    let endpoint = fake.token_endpoint();
    let api = format!("{}/api/things", fake.url);
    let body_file = hsm.path("body.json");
    std::fs::write(&body_file, "{\"a\":1}").unwrap();
    let data = format!("@{}", body_file.display());

    // -X, -d @FILE and -H reach the API; the body comes back on stdout.
    let out = hsm.ok(&args(
        "get",
        &endpoint,
        &[&api, "-X", "PUT", "-d", &data, "-H", "X-Test: yes"],
    ));
    let echoed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        echoed,
        json!({"method": "PUT", "body": "{\"a\":1}", "x": "yes"})
    );

    // A cached access token the API refuses is dropped; one fresh try follows.
    let cache = hsm.path("cache").join("p11jwt");
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("fresh-", "stale-");
        std::fs::write(&path, text).unwrap();
    }
    let before = fake.seen().len();
    let out = hsm.run(&[vec!["-v"], args("get", &endpoint, &[&api])].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("answered 401") && log.contains("answered 200"),
        "{log}"
    );
    assert!(
        !log.contains("fresh-") && !log.contains("stale-"),
        "no access token in logs: {log}"
    );
    let paths: Vec<String> = fake.seen()[before..]
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(paths, ["/api/things", "/oauth/token", "/api/things"]);

    // p11jwt sets Authorization itself; -H cannot replace it.
    let refused = hsm.run(&args(
        "get",
        &endpoint,
        &[
            &format!("{}/nothing", fake.url),
            "--no-cache",
            "-H",
            "Authorization: x",
        ],
    ));
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));

    // An HTTP error status is exit 9, with the status and a summary on stderr.
    let nothing = format!("{}/nothing", fake.url);
    let out = hsm.run(&args("get", &endpoint, &[&nothing, "--no-cache"]));
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("404: {\"errors\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn discovery_finds_the_endpoint_and_warns_about_what_the_metadata_lacks() {
    let hsm = token_with_key("oauth-discovery");
    let issuer = Arc::new(Mutex::new(String::new()));
    let issuer_in_server = Arc::clone(&issuer);
    let fake = Fake::start(move |_, seen| {
        let issuer = issuer_in_server.lock().unwrap().clone();
        match seen.path.as_str() {
            "/.well-known/openid-configuration" => Reply::json(
                200,
                json!({
                    "issuer": issuer,
                    "token_endpoint": format!("{issuer}/oauth/token"),
                    "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                    "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
                }),
            ),
            "/oauth/token" => Reply::token("discovered"),
            _ => Reply::json(404, json!({})),
        }
    });
    *issuer.lock().unwrap() = fake.url.clone();

    let mut command = vec!["token", "--key", "signer", "--client-id", CLIENT_ID];
    command.extend(["--issuer", &fake.url, "--no-cache"]);
    let out = hsm.run(&command);

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "discovered");
    let log = stderr(&out);
    assert!(log.contains("without private_key_jwt"), "{log}");
    assert!(log.contains("without RS256"), "{log}");
    let token_request = fake
        .seen()
        .into_iter()
        .find(|s| s.path == "/oauth/token")
        .unwrap();
    assert_eq!(
        token_request.assertion_claims()["aud"],
        format!("{}/oauth/token", fake.url)
    );

    // An issuer spelled differently from the metadata's is refused (RFC 8414 §3.3).
    let slash = format!("{}/", fake.url);
    let mut command = vec!["token", "--key", "signer", "--client-id", CLIENT_ID];
    command.extend(["--issuer", &slash, "--no-cache"]);
    let out = hsm.run(&command);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(stderr(&out).contains("names issuer"), "{}", stderr(&out));
}

#[test]
fn presets_refuse_before_signing() {
    let hsm = token_with_key("oauth-presets");
    let fake = Fake::start(|_, _| Reply::token("never"));
    let endpoint = fake.token_endpoint();
    let refused = |extra: &[&str]| {
        let out = hsm.run(&args("token", &endpoint, extra));
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        stderr(&out)
    };

    let slash = format!("{endpoint}/");
    let text = refused(&["--provider", "qlik", "--audience", &slash]);
    assert!(text.contains("no trailing slash"), "{text}");
    assert!(refused(&["--provider", "qlik", "--lifetime", "301"]).contains("301"));
    assert!(refused(&["--provider", "qlik", "--alg", "RS384"]).contains("RS384"));
    assert!(refused(&["--provider", "auth0"]).contains("--param audience="));
    assert!(refused(&["--provider", "entra"]).contains("certificate"));
    assert!(refused(&["--provider", "okta", "--audience", "https://elsewhere/"]).contains("aud"));

    // Nothing reached the server.
    assert!(fake.seen().is_empty());
    // The same request passes the qlik preset when it follows the rules.
    hsm.ok(&args(
        "token",
        &endpoint,
        &["--provider", "qlik", "--alg", "RS512"],
    ));
    assert_eq!(
        fake.seen()[0].form("scope").as_deref(),
        Some("user_default")
    );
}

/// A CA and a server certificate for 127.0.0.1 made with openssl, and a Python TLS token
/// endpoint using them.
struct TlsEndpoint {
    child: std::process::Child,
    url: String,
    ca: std::path::PathBuf,
}

impl Drop for TlsEndpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tls_endpoint(dir: &std::path::Path) -> TlsEndpoint {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=p11jwt test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );

    let script = r#"
import http.server, json, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"access_token": "over-tls", "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(dir.join("server.pem"))
        .arg(dir.join("server.key"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    use std::io::BufRead as _;
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the TLS server prints its port");
    TlsEndpoint {
        child,
        url: format!("https://127.0.0.1:{port}/oauth/token"),
        ca: dir.join("ca.pem"),
    }
}

#[test]
fn cacert_makes_an_internal_ca_trusted() {
    let hsm = token_with_key("oauth-cacert");
    let server = tls_endpoint(hsm.dir.path());

    // Without the CA the certificate is unknown: a network error, not retried for ever.
    let out = hsm.run(&args("token", &server.url, &["--timeout", "10"]));
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("--cacert"), "{}", stderr(&out));

    let ca = server.ca.to_str().unwrap();
    assert_eq!(
        hsm.ok(&args("token", &server.url, &["--cacert", ca]))
            .trim(),
        "over-tls"
    );

    // A file without certificates is refused with what to do.
    let key = hsm.path("server.key");
    let out = hsm.run(&args(
        "token",
        &server.url,
        &["--cacert", key.to_str().unwrap()],
    ));
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("no CERTIFICATE"), "{}", stderr(&out));
}

/// A minimal HTTP CONNECT proxy (RFC 9110 §9.3.6) on 127.0.0.1 that records each CONNECT
/// target and then relays bytes both ways.
struct ConnectProxy {
    url: String,
    targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    fn start() -> ConnectProxy {
        use std::io::{BufRead as _, Write as _};
        use std::net::{TcpListener, TcpStream};

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&targets);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || -> std::io::Result<()> {
                    let mut reader = std::io::BufReader::new(client.try_clone()?);
                    let mut line = String::new();
                    reader.read_line(&mut line)?;
                    let target = line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned();
                    // Skip the rest of the request head.
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header)? <= 2 {
                            break;
                        }
                    }
                    seen.lock().unwrap().push(target.clone());
                    let upstream = TcpStream::connect(&target)?;
                    let mut client_writer = client.try_clone()?;
                    client_writer.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
                    let mut up_writer = upstream.try_clone()?;
                    let mut up_reader = upstream;
                    std::thread::spawn(move || std::io::copy(&mut reader, &mut up_writer));
                    std::io::copy(&mut up_reader, &mut client_writer)?;
                    Ok(())
                });
            }
        });
        ConnectProxy { url, targets }
    }

    fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

#[test]
fn https_proxy_is_honoured_and_no_proxy_bypasses_it() {
    let hsm = token_with_key("oauth-proxy");
    let server = tls_endpoint(hsm.dir.path());
    let endpoint = server.url.clone();
    let ca = server.ca.to_str().unwrap().to_owned();
    let proxy = ConnectProxy::start();
    let run = |no_proxy: &str| {
        hsm.p11jwt()
            .env("HTTPS_PROXY", &proxy.url)
            .env("NO_PROXY", no_proxy)
            .args(args(
                "token",
                &endpoint,
                &["--no-cache", "--retries", "0", "--cacert", &ca],
            ))
            .output()
            .unwrap()
    };

    // Through the proxy: it saw a CONNECT to the token endpoint's host and port. (https to
    // loopback still uses the proxy; only plain http to loopback never does.)
    let out = run("example.com");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over-tls");
    let authority = endpoint
        .trim_start_matches("https://")
        .trim_end_matches("/oauth/token")
        .to_owned();
    assert_eq!(proxy.targets(), [authority]);

    // NO_PROXY names the host: straight to the endpoint, the proxy sees nothing more.
    let out = run("127.0.0.1");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(proxy.targets().len(), 1);
}

#[test]
fn entra_preset_sends_the_certificate_thumbprints() {
    use sha2::Digest as _;
    let hsm = token_with_key("oauth-entra");
    let fake = Fake::start(|_, _| Reply::token("entra-token"));
    let endpoint = fake.token_endpoint();

    // A certificate for the token's key, issued by a throw-away CA, stored under its CKA_ID.
    let dir = hsm.dir.path();
    let pem = public_pem(&hsm, "signer");
    let pem = pem.to_str().expect("UTF-8 temp path");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=ca",
        ],
    );
    openssl(
        dir,
        &[
            "req", "-new", "-key", "ca.key", "-out", "app.csr", "-subj", "/CN=app",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "app.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-force_pubkey",
            pem,
            "-outform",
            "DER",
            "-out",
            "app.der",
            "-days",
            "2",
        ],
    );
    let keys: Value = serde_json::from_str(&hsm.ok(&["keys", "--json"])).unwrap();
    let id = keys["keys"][0]["id"].as_str().unwrap().to_owned();
    let cert = hsm.path("app.der");
    hsm.pkcs11_tool(&[
        "--write-object",
        cert.to_str().unwrap(),
        "--type",
        "cert",
        "--id",
        &id,
        "--label",
        "signer",
    ]);

    hsm.ok(&args(
        "token",
        &endpoint,
        &["--provider", "entra", "--scope", "api://x/.default"],
    ));

    let seen = &fake.seen()[0];
    let assertion = seen.form("client_assertion").unwrap();
    let header = assertion.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    let der = std::fs::read(&cert).unwrap();
    assert_eq!(
        header["x5t"],
        URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&der))
    );
    assert_eq!(
        header["x5t#S256"],
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der))
    );
    assert_eq!(header["typ"], "JWT");
    assert_eq!(
        seen.form("client_id").as_deref(),
        Some(CLIENT_ID),
        "Entra wants client_id"
    );
}

#[test]
fn library_request_token_mints_once_per_attempt_without_pkcs11() {
    use p11jwt::oauth::{Client, ClientOptions, RetryPolicy, TokenRequest};
    use p11jwt::secret::Secret;

    let fake = Fake::start(|i, _| match i {
        0 | 1 => Reply {
            status: 503,
            body: String::new(),
            headers: vec![("Retry-After", "0".into())],
        },
        _ => Reply::token("lib-token"),
    });
    let endpoint = fake.token_endpoint();
    let options = ClientOptions {
        retry: RetryPolicy {
            attempts: 3,
            ..RetryPolicy::default()
        },
        ..ClientOptions::default()
    };
    let client = Client::new(options).unwrap();
    let request = TokenRequest {
        token_endpoint: &endpoint,
        ..TokenRequest::default()
    };

    // A stand-in minting closure: any string works for this server.
    let mut minted = 0;
    let response = client
        .request_token(&request, || {
            minted += 1;
            Ok::<_, p11jwt::Error>(Secret::new(format!("assertion-{minted}")))
        })
        .unwrap();

    assert_eq!(response.access_token.expose(), "lib-token");
    assert_eq!(minted, 3);
    let sent: Vec<_> = fake
        .seen()
        .iter()
        .map(|s| s.form("client_assertion").unwrap())
        .collect();
    assert_eq!(sent, ["assertion-1", "assertion-2", "assertion-3"]);
}

#[test]
fn discovery_falls_back_to_rfc8414_and_says_when_nothing_is_published() {
    let hsm = token_with_key("oauth-discovery-bare");
    let issuer = Arc::new(Mutex::new(String::new()));
    let issuer_in_server = Arc::clone(&issuer);
    let fake = Fake::start(move |_, seen| {
        let issuer = issuer_in_server.lock().unwrap().clone();
        match seen.path.as_str() {
            "/.well-known/oauth-authorization-server" => Reply::json(
                200,
                json!({"issuer": issuer, "token_endpoint": format!("{issuer}/token")}),
            ),
            "/token" => Reply::token("bare"),
            _ => Reply::json(404, json!({})),
        }
    });
    *issuer.lock().unwrap() = fake.url.clone();

    let mut command = vec!["token", "--key", "signer", "--client-id", CLIENT_ID];
    command.extend(["--issuer", &fake.url]);
    let out = hsm.run(&command);

    assert!(out.status.success(), "{}", stderr(&out));
    let paths: Vec<String> = fake.seen().iter().map(|s| s.path.clone()).collect();
    let expected = [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/token",
    ];
    assert_eq!(paths, expected);
    let log = stderr(&out);
    assert!(
        log.contains("has no token_endpoint_auth_methods_supported"),
        "{log}"
    );
    assert!(
        log.contains("has no token_endpoint_auth_signing_alg_values_supported"),
        "{log}"
    );

    // A cache hit needs no discovery: the issuer alone names the cache entry.
    let again = hsm.run(&command);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(fake.seen().len(), 3);
}

#[test]
fn timeout_bounds_the_retries_whatever_retry_after_asks() {
    let hsm = token_with_key("oauth-deadline");
    let fake = Fake::start(|_, _| Reply {
        status: 503,
        body: String::new(),
        headers: vec![("Retry-After", "20".into())],
    });
    let endpoint = fake.token_endpoint();

    let started = Instant::now();
    let out = hsm.run(&args(
        "token",
        &endpoint,
        &["--retries", "5", "--timeout", "3"],
    ));

    // Waiting 20 s would pass the 3 s budget: p11jwt gives up at once instead.
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(fake.seen().len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn entra_preset_refuses_a_certificate_of_another_key() {
    let hsm = token_with_key("oauth-entra-wrong");
    let fake = Fake::start(|_, _| Reply::token("never"));
    let endpoint = fake.token_endpoint();

    // A self-signed certificate for a key that is not on the token, under the key's CKA_ID.
    let dir = hsm.dir.path();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-outform",
            "DER",
            "-out",
            "other.der",
            "-days",
            "2",
            "-subj",
            "/CN=other",
        ],
    );
    let keys: Value = serde_json::from_str(&hsm.ok(&["keys", "--json"])).unwrap();
    let id = keys["keys"][0]["id"].as_str().unwrap().to_owned();
    let cert = hsm.path("other.der");
    hsm.pkcs11_tool(&[
        "--write-object",
        cert.to_str().unwrap(),
        "--type",
        "cert",
        "--id",
        &id,
        "--label",
        "signer",
    ]);

    let out = hsm.run(&args("token", &endpoint, &["--provider", "entra"]));

    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not this key's"),
        "{}",
        stderr(&out)
    );
    assert!(fake.seen().is_empty());
}

#[test]
fn a_2xx_with_fields_of_the_wrong_type_names_the_field_and_never_shows_the_body() {
    let hsm = token_with_key("oauth-2xx-types");
    let secret = "SECRET-access-token-0123456789";
    let bodies = [
        (
            json!({"access_token": secret, "token_type": "Bearer", "scope": ["a", "b"]}),
            "scope",
        ),
        (
            json!({"access_token": secret, "token_type": 5}),
            "token_type",
        ),
        (
            json!({"access_token": 7, "token_type": "Bearer", "note": secret}),
            "access_token",
        ),
        (json!([secret]), "array"),
    ];
    for (body, named) in bodies {
        let fake = Fake::start(move |_, _| Reply::json(200, body.clone()));
        let endpoint = fake.token_endpoint();

        let out = hsm.run(&args("token", &endpoint, &["--no-cache"]));

        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(8), "{log}");
        assert!(log.contains(named), "{log}");
        assert!(!log.contains(secret), "{log}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn an_empty_or_unusable_access_token_is_the_servers_error() {
    let hsm = token_with_key("oauth-2xx-chars");
    for token in [
        "",
        "has space",
        "nul\u{0}byte",
        "\"quoted\"",
        "new\nline",
        "caf\u{e9}",
    ] {
        let fake = Fake::start(move |_, _| Reply::token(token));
        let endpoint = fake.token_endpoint();

        let out = hsm.run(&args("token", &endpoint, &["--no-cache"]));

        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(8), "{token:?}: {log}");
        assert!(log.contains("access_token"), "{log}");
        assert!(out.stdout.is_empty(), "{token:?}");
    }

    // A b64token with its padding, and the odd visible characters some servers use, pass.
    for token in ["abc-._~+/==", "v1:abc|def"] {
        let fake = Fake::start(move |_, _| Reply::token(token));
        let out = hsm.ok(&args("token", &fake.token_endpoint(), &["--no-cache"]));
        assert_eq!(out.trim(), token);
    }
}

#[test]
fn timeouts_of_u64_max_are_capped_instead_of_panicking() {
    let hsm = token_with_key("oauth-huge-timeout");
    let fake = Fake::start(|_, _| Reply::token("in-time"));
    let endpoint = fake.token_endpoint();
    let max = u64::MAX.to_string();

    let out = hsm.run(&args(
        "token",
        &endpoint,
        &["--no-cache", "--timeout", &max, "--connect-timeout", &max],
    ));

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "in-time");
    assert!(stderr(&out).contains("cut to 86400 s"), "{}", stderr(&out));
}

#[test]
fn plain_http_to_loopback_never_goes_through_a_proxy() {
    let hsm = token_with_key("oauth-loopback-proxy");
    let fake = Fake::start(|_, _| Reply::token("direct"));
    let endpoint = fake.token_endpoint();
    let api = format!("{}/api", fake.url);
    let proxy = ConnectProxy::start();
    let with_proxy = |more: &[&str]| {
        hsm.p11jwt()
            .env("HTTP_PROXY", &proxy.url)
            .env("HTTPS_PROXY", &proxy.url)
            .env("ALL_PROXY", &proxy.url)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .args(more)
            .output()
            .unwrap()
    };

    // The token endpoint and the API, both plain http on 127.0.0.1: the proxy sees nothing.
    let out = with_proxy(&args("token", &endpoint, &["--no-cache", "--retries", "0"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut get = vec!["get", api.as_str()];
    get.extend(base(&endpoint));
    get.extend(["--no-cache", "--retries", "0"]);
    let out = with_proxy(&get);
    assert!(out.status.success(), "{}", stderr(&out));

    assert_eq!(proxy.targets(), Vec::<String>::new());
    assert_eq!(fake.seen().len(), 3);
}

/// A compact JWS as the fake server saw it in the form.
fn posted_assertion(fake: &Fake) -> String {
    fake.seen()[0].form("client_assertion").unwrap()
}

#[test]
fn an_echoed_assertion_is_redacted_and_long_descriptions_are_cut() {
    let hsm = token_with_key("oauth-echo");

    // In error_description, with a megabyte of padding after it.
    let fake = Fake::start(|_, seen| {
        let assertion = seen.form("client_assertion").unwrap();
        let description = format!("bad assertion {assertion} {}", "x".repeat(1 << 20));
        Reply::json(
            400,
            json!({"error": "invalid_client", "error_description": description}),
        )
    });
    let out = hsm.run(&args("token", &fake.token_endpoint(), &["--no-cache"]));
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(8), "{log}");
    let assertion = posted_assertion(&fake);
    for part in assertion.split('.') {
        assert!(!log.contains(part), "{log}");
    }
    assert!(log.contains("bad assertion [redacted JWS]"), "{log}");
    assert!(log.contains('…'), "{log}");
    assert!(log.len() < 2000, "{} bytes", log.len());

    // In a body that is not JSON.
    let fake = Fake::start(|_, seen| Reply {
        status: 502,
        body: format!("echo {}", seen.form("client_assertion").unwrap()),
        headers: vec![],
    });
    let out = hsm.run(&args("token", &fake.token_endpoint(), &["--no-cache"]));
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(8), "{log}");
    for part in posted_assertion(&fake).split('.') {
        assert!(!log.contains(part), "{log}");
    }
    assert!(log.contains("echo [redacted JWS]"), "{log}");
}

#[test]
fn a_redirect_is_named_and_not_followed() {
    let hsm = token_with_key("oauth-redirect");
    let fake = Fake::start(|_, _| Reply {
        status: 302,
        body: String::new(),
        headers: vec![("Location", "https://elsewhere.example/oauth/token".into())],
    });

    let out = hsm.run(&args("token", &fake.token_endpoint(), &["--no-cache"]));

    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(8), "{log}");
    assert!(
        log.contains("302, a redirect to https://elsewhere.example/oauth/token"),
        "{log}"
    );
    assert!(log.contains("does not follow redirects"), "{log}");
    assert_eq!(fake.seen().len(), 1);
}

#[test]
fn an_oversized_token_response_is_the_servers_fault_not_the_network() {
    let hsm = token_with_key("oauth-oversized");
    let fake = Fake::start(|_, _| Reply {
        status: 200,
        body: format!("{{\"access_token\":\"{}\"}}", "a".repeat(5 << 20)),
        headers: vec![],
    });

    let out = hsm.run(&args("token", &fake.token_endpoint(), &["--no-cache"]));

    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(8), "{log}");
    assert!(log.contains("with a body over"), "{log}");
    assert!(!log.contains("cannot reach"), "{log}");
}

#[test]
fn a_cache_directory_others_can_write_is_ignored_with_one_warning() {
    use std::os::unix::fs::PermissionsExt as _;

    let hsm = token_with_key("oauth-cache-loose");
    let fake = Fake::start(|i, _| Reply::token(&format!("t{i}")));
    let endpoint = fake.token_endpoint();
    let dir = hsm.path("cache").join("p11jwt");
    let chmod = |mode| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode));

    // Cached by the first run.
    assert_eq!(hsm.ok(&args("token", &endpoint, &[])).trim(), "t0");

    // World-writable: the entry is not trusted, the new access token is not written there,
    // and the user is told once.
    chmod(0o777).unwrap();
    let out = hsm.run(&args("token", &endpoint, &[]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t1");
    let log = stderr(&out);
    assert_eq!(
        log.matches("not using the access token cache").count(),
        1,
        "{log}"
    );
    assert!(log.contains("mode 777"), "{log}");

    // Back to 0700: the first entry is still the one cached.
    chmod(0o700).unwrap();
    assert_eq!(hsm.ok(&args("token", &endpoint, &[])).trim(), "t0");
}
