//! Where settings and the PIN come from: profiles in a TOML file, and PIN sources. Never signs.

use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
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
            PinSource::Stdin => read_stdin_line().map_err(|e| Error::PinRead {
                what: "standard input".into(),
                detail: e.to_string(),
            })?,
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

/// Reads one line from standard input, one byte at a time straight from the descriptor: the
/// rest of the input stays unread for whoever comes next (the command `exec` runs, a request
/// body), which a buffered reader would have swallowed.
fn read_stdin_line() -> std::io::Result<Secret> {
    use std::io::Read as _;
    use std::os::fd::AsFd as _;

    let mut input = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let mut line = Zeroizing::new(Vec::with_capacity(64));
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() >= 4096 => {
                return Err(std::io::Error::other(
                    "the first line is longer than 4096 bytes",
                ))
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let text = std::str::from_utf8(&line)
        .map_err(|_| std::io::Error::other("the PIN is not valid UTF-8"))?;
    Ok(Secret::new(text.trim_end_matches('\r').to_owned()))
}

/// Reads the first line of a PIN file, refusing one that others can read or write, as ssh
/// refuses a private key file with loose permissions.
fn read_pin_file(path: &Path) -> Result<Secret, Error> {
    let what = || format!("PIN file {}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| Error::PinRead {
        what: what(),
        detail: e.to_string(),
    })?;
    if let Some(mode) = loose_mode(&meta, 0o077) {
        return Err(Error::LoosePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::PinRead {
        what: what(),
        detail: e.to_string(),
    })?);
    let first = text.lines().next().unwrap_or("");
    Ok(Secret::new(first.to_owned()))
}

/// The permission bits of `meta` when any bit of `forbidden` is set; `None` on other systems.
fn loose_mode(meta: &std::fs::Metadata, forbidden: u32) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & forbidden != 0 {
            return Some(mode);
        }
    }
    let _ = (meta, forbidden);
    None
}

/// The environment variable that names a config file, like `--config`.
pub const CONFIG_ENV: &str = "P11JWT_CONFIG";
/// The environment variable that names a profile, like `--profile`.
pub const PROFILE_ENV: &str = "P11JWT_PROFILE";
/// The system-wide config file, read when the user has none.
pub const SYSTEM_CONFIG: &str = "/etc/p11jwt/config.toml";

/// One `[profiles.NAME]` table. Every field is optional; a flag or an environment variable
/// given for the same setting wins over it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// PKCS#11 module path.
    pub module: Option<PathBuf>,
    /// Token label.
    pub token: Option<String>,
    /// Key label, or a `pkcs11:` URI.
    pub key: Option<String>,
    /// File whose first line is the user PIN (the PIN itself never goes in the config).
    pub pin_file: Option<PathBuf>,
    pub client_id: Option<String>,
    pub token_endpoint: Option<String>,
    pub tenant: Option<String>,
    /// Issuer URL for discovery, used when neither token_endpoint nor tenant is set.
    pub issuer: Option<String>,
    /// Provider preset: qlik, okta, keycloak, entra, auth0, generic.
    pub provider: Option<String>,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub alg: Option<String>,
    /// Seconds between iat and exp.
    pub lifetime: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// A config file, read and parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub profiles: BTreeMap<String, Profile>,
}

/// Where the config file is looked for: `explicit` (`--config` / `P11JWT_CONFIG`) alone when
/// given; else `$XDG_CONFIG_HOME/p11jwt/config.toml` (or `~/.config/...`), then
/// [`SYSTEM_CONFIG`].
pub fn config_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path.to_owned()];
    }
    let mut out = Vec::new();
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let user = xdg.or_else(|| dirs::home_dir().map(|h| h.join(".config")));
    if let Some(dir) = user {
        out.push(dir.join("p11jwt").join("config.toml"));
    }
    out.push(PathBuf::from(SYSTEM_CONFIG));
    out
}

impl Config {
    /// Finds and reads the config file. `Ok(None)` when none of the usual places has one; an
    /// explicit path that does not exist is an error.
    pub fn discover(explicit: Option<&Path>) -> Result<Option<Config>, Error> {
        for path in config_candidates(explicit) {
            if explicit.is_none() && !path.exists() {
                continue;
            }
            return Config::load(&path).map(Some);
        }
        Ok(None)
    }

    /// Reads and parses one config file, refusing one that others can write (as ssh does).
    pub fn load(path: &Path) -> Result<Config, Error> {
        let read_error = |e: std::io::Error| Error::ConfigRead {
            path: path.to_owned(),
            detail: e.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(read_error)?;
        if let Some(mode) = loose_mode(&meta, 0o022) {
            return Err(Error::ConfigWritable {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Config::parse(path, &text)
    }

    /// Parses config text; errors name the line and column (1-based).
    pub fn parse(path: &Path, text: &str) -> Result<Config, Error> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_column(text, s.start))
                .unwrap_or((0, 0));
            Error::ConfigSyntax {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        Ok(Config {
            path: path.to_owned(),
            profiles: file.profiles,
        })
    }

    /// The profile called `name`, or an error that lists the ones there are.
    pub fn profile(&self, name: &str) -> Result<&Profile, Error> {
        self.profiles
            .get(name)
            .ok_or_else(|| Error::ProfileNotFound {
                name: name.to_owned(),
                path: Some(self.path.clone()),
                available: self.profiles.keys().cloned().collect(),
            })
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    // toml's spans fall on character boundaries; `get` keeps a stray one from panicking.
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where a setting's value came from, in precedence order: flag > environment > profile >
/// default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env(String),
    Profile(String),
    Default,
    Unset,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("flag"),
            Origin::Env(name) => write!(f, "environment {name}"),
            Origin::Profile(name) => write!(f, "profile {name}"),
            Origin::Default => f.write_str("default"),
            Origin::Unset => f.write_str("unset"),
        }
    }
}

/// Applies precedence to one setting: a value from a flag or the environment stays; a default
/// or missing one gives way to the profile's.
pub fn choose<T: Clone>(
    current: &mut Option<T>,
    origin: Origin,
    from_profile: Option<&T>,
    profile_name: &str,
) -> Origin {
    let given = matches!(origin, Origin::Flag | Origin::Env(_));
    match from_profile {
        Some(value) if !given => {
            *current = Some(value.clone());
            Origin::Profile(profile_name.to_owned())
        }
        _ if current.is_none() => Origin::Unset,
        _ => origin,
    }
}

#[derive(Debug)]
pub enum Error {
    PinRead {
        what: String,
        detail: String,
    },
    PinEnvNotUnicode,
    EmptyPin {
        source: String,
    },
    LoosePermissions {
        path: PathBuf,
        mode: u32,
    },
    ConfigRead {
        path: PathBuf,
        detail: String,
    },
    ConfigWritable {
        path: PathBuf,
        mode: u32,
    },
    ConfigSyntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    NoConfig {
        profile: String,
        searched: Vec<PathBuf>,
    },
    ProfileNotFound {
        name: String,
        path: Option<PathBuf>,
        available: Vec<String>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::PinRead { what, detail } => write!(
                f,
                "cannot read the PIN from {what}: {detail}\n\
                 check the path and its permissions, or give the PIN another way (P11JWT_PIN, \
                 --pin-stdin, a terminal prompt)"
            ),
            Error::PinEnvNotUnicode => write!(
                f,
                "{PIN_ENV} is not valid UTF-8\nset it to the PIN as text, or use --pin-file"
            ),
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
            Error::ConfigRead { path, detail } => write!(
                f,
                "cannot read config file {}: {detail}\ncheck the path given with --config or \
                 {CONFIG_ENV}",
                path.display()
            ),
            Error::ConfigWritable { path, mode } => write!(
                f,
                "config file {} has mode {mode:04o}: others can write it, so p11jwt will not \
                 trust it\nrun `chmod go-w {}`",
                path.display(),
                path.display()
            ),
            Error::ConfigSyntax {
                path,
                line,
                column,
                message,
            } => write!(
                f,
                "config file {} line {line} column {column}: {message}\n\
                 a profile takes module, token, key, pin_file, client_id, token_endpoint, \
                 tenant, scope, audience, alg (strings) and lifetime (an integer)",
                path.display()
            ),
            Error::NoConfig { profile, searched } => {
                let list: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "profile {profile:?} was asked for, but there is no config file (looked \
                     for {})\ncreate one with a [profiles.{profile}] table, or pass --config PATH",
                    list.join(", ")
                )
            }
            Error::ProfileNotFound {
                name,
                path,
                available,
            } => {
                let at = path
                    .as_ref()
                    .map(|p| format!(" in {}", p.display()))
                    .unwrap_or_default();
                let list = if available.is_empty() {
                    "none".into()
                } else {
                    available.join(", ")
                };
                write!(
                    f,
                    "no profile {name:?}{at}; the profiles are: {list}\n\
                     pass one of those with --profile (or {PROFILE_ENV}), or add \
                     [profiles.{name}]"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/x/config.toml";

    #[test]
    fn parses_a_profile() {
        let text = "[profiles.qlik-prod]\nmodule = \"/m.so\"\nkey = \"pkcs11:object=k\"\n\
                    pin_file = \"/run/pin\"\ntenant = \"acme\"\nlifetime = 120\n";
        let config = Config::parse(Path::new(PATH), text).unwrap();
        let p = config.profile("qlik-prod").unwrap();
        assert_eq!(p.module.as_deref(), Some(Path::new("/m.so")));
        assert_eq!(p.key.as_deref(), Some("pkcs11:object=k"));
        assert_eq!(p.lifetime, Some(120));
        assert_eq!(p.client_id, None);
    }

    #[test]
    fn an_unknown_key_names_its_line() {
        let text = "[profiles.a]\nclient_id = \"c\"\npin = \"1234\"\n";
        let err = Config::parse(Path::new(PATH), text).unwrap_err();
        let Error::ConfigSyntax { line, message, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*line, 3);
        assert!(message.contains("pin"), "{message}");
        // The value of an unknown key (maybe a PIN) never reaches the message.
        assert!(!err.to_string().contains("1234"), "{err}");
    }

    #[test]
    fn a_bad_type_names_its_line() {
        let text = "[profiles.a]\n\nlifetime = \"300\"\n";
        let err = Config::parse(Path::new(PATH), text).unwrap_err();
        let Error::ConfigSyntax { line, column, .. } = err else {
            panic!()
        };
        assert_eq!((line, column), (3, 12));
    }

    #[test]
    fn a_missing_profile_lists_the_others() {
        let config = Config::parse(Path::new(PATH), "[profiles.a]\n[profiles.b]\n").unwrap();
        let err = config.profile("c").unwrap_err().to_string();
        assert!(err.contains("a, b"), "{err}");
    }

    #[test]
    fn precedence_is_flag_env_profile_default() {
        let from_profile = Some("profile".to_string());
        let mut v = Some("flag".to_string());
        assert_eq!(
            choose(&mut v, Origin::Flag, from_profile.as_ref(), "p"),
            Origin::Flag
        );
        assert_eq!(v.as_deref(), Some("flag"));

        let env = Origin::Env("P11JWT_X".into());
        assert_eq!(choose(&mut v, env.clone(), from_profile.as_ref(), "p"), env);

        let mut d = Some("default".to_string());
        let got = choose(&mut d, Origin::Default, from_profile.as_ref(), "p");
        assert_eq!(
            (got, d.as_deref()),
            (Origin::Profile("p".into()), Some("profile"))
        );

        let mut none: Option<String> = None;
        assert_eq!(choose(&mut none, Origin::Unset, None, "p"), Origin::Unset);
    }

    #[test]
    fn an_explicit_path_is_the_only_candidate() {
        let explicit = Path::new("/nowhere/p11jwt.toml");
        assert_eq!(config_candidates(Some(explicit)), vec![explicit.to_owned()]);
        assert!(Config::discover(Some(explicit)).is_err());
        assert_eq!(
            config_candidates(None).last().unwrap(),
            Path::new(SYSTEM_CONFIG)
        );
    }
}
