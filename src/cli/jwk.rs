//! `p11jwt jwk`: print the public JWK of a key, or a JWKS.

use clap::Args;

use p11jwt::alg::Alg;
use p11jwt::jwk::{self, JwkExtras};
use p11jwt::token::{KeyPair, Token};
use p11jwt::Error;

use super::{open_logged_in, pretty, print_stdout, read_pin, require_key, KeyArgs};

#[derive(Args, Debug)]
pub struct JwkArgs {
    #[command(flatten)]
    pub(super) key: KeyArgs,

    /// alg member [default: follows the key, as for `assert`]
    #[arg(long, env = "P11JWT_ALG", value_name = "ALG")]
    alg: Option<String>,

    /// kid member [default: the RFC 7638 thumbprint]
    #[arg(long, env = "P11JWT_KID", value_name = "KID")]
    kid: Option<String>,

    /// Print a JWKS ({"keys": [...]}) instead of one JWK; without --key, of every signing key
    #[arg(long)]
    jwks: bool,

    /// Add x5c and x5t#S256 from the certificate stored with the key
    #[arg(long)]
    x5c: bool,
}

pub fn run(args: JwkArgs) -> Result<(), Error> {
    let alg = args.alg.as_deref().map(str::parse::<Alg>).transpose()?;

    // Several --key: a JWKS of exactly those, for key rotation (register old and new).
    if args.key.key.len() > 1 {
        if !args.jwks || args.kid.is_some() {
            return Err(Error::Usage(
                "several --key make a JWKS: add --jwks (and no --kid, which names one key)".into(),
            ));
        }
        let mut keys = Vec::new();
        for one in args.key.each_key() {
            keys.push(one_key(&one, alg, None, args.x5c)?);
        }
        return print_stdout(&pretty(&jwk::jwks(keys)));
    }

    let resolved = args.key.resolve(false)?;

    if args.jwks && !resolved.key_given {
        let token = open_logged_in(&resolved)?;
        let mut keys = Vec::new();
        for pair in token.list_keys()? {
            // One unusable key (RSA under 2048 bits, no certificate for --x5c) must not hide
            // the others: it is named on stderr and left out.
            let pair = pair.and_then(|mut p| {
                if args.x5c {
                    token.load_certificate(&mut p)?;
                }
                Ok(p)
            });
            match pair.map(|p| (member(&p, None, None, args.x5c), p)) {
                Ok((Ok(value), pair)) if pair.flags.sign != Some(false) => keys.push(value),
                Ok((Err(e), pair)) if pair.flags.sign != Some(false) => {
                    let why = e.to_string();
                    let why = why.lines().next().unwrap_or_default();
                    log::warn!("leaving key {:?} out of the JWKS: {why}", pair.label_text())
                }
                Ok(_) => {}
                Err(e) => log::warn!("skipping a key: {e}"),
            }
        }
        return print_stdout(&pretty(&jwk::jwks(keys)));
    }

    let value = one_key(&args.key, alg, args.kid.as_deref(), args.x5c)?;
    if args.jwks {
        return print_stdout(&pretty(&jwk::jwks(vec![value])));
    }
    print_stdout(&pretty(&value))
}

/// The JWK of the one key `key_args` names.
fn one_key(
    key_args: &KeyArgs,
    alg: Option<Alg>,
    kid: Option<&str>,
    x5c: bool,
) -> Result<serde_json::Value, Error> {
    let resolved = key_args.resolve(false)?;
    require_key(&resolved)?;
    // The public half is readable without a PIN on most tokens; log in only when it is not.
    let mut token = Token::open(&resolved.options, None)?;
    let mut pair = match token.find_public(&resolved.selector)? {
        Some(pair) => pair,
        None => {
            let pin = read_pin(&resolved)?;
            drop(token);
            token = Token::open(&resolved.options, pin.as_ref())?;
            token.find_key(&resolved.selector)?
        }
    };
    if x5c {
        token.load_certificate(&mut pair)?;
    }
    member(&pair, alg, kid, x5c)
}

fn member(
    pair: &KeyPair,
    alg: Option<Alg>,
    kid: Option<&str>,
    x5c: bool,
) -> Result<serde_json::Value, Error> {
    let kind = pair.public.kind();
    let alg = alg.unwrap_or_else(|| Alg::default_for(kind));
    alg.check_key(kind)?;
    let thumbprint = pair.public.thumbprint();
    let chain: Vec<Vec<u8>> = match (&pair.certificate, x5c) {
        (Some(cert), true) => {
            // RFC 7517 §4.7: the certificate's key must be the JWK's key.
            let certified = p11jwt::jwk::PublicKey::from_certificate(cert).ok();
            if certified.as_ref() != Some(&pair.public) {
                return Err(Error::Usage(format!(
                    "--x5c: the certificate with CKA_ID {} does not hold key {:?}'s public key\n\
                     import the certificate issued for this key under its CKA_ID",
                    pair.id_hex(),
                    pair.label_text()
                )));
            }
            vec![cert.clone()]
        }
        (None, true) => {
            return Err(Error::Usage(format!(
                "--x5c: key {:?} has no certificate on the token (none with CKA_ID {})\n\
                 import its certificate with the key's CKA_ID (pkcs11-tool --write-object \
                 CERT.der --type cert --id {})",
                pair.label_text(),
                pair.id_hex(),
                pair.id_hex()
            )))
        }
        _ => Vec::new(),
    };
    let extras = JwkExtras {
        alg: Some(alg),
        kid: Some(kid.unwrap_or(&thumbprint)),
        x5c: &chain,
    };
    Ok(pair.public.to_jwk(&extras))
}
