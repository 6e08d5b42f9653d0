//! `p11jwt get`: call an API with an access token, cached or fresh.

use std::io::Read as _;
use std::time::Instant;

use clap::Args;

use p11jwt::oauth::{self, ApiRequest};
use p11jwt::Error;

use super::access::AccessTokens;
use super::{ClaimArgs, EndpointArgs, KeyArgs};

#[derive(Args, Debug)]
pub struct GetArgs {
    /// The API URL (https, or http to a loopback address)
    #[arg(value_name = "URL")]
    url: String,

    /// HTTP method [default: GET, or POST with --data]
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    method: Option<String>,

    /// Request body; @FILE reads it from FILE, @- from standard input
    #[arg(short = 'd', long = "data", value_name = "BODY|@FILE")]
    data: Option<String>,

    /// Extra header 'Name: value' (repeatable); Authorization is set by p11jwt
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,

    #[command(flatten)]
    pub(super) key: KeyArgs,

    #[command(flatten)]
    pub(super) claims: ClaimArgs,

    #[command(flatten)]
    pub(super) endpoint: EndpointArgs,
}

pub fn run(args: GetArgs) -> Result<(), Error> {
    oauth::check_url(&args.url)?;
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    if args.key.pin_stdin && args.data.as_deref() == Some("@-") {
        return Err(Error::Usage(
            "--pin-stdin and -d @- both read standard input\ngive the PIN another way \
             (P11JWT_PIN, --pin-file) or the body from a file"
                .into(),
        ));
    }
    let body = args.data.as_deref().map(read_body).transpose()?;
    let method = match (&args.method, &body) {
        (Some(method), _) => method.to_ascii_uppercase(),
        (None, Some(_)) => "POST".to_owned(),
        (None, None) => "GET".to_owned(),
    };
    let request = ApiRequest {
        method: &method,
        url: &args.url,
        headers: &headers,
        body: body.as_deref(),
    };

    let tokens = AccessTokens::new(&args.key, &args.claims, &args.endpoint)?;
    let mut obtained = tokens.obtain(false)?;
    let mut started = Instant::now();
    let mut api = tokens
        .client()
        .call(&request, &obtained.response.access_token)?;
    log::info!(
        "{method} {} answered {} in {} ms",
        args.url,
        api.status,
        started.elapsed().as_millis()
    );

    // A cached access token may have been revoked or the server's keys rotated: drop it and
    // try once more with a fresh one. A fresh one refused is the answer.
    if api.status == 401 && obtained.cached {
        tokens.forget()?;
        log::info!("dropped the cached access token after a 401; trying once with a fresh one");
        obtained = tokens.obtain(true)?;
        started = Instant::now();
        api = tokens
            .client()
            .call(&request, &obtained.response.access_token)?;
        log::info!(
            "{method} {} answered {} in {} ms",
            args.url,
            api.status,
            started.elapsed().as_millis()
        );
    }

    // RFC 9110 §15.4: a redirect is not followed, since it would carry the bearer token
    // elsewhere; say where it pointed instead of summarising an empty body.
    if (300..400).contains(&api.status) {
        let location = api
            .location
            .as_deref()
            .unwrap_or("nowhere (no Location header)");
        return Err(Error::Api {
            status: api.status,
            summary: format!(
                "a redirect to {}; p11jwt does not follow redirects\ncall the URL it \
                 redirects to, if that is the API",
                p11jwt::escape_for_terminal(location)
            ),
        });
    }
    if !(200..300).contains(&api.status) {
        let text = String::from_utf8_lossy(&api.body);
        return Err(Error::Api {
            status: api.status,
            summary: oauth::summarize(&text),
        });
    }
    super::print_bytes(&api.body)
}

/// `Name: value`, as curl takes it; `Authorization` is p11jwt's to set.
fn parse_header(text: &str) -> Result<(String, String), Error> {
    let Some((name, value)) = text.split_once(':') else {
        return Err(Error::Usage(format!(
            "-H {text:?} is not a header\nwrite it as -H 'Name: value'"
        )));
    };
    let name = name.trim();
    if name.eq_ignore_ascii_case("authorization") {
        return Err(Error::Usage(
            "-H Authorization is refused: p11jwt sends the access token itself\ndrop the -H".into(),
        ));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// The body as given, or read from `@FILE` / `@-`.
fn read_body(data: &str) -> Result<Vec<u8>, Error> {
    let Some(path) = data.strip_prefix('@') else {
        return Ok(data.as_bytes().to_vec());
    };
    let mut bytes = Vec::new();
    let read = if path == "-" {
        std::io::stdin().lock().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(path).map(|b| bytes = b)
    };
    read.map_err(|e| Error::Usage(format!("cannot read -d @{path}: {e}\ncheck the file")))?;
    Ok(bytes)
}
