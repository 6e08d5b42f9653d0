//! Where settings and the PIN come from. Never signs.

use std::fmt;
use std::io::{BufRead as _, IsTerminal as _};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::secret::Secret;

/// The environment variable that holds the PIN itself.
pub const PIN_ENV: &str = "P11JWT_PIN";

/// Where to read the user PIN from, in the order the CLI tries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file whose first line is the PIN; it must not be readable by others.
    File(PathBuf),
    /// The first line of standard input.
    Stdin,
    /// The `P11JWT_PIN` environment variable.
    Env,
    /// A no-echo prompt on the terminal.
    Prompt,
    /// No PIN (public objects only, or a PIN pad).
    None,
}

impl PinSource {
    /// Picks the source: a PIN file, then standard input, then `P11JWT_PIN`, then a prompt
    /// when standard input is a terminal.
    pub fn choose(pin_file: Option<&Path>, pin_stdin: bool) -> PinSource {
        if let Some(path) = pin_file {
            return PinSource::File(path.to_owned());
        }
        if pin_stdin {
            return PinSource::Stdin;
        }
        if std::env::var_os(PIN_ENV).is_some() {
            return PinSource::Env;
        }
        if std::io::stdin().is_terminal() {
            return PinSource::Prompt;
        }
        PinSource::None
    }

    /// Reads the PIN; `Ok(None)` for [`PinSource::None`].
    pub fn read(&self, token_label: &str) -> Result<Option<Secret>, Error> {
        let pin = match self {
            PinSource::None => return Ok(None),
            PinSource::Env => {
                let value = std::env::var(PIN_ENV).map_err(|_| Error::PinEnvNotUnicode)?;
                Secret::new(value)
            }
            PinSource::File(path) => read_pin_file(path)?,
            PinSource::Stdin => {
                let mut line = Zeroizing::new(String::new());
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .map_err(|e| Error::PinRead {
                        what: "standard input".into(),
                        detail: e.to_string(),
                    })?;
                Secret::new(line.trim_end_matches(['\r', '\n']).to_owned())
            }
            PinSource::Prompt => {
                let prompt = format!("User PIN for token {token_label:?}: ");
                let value = rpassword::prompt_password(prompt).map_err(|e| Error::PinRead {
                    what: "the terminal".into(),
                    detail: e.to_string(),
                })?;
                Secret::new(value)
            }
        };
        if pin.is_empty() {
            return Err(Error::EmptyPin {
                source: self.to_string(),
            });
        }
        Ok(Some(pin))
    }
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::File(p) => write!(f, "PIN file {}", p.display()),
            PinSource::Stdin => f.write_str("standard input"),
            PinSource::Env => f.write_str(PIN_ENV),
            PinSource::Prompt => f.write_str("the prompt"),
            PinSource::None => f.write_str("no PIN source"),
        }
    }
}

/// Reads the first line of a PIN file, refusing one that others can read or write, as ssh
/// refuses a private key file with loose permissions.
fn read_pin_file(path: &Path) -> Result<Secret, Error> {
    let what = || format!("PIN file {}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| Error::PinRead {
        what: what(),
        detail: e.to_string(),
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::LoosePermissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::PinRead {
        what: what(),
        detail: e.to_string(),
    })?);
    let first = text.lines().next().unwrap_or("");
    Ok(Secret::new(first.to_owned()))
}

#[derive(Debug)]
pub enum Error {
    PinRead { what: String, detail: String },
    PinEnvNotUnicode,
    EmptyPin { source: String },
    LoosePermissions { path: PathBuf, mode: u32 },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::PinRead { what, detail } => {
                write!(f, "cannot read the PIN from {what}: {detail}")
            }
            Error::PinEnvNotUnicode => write!(f, "{PIN_ENV} is not valid UTF-8"),
            Error::EmptyPin { source } => write!(
                f,
                "the PIN from {source} is empty\nput the user PIN there, or use another source"
            ),
            Error::LoosePermissions { path, mode } => write!(
                f,
                "PIN file {} has mode {mode:04o}: others can read or write it\n\
                 run `chmod 600 {}`",
                path.display(),
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {}
