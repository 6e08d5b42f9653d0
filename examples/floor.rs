//! The floor for `make bench`: the least a fresh process must do for one token signature, with
//! cryptoki directly and nothing of p11jwt: load the module, initialize, open a session, log
//! in, find the private key by label, sign one digest.
//!
//! `floor MODULE TOKEN_LABEL KEY_LABEL rsa|ec` with the PIN in P11JWT_PIN. Prints the
//! signature length, so the work cannot be skipped.

use std::process::ExitCode;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use sha2::Digest as _;

fn main() -> ExitCode {
    match run() {
        Ok(len) => {
            println!("{len}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<usize, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, module, token_label, key_label, kind] = args.as_slice() else {
        return Err("usage: floor MODULE TOKEN_LABEL KEY_LABEL rsa|ec".into());
    };
    let pin = AuthPin::from(std::env::var("P11JWT_PIN")?);

    let ctx = Pkcs11::new(module)?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let mut slot = None;
    for s in ctx.get_slots_with_token()? {
        if ctx.get_token_info(s)?.label() == token_label {
            slot = Some(s);
        }
    }
    let session = ctx.open_ro_session(slot.ok_or("no such token")?)?;
    session.login(UserType::User, Some(&pin))?;

    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Label(key_label.as_bytes().to_vec()),
    ];
    let key = *session
        .find_objects(&template)?
        .first()
        .ok_or("no such key")?;

    let digest = sha2::Sha256::digest(b"header.claims");
    let signature = if kind == "rsa" {
        // DigestInfo for SHA-256 (RFC 8017 9.2 note 1), then the digest.
        let mut data = vec![
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ];
        data.extend_from_slice(&digest);
        session.sign(&Mechanism::RsaPkcs, key, &data)?
    } else {
        session.sign(&Mechanism::Ecdsa, key, &digest)?
    };
    Ok(signature.len())
}
