//! Profiles: `p11jwt config show`, and the one step that fills the settings a flag or the
//! environment left unset from `[profiles.NAME]` (flag > environment > profile > default).

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Subcommand};

use p11jwt::config::{self, choose, Config, Origin, Profile, PIN_ENV};
use p11jwt::oauth;
use p11jwt::Error;

use super::{print_stdout, ClaimArgs, Cli, Command, EndpointArgs, KeyArgs};

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    action: ConfigAction,
}

#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// Print each setting with where it came from (flag, environment, profile, default); never
    /// the PIN
    Show(ShowArgs),
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub(super) key: KeyArgs,

    #[command(flatten)]
    pub(super) claims: ClaimArgs,

    #[command(flatten)]
    pub(super) endpoint: EndpointArgs,
}

/// One setting as `config show` prints it.
struct Setting {
    name: &'static str,
    value: Option<String>,
    origin: Origin,
}

/// The argument groups of the chosen subcommand, and the matches that say where each value
/// came from.
struct Groups<'a> {
    matches: Option<&'a ArgMatches>,
    key: Option<&'a mut KeyArgs>,
    claims: Option<&'a mut ClaimArgs>,
    endpoint: Option<&'a mut EndpointArgs>,
    /// `assert` has its own aud and tenant.
    assert_audience: Option<(&'a mut Option<String>, &'a mut Option<String>)>,
    /// ... and `--token-endpoint` as the aud of last resort.
    assert_endpoint: Option<&'a mut Option<String>>,
}

/// Reads the config file when a profile is asked for (once per run), and fills unset
/// settings from that profile. Returns each setting with its origin, for `config show`.
fn apply(cli: &mut Cli, matches: &ArgMatches) -> Result<(Option<Config>, Vec<Setting>), Error> {
    let profile_name = cli.profile.clone();
    let show = matches!(cli.command, Command::Config(_));
    let config = if profile_name.is_some() || show {
        Config::discover(cli.config.as_deref())?
    } else {
        None
    };
    let profile = match (&profile_name, &config) {
        (Some(name), Some(config)) => config.profile(name)?.clone(),
        (Some(name), None) => {
            return Err(config::Error::NoConfig {
                profile: name.clone(),
                searched: config::config_candidates(cli.config.as_deref()),
            }
            .into())
        }
        (None, _) => Profile::default(),
    };
    let name = profile_name.unwrap_or_default();

    let mut groups = groups(&mut cli.command, matches);
    if let Some(endpoint) = groups.endpoint.as_mut() {
        one_endpoint(
            groups.matches,
            &mut [
                ("token_endpoint", &mut endpoint.token_endpoint),
                ("tenant", &mut endpoint.tenant),
                ("issuer", &mut endpoint.issuer),
            ],
            true,
        )?;
    }
    if let Some((audience, tenant)) = groups.assert_audience.as_mut() {
        let mut none = None;
        let endpoint = groups.assert_endpoint.as_deref_mut().unwrap_or(&mut none);
        one_endpoint(
            groups.matches,
            &mut [
                ("audience", audience),
                ("tenant", tenant),
                ("token_endpoint", endpoint),
            ],
            // For `assert` these rank (aud, then tenant, then token endpoint) rather than
            // clash: a CI job may export P11JWT_AUDIENCE and P11JWT_TOKEN_ENDPOINT together.
            false,
        )?;
    }
    let mut settings = Vec::new();
    if let Some(key) = groups.key.take() {
        apply_key(key, groups.matches, &profile, &name, &mut settings);
    }
    if let Some(claims) = groups.claims.take() {
        apply_claims(claims, groups.matches, &profile, &name, &mut settings);
    }
    if let Some(endpoint) = groups.endpoint.take() {
        let pair = (&mut endpoint.token_endpoint, &mut endpoint.tenant);
        apply_either(
            pair,
            "token_endpoint",
            groups.matches,
            &profile,
            &name,
            &mut settings,
        );
        let from = (profile.scope.as_ref(), profile.audience.as_ref());
        let m = groups.matches;
        // Discovery only when the flags, the environment and the profile name no endpoint.
        let issuer = match (&endpoint.token_endpoint, &endpoint.tenant) {
            (None, None) => profile.issuer.as_ref(),
            _ => None,
        };
        settings.push(one("issuer", &mut endpoint.issuer, m, issuer, &name));
        let provider = profile
            .provider
            .as_deref()
            .map(str::parse::<oauth::Provider>)
            .transpose()
            .map_err(|e| Error::Usage(format!("profile {name:?}: provider: {e}")))?;
        let provider = provider.as_ref();
        settings.push(one("provider", &mut endpoint.provider, m, provider, &name));
        settings.push(one("scope", &mut endpoint.scope, m, from.0, &name));
        settings.push(one("audience", &mut endpoint.audience, m, from.1, &name));
    }
    if let Some((audience, tenant)) = groups.assert_audience.take() {
        apply_either(
            (audience, tenant),
            "audience",
            groups.matches,
            &profile,
            &name,
            &mut settings,
        );
    }
    Ok((config, settings))
}

/// Entry point for every run: applies the profile; `config show` then prints the result.
pub fn apply_profile(cli: &mut Cli, matches: &ArgMatches) -> Result<Option<String>, Error> {
    let (config, settings) = apply(cli, matches)?;
    if !matches!(cli.command, Command::Config(_)) {
        return Ok(None);
    }
    Ok(Some(render(cli, config.as_ref(), &settings)))
}

pub fn run(report: Option<String>) -> Result<(), Error> {
    print_stdout(&report.unwrap_or_default())
}

fn groups<'a>(command: &'a mut Command, matches: &'a ArgMatches) -> Groups<'a> {
    let mut sub = matches.subcommand().map(|(_, m)| m);
    let mut g = Groups {
        matches: None,
        key: None,
        claims: None,
        endpoint: None,
        assert_audience: None,
        assert_endpoint: None,
    };
    match command {
        Command::Keygen(a) => g.key = Some(&mut a.key),
        Command::Keys(a) => g.key = Some(&mut a.key),
        Command::Jwk(a) => g.key = Some(&mut a.key),
        Command::Assert(a) => {
            g.key = Some(&mut a.key);
            g.claims = Some(&mut a.claims);
            g.assert_audience = Some((&mut a.audience, &mut a.tenant));
            g.assert_endpoint = Some(&mut a.token_endpoint);
        }
        Command::Token(a) => {
            g.key = Some(&mut a.key);
            g.claims = Some(&mut a.claims);
            g.endpoint = Some(&mut a.endpoint);
        }
        Command::Get(a) => {
            g.key = Some(&mut a.key);
            g.claims = Some(&mut a.claims);
            g.endpoint = Some(&mut a.endpoint);
        }
        Command::Exec(a) => {
            g.key = Some(&mut a.key);
            g.claims = Some(&mut a.claims);
            g.endpoint = Some(&mut a.endpoint);
        }
        Command::Config(a) => {
            // `config show` has its own subcommand level.
            sub = sub.and_then(|m| m.subcommand()).map(|(_, m)| m);
            let ConfigAction::Show(s) = &mut a.action;
            g.key = Some(&mut s.key);
            g.claims = Some(&mut s.claims);
            g.endpoint = Some(&mut s.endpoint);
        }
    }
    g.matches = sub;
    g
}

/// Settings that name one thing (the token endpoint as a URL, a tenant or an issuer): a flag
/// beats the environment, so one given by flag clears the others that came from the
/// environment; when `exclusive`, two given the same way are refused, since neither can be
/// said to win.
fn one_endpoint(
    m: Option<&ArgMatches>,
    fields: &mut [(&'static str, &mut Option<String>)],
    exclusive: bool,
) -> Result<(), Error> {
    let origins: Vec<Origin> = fields
        .iter()
        .map(|(id, _)| origin(m, id, &env_name(id)))
        .collect();
    let by_flag = origins.iter().filter(|o| matches!(o, Origin::Flag)).count();
    if by_flag > 0 {
        for ((_, value), origin) in fields.iter_mut().zip(&origins) {
            if matches!(origin, Origin::Env(_)) {
                **value = None;
            }
        }
    }
    let given: Vec<String> = fields
        .iter()
        .zip(&origins)
        .filter(|((_, value), _)| value.is_some())
        .map(|((id, _), origin)| match origin {
            Origin::Env(name) => name.clone(),
            _ => format!("--{}", id.replace('_', "-")),
        })
        .collect();
    if exclusive && given.len() > 1 {
        return Err(Error::Usage(format!(
            "{} name the same thing; give only one",
            given.join(" and ")
        )));
    }
    Ok(())
}

/// Where clap found the value of argument `id`.
fn origin(matches: Option<&ArgMatches>, id: &str, env: &str) -> Origin {
    let source = matches.and_then(|m| m.value_source(id));
    match source {
        Some(ValueSource::CommandLine) => Origin::Flag,
        Some(ValueSource::EnvVariable) => Origin::Env(env.to_owned()),
        Some(ValueSource::DefaultValue) => Origin::Default,
        _ => Origin::Unset,
    }
}

fn env_name(id: &str) -> String {
    format!("P11JWT_{}", id.to_uppercase())
}

/// One optional setting: keeps a flag or environment value, else takes the profile's.
fn one<T: Clone + ToString>(
    id: &'static str,
    value: &mut Option<T>,
    matches: Option<&ArgMatches>,
    from_profile: Option<&T>,
    profile: &str,
) -> Setting {
    let origin = choose(
        value,
        origin(matches, id, &env_name(id)),
        from_profile,
        profile,
    );
    Setting {
        name: id,
        value: value.as_ref().map(T::to_string),
        origin,
    }
}

fn apply_key(
    key: &mut KeyArgs,
    m: Option<&ArgMatches>,
    profile: &Profile,
    name: &str,
    out: &mut Vec<Setting>,
) {
    let mut module = key.module.as_ref().map(|p| p.display().to_string());
    let from = profile.module.as_ref().map(|p| p.display().to_string());
    out.push(one("module", &mut module, m, from.as_ref(), name));
    key.module = module.map(PathBuf::from);
    out.push(one(
        "token",
        &mut key.token,
        m,
        profile.token.as_ref(),
        name,
    ));
    let mut first_key = key.key.first().cloned();
    out.push(one("key", &mut first_key, m, profile.key.as_ref(), name));
    if key.key.is_empty() {
        key.key.extend(first_key);
    }

    // The PIN: P11JWT_PIN, --pin-stdin and a pin-source in a URI given outside the profile are
    // all sources of higher precedence than the profile's pin_file.
    let pin_env = std::env::var_os(PIN_ENV).is_some();
    let uri_source = key.key.iter().any(|k| k.contains("pin-source="));
    let key_from_profile = matches!(out.last().map(|s| &s.origin), Some(Origin::Profile(_)));
    let mut pin_file = key.pin_file.as_ref().map(|p| p.display().to_string());
    let origin = origin(m, "pin_file", "P11JWT_PIN_FILE");
    let from = profile.pin_file.as_ref().map(|p| p.display().to_string());
    let blocked = pin_env || key.pin_stdin || (uri_source && !key_from_profile);
    let from = if blocked { None } else { from.as_ref() };
    let origin = choose(&mut pin_file, origin, from, name);
    key.pin_file = pin_file.clone().map(PathBuf::from);
    let (value, origin) = match (pin_file, origin) {
        (Some(path), origin) => (Some(format!("PIN file {path}")), origin),
        (None, _) if key.pin_stdin => (Some("standard input".into()), Origin::Flag),
        (None, _) if pin_env => (Some("set, not shown".into()), Origin::Env(PIN_ENV.into())),
        (None, _) if uri_source => (Some("pin-source in the key URI".into()), Origin::Flag),
        (None, _) => (
            Some("a no-echo prompt on a terminal".into()),
            Origin::Default,
        ),
    };
    out.push(Setting {
        name: "pin",
        value,
        origin,
    });
}

fn apply_claims(
    claims: &mut ClaimArgs,
    m: Option<&ArgMatches>,
    profile: &Profile,
    name: &str,
    out: &mut Vec<Setting>,
) {
    out.push(one(
        "client_id",
        &mut claims.client_id,
        m,
        profile.client_id.as_ref(),
        name,
    ));
    out.push(one("alg", &mut claims.alg, m, profile.alg.as_ref(), name));
    let mut lifetime = Some(claims.lifetime);
    out.push(one(
        "lifetime",
        &mut lifetime,
        m,
        profile.lifetime.as_ref(),
        name,
    ));
    claims.lifetime = lifetime.unwrap_or(claims.lifetime);
}

/// A URL-or-tenant pair (`token_endpoint`/`tenant`, or `assert`'s `audience`/`tenant`): when
/// either was given by flag or environment, the profile supplies neither, so a tenant in the
/// environment is not overridden by a URL in the profile.
fn apply_either(
    (url, tenant): (&mut Option<String>, &mut Option<String>),
    url_id: &'static str,
    m: Option<&ArgMatches>,
    profile: &Profile,
    name: &str,
    out: &mut Vec<Setting>,
) {
    let url_origin = origin(m, url_id, &env_name(url_id));
    let tenant_origin = origin(m, "tenant", "P11JWT_TENANT");
    let given = |o: &Origin| matches!(o, Origin::Flag | Origin::Env(_));
    let from_url = match url_id {
        // `assert`'s aud: the profile's audience, else its token endpoint (the usual aud).
        "audience" => profile
            .audience
            .as_ref()
            .or(profile.token_endpoint.as_ref()),
        _ => profile.token_endpoint.as_ref(),
    };
    let (from_url, from_tenant) = if given(&url_origin) || given(&tenant_origin) {
        (None, None)
    } else {
        (from_url, profile.tenant.as_ref())
    };
    let url_origin = choose(url, url_origin, from_url, name);
    out.push(Setting {
        name: url_id,
        value: url.clone(),
        origin: url_origin,
    });
    let tenant_origin = choose(tenant, tenant_origin, from_tenant, name);
    out.push(Setting {
        name: "tenant",
        value: tenant.clone(),
        origin: tenant_origin,
    });
}

fn render(cli: &Cli, config: Option<&Config>, settings: &[Setting]) -> String {
    let mut out = String::new();
    let file = match config {
        Some(c) => c.path.display().to_string(),
        None => "none found".into(),
    };
    out.push_str(&format!("{:<15} {file}\n", "config file"));
    if let Some(c) = config {
        let names: Vec<&str> = c.profiles.keys().map(String::as_str).collect();
        out.push_str(&format!("{:<15} {}\n", "profiles", names.join(", ")));
    }
    let profile = cli.profile.as_deref().unwrap_or("(none)");
    out.push_str(&format!("{:<15} {profile}\n", "profile"));
    for s in settings {
        let value = s.value.as_deref().map(redact_pin_value);
        let value = value.as_deref().map(p11jwt::escape_for_terminal);
        let value = value.unwrap_or_else(|| "-".into());
        out.push_str(&format!("{:<15} {value}  ({})\n", s.name, s.origin));
    }
    out
}

/// A key URI with its `pin-value` replaced: `config show` never prints a PIN.
fn redact_pin_value(text: &str) -> String {
    let Some((path, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let query: Vec<&str> = query
        .split('&')
        .map(|part| {
            if part.starts_with("pin-value=") {
                "pin-value=(not shown)"
            } else {
                part
            }
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redact_pin_value;

    #[test]
    fn pin_value_is_never_shown() {
        let shown = redact_pin_value("pkcs11:object=k?module-path=/m.so&pin-value=1234");
        assert_eq!(
            shown,
            "pkcs11:object=k?module-path=/m.so&pin-value=(not shown)"
        );
        assert_eq!(redact_pin_value("label"), "label");
    }
}
