//! `p11jwt keys`: list the key pairs on the token.

use clap::Args;
use serde_json::json;

use p11jwt::alg::Alg;
use p11jwt::token::{KeyPair, KeySelector};
use p11jwt::uri::{Pkcs11Uri, TokenFields};
use p11jwt::Error;

use super::{open_logged_in, pretty, print_stdout, KeyArgs};

#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(flatten)]
    pub(super) key: KeyArgs,

    /// Print JSON for scripts
    #[arg(long)]
    json: bool,
}

pub fn run(args: KeysArgs) -> Result<(), Error> {
    let resolved = args.key.resolve(false)?;
    let token = open_logged_in(&resolved)?;
    let d = token.description().clone();
    let fields = TokenFields {
        label: &d.label,
        manufacturer: &d.manufacturer,
        serial: &d.serial,
        model: &d.model,
    };

    let mut rows = Vec::new();
    for pair in token.list_keys()? {
        match pair {
            // With --key, only the key pairs it names (by label and/or id).
            Ok(pair) if !selected(&resolved.selector, &pair) => {}
            Ok(pair) => rows.push(describe(&pair, &fields)),
            Err(e) => log::warn!("skipping a key whose public key cannot be read: {e}"),
        }
    }
    if args.json {
        return print_stdout(&pretty(&json!({ "token": d.label, "keys": rows })));
    }
    let mut out = String::new();
    for row in &rows {
        out.push_str(&format!(
            "{}  id {}  {}  {}  kid {}\n  flags: {}\n  {}\n",
            row["label"].as_str().unwrap_or(""),
            row["id"].as_str().unwrap_or(""),
            row["type"].as_str().unwrap_or(""),
            row["alg"].as_str().unwrap_or("(no alg fits)"),
            row["kid"].as_str().unwrap_or(""),
            flag_text(row),
            row["uri"].as_str().unwrap_or(""),
        ));
    }
    if rows.is_empty() && d.login_required && !token.is_logged_in() {
        // Private keys stay hidden until login: "no keys" would be a lie.
        return Err(p11jwt::token::Error::PinRequired.into());
    }
    if rows.is_empty() {
        super::note(format_args!(
            "p11jwt: token {:?} has no private keys visible to this login",
            d.label
        ));
    }
    print_stdout(&out)
}

fn selected(selector: &KeySelector, pair: &KeyPair) -> bool {
    selector.label.as_ref().is_none_or(|l| *l == pair.label)
        && selector.id.as_ref().is_none_or(|i| *i == pair.id)
}

fn describe(pair: &KeyPair, token: &TokenFields<'_>) -> serde_json::Value {
    let kind = pair.public.kind();
    let uri = Pkcs11Uri::for_key(token, Some(&pair.label), Some(&pair.id));
    let f = pair.flags;
    json!({
        "label": pair.label_text(),
        "id": pair.id_hex(),
        "type": kind.to_string(),
        // A key no alg fits (RSA under 2048 bits) has no default alg to offer.
        "alg": Alg::fitting(kind).first().map(|_| Alg::default_for(kind).as_str()),
        "kid": pair.public.thumbprint(),
        "uri": uri.to_string(),
        "public_key_from": format!("{:?}", pair.public_source),
        "may_exist_off_token": f.may_exist_off_token(),
        "flags": {
            "CKA_SIGN": f.sign,
            "CKA_SENSITIVE": f.sensitive,
            "CKA_EXTRACTABLE": f.extractable,
            "CKA_ALWAYS_SENSITIVE": f.always_sensitive,
            "CKA_NEVER_EXTRACTABLE": f.never_extractable,
            "CKA_ALWAYS_AUTHENTICATE": f.always_authenticate,
        },
    })
}

fn flag_text(row: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    if let Some(flags) = row["flags"].as_object() {
        for (name, value) in flags {
            let v = match value.as_bool() {
                Some(true) => "true",
                Some(false) => "false",
                None => "unknown",
            };
            parts.push(format!(
                "{}={v}",
                name.trim_start_matches("CKA_").to_lowercase()
            ));
        }
    }
    if row["may_exist_off_token"] == true {
        parts.push("WARNING: may exist off the token".into());
    }
    parts.join(" ")
}
