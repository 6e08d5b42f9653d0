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
fn rate(budget: Duration, f: &mut dyn FnMut() -> Result<(), Box<dyn std::error::Error>>) -> f64 {
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

/// Measures each workload in turn, round after round, and keeps each one's median: the
/// machine's drift then falls on all of them alike, and the ratios stay honest.
fn interleaved(
    total: Duration,
    workloads: &mut [&mut dyn FnMut() -> Result<(), Box<dyn std::error::Error>>],
) -> Vec<f64> {
    const ROUNDS: u32 = 9;
    let slice = total / ROUNDS;
    let mut rates = vec![Vec::new(); workloads.len()];
    for _ in 0..ROUNDS {
        for (i, f) in workloads.iter_mut().enumerate() {
            rates[i].push(rate(slice, *f));
        }
    }
    rates
        .into_iter()
        .map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect()
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

    // Raw C_Sign over what the library would hand the token; whole assertions with every
    // signature checked; whole assertions with ECDSA/EdDSA checked once (RSA always is).
    let signer = Signer::new(&token, &key, None, None)?.with_checks(Checks::Every);
    let once = Signer::new(&token, &key, None, None)?.with_checks(Checks::FirstForEc);
    let mechanism = signer.mechanism();
    let data = mechanism.sign_input(b"eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJiZW5jaCJ9");
    let mut raw = || -> Result<(), Box<dyn std::error::Error>> {
        token.sign(&key, mechanism, &data)?;
        Ok(())
    };
    let mut checked = || -> Result<(), Box<dyn std::error::Error>> {
        assertion::mint(&signer, &request)?;
        Ok(())
    };
    let mut checked_once = || -> Result<(), Box<dyn std::error::Error>> {
        assertion::mint(&once, &request)?;
        Ok(())
    };
    let rates = interleaved(budget * 3, &mut [&mut raw, &mut checked, &mut checked_once]);
    let (raw, checked, first_only) = (rates[0], rates[1], rates[2]);

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
