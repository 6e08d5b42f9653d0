//! `p11jwt keygen`: make a key pair on the token.

use clap::Args;

use p11jwt::alg::{Alg, Curve};
use p11jwt::jwk::JwkExtras;
use p11jwt::token::KeySpec;
use p11jwt::uri::{Pkcs11Uri, TokenFields};
use p11jwt::Error;

use super::{open_logged_in, pretty, print_stdout, KeyArgs};

#[derive(Args, Debug)]
pub struct KeygenArgs {
    #[command(flatten)]
    pub(super) key: KeyArgs,

    /// Key type, named by the alg it is for: RS*/PS* make RSA, ES256/ES384/ES512 make
    /// P-256/P-384/P-521, EdDSA makes Ed25519
    #[arg(long, env = "P11JWT_ALG", value_name = "ALG", default_value = "RS256")]
    alg: String,

    /// RSA modulus size: 2048, 3072 or 4096
    #[arg(long, value_name = "BITS", default_value_t = 2048)]
    bits: usize,
}

pub fn run(args: KeygenArgs) -> Result<(), Error> {
    let alg: Alg = args.alg.parse()?;
    let spec = match alg {
        Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
            if ![2048, 3072, 4096].contains(&args.bits) {
                return Err(Error::Usage(format!(
                    "--bits {} is not offered: use 2048, 3072 or 4096 (4096 recommended)",
                    args.bits
                )));
            }
            KeySpec::Rsa { bits: args.bits }
        }
        Alg::ES256 => KeySpec::Ec(Curve::P256),
        Alg::ES384 => KeySpec::Ec(Curve::P384),
        Alg::ES512 => KeySpec::Ec(Curve::P521),
        Alg::EdDSA => KeySpec::Ed25519,
    };

    let resolved = args.key.resolve(true)?;
    let Some(label) = resolved.selector.label.clone() else {
        return Err(Error::Usage(
            "keygen needs a label for the new key\npass --key LABEL, or a pkcs11: URI with \
             object=LABEL"
                .into(),
        ));
    };
    let label = String::from_utf8(label).map_err(|_| {
        Error::Usage(
            "the new key's label must be UTF-8\npass --key with a UTF-8 label (keys with other \
             bytes in their label are selected with id= in a pkcs11: URI)"
                .into(),
        )
    })?;
    let token = open_logged_in(&resolved)?;
    let pair = token.generate(spec, &label)?;

    let kid = pair.public.thumbprint();
    let jwk = pair.public.to_jwk(&JwkExtras {
        alg: Some(alg),
        kid: Some(&kid),
        x5c: &[],
    });
    let d = token.description();
    let fields = TokenFields {
        label: &d.label,
        manufacturer: &d.manufacturer,
        serial: &d.serial,
        model: &d.model,
    };
    let uri = Pkcs11Uri::for_key(&fields, Some(&pair.label), Some(&pair.id));
    super::note(format_args!(
        "p11jwt: generated {} key pair {:?} (id {}) on token {:?}\np11jwt: uri: {uri}",
        pair.public.kind(),
        pair.label_text(),
        pair.id_hex(),
        d.label
    ));
    print_stdout(&pretty(&jwk))
}
