//! Every bad input, made for real on SoftHSM where it can be: the documented exit code, a
//! message that says what was looked for and what to do, no PIN in the output, no panic, and
//! no object left behind by a failed keygen.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::softhsm::{self, SoftHsm, PIN, SO_PIN};

const ASSERT: [&str; 5] = ["assert", "--client-id", "c", "--audience", "https://a/t"];

/// Checks the exit code and that stderr says each of `needles`; the PIN never shows, nor a
/// panic. Returns stderr.
fn expect(out: &Output, code: i32, needles: &[&str]) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
    assert!(
        !stderr.contains(PIN) && !stdout.contains(PIN),
        "PIN shown: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.starts_with("p11jwt: "), "{stderr}");
    stderr
}

fn assert_with(hsm: &SoftHsm, key: &str) -> Output {
    let mut args = ASSERT.to_vec();
    args.extend(["--key", key]);
    hsm.run(&args)
}

fn write_private(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// pkcs11-tool on this token, with arguments that may not be UTF-8.
fn pkcs11_tool_os(hsm: &SoftHsm, args: &[&OsStr]) {
    let out = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &hsm.conf)
        .arg("--module")
        .arg(softhsm::module())
        .args(["--token-label", &hsm.label, "--login", "--pin", PIN])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pkcs11-tool: {stderr}");
}

// ---- PKCS#11 setup (3) ----

#[test]
fn module_path_missing_exits_3() {
    let hsm = SoftHsm::new("err-module-missing");
    let out = hsm.run(&["keys", "--module", "/nonexistent/libpkcs11.so"]);
    expect(
        &out,
        3,
        &["/nonexistent/libpkcs11.so", "does not exist", "--module"],
    );
}

#[test]
fn module_name_not_installed_exits_3() {
    let hsm = SoftHsm::new("err-module-name");
    let mut args = ASSERT.to_vec();
    args.extend(["--key", "pkcs11:object=k?module-name=no-such-module"]);
    let out = hsm
        .p11jwt()
        .env_remove("P11JWT_MODULE")
        .args(&args)
        .output()
        .unwrap();
    expect(
        &out,
        3,
        &["no PKCS#11 module named \"no-such-module\"", "module-path="],
    );
}

#[test]
fn module_that_is_not_a_shared_library_exits_3() {
    let hsm = SoftHsm::new("err-module-text");
    let text = hsm.path("module.so");
    std::fs::write(&text, "not a library\n").unwrap();
    let out = hsm
        .p11jwt()
        .arg("keys")
        .arg("--module")
        .arg(&text)
        .output()
        .unwrap();
    expect(&out, 3, &["cannot load PKCS#11 module", "module.so", "ldd"]);
}

/// A shared library every Linux system has, that is not a PKCS#11 module.
fn plain_shared_library() -> Option<PathBuf> {
    let candidates = [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/aarch64-linux-gnu/libz.so.1",
        "/usr/lib/aarch64-linux-gnu/libz.so.1",
        "/usr/lib64/libz.so.1",
        "/lib64/libz.so.1",
        "/usr/lib/libz.so.1",
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
    ];
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

#[test]
fn shared_library_without_c_getfunctionlist_exits_3() {
    let Some(lib) = plain_shared_library() else {
        eprintln!("skipped: no libz or libm found in the usual places");
        return;
    };
    let hsm = SoftHsm::new("err-module-notp11");
    let out = hsm
        .p11jwt()
        .arg("keys")
        .arg("--module")
        .arg(&lib)
        .output()
        .unwrap();
    expect(&out, 3, &["not a PKCS#11 module", "C_GetFunctionList"]);
}

#[test]
fn c_initialize_failing_names_the_softhsm_config() {
    let hsm = SoftHsm::new("err-init");
    let conf = hsm.path("broken.conf");
    std::fs::write(&conf, "directories.tokendir = /nonexistent/tokens\n").unwrap();
    let out = hsm
        .p11jwt()
        .env("SOFTHSM2_CONF", &conf)
        .arg("keys")
        .output()
        .unwrap();
    expect(&out, 3, &["C_Initialize", "broken.conf", "tokendir"]);
}

#[test]
fn only_an_uninitialized_token_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tokens")).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    let text = format!("directories.tokendir = {}/tokens\n", dir.path().display());
    std::fs::write(&conf, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_p11jwt"))
        .env("SOFTHSM2_CONF", &conf)
        .env("P11JWT_MODULE", softhsm::module())
        .env_remove("P11JWT_TOKEN")
        .args(["keys"])
        .output()
        .unwrap();
    expect(
        &out,
        3,
        &["no initialized token", "softhsm2-util --init-token"],
    );
}

#[test]
fn no_token_matching_lists_the_tokens_present() {
    let hsm = SoftHsm::new("err-token-present");
    let out = hsm.run(&["keys", "--token", "err-token-absent"]);
    expect(
        &out,
        3,
        &[
            "no token matches",
            "err-token-absent",
            "\"err-token-present\"",
        ],
    );
}

#[test]
fn two_tokens_with_one_label_are_listed() {
    let hsm = SoftHsm::new("err-twins");
    hsm.init_token("err-twins");
    let out = hsm.run(&["keys"]);
    let stderr = expect(&out, 3, &["several tokens match", "serial"]);
    assert_eq!(stderr.matches("token \"err-twins\"").count(), 2, "{stderr}");
}

#[test]
fn token_without_a_user_pin_exits_3() {
    let hsm = SoftHsm::new("err-main");
    // pkcs11-tool initializes a token with an SO PIN only.
    let out = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &hsm.conf)
        .arg("--module")
        .arg(softhsm::module())
        .args([
            "--init-token",
            "--label",
            "err-nouserpin",
            "--so-pin",
            SO_PIN,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = hsm.run(&["keys", "--token", "err-nouserpin"]);
    expect(&out, 3, &["user PIN", "not initialized", "err-nouserpin"]);
}

#[test]
fn uri_library_and_slot_attributes_must_match() {
    let hsm = SoftHsm::new("err-library");
    hsm.ok(&["keygen", "--alg", "ES256", "--key", "k"]);

    // SoftHSM's CK_INFO says "SoftHSM" / "Implementation of PKCS11".
    let ok = "pkcs11:library-manufacturer=SoftHSM;slot-manufacturer=SoftHSM%20project;object=k";
    assert_eq!(assert_with(&hsm, ok).status.code(), Some(0));

    let other = "pkcs11:library-manufacturer=Other%20Vendor;object=k";
    let needles = [
        "library-manufacturer=Other%20Vendor",
        "\"SoftHSM\"",
        "--module",
    ];
    expect(&assert_with(&hsm, other), 3, &needles);

    let slot = "pkcs11:slot-description=no%20such%20slot;object=k";
    expect(
        &assert_with(&hsm, slot),
        3,
        &["no token matches", "slot-description"],
    );

    // The slot id the listing shows selects the token; another slot id does not.
    let listing = expect(&hsm.run(&["keys", "--token", "absent"]), 3, &["slot "]);
    let id = listing
        .split("slot ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let by_id = format!("pkcs11:slot-id={id};object=k");
    assert_eq!(assert_with(&hsm, &by_id).status.code(), Some(0));
    let other = format!("pkcs11:slot-id={id}1;object=k");
    expect(
        &assert_with(&hsm, &other),
        3,
        &["no token matches", "slot-id="],
    );
}

// ---- Authentication (4) ----

#[test]
fn no_pin_source_exits_4() {
    let hsm = SoftHsm::new("err-nopin");
    hsm.ok(&["keygen", "--alg", "ES256", "--key", "k"]);
    let mut args = ASSERT.to_vec();
    args.extend(["--key", "k"]);
    let out = hsm
        .p11jwt()
        .env_remove("P11JWT_PIN")
        .args(&args)
        .output()
        .unwrap();
    expect(&out, 4, &["needs the user PIN", "P11JWT_PIN", "--pin-file"]);
}

#[test]
fn wrong_pin_is_tried_once_and_never_shown() {
    let hsm = SoftHsm::new("err-wrongpin");
    hsm.ok(&["keygen", "--alg", "ES256", "--key", "k"]);
    let mut args = ASSERT.to_vec();
    args.extend(["--key", "k", "-vv"]);
    let out = hsm
        .p11jwt()
        .env("P11JWT_PIN", "97531")
        .args(&args)
        .output()
        .unwrap();
    let stderr = expect(&out, 4, &["CKR_PIN_INCORRECT", "not be retried"]);
    assert!(!stderr.contains("97531"), "{stderr}");
    assert_eq!(stderr.matches("retrying").count(), 0, "{stderr}");
}

#[test]
fn pin_locked_and_final_try_are_refused_before_c_login() {
    use p11jwt::token::{Error as TokenError, PinFlags};
    // SoftHSM 2.6 never locks a user PIN (twelve wrong PINs leave it at "count low"), so the
    // decision on the token's flags is checked on the flags themselves.
    let ready = PinFlags {
        initialized: true,
        ..PinFlags::default()
    };
    let locked = PinFlags {
        locked: true,
        ..ready
    };
    let final_try = PinFlags {
        final_try: true,
        ..ready
    };

    let err = p11jwt::Error::from(locked.check("t", true).unwrap_err());
    assert_eq!(err.exit_code(), 4);
    assert!(err.to_string().contains("CKF_USER_PIN_LOCKED"), "{err}");

    let err = p11jwt::Error::from(final_try.check("t", false).unwrap_err());
    assert_eq!(err.exit_code(), 4);
    assert!(err.to_string().contains("--allow-final-pin-try"), "{err}");
    assert!(final_try.check("t", true).is_ok());

    let not_set = PinFlags::default().check("t", true).unwrap_err();
    assert!(matches!(not_set, TokenError::UserPinNotInitialized { .. }));
    assert!(
        !TokenError::PinIncorrect.is_transient(),
        "a wrong PIN must never be retried"
    );
}

#[test]
fn pin_file_readable_or_writable_by_others_exits_4() {
    let hsm = SoftHsm::new("err-pinmode");
    hsm.ok(&["keygen", "--alg", "ES256", "--key", "k"]);
    let pin_file = hsm.path("pin");
    for mode in [0o644, 0o620, 0o606] {
        write_private(&pin_file, &format!("{PIN}\n"), mode);
        let mut args = ASSERT.to_vec();
        args.extend(["--key", "k", "--pin-file", pin_file.to_str().unwrap()]);
        let out = hsm
            .p11jwt()
            .env_remove("P11JWT_PIN")
            .args(&args)
            .output()
            .unwrap();
        expect(&out, 4, &["PIN file", "chmod 600"]);
    }
}

#[test]
fn missing_or_empty_pin_file_exits_4() {
    let hsm = SoftHsm::new("err-pinfile");
    let missing = hsm.path("absent-pin");
    let out = hsm
        .p11jwt()
        .env_remove("P11JWT_PIN")
        .arg("keys")
        .arg("--pin-file")
        .arg(&missing)
        .output()
        .unwrap();
    expect(&out, 4, &["cannot read the PIN", "absent-pin"]);

    let empty = hsm.path("empty-pin");
    write_private(&empty, "\n", 0o600);
    let mut cmd = hsm.p11jwt();
    cmd.env_remove("P11JWT_PIN")
        .arg("keys")
        .arg("--pin-file")
        .arg(&empty);
    expect(&cmd.output().unwrap(), 4, &["is empty"]);
}

// ---- Key (5) ----

#[test]
fn key_not_found_lists_the_keys() {
    let hsm = SoftHsm::new("err-nokey");
    hsm.ok(&["keygen", "--alg", "ES256", "--key", "present"]);
    let out = assert_with(&hsm, "absent");
    expect(
        &out,
        5,
        &[
            "no private key",
            "\"absent\"",
            "\"present\"",
            "p11jwt keygen",
        ],
    );
}

#[test]
fn two_keys_with_one_label_are_listed_with_uris_and_one_is_chosen_by_id() {
    let hsm = SoftHsm::new("err-dupkey");
    for id in ["a1", "b2"] {
        hsm.pkcs11_tool(&[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "dup",
            "--id",
            id,
            "--usage-sign",
        ]);
    }
    let stderr = expect(
        &assert_with(&hsm, "dup"),
        5,
        &["several private keys match", "id="],
    );
    assert!(
        stderr.contains("id=%a1") || stderr.contains("id=%A1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("id=%b2") || stderr.contains("id=%B2"),
        "{stderr}"
    );

    // The URI printed for one of them selects exactly that one.
    let uri = stderr
        .split_whitespace()
        .find(|w| w.starts_with("pkcs11:") && w.to_lowercase().contains("id=%b2"))
        .expect("a URI with id=%b2");
    assert_eq!(assert_with(&hsm, uri).status.code(), Some(0));
}

/// A key pair with CKA_SIGN false on the private key. pkcs11-tool cannot make one (SoftHSM
/// then defaults CKA_SIGN to true), so cryptoki does, in this test process alone.
fn generate_decrypt_only(hsm: &SoftHsm, label: &str) {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::Attribute;
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;

    // SoftHSM reads SOFTHSM2_CONF at C_Initialize; this process sets it for itself only here.
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
    let ctx = Pkcs11::new(softhsm::module()).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx.get_slots_with_token().unwrap()[0];
    let session = ctx.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::from(PIN.to_owned())))
        .unwrap();
    let label = Attribute::Label(label.as_bytes().to_vec());
    let id = Attribute::Id(vec![0x0d]);
    let public = [
        Attribute::Token(true),
        Attribute::ModulusBits(2048.into()),
        Attribute::PublicExponent(vec![1, 0, 1]),
        Attribute::Encrypt(true),
        Attribute::Verify(false),
        label.clone(),
        id.clone(),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sign(false),
        Attribute::Decrypt(true),
        label,
        id,
    ];
    session
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .unwrap();
}

#[test]
fn key_without_cka_sign_exits_5() {
    let hsm = SoftHsm::new("err-nosign");
    generate_decrypt_only(&hsm, "decrypt-only");
    let out = assert_with(&hsm, "decrypt-only");
    expect(&out, 5, &["does not allow key", "CKA_SIGN", "decrypt-only"]);
}

#[test]
fn rsa_key_of_1024_bits_exits_5() {
    let hsm = SoftHsm::new("err-small");
    hsm.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "rsa:1024",
        "--label",
        "small",
        "--id",
        "05",
        "--usage-sign",
    ]);
    let out = assert_with(&hsm, "small");
    expect(&out, 5, &["1024 bits", "2048"]);
}

#[test]
fn keygen_with_a_taken_label_exits_5_and_adds_nothing() {
    let hsm = SoftHsm::new("err-taken");
    hsm.ok(&["keygen", "--alg", "ES256", "--key", "taken"]);
    let before = hsm.object_count();
    let out = hsm.run(&["keygen", "--alg", "ES256", "--key", "taken"]);
    expect(
        &out,
        5,
        &["already has objects labelled \"taken\"", "another"],
    );
    assert_eq!(hsm.object_count(), before);
}

// ---- Signing (6) ----

#[test]
fn keygen_without_the_mechanism_fails_and_leaves_nothing() {
    // SoftHSM 2.6.1 ignores the first name of a "-" list, hence CKM_MD5 in front.
    let extra = "slots.mechanisms = -CKM_MD5,CKM_EC_KEY_PAIR_GEN\n";
    let hsm = SoftHsm::with_config("err-nomech", extra);
    hsm.ok(&["keygen", "--alg", "RS256", "--key", "rsa"]);
    let before = hsm.object_count();
    let out = hsm.run(&["keygen", "--alg", "ES256", "--key", "ec"]);
    expect(&out, 6, &["CKM_EC_KEY_PAIR_GEN", "EC P-256"]);
    assert_eq!(hsm.object_count(), before);
}

#[test]
fn alg_whose_mechanisms_the_token_lacks_exits_6() {
    let extra = "slots.mechanisms = -CKM_MD5,CKM_RSA_PKCS_PSS,CKM_SHA256_RSA_PKCS_PSS,\
                 CKM_SHA384_RSA_PKCS_PSS,CKM_SHA512_RSA_PKCS_PSS\n";
    let hsm = SoftHsm::with_config("err-nopss", extra);
    hsm.ok(&["keygen", "--alg", "RS256", "--key", "rsa"]);
    let mut args = ASSERT.to_vec();
    args.extend(["--key", "rsa", "--alg", "PS256"]);
    expect(
        &hsm.run(&args),
        6,
        &["none of the mechanisms", "CKM_RSA_PKCS_PSS", "--alg"],
    );
}

#[test]
fn always_authenticate_ec_key_on_single_part_ecdsa_exits_6() {
    let hsm = SoftHsm::new("err-alwaysauth");
    hsm.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "pinned",
        "--id",
        "0a",
        "--usage-sign",
        "--always-auth",
    ]);
    let out = assert_with(&hsm, "pinned");
    expect(
        &out,
        6,
        &[
            "CKA_ALWAYS_AUTHENTICATE",
            "CKM_ECDSA",
            "CKU_CONTEXT_SPECIFIC",
        ],
    );
}

#[test]
fn device_lost_maps_to_exit_6_with_a_hint() {
    // Pulling a device out mid-run cannot be staged with SoftHSM; the mapping is checked.
    let lost = p11jwt::token::Error::DeviceLost {
        function: "C_Sign",
        rv: "CKR_DEVICE_REMOVED".into(),
    };
    let err = p11jwt::Error::from(lost);
    assert_eq!(err.exit_code(), 6);
    assert!(err.to_string().contains("reconnect"), "{err}");
}

// ---- Usage (2) ----

#[test]
fn malformed_uris_exit_2_and_name_the_attribute() {
    let hsm = SoftHsm::new("err-uri");
    expect(&assert_with(&hsm, "pkcs11:objekt=k"), 2, &["objekt"]);
    expect(&assert_with(&hsm, "pkcs11:object=%zz"), 2, &["object"]);
    expect(
        &assert_with(&hsm, "pkcs11:object=a;object=b"),
        2,
        &["object"],
    );
    expect(
        &assert_with(&hsm, "pkcs11:object=k?pin-source=|cat"),
        2,
        &["not supported"],
    );
}

#[test]
fn uri_of_a_secret_key_or_data_object_exits_2() {
    let hsm = SoftHsm::new("err-type");
    expect(
        &assert_with(&hsm, "pkcs11:object=k;type=data"),
        2,
        &["type=data", "private"],
    );
    let secret = "pkcs11:object=k;type=secret-key";
    expect(&assert_with(&hsm, secret), 2, &["type=secret-key"]);
}

#[test]
fn non_utf8_label_is_shown_escaped_and_found_by_id() {
    let hsm = SoftHsm::new("err-bytes");
    let label = OsStr::from_bytes(b"k\xff\x1b[31m");
    let args: Vec<&OsStr> = [
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        "c0ffee",
        "--usage-sign",
        "--label",
    ]
    .iter()
    .map(OsStr::new)
    .chain([label])
    .collect();
    pkcs11_tool_os(&hsm, &args);

    // Shown escaped: no raw escape sequence reaches the terminal.
    let listing = hsm.ok(&["keys"]);
    assert!(listing.contains("k\\xff\\x1b[31m"), "{listing}");
    assert!(!listing.contains('\u{1b}'), "{listing}");

    // Found through id=, and through the percent-encoded label.
    assert_eq!(
        assert_with(&hsm, "pkcs11:id=%c0%ff%ee").status.code(),
        Some(0)
    );
    assert_eq!(
        assert_with(&hsm, "pkcs11:object=k%ff%1b%5b31m")
            .status
            .code(),
        Some(0)
    );

    // A key not found lists it escaped, too.
    let stderr = expect(&assert_with(&hsm, "absent"), 5, &["k\\xff"]);
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}

#[test]
fn config_with_an_unknown_key_or_bad_type_names_the_line() {
    let hsm = SoftHsm::new("err-config");
    let conf = hsm.path("config.toml");
    write_private(
        &conf,
        "[profiles.p]\nclient_id = \"c\"\npin = \"123456\"\n",
        0o600,
    );
    let run = |conf: &Path| {
        let mut cmd = hsm.p11jwt();
        cmd.arg("--config")
            .arg(conf)
            .args(["keys", "--profile", "p"]);
        cmd.output().unwrap()
    };
    let stderr = expect(&run(&conf), 2, &["line 3", "unknown field `pin`"]);
    assert!(!stderr.contains("123456"), "{stderr}");

    write_private(&conf, "[profiles.p]\nlifetime = \"300\"\n", 0o600);
    expect(&run(&conf), 2, &["line 2", "lifetime"]);

    write_private(&conf, "[profiles.p\n", 0o600);
    expect(&run(&conf), 2, &["line 1"]);
}

#[test]
fn config_writable_by_others_exits_2() {
    let hsm = SoftHsm::new("err-config-mode");
    let conf = hsm.path("config.toml");
    write_private(&conf, "[profiles.p]\n", 0o666);
    let mut cmd = hsm.p11jwt();
    cmd.arg("--config")
        .arg(&conf)
        .args(["keys", "--profile", "p"]);
    expect(
        &cmd.output().unwrap(),
        2,
        &["others can write it", "chmod go-w"],
    );
}

#[test]
fn unknown_profile_or_missing_config_exits_2() {
    let hsm = SoftHsm::new("err-profile");
    let conf = hsm.path("config.toml");
    write_private(&conf, "[profiles.prod]\n[profiles.test]\n", 0o600);
    let mut cmd = hsm.p11jwt();
    cmd.arg("--config")
        .arg(&conf)
        .args(["keys", "--profile", "stage"]);
    expect(
        &cmd.output().unwrap(),
        2,
        &["no profile \"stage\"", "prod, test"],
    );

    let out = hsm
        .p11jwt()
        .env("XDG_CONFIG_HOME", hsm.path("no-such-dir"))
        .env("HOME", hsm.path("no-such-home"))
        .args(["keys", "--profile", "prod"])
        .output()
        .unwrap();
    if Path::new("/etc/p11jwt/config.toml").exists() {
        eprintln!("skipped the no-config half: /etc/p11jwt/config.toml exists here");
        return;
    }
    expect(&out, 2, &["no config file", "no-such-dir"]);
}
