//! A real SoftHSM token in a temp directory with its own SOFTHSM2_CONF, and ways to run the
//! built `p11jwt`, `pkcs11-tool`, openssl and PyJWT against it.

#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const PIN: &str = "246810";
pub const SO_PIN: &str = "13579135";

/// SoftHSM's module, wherever this machine's package put it.
pub fn module() -> PathBuf {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("SoftHSM is not installed: run `make test`, which installs it")
}

pub struct SoftHsm {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub label: String,
}

impl SoftHsm {
    /// A fresh token labelled `label`, with user PIN [`PIN`].
    pub fn new(label: &str) -> SoftHsm {
        SoftHsm::with_config(label, "")
    }

    /// A fresh token whose softhsm2.conf has `extra` lines appended (e.g. slots.mechanisms).
    pub fn with_config(label: &str, extra: &str) -> SoftHsm {
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        let text = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n{extra}\n",
            tokens.display()
        );
        std::fs::write(&conf, text).expect("softhsm2.conf");
        let hsm = SoftHsm {
            dir,
            conf,
            label: label.to_owned(),
        };
        hsm.init_token(label);
        hsm
    }

    /// Initializes one more token in this SoftHSM.
    pub fn init_token(&self, label: &str) {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &self.conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                PIN,
                "--so-pin",
                SO_PIN,
            ])
            .output()
            .expect("softhsm2-util runs");
        assert!(
            out.status.success(),
            "init-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `p11jwt` with this token, the PIN in P11JWT_PIN, and no other P11JWT_* from outside.
    pub fn p11jwt(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_p11jwt"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("P11JWT_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("SOFTHSM2_CONF", &self.conf)
            .env("P11JWT_MODULE", module())
            .env("P11JWT_TOKEN", &self.label)
            .env("P11JWT_PIN", PIN)
            // The access token cache lives with this token, never in the user's own.
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `p11jwt ARGS` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.p11jwt().args(args).output().expect("p11jwt runs")
    }

    /// Runs `p11jwt ARGS`, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "p11jwt {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }

    /// Runs OpenSC's pkcs11-tool on this token (logged in) and returns stdout.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &self.conf)
            .arg("--module")
            .arg(module())
            .args(["--token-label", &self.label, "--login", "--pin", PIN])
            .args(args)
            .output()
            .expect("pkcs11-tool runs");
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// How many objects of each class the token holds (logged in).
    pub fn object_count(&self) -> usize {
        let listing = self.pkcs11_tool(&["--list-objects"]);
        listing.lines().filter(|l| l.contains(" Object;")).count()
    }

    /// A file in this token's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Verifies `assertion` with PyJWT against `jwk` (a JSON string), checking aud; returns the
/// claims PyJWT decoded, as JSON. Panics with PyJWT's message when it refuses.
pub fn pyjwt_verify(jwk: &str, assertion: &str, audience: &str) -> serde_json::Value {
    let script = r#"
import json, sys, jwt
jwk = json.loads(sys.argv[1])
key = jwt.PyJWK.from_dict(jwk)
claims = jwt.decode(sys.stdin.read().strip(), key.key, algorithms=[jwk["alg"]],
                    audience=sys.argv[2], options={"require": ["exp", "iat", "jti"]})
print(json.dumps(claims))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, jwk, audience])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(assertion.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyJWT refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("claims JSON")
}

/// Verifies a JWS signature with `openssl pkeyutl`/`dgst` against a PEM public key.
/// `digest` is sha256/sha384/sha512; `pss` asks for RSA-PSS with salt = digest length.
pub fn openssl_verify(pem: &Path, digest: &str, pss: bool, input: &[u8], sig: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sigf = dir.path().join("sig");
    std::fs::write(&data, input).unwrap();
    std::fs::write(&sigf, sig).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.arg("dgst")
        .arg(format!("-{digest}"))
        .arg("-verify")
        .arg(pem);
    if pss {
        cmd.args([
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:digest",
        ]);
    }
    let out = cmd
        .arg("-signature")
        .arg(&sigf)
        .arg(&data)
        .output()
        .expect("openssl runs");
    out.status.success()
}

/// r || s (JWS) to DER, for openssl.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Vec<u8> {
    fn int(bytes: &[u8]) -> Vec<u8> {
        let start = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let mut v = bytes[start..].to_vec();
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        let mut out = vec![0x02];
        out.extend(der_len(v.len()));
        out.extend(v);
        out
    }
    fn der_len(n: usize) -> Vec<u8> {
        if n < 0x80 {
            vec![n as u8]
        } else {
            vec![0x81, n as u8]
        }
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let body: Vec<u8> = [int(r), int(s)].concat();
    let mut out = vec![0x30];
    out.extend(der_len(body.len()));
    out.extend(body);
    out
}

/// Splits a compact JWS into (signing input, decoded header, decoded claims, signature).
pub fn split_jws(compact: &str) -> (String, serde_json::Value, serde_json::Value, Vec<u8>) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let parts: Vec<&str> = compact.trim().split('.').collect();
    assert_eq!(parts.len(), 3, "compact JWS has three parts: {compact}");
    let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    (format!("{}.{}", parts[0], parts[1]), header, claims, sig)
}
