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

/// The public key of the object labelled `label`, read by pkcs11-tool (DER for RSA and EC, PEM
/// for Ed25519) and written as PEM by openssl: neither is our code.
pub fn public_pem(hsm: &SoftHsm, label: &str) -> PathBuf {
    let raw = hsm.path(&format!("{label}.pub.raw"));
    let pem = hsm.path(&format!("{label}.pub.pem"));
    let raw_arg = raw.to_str().expect("UTF-8 temp path");
    let read = [
        "--read-object",
        "--type",
        "pubkey",
        "--label",
        label,
        "-o",
        raw_arg,
    ];
    if !pkcs11_tool_status(hsm, &read) {
        // OpenSC 0.23's --read-object fails on every P-384 public key ("cannot create
        // EVP_PKEY"), its own included: build the SubjectPublicKeyInfo (RFC 5480) from the
        // CKA_EC_PARAMS and CKA_EC_POINT that pkcs11-tool lists instead.
        std::fs::write(&raw, ec_spki_from_listing(hsm, label)).expect("write SPKI");
    }
    let text = std::fs::read(&raw).expect("the public key was written");
    let inform = if text.starts_with(b"-----BEGIN") {
        "PEM"
    } else {
        "DER"
    };
    openssl(&[
        "pkey",
        "-pubin",
        "-inform",
        inform,
        "-in",
        raw_arg,
        "-out",
        pem.to_str().unwrap(),
    ]);
    pem
}

/// pkcs11-tool on the token, logged in; whether it succeeded.
pub fn pkcs11_tool_status(hsm: &SoftHsm, args: &[&str]) -> bool {
    Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &hsm.conf)
        .arg("--module")
        .arg(module())
        .args(["--token-label", &hsm.label, "--login", "--pin", PIN])
        .args(args)
        .output()
        .expect("pkcs11-tool runs")
        .status
        .success()
}

/// DER SubjectPublicKeyInfo of an EC public key object, from pkcs11-tool's listing.
pub fn ec_spki_from_listing(hsm: &SoftHsm, label: &str) -> Vec<u8> {
    let listing = hsm.pkcs11_tool(&["--list-objects", "--type", "pubkey", "--label", label]);
    let field = |name: &str| -> Vec<u8> {
        let line = listing.lines().find(|l| l.trim_start().starts_with(name));
        let hex = line
            .and_then(|l| l.split_whitespace().nth(1))
            .expect("field in listing");
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    };
    let params = field("EC_PARAMS:");
    let wrapped = field("EC_POINT:");
    // CKA_EC_POINT is a DER OCTET STRING (04 LEN POINT); the point follows its header.
    let header = if wrapped[1] & 0x80 == 0 {
        2
    } else {
        2 + (wrapped[1] & 0x7f) as usize
    };
    let point = &wrapped[header..];
    // id-ecPublicKey, 1.2.840.10045.2.1
    let mut algorithm = vec![0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    algorithm.extend_from_slice(&params);
    let mut bits = vec![0x00];
    bits.extend_from_slice(point);
    der(0x30, &[der(0x30, &algorithm), der(0x03, &bits)].concat())
}

/// One DER TLV.
pub fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match body.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(body);
    out
}

/// Runs openssl and panics with its message when it fails.
pub fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
