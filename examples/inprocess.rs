//! In-process throughput for `make bench`: on one logged-in session and one key, raw C_Sign
//! per second with the mechanism p11jwt picks, against whole assertions per second from the
//! library (hashing, signing, the in-process check, JSON and base64), with every signature
//! checked and with ECDSA/EdDSA checked once.
//!
//! `inprocess KEY_LABEL SECONDS` with P11JWT_MODULE, P11JWT_TOKEN and P11JWT_PIN set. Prints
//! one JSON line.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use p11jwt::assertion::{self, JwsSigner as _};
use p11jwt::secret::Secret;
use p11jwt::signer::{Checks, Signer};
use p11jwt::token::{KeySelector, OpenOptions, Token};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inprocess: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Calls `f` until `budget` has passed; returns calls per second.
fn rate(budget: Duration, mut f: impl FnMut() -> Result<(), Box<dyn std::error::Error>>) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < budget {
        if let Err(e) = f() {
            eprintln!("inprocess: {e}");
            return 0.0;
        }
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, label, seconds] = args.as_slice() else {
        return Err("usage: inprocess KEY_LABEL SECONDS".into());
    };
    let budget = Duration::from_secs_f64(seconds.parse()?);
    let options = OpenOptions {
        module: std::env::var_os("P11JWT_MODULE").map(Into::into),
        token_label: std::env::var("P11JWT_TOKEN").ok(),
        uri: None,
        read_write: false,
        allow_final_pin_try: false,
    };
    let pin = Secret::new(std::env::var("P11JWT_PIN")?);
    let token = Token::open(&options, Some(&pin))?;
    let selector = KeySelector {
        label: Some(label.as_bytes().to_vec()),
        id: None,
    };
    let key = token.find_key(&selector)?;
    let request = assertion::Request {
        client_id: "bench-client",
        audience: "https://bench.example/oauth/token",
        lifetime: 300,
        typ: "JWT",
        x5t: None,
        x5t_s256: None,
    };

    // Raw C_Sign over what the library would hand the token.
    let signer = Signer::new(&token, &key, None, None)?;
    let mechanism = signer.mechanism();
    let data = mechanism.sign_input(b"eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJiZW5jaCJ9");
    let raw = rate(budget, || {
        token.sign(&key, mechanism, &data)?;
        Ok(())
    });

    // Whole assertions, each signature checked.
    let checked = rate(budget, || {
        assertion::mint(&signer, &request)?;
        Ok(())
    });

    // Whole assertions, ECDSA/EdDSA checked once (RSA is still checked every time).
    let once = Signer::new(&token, &key, None, None)?.with_checks(Checks::FirstForEc);
    let first_only = rate(budget, || {
        assertion::mint(&once, &request)?;
        Ok(())
    });

    println!(
        "{}",
        serde_json::json!({
            "key": label,
            "alg": signer.alg().as_str(),
            "mechanism": mechanism.name(),
            "raw_sign_per_s": raw.round(),
            "assertions_per_s": checked.round(),
            "assertions_per_s_checked_once": first_only.round(),
        })
    );
    Ok(())
}
