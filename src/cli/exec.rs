//! `p11jwt exec -- CMD ARGS...`: run a command with an access token in its environment.

use std::os::unix::process::CommandExt as _;
use std::process::Command;

use clap::Args;

use p11jwt::config::PIN_ENV;
use p11jwt::Error;

use super::access::AccessTokens;
use super::token::{check_env_name, DEFAULT_ENV_NAME};
use super::{ClaimArgs, EndpointArgs, KeyArgs};

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    pub(super) key: KeyArgs,

    #[command(flatten)]
    pub(super) claims: ClaimArgs,

    #[command(flatten)]
    pub(super) endpoint: EndpointArgs,

    /// Environment variable that carries the access token
    #[arg(long, value_name = "NAME", default_value = DEFAULT_ENV_NAME)]
    env_name: String,

    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(args: ExecArgs) -> Result<(), Error> {
    check_env_name(&args.env_name)?;
    let tokens = AccessTokens::new(&args.key, &args.claims, &args.endpoint)?;
    let response = tokens.obtain(false)?.response;

    let (program, rest) = args.command.split_first().ok_or_else(|| {
        Error::Usage("no command\nusage: p11jwt exec [OPTIONS] -- CMD [ARGS...]".into())
    })?;
    let mut command = Command::new(program);
    command
        .args(rest)
        .env(&args.env_name, response.access_token.expose());
    // The command gets the access token, never the PIN nor where it is kept (a key URI can
    // carry pin-value or pin-source).
    command.env_remove(PIN_ENV);
    command.env_remove("P11JWT_PIN_FILE");
    if std::env::var("P11JWT_KEY").is_ok_and(|key| key.contains("pin-")) {
        command.env_remove("P11JWT_KEY");
    }
    log::info!(
        "running {program:?} with the access token in {}",
        args.env_name
    );

    // exec(2) replaces p11jwt: the command's exit code, signals, stdin and stdout are its
    // own, and p11jwt's memory (the token session, the access token) is gone. It only
    // returns when the command could not be started.
    let error = command.exec();
    Err(Error::Usage(format!(
        "cannot run {program:?}: {error}\ncheck the command name and PATH"
    )))
}
