//! `p11jwt get`: call an API with a fresh access token.

use std::time::{Duration, Instant};

use clap::Args;

use p11jwt::oauth;
use p11jwt::Error;

use super::{fetch_access_token, ClaimArgs, EndpointArgs, KeyArgs};

#[derive(Args, Debug)]
pub struct GetArgs {
    /// The API URL (https, or http to a loopback address)
    #[arg(value_name = "URL")]
    url: String,

    #[command(flatten)]
    pub(super) key: KeyArgs,

    #[command(flatten)]
    pub(super) claims: ClaimArgs,

    #[command(flatten)]
    pub(super) endpoint: EndpointArgs,
}

pub fn run(args: GetArgs) -> Result<(), Error> {
    oauth::check_url(&args.url)?;
    let response = fetch_access_token(&args.key, &args.claims, &args.endpoint)?;

    let started = Instant::now();
    let client = oauth::Client::new(Duration::from_secs(args.endpoint.timeout.max(1)));
    let api = client.get(&args.url, &response.access_token)?;
    log::info!(
        "GET {} answered {} in {} ms",
        args.url,
        api.status,
        started.elapsed().as_millis()
    );
    if !(200..300).contains(&api.status) {
        let text = String::from_utf8_lossy(&api.body);
        return Err(Error::Api {
            status: api.status,
            summary: oauth::summarize(&text),
        });
    }
    super::print_bytes(&api.body)
}
