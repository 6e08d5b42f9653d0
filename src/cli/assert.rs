//! `p11jwt assert`: print a signed client assertion.

use clap::Args;

use p11jwt::Error;

use super::{mint, open_logged_in, print_stdout, require_key, ClaimArgs, KeyArgs};

#[derive(Args, Debug)]
pub struct AssertArgs {
    #[command(flatten)]
    pub(super) key: KeyArgs,

    #[command(flatten)]
    pub(super) claims: ClaimArgs,

    /// aud claim: the token endpoint, exactly as the server expects it
    #[arg(long, env = "P11JWT_AUDIENCE", value_name = "URL")]
    pub(super) audience: Option<String>,

    /// Qlik Cloud tenant, for aud https://NAME.qlikcloud.com/oauth/token
    #[arg(long, env = "P11JWT_TENANT", value_name = "NAME")]
    pub(super) tenant: Option<String>,

    /// Token endpoint, the aud when neither --audience nor --tenant is given
    #[arg(long, env = "P11JWT_TOKEN_ENDPOINT", value_name = "URL")]
    pub(super) token_endpoint: Option<String>,
}

pub fn run(args: AssertArgs) -> Result<(), Error> {
    let audience = match (&args.audience, &args.tenant, &args.token_endpoint) {
        (Some(aud), _, _) => aud.clone(),
        (None, Some(tenant), _) => p11jwt::oauth::qlik_token_endpoint(tenant)?,
        (None, None, Some(endpoint)) => endpoint.clone(),
        (None, None, None) => {
            return Err(Error::Usage(
                "no audience\npass --audience URL (the token endpoint), --tenant NAME or \
                 --token-endpoint URL"
                    .into(),
            ))
        }
    };
    if audience.is_empty() {
        return Err(Error::Usage(
            "the audience is empty\npass the token endpoint with --audience URL".into(),
        ));
    }
    let resolved = args.key.resolve(false)?;
    require_key(&resolved)?;
    let token = open_logged_in(&resolved)?;
    let key = token.find_key(&resolved.selector)?;
    let minted = mint(&token, &key, &args.claims, &audience)?;
    print_stdout(&format!("{}\n", minted.compact.expose()))
}
