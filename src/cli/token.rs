//! `p11jwt token`: exchange an assertion for an access token, or reuse a cached one.

use clap::{Args, ValueEnum};

use p11jwt::secret::Secret;
use p11jwt::Error;

use super::access::AccessTokens;
use super::{print_stdout, ClaimArgs, EndpointArgs, KeyArgs};

/// The environment variable `--format env` and `exec` set by default.
pub const DEFAULT_ENV_NAME: &str = "P11JWT_ACCESS_TOKEN";

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    pub(super) key: KeyArgs,

    #[command(flatten)]
    pub(super) claims: ClaimArgs,

    #[command(flatten)]
    pub(super) endpoint: EndpointArgs,

    /// Print the whole token response as JSON (same as --format json)
    #[arg(long)]
    json: bool,

    /// What to print: the access token, the JSON response, an Authorization header, or a
    /// line for a shell to evaluate
    #[arg(long, value_enum, default_value_t = Format::Token)]
    format: Format,

    /// Variable name for --format env
    #[arg(long, value_name = "NAME", default_value = DEFAULT_ENV_NAME)]
    env_name: String,

    /// Remove the cached access token for these settings, and print nothing
    #[arg(long)]
    forget: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Token,
    Json,
    Header,
    Env,
}

pub fn run(args: TokenArgs) -> Result<(), Error> {
    if args.json && !matches!(args.format, Format::Token | Format::Json) {
        return Err(Error::Usage(
            "--json asks for --format json; drop one of them".into(),
        ));
    }
    let format = if args.json { Format::Json } else { args.format };
    if format == Format::Env {
        check_env_name(&args.env_name)?;
    }
    let tokens = AccessTokens::new(&args.key, &args.claims, &args.endpoint)?;
    if args.forget {
        let removed = tokens.forget()?;
        log::info!(
            "{}",
            if removed {
                "cached access token removed"
            } else {
                "nothing cached"
            }
        );
        return Ok(());
    }

    let response = tokens.obtain(false)?.response;
    let token = response.access_token.expose();
    // Each line is built in wiped memory: it holds the access token.
    let line = Secret::new(match format {
        Format::Token => format!("{token}\n"),
        Format::Json => format!("{}\n", response.body.expose().trim_end()),
        Format::Header => format!("Authorization: Bearer {token}\n"),
        Format::Env => {
            let name = &args.env_name;
            format!("{name}={}; export {name}\n", shell_quote(token))
        }
    });
    print_stdout(line.expose())
}

/// A POSIX shell variable name: letters, digits and underscores, not starting with a digit.
pub fn check_env_name(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{name:?} is not a usable environment variable name\nuse letters, digits and \
         underscores, e.g. {DEFAULT_ENV_NAME}"
    )))
}

/// Single quotes, with any single quote inside closed, escaped and reopened: the shell then
/// takes every other byte literally.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_keeps_the_value_literal() {
        assert_eq!(shell_quote("abc.def"), "'abc.def'");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn env_names_are_checked() {
        assert!(check_env_name("P11JWT_ACCESS_TOKEN").is_ok());
        assert!(check_env_name("_x1").is_ok());
        assert!(check_env_name("1X").is_err());
        assert!(check_env_name("A-B").is_err());
        assert!(check_env_name("").is_err());
    }
}
