//! Interoperability: the token exchange against an authorization server p11jwt's authors did
//! not write. Authlib (tests/interop/authlib_server.py, installed by `make test`) verifies the
//! assertions with joserfc; p11jwt finds its token endpoint through RFC 8414 discovery.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::softhsm::SoftHsm;

const CLIENT_ID: &str = "p11jwt-interop";

/// The Authlib server as a child process; killed when dropped.
struct Authlib {
    issuer: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Authlib {
    /// Starts the server with `jwks` registered for [`CLIENT_ID`].
    fn start(jwks: &str) -> Authlib {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("jwks.json"), jwks).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/authlib_server.py");
        let port_file = dir.path().join("issuer");
        let child = Command::new("python3")
            .arg(script)
            .args(["--client-id", CLIENT_ID, "--jwks"])
            .arg(dir.path().join("jwks.json"))
            .arg("--port-file")
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("log")).unwrap())
            .stderr(fs::File::create(dir.path().join("log.err")).unwrap())
            .spawn()
            .expect("python3 runs");
        let mut server = Authlib {
            issuer: String::new(),
            child,
            dir,
        };

        // The server renames the port file into place: any content seen is whole.
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.issuer.is_empty() {
            if let Ok(text) = fs::read_to_string(&port_file) {
                server.issuer = text.trim().to_owned();
            } else if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "authlib_server exited with {status} (run `make test` to install Authlib):\n{}",
                    server.log()
                );
            } else if Instant::now() > deadline {
                panic!("authlib_server did not start:\n{}", server.log());
            }
            thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log.err")).unwrap_or_default()
    }
}

impl Drop for Authlib {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("authlib_server log:\n{}", self.log());
        }
    }
}

/// A token with an RSA key (`rsa`, RS256) and a P-384 key (`ec`, ES384).
fn token_with_two_keys(label: &str) -> SoftHsm {
    let hsm = SoftHsm::new(label);
    hsm.ok(&["keygen", "--key", "rsa"]);
    hsm.ok(&["keygen", "--key", "ec", "--alg", "ES384"]);
    hsm
}

fn token_via_issuer(hsm: &SoftHsm, key: &str, issuer: &str) -> std::process::Output {
    hsm.run(&[
        "-v",
        "token",
        "--key",
        key,
        "--client-id",
        CLIENT_ID,
        "--issuer",
        issuer,
        "--json",
    ])
}

#[test]
fn authlib_issues_access_tokens_for_rs256_and_es384_through_discovery() {
    let hsm = token_with_two_keys("interop-ok");
    let server = Authlib::start(&hsm.ok(&["jwk", "--jwks"]));

    for (key, alg) in [("rsa", "RS256"), ("ec", "ES384")] {
        let out = token_via_issuer(&hsm, key, &server.issuer);

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{key}: {stderr}");
        let response: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(response["token_type"], "Bearer", "{response}");
        assert!(!response["access_token"].as_str().unwrap().is_empty());
        // Discovery fell back to RFC 8414 and found nothing to warn about.
        assert!(stderr.contains("oauth-authorization-server"), "{stderr}");
        assert!(stderr.contains(&format!("alg={alg}")), "{stderr}");
        assert!(!stderr.contains("warning"), "{stderr}");
    }
}

#[test]
fn authlib_refuses_an_unregistered_key_and_a_wrong_audience() {
    let hsm = token_with_two_keys("interop-refused");
    // Only the RSA key is registered.
    let server = Authlib::start(&hsm.ok(&["jwk", "--key", "rsa", "--jwks"]));

    let out = token_via_issuer(&hsm, "ec", &server.issuer);
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(out.stdout.is_empty());

    // The right key, but aud is the issuer, which this server does not accept.
    let mut args = vec!["token", "--key", "rsa", "--client-id", CLIENT_ID];
    args.extend(["--issuer", &server.issuer, "--audience", &server.issuer]);
    let out = hsm.run(&args);
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_client"));
}
