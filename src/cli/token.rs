//! `p11jwt token`: exchange an assertion for an access token.

use clap::Args;

use p11jwt::Error;

use super::{fetch_access_token, print_stdout, ClaimArgs, EndpointArgs, KeyArgs};

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    pub(super) key: KeyArgs,

    #[command(flatten)]
    pub(super) claims: ClaimArgs,

    #[command(flatten)]
    pub(super) endpoint: EndpointArgs,

    /// Print the whole token response as JSON instead of the access token alone
    #[arg(long)]
    json: bool,
}

pub fn run(args: TokenArgs) -> Result<(), Error> {
    let response = fetch_access_token(&args.key, &args.claims, &args.endpoint)?;
    if args.json {
        let mut body = response.body.expose().trim_end().to_owned();
        body.push('\n');
        let body = p11jwt::secret::Secret::new(body);
        return print_stdout(body.expose());
    }
    print_stdout(&format!("{}\n", response.access_token.expose()))
}
