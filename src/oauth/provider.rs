//! Provider presets: what each authorization server wants in an assertion and a token
//! request, so that p11jwt can refuse before signing what that server is known to refuse.
//! The sources of each rule are in `docs/providers.md`.

use std::fmt;
use std::str::FromStr;

/// An authorization server family with known rules; `Generic` checks nothing beyond RFC 7523.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    Qlik,
    Okta,
    Keycloak,
    Entra,
    Auth0,
    #[default]
    Generic,
}

/// The form `aud` must take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudienceForm {
    /// Exactly the token endpoint (RFC 7523 §3 item C's common reading).
    TokenEndpoint,
    /// Exactly `https://HOST/oauth/token`, no trailing slash (Qlik Cloud).
    QlikTokenEndpoint,
    /// The token endpoint or the realm's issuer URL (Keycloak).
    TokenEndpointOrIssuer,
    /// The tenant's origin with a trailing slash, `https://HOST/` (Auth0).
    OriginWithSlash,
    /// Anything; the server decides.
    Any,
}

/// Everything a preset fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub audience: AudienceForm,
    /// JWS algs the server accepts for client assertions; `None` when it is per client.
    pub algs: Option<&'static [&'static str]>,
    /// Largest `exp - iat` in seconds the server accepts, when it publishes one.
    pub max_lifetime: Option<u64>,
    /// The `typ` header.
    pub typ: &'static str,
    /// Whether the header carries `x5t` / `x5t#S256` of the key's certificate.
    pub certificate_thumbprint: bool,
    /// Whether the form carries `client_id` besides the assertion (RFC 7521 §4.2: optional).
    pub client_id_in_form: bool,
    /// The scope asked for when `--scope` is not given.
    pub default_scope: Option<&'static str>,
    /// Form fields the server requires that only the user can know.
    pub required_params: &'static [&'static str],
}

const ALL_ASYMMETRIC: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
];

impl Provider {
    pub const NAMES: [&'static str; 6] = ["qlik", "okta", "keycloak", "entra", "auth0", "generic"];

    pub fn name(self) -> &'static str {
        match self {
            Provider::Qlik => "qlik",
            Provider::Okta => "okta",
            Provider::Keycloak => "keycloak",
            Provider::Entra => "entra",
            Provider::Auth0 => "auth0",
            Provider::Generic => "generic",
        }
    }

    pub fn rules(self) -> Rules {
        let base = Rules {
            audience: AudienceForm::Any,
            algs: None,
            max_lifetime: None,
            typ: "JWT",
            certificate_thumbprint: false,
            client_id_in_form: true,
            default_scope: None,
            required_params: &[],
        };
        match self {
            Provider::Qlik => Rules {
                audience: AudienceForm::QlikTokenEndpoint,
                algs: Some(&["RS256", "RS512", "ES384"]),
                max_lifetime: Some(300),
                default_scope: Some("user_default"),
                ..base
            },
            Provider::Okta => Rules {
                audience: AudienceForm::TokenEndpoint,
                algs: Some(ALL_ASYMMETRIC),
                max_lifetime: Some(3600),
                client_id_in_form: false,
                ..base
            },
            Provider::Keycloak => Rules {
                audience: AudienceForm::TokenEndpointOrIssuer,
                client_id_in_form: false,
                ..base
            },
            Provider::Entra => Rules {
                audience: AudienceForm::TokenEndpoint,
                algs: Some(&["RS256", "PS256"]),
                certificate_thumbprint: true,
                ..base
            },
            Provider::Auth0 => Rules {
                audience: AudienceForm::OriginWithSlash,
                algs: Some(&["RS256", "RS384", "PS256"]),
                max_lifetime: Some(300),
                client_id_in_form: false,
                required_params: &["audience"],
                ..base
            },
            Provider::Generic => base,
        }
    }

    /// The `aud` to use when `--audience` is not given: the token endpoint byte for byte, or
    /// for Auth0 the token endpoint's origin with a trailing slash.
    pub fn default_audience(self, token_endpoint: &str) -> String {
        match self.rules().audience {
            AudienceForm::OriginWithSlash => format!("{}/", origin(token_endpoint)),
            _ => token_endpoint.to_owned(),
        }
    }

    /// Checks what is known before the key is: `aud`, lifetime, required form fields.
    pub fn check_request(
        self,
        audience: &str,
        token_endpoint: &str,
        issuer: Option<&str>,
        lifetime: u64,
        params: &[(String, String)],
    ) -> Result<(), Refusal> {
        let rules = self.rules();
        self.check_audience(rules.audience, audience, token_endpoint, issuer)?;
        if let Some(max) = rules.max_lifetime {
            if lifetime > max {
                return Err(self.refuse(
                    format!("an assertion lifetime of {lifetime} s is over its limit of {max} s"),
                    format!("pass --lifetime {max} or less"),
                ));
            }
        }
        for name in rules.required_params {
            if !params.iter().any(|(n, _)| n == name) {
                return Err(self.refuse(
                    format!("the token request needs the {name} field"),
                    format!("pass --param {name}=VALUE (for auth0: the API identifier)"),
                ));
            }
        }
        Ok(())
    }

    /// Checks the alg, once the key has decided it; still before signing.
    pub fn check_alg(self, alg: &str) -> Result<(), Refusal> {
        match self.rules().algs {
            Some(algs) if !algs.contains(&alg) => Err(self.refuse(
                format!("alg {alg} is not one it accepts ({})", algs.join(", ")),
                "pass --alg with one of those, or use a key that has one".into(),
            )),
            _ => Ok(()),
        }
    }

    fn check_audience(
        self,
        form: AudienceForm,
        audience: &str,
        token_endpoint: &str,
        issuer: Option<&str>,
    ) -> Result<(), Refusal> {
        let fits = match form {
            AudienceForm::Any => true,
            AudienceForm::TokenEndpoint => audience == token_endpoint,
            AudienceForm::QlikTokenEndpoint => {
                audience == token_endpoint && is_qlik_token_endpoint(audience)
            }
            AudienceForm::TokenEndpointOrIssuer => {
                let realm = token_endpoint.strip_suffix("/protocol/openid-connect/token");
                audience == token_endpoint || Some(audience) == issuer || Some(audience) == realm
            }
            AudienceForm::OriginWithSlash => audience == format!("{}/", origin(audience)),
        };
        if fits {
            return Ok(());
        }
        let wanted = match form {
            AudienceForm::QlikTokenEndpoint => {
                "exactly the token endpoint, https://HOST/oauth/token with no trailing slash"
            }
            AudienceForm::TokenEndpointOrIssuer => "the token endpoint or the realm's issuer URL",
            AudienceForm::OriginWithSlash => "the tenant URL with a trailing slash, https://HOST/",
            _ => "exactly the token endpoint",
        };
        let default = self.default_audience(token_endpoint);
        let fix = if form == AudienceForm::QlikTokenEndpoint {
            "use --tenant NAME, or --token-endpoint https://HOST/oauth/token exactly".to_owned()
        } else if audience != default {
            format!("drop --audience to use {default:?}, or correct it")
        } else {
            "check --token-endpoint or --issuer".to_owned()
        };
        Err(self.refuse(format!("aud {audience:?} is not {wanted}"), fix))
    }

    fn refuse(self, what: String, fix: String) -> Refusal {
        Refusal {
            provider: self,
            what,
            fix,
        }
    }
}

/// `https://HOST/oauth/token`, or `http://` to loopback for tests; nothing else.
fn is_qlik_token_endpoint(url: &str) -> bool {
    let Some(host) = url.strip_suffix("/oauth/token") else {
        return false;
    };
    let authority = host.strip_prefix("https://").or_else(|| {
        host.strip_prefix("http://")
            .filter(|a| super::is_loopback(a.split(':').next().unwrap_or(a)))
    });
    authority.is_some_and(|a| !a.is_empty() && !a.contains(['/', '?', '#']))
}

/// `scheme://authority` of a URL, without path.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

impl FromStr for Provider {
    type Err = String;

    fn from_str(name: &str) -> Result<Provider, String> {
        let provider = match name.to_ascii_lowercase().as_str() {
            "qlik" => Provider::Qlik,
            "okta" => Provider::Okta,
            "keycloak" => Provider::Keycloak,
            "entra" | "azure" => Provider::Entra,
            "auth0" => Provider::Auth0,
            "generic" => Provider::Generic,
            _ => {
                return Err(format!(
                    "unknown provider {name:?}: use one of {}",
                    Provider::NAMES.join(", ")
                ))
            }
        };
        Ok(provider)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A request the preset says its server would refuse; nothing was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub provider: Provider,
    pub what: String,
    pub fix: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refusing to sign for provider {}: {}\n{} (rules: docs/providers.md)",
            self.provider, self.what, self.fix
        )
    }
}

impl From<Refusal> for super::Error {
    fn from(e: Refusal) -> super::Error {
        super::Error::Provider(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QLIK: &str = "https://acme.eu.qlikcloud.com/oauth/token";

    #[test]
    fn qlik_refuses_trailing_slash_long_lifetime_and_rs384() {
        let p = Provider::Qlik;
        assert!(p.check_request(QLIK, QLIK, None, 300, &[]).is_ok());
        let slash = format!("{QLIK}/");
        assert!(p.check_request(&slash, QLIK, None, 300, &[]).is_err());
        assert!(p.check_request(&slash, &slash, None, 300, &[]).is_err());
        assert!(p.check_request(QLIK, QLIK, None, 301, &[]).is_err());
        assert!(p.check_alg("ES384").is_ok());
        assert!(p.check_alg("RS384").is_err());
        assert!(p
            .check_request(
                "http://127.0.0.1:9/oauth/token",
                "http://127.0.0.1:9/oauth/token",
                None,
                60,
                &[]
            )
            .is_ok());
    }

    #[test]
    fn auth0_wants_the_origin_with_a_slash_and_an_api_audience() {
        let p = Provider::Auth0;
        let endpoint = "https://acme.eu.auth0.com/oauth/token";
        assert_eq!(p.default_audience(endpoint), "https://acme.eu.auth0.com/");
        let api = [("audience".to_owned(), "https://api".to_owned())];
        assert!(p
            .check_request("https://acme.eu.auth0.com/", endpoint, None, 60, &api)
            .is_ok());
        assert!(p
            .check_request("https://acme.eu.auth0.com", endpoint, None, 60, &api)
            .is_err());
        assert!(p
            .check_request("https://acme.eu.auth0.com/", endpoint, None, 60, &[])
            .is_err());
    }

    #[test]
    fn keycloak_takes_endpoint_or_realm() {
        let p = Provider::Keycloak;
        let realm = "https://kc.example/realms/ci";
        let endpoint = format!("{realm}/protocol/openid-connect/token");
        assert!(p.check_request(&endpoint, &endpoint, None, 60, &[]).is_ok());
        assert!(p.check_request(realm, &endpoint, None, 60, &[]).is_ok());
        assert!(p
            .check_request("https://kc.example/", &endpoint, None, 60, &[])
            .is_err());
    }

    #[test]
    fn names_parse_case_insensitively() {
        for name in Provider::NAMES {
            assert_eq!(name.parse::<Provider>().unwrap().name(), name);
        }
        assert_eq!("Entra".parse::<Provider>(), Ok(Provider::Entra));
        assert!("google".parse::<Provider>().is_err());
    }
}
