//! Naming tokens, keys and PINs the PKCS#11 way: URIs printed by `keygen`/`keys` used as they
//! are, every PIN source, and profiles from a config file, each on a real SoftHSM token.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::softhsm::{self, SoftHsm, PIN};
use common::standin::Standin;

const AUD: &str = "https://tenant.example/oauth/token";

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `p11jwt` with an empty environment but for SOFTHSM2_CONF (and `extra`).
fn bare(hsm: &SoftHsm, extra: &[(&str, &Path)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_p11jwt"));
    cmd.env_clear()
        .env("SOFTHSM2_CONF", &hsm.conf)
        .stdin(Stdio::null());
    for (name, value) in extra {
        cmd.env(name, value);
    }
    cmd
}

fn success(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}: {stderr}",
        out.status.code()
    );
    assert!(!stderr.contains(PIN), "PIN on stderr: {stderr}");
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(!stdout.contains(PIN), "PIN on stdout");
    stdout
}

/// The `uri: pkcs11:...` line keygen prints on stderr.
fn keygen_uri(hsm: &SoftHsm, label: &str) -> String {
    keygen_uri_for(hsm, label, "ES256")
}

fn keygen_uri_for(hsm: &SoftHsm, label: &str, alg: &str) -> String {
    let out = hsm.run(&["keygen", "--alg", alg, "--key", label]);
    success(&out);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let line = stderr
        .lines()
        .find(|l| l.contains("uri: pkcs11:"))
        .expect("uri line");
    line.split_once("uri: ").unwrap().1.trim().to_owned()
}

fn is_jws(text: &str) -> bool {
    text.trim().split('.').count() == 3 && text.starts_with("eyJ")
}

#[test]
fn uris_printed_by_keygen_and_keys_work_as_key() {
    let hsm = SoftHsm::new("names-uri");
    let from_keygen = keygen_uri(&hsm, "signer");
    keygen_uri(&hsm, "other");

    let listing = hsm.ok(&["keys"]);
    let from_keys = listing
        .split_whitespace()
        .find(|w| w.starts_with("pkcs11:") && w.contains("object=signer"))
        .expect("keys prints the URI");
    assert_eq!(from_keys, from_keygen);

    // As is, with no --token: the URI names the token.
    let args = [
        "assert",
        "--client-id",
        "c",
        "--audience",
        AUD,
        "--key",
        &from_keygen,
    ];
    let out = hsm
        .p11jwt()
        .env_remove("P11JWT_TOKEN")
        .args(args)
        .output()
        .unwrap();
    assert!(is_jws(&success(&out)));

    // A vendor attribute is ignored, with a note.
    let vendor = format!("{from_keygen};x-acme-slot=7");
    let args = [
        "assert",
        "--client-id",
        "c",
        "--audience",
        AUD,
        "--key",
        &vendor,
    ];
    let out = hsm.run(&args);
    assert!(is_jws(&success(&out)));
    assert!(String::from_utf8_lossy(&out.stderr).contains("x-acme-slot"));

    // type=public names the same pair.
    let public = from_keygen.replace("type=private", "type=public");
    let args = [
        "assert",
        "--client-id",
        "c",
        "--audience",
        AUD,
        "--key",
        &public,
    ];
    assert!(is_jws(&success(&hsm.run(&args))));
}

#[test]
fn module_path_and_pin_source_in_the_uri_are_enough() {
    let hsm = SoftHsm::new("names-bare");
    let uri = keygen_uri(&hsm, "signer");
    let pin_file = hsm.path("pin");
    write_private(&pin_file, &format!("{PIN}\n"));

    // Nothing but SOFTHSM2_CONF in the environment, nothing but the URI on the command line.
    let full = format!(
        "{uri}?module-path={}&pin-source=file:{}",
        softhsm::module().display(),
        pin_file.display()
    );
    let args = [
        "assert",
        "--client-id",
        "c",
        "--audience",
        AUD,
        "--key",
        &full,
    ];
    let out = bare(&hsm, &[]).args(args).output().unwrap();
    assert!(is_jws(&success(&out)));
}

#[test]
fn module_name_in_the_uri_finds_softhsm() {
    if p11jwt::token::find_module_by_name("softhsm2").is_err() {
        eprintln!("skipped: libsofthsm2.so is not in the usual module directories here");
        return;
    }
    let hsm = SoftHsm::new("names-modname");
    let uri = keygen_uri(&hsm, "signer");
    let pin_file = hsm.path("pin");
    write_private(&pin_file, &format!("{PIN}\n"));
    let full = format!(
        "{uri}?module-name=softhsm2&pin-source=file:{}",
        pin_file.display()
    );
    let args = [
        "assert",
        "--client-id",
        "c",
        "--audience",
        AUD,
        "--key",
        &full,
    ];
    let out = bare(&hsm, &[]).args(args).output().unwrap();
    assert!(is_jws(&success(&out)));
}

#[test]
fn pin_value_in_the_uri_works_with_a_warning() {
    let hsm = SoftHsm::new("names-pinvalue");
    let uri = keygen_uri(&hsm, "signer");
    let full = format!(
        "{uri}?module-path={}&pin-value={PIN}",
        softhsm::module().display()
    );
    let args = [
        "assert",
        "--client-id",
        "c",
        "--audience",
        AUD,
        "--key",
        &full,
    ];
    let out = bare(&hsm, &[]).args(args).output().unwrap();
    assert!(is_jws(&success(&out)));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pin-value"));
}

#[test]
fn pin_from_standard_input() {
    use std::io::Write as _;
    let hsm = SoftHsm::new("names-stdin");
    keygen_uri(&hsm, "signer");
    let mut child = hsm
        .p11jwt()
        .env_remove("P11JWT_PIN")
        .args([
            "assert",
            "--client-id",
            "c",
            "--audience",
            AUD,
            "--key",
            "signer",
        ])
        .arg("--pin-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PIN}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(is_jws(&success(&out)));
}

/// Runs p11jwt on a pseudo-terminal (python's pty module), answers the PIN prompt, and returns
/// (exit code, everything the terminal showed).
fn on_a_terminal(hsm: &SoftHsm, args: &[&str], answer: &str) -> (i32, String) {
    let script = r#"
import os, pty, sys, termios, time
binary, answer, args = sys.argv[1], sys.argv[2], sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(binary, [binary] + args)
seen = b""
while b"PIN" not in seen:
    chunk = os.read(fd, 1024)
    if not chunk:
        break
    seen += chunk
# Type only once the terminal's echo is off, as a person would: typed-ahead input is echoed
# by the terminal before any program can hide it.
deadline = time.time() + 10
while termios.tcgetattr(fd)[3] & termios.ECHO and time.time() < deadline:
    time.sleep(0.01)
os.write(fd, answer.encode() + b"\n")
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode("utf-8", "replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = hsm
        .p11jwt()
        .get_envs()
        .fold(Command::new("python3"), |mut cmd, (k, v)| {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
            cmd
        })
        .env_remove("P11JWT_PIN")
        .args(["-c", script, env!("CARGO_BIN_EXE_p11jwt"), answer])
        .args(args)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), shown)
}

#[test]
fn pin_prompt_on_a_terminal_does_not_echo() {
    let hsm = SoftHsm::new("names-prompt");
    keygen_uri(&hsm, "signer");
    let args = [
        "assert",
        "--client-id",
        "c",
        "--audience",
        AUD,
        "--key",
        "signer",
    ];
    let (code, shown) = on_a_terminal(&hsm, &args, PIN);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("User PIN for token"), "{shown}");
    assert!(shown.contains("eyJ"), "{shown}");
    assert!(!shown.contains(PIN), "the PIN was echoed: {shown}");
}

#[test]
fn always_authenticate_rsa_key_signs_with_a_context_specific_login() {
    let hsm = SoftHsm::new("names-alwaysauth");
    hsm.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--label",
        "pinned",
        "--id",
        "0b",
        "--usage-sign",
        "--always-auth",
    ]);
    let listing = hsm.ok(&["keys"]);
    assert!(listing.contains("always_authenticate=true"), "{listing}");

    // The signature is checked against the public key in process before it is printed.
    let args = [
        "assert",
        "--client-id",
        "c",
        "--audience",
        AUD,
        "--key",
        "pinned",
        "-vv",
    ];
    let out = hsm.run(&args);
    assert!(is_jws(&success(&out)));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CKM_SHA256_RSA_PKCS"));
}

const CLIENT_ID: &str = "names-client";

#[test]
fn token_with_a_profile_needs_only_the_config_file_and_a_pin_file() {
    let hsm = SoftHsm::new("names-profile");
    // ES384: the stand-in, like Qlik Cloud, accepts RS256, RS512 and ES384 only.
    let uri = keygen_uri_for(&hsm, "signer", "ES384");
    let jwks = hsm.ok(&["jwk", "--key", "signer", "--jwks"]);
    let standin = Standin::start(CLIENT_ID, &jwks);

    let pin_file = hsm.path("pin");
    write_private(&pin_file, &format!("{PIN}\n"));
    let config_dir = hsm.path("xdg");
    std::fs::create_dir_all(config_dir.join("p11jwt")).unwrap();
    let config = format!(
        "[profiles.qlik-prod]\nmodule = \"{}\"\nkey = \"{uri}\"\npin_file = \"{}\"\n\
         client_id = \"{CLIENT_ID}\"\ntoken_endpoint = \"{}\"\nlifetime = 120\n",
        softhsm::module().display(),
        pin_file.display(),
        standin.token_endpoint()
    );
    write_private(&config_dir.join("p11jwt/config.toml"), &config);

    // Only the config file (found through XDG_CONFIG_HOME) and the PIN file.
    let env = [("XDG_CONFIG_HOME", config_dir.as_path())];
    let out = bare(&hsm, &env)
        .args(["token", "--profile", "qlik-prod"])
        .output()
        .unwrap();
    let access_token = success(&out);
    assert!(!access_token.trim().is_empty());

    // assert takes its aud from the profile's token endpoint.
    let out = bare(&hsm, &env)
        .args(["assert", "--profile", "qlik-prod"])
        .output()
        .unwrap();
    assert!(is_jws(&success(&out)));

    // P11JWT_PROFILE works as --profile.
    let mut cmd = bare(&hsm, &env);
    cmd.env("P11JWT_PROFILE", "qlik-prod").arg("token");
    assert!(!success(&cmd.output().unwrap()).trim().is_empty());
}

#[test]
fn config_show_gives_each_origin_and_never_the_pin() {
    let hsm = SoftHsm::new("names-show");
    let conf = hsm.path("config.toml");
    let text = "[profiles.p]\nkey = \"from-profile\"\nclient_id = \"profile-client\"\n\
                scope = \"profile-scope\"\nalg = \"ES256\"\ntenant = \"acme\"\n\
                pin_file = \"/run/p11jwt/pin\"\n";
    write_private(&conf, text);

    let out = hsm
        .p11jwt()
        .env("P11JWT_SCOPE", "env-scope")
        .arg("--config")
        .arg(&conf)
        .args([
            "config",
            "show",
            "--profile",
            "p",
            "--client-id",
            "flag-client",
        ])
        .output()
        .unwrap();
    let shown = success(&out);
    let line = |name: &str| {
        let prefix = format!("{name} ");
        shown
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or("")
            .to_owned()
    };

    // flag > environment > profile > default
    assert!(line("client_id").contains("flag-client  (flag)"), "{shown}");
    assert!(
        line("scope").contains("env-scope  (environment P11JWT_SCOPE)"),
        "{shown}"
    );
    assert!(line("key").contains("from-profile  (profile p)"), "{shown}");
    assert!(line("tenant").contains("acme  (profile p)"), "{shown}");
    assert!(line("lifetime").contains("300  (default)"), "{shown}");
    assert!(
        line("token").contains("(environment P11JWT_TOKEN)"),
        "{shown}"
    );
    // P11JWT_PIN (set by the helper) outranks the profile's pin_file; its value is not shown.
    assert!(line("pin").contains("(environment P11JWT_PIN)"), "{shown}");

    // A pin-value in a key URI is not shown either.
    let key = format!("pkcs11:object=k?pin-value={PIN}");
    let out = hsm.run(&["config", "show", "--key", &key]);
    assert!(success(&out).contains("pin-value=(not shown)"));

    // Without P11JWT_PIN the profile's PIN file is the source.
    let mut cmd = hsm.p11jwt();
    cmd.env_remove("P11JWT_PIN").arg("--config").arg(&conf);
    let shown = success(
        &cmd.args(["config", "show", "--profile", "p"])
            .output()
            .unwrap(),
    );
    assert!(
        shown.contains("PIN file /run/p11jwt/pin  (profile p)"),
        "{shown}"
    );
}

/// OpenSC's pkcs11-spy, which logs every PKCS#11 call, when it is installed.
fn pkcs11_spy() -> Option<std::path::PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so",
        "/usr/lib/aarch64-linux-gnu/pkcs11-spy.so",
        "/usr/lib64/pkcs11-spy.so",
        "/usr/lib/pkcs11-spy.so",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
}

/// Runs p11jwt through pkcs11-spy; returns its output and the PKCS#11 calls with their
/// userType lines, in order.
fn spied(hsm: &SoftHsm, spy: &Path, pin: &str, args: &[&str]) -> (Output, Vec<String>) {
    let log = hsm.path("spy.log");
    let _ = std::fs::remove_file(&log);
    let out = hsm
        .p11jwt()
        .env("P11JWT_MODULE", spy)
        .env("PKCS11SPY", softhsm::module())
        .env("PKCS11SPY_OUTPUT", &log)
        .env("P11JWT_PIN", pin)
        .args(args)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let calls = text
        .lines()
        .filter_map(|l| {
            let call = l.split_once(": C_").map(|(_, c)| format!("C_{}", c.trim()));
            call.or_else(|| l.contains("userType = ").then(|| l.trim().to_owned()))
        })
        .collect();
    (out, calls)
}

#[test]
fn one_c_login_per_run_and_a_wrong_pin_is_not_retried() {
    let Some(spy) = pkcs11_spy() else {
        eprintln!("skipped: OpenSC's pkcs11-spy.so is not installed");
        return;
    };
    let hsm = SoftHsm::new("names-spy");
    keygen_uri(&hsm, "signer");
    let args = [
        "assert",
        "--client-id",
        "c",
        "--audience",
        AUD,
        "--key",
        "signer",
    ];

    let (out, calls) = spied(&hsm, &spy, PIN, &args);
    assert!(is_jws(&success(&out)));
    assert_eq!(
        calls.iter().filter(|c| *c == "C_Login").count(),
        1,
        "{calls:?}"
    );

    let (out, calls) = spied(&hsm, &spy, "97531", &args);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        calls.iter().filter(|c| *c == "C_Login").count(),
        1,
        "{calls:?}"
    );
}

#[test]
fn always_authenticate_logs_in_between_sign_init_and_the_data() {
    let Some(spy) = pkcs11_spy() else {
        eprintln!("skipped: OpenSC's pkcs11-spy.so is not installed");
        return;
    };
    let hsm = SoftHsm::new("names-spy-aa");
    hsm.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--label",
        "pinned",
        "--id",
        "0c",
        "--usage-sign",
        "--always-auth",
    ]);
    let args = [
        "assert",
        "--client-id",
        "c",
        "--audience",
        AUD,
        "--key",
        "pinned",
    ];
    let (out, calls) = spied(&hsm, &spy, PIN, &args);
    assert!(is_jws(&success(&out)));

    let from = calls
        .iter()
        .position(|c| c == "C_SignInit")
        .expect("C_SignInit");
    let expected = [
        "C_SignInit",
        "C_Login",
        "[in] userType = CKU_CONTEXT_SPECIFIC",
        "C_SignUpdate",
        "C_SignFinal",
    ];
    assert_eq!(&calls[from..from + expected.len()], expected, "{calls:?}");
}

#[test]
fn profile_provider_preset_is_applied_and_checked() {
    let hsm = SoftHsm::new("names-provider");
    hsm.ok(&["keygen", "--key", "k"]);
    let conf = hsm.path("config.toml");
    let args = ["token", "--profile", "q", "--key", "k", "--client-id", "c"];

    // The qlik preset refuses an aud with a trailing slash before anything is signed.
    let text = "[profiles.q]\nprovider = \"qlik\"\n\
                token_endpoint = \"https://acme.qlikcloud.com/oauth/token/\"\n";
    write_private(&conf, text);
    let out = hsm
        .p11jwt()
        .arg("--config")
        .arg(&conf)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("qlik"));

    // An unknown provider name in a profile is a usage error naming the profile.
    write_private(&conf, "[profiles.q]\nprovider = \"nonesuch\"\n");
    let out = hsm
        .p11jwt()
        .arg("--config")
        .arg(&conf)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("profile \"q\""));
}
