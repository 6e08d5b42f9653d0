//! Where access tokens come from for `token`, `get` and `exec`: the cache when it holds a
//! valid one, else a fresh exchange (discovery, preset checks, sign, post, retry).

use std::time::Instant;

use p11jwt::assertion::JwsSigner as _;
use p11jwt::jwk::PublicKey;
use p11jwt::oauth::cache::{Cache, CacheKey};
use p11jwt::oauth::discovery::Finding;
use p11jwt::oauth::{self, Provider, TokenRequest, TokenResponse};
use p11jwt::token::KeyPair;
use p11jwt::Error;

use super::{
    client_id, open_logged_in, require_key, sign, signer, ClaimArgs, EndpointArgs, HeaderExtras,
    KeyArgs, Resolved,
};

/// An access token and whether it came from the cache.
pub(super) struct Obtained {
    pub response: TokenResponse,
    pub cached: bool,
}

/// Where the token endpoint comes from.
enum Endpoint {
    /// `--token-endpoint` or `--tenant`.
    Given(String),
    /// `--issuer`: discovered when an exchange is needed, not for a cache hit.
    Issuer(String),
}

/// Everything needed to get an access token, checked before anything is signed.
pub(super) struct AccessTokens<'a> {
    source: Endpoint,
    claims: &'a ClaimArgs,
    endpoint: &'a EndpointArgs,
    resolved: Resolved,
    provider: Provider,
    params: Vec<(String, String)>,
    client: oauth::Client,
    cache: Option<(Cache, CacheKey)>,
}

impl<'a> AccessTokens<'a> {
    /// Checks the arguments that need neither the network nor the token.
    pub fn new(
        key_args: &KeyArgs,
        claims: &'a ClaimArgs,
        endpoint: &'a EndpointArgs,
    ) -> Result<AccessTokens<'a>, Error> {
        let source = match (endpoint.static_token_endpoint()?, &endpoint.issuer) {
            (Some(url), _) => Endpoint::Given(url),
            (None, Some(issuer)) => Endpoint::Issuer(issuer.clone()),
            (None, None) => {
                return Err(Error::Usage(
                    "no token endpoint\npass --token-endpoint URL, --tenant NAME or --issuer \
                     URL (or set P11JWT_TOKEN_ENDPOINT / P11JWT_TENANT / P11JWT_ISSUER)"
                        .into(),
                ))
            }
        };
        // Refused before anything else: nothing is signed for a plain-http remote URL.
        let endpoint_id = match &source {
            Endpoint::Given(url) => {
                oauth::check_url(url)?;
                url.clone()
            }
            Endpoint::Issuer(issuer) => {
                oauth::check_url(issuer)?;
                format!("issuer {issuer}")
            }
        };
        let client_id = client_id(claims)?;
        let params = endpoint
            .param
            .iter()
            .map(|p| oauth::parse_param(p))
            .collect::<Result<Vec<_>, _>>()?;
        let resolved = key_args.resolve(false)?;
        require_key(&resolved)?;
        let provider = endpoint.provider();

        let cache = match (endpoint.no_cache, Cache::default_dir()) {
            (false, Some(dir)) => {
                let key = cache_key(
                    &endpoint_id,
                    client_id,
                    claims,
                    endpoint,
                    &resolved,
                    &params,
                );
                Some((Cache::new(dir), key))
            }
            _ => None,
        };
        let client = oauth::Client::new(endpoint.client_options())?;
        Ok(AccessTokens {
            source,
            claims,
            endpoint,
            resolved,
            provider,
            params,
            client,
            cache,
        })
    }

    pub fn client(&self) -> &oauth::Client {
        &self.client
    }

    /// A valid cached access token unless `fresh`, else one from the token endpoint, which is
    /// then cached.
    pub fn obtain(&self, fresh: bool) -> Result<Obtained, Error> {
        if let (false, Some((cache, key))) = (fresh, &self.cache) {
            if let Some(response) = cache.load(key) {
                log::info!(
                    "using the cached access token for {} (expires in {} s); the PKCS#11 \
                     token is not opened",
                    key.token_endpoint,
                    response.expires_in.unwrap_or(0)
                );
                return Ok(Obtained {
                    response,
                    cached: true,
                });
            }
        }

        let response = self.exchange()?;
        if let Some((cache, key)) = &self.cache {
            match cache.store(key, &response) {
                Ok(true) => log::info!("cached the access token in {}", cache.dir().display()),
                Ok(false) => log::info!(
                    "not caching the access token: the response has no expires_in or a short \
                     one, or the cache directory is not usable (see any warning above)"
                ),
                Err(e) => log::warn!("{}", e.to_string().replace('\n', "; ")),
            }
        }
        Ok(Obtained {
            response,
            cached: false,
        })
    }

    /// Removes the cached access token; `false` when there was none (or no cache).
    pub fn forget(&self) -> Result<bool, Error> {
        match &self.cache {
            Some((cache, key)) => Ok(cache.forget(key).map_err(oauth::Error::from)?),
            None => Ok(false),
        }
    }

    /// Finds the endpoint, checks the preset, opens the token, signs and posts, with a fresh
    /// assertion per attempt.
    fn exchange(&self) -> Result<TokenResponse, Error> {
        let (endpoint, claims, provider) = (self.endpoint, self.claims, self.provider);
        let (token_endpoint, metadata) = match &self.source {
            Endpoint::Given(url) => (url.clone(), None),
            Endpoint::Issuer(issuer) => {
                let metadata = self.client.discover(issuer)?;
                (metadata.token_endpoint.clone(), Some(metadata))
            }
        };
        let audience = endpoint
            .audience
            .clone()
            .unwrap_or_else(|| provider.default_audience(&token_endpoint));
        let issuer = endpoint.issuer.as_deref();
        provider
            .check_request(
                &audience,
                &token_endpoint,
                issuer,
                claims.lifetime,
                &self.params,
            )
            .map_err(oauth::Error::from)?;

        // The token is opened only now: everything above can fail without a PIN.
        let token = open_logged_in(&self.resolved)?;
        let key = token.find_key(&self.resolved.selector)?;
        let signer = signer(&token, &key, claims)?;
        let alg = signer.alg().as_str();
        provider.check_alg(alg).map_err(oauth::Error::from)?;
        for finding in metadata.iter().flat_map(|m| m.check(alg)) {
            match finding {
                Finding::Mismatch(text) => log::warn!("{text}"),
                // Said as loudly: the user asked for discovery to check the server.
                Finding::Unpublished(text) => log::warn!("{text}"),
            }
        }

        let rules = provider.rules();
        let thumbprints = match rules.certificate_thumbprint {
            true => {
                let mut key = key.clone();
                token.load_certificate(&mut key)?;
                Some(certificate_thumbprints(&key, provider)?)
            }
            false => None,
        };
        let header = HeaderExtras {
            typ: rules.typ,
            x5t: thumbprints.as_ref().map(|t| t.0.as_str()),
            x5t_s256: thumbprints.as_ref().map(|t| t.1.as_str()),
        };
        let client_id = client_id(claims)?;
        let request = TokenRequest {
            token_endpoint: &token_endpoint,
            client_id: rules.client_id_in_form.then_some(client_id),
            scope: endpoint.scope.as_deref().or(rules.default_scope),
            resources: &endpoint.resource,
            params: &self.params,
        };

        let started = Instant::now();
        let mut jtis = Vec::new();
        let response = self.client.request_token(&request, || {
            let minted = sign(&signer, client_id, &audience, claims.lifetime, &header)?;
            jtis.push(minted.jti.clone());
            Ok::<_, Error>(minted.compact)
        })?;
        log::info!(
            "token endpoint {token_endpoint} issued a {} access token (expires_in {}) for \
             jti={} after {} attempt(s) in {} ms",
            response.token_type,
            response
                .expires_in
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into()),
            jtis.last().map(String::as_str).unwrap_or("-"),
            jtis.len(),
            started.elapsed().as_millis()
        );
        Ok(response)
    }
}

/// The cache key. The signing key is named by what is known WITHOUT opening the PKCS#11
/// token, so that a cache hit never loads the module: the token (label, or the URI's token
/// label and serial) and the key selector (label, CKA_ID), plus `--kid` when given. The
/// default kid is the key's thumbprint, which only the token can tell, so it cannot be used.
/// The module path is left out on purpose: the same token can be reached through different
/// modules (the vendor's, p11-kit's proxy), and the server does not see it.
fn cache_key(
    endpoint_id: &str,
    client_id: &str,
    claims: &ClaimArgs,
    endpoint: &EndpointArgs,
    resolved: &Resolved,
    params: &[(String, String)],
) -> CacheKey {
    let hex = |bytes: &Option<Vec<u8>>| {
        bytes
            .as_ref()
            .map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>())
    };
    let uri = resolved.options.uri.as_ref();
    let key = serde_json::json!({
        "token": resolved.options.token_label,
        "uri_token": uri.and_then(|u| u.token.clone()),
        "uri_serial": uri.and_then(|u| u.serial.clone()),
        "label": hex(&resolved.selector.label),
        "id": hex(&resolved.selector.id),
        "kid": claims.kid,
    });
    let mut extra = vec![format!("provider={}", endpoint.provider())];
    if let Some(audience) = &endpoint.audience {
        extra.push(format!("aud={audience}"));
    }
    extra.extend(endpoint.resource.iter().map(|r| format!("resource={r}")));
    extra.extend(params.iter().map(|(n, v)| format!("param {n}={v}")));
    CacheKey {
        token_endpoint: endpoint_id.to_owned(),
        client_id: client_id.to_owned(),
        scope: endpoint.scope.clone(),
        key: key.to_string(),
        extra,
    }
}

/// `x5t` and `x5t#S256` (RFC 7515 §4.1.7, §4.1.8) of the certificate stored with the key.
fn certificate_thumbprints(key: &KeyPair, provider: Provider) -> Result<(String, String), Error> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use sha1::Digest as _;

    let Some(certificate) = &key.certificate else {
        return Err(Error::Usage(format!(
            "provider {provider} identifies the key by its certificate (x5t), and key {} has \
             no certificate object with its CKA_ID\nimport the certificate registered with \
             the app under the key's CKA_ID (pkcs11-tool --write-object CERT --type cert --id \
             {})",
            key.label_text(),
            key.id_hex()
        )));
    };
    // A certificate stored under the key's CKA_ID may be another key's: its thumbprint would
    // name the wrong credential, and the server would refuse a signature it cannot verify.
    let certified = PublicKey::from_certificate(certificate).ok();
    if certified.as_ref() != Some(&key.public) {
        return Err(Error::Usage(format!(
            "the certificate stored with key {} (CKA_ID {}) is not this key's, or cannot be \
             read\nreplace it with the certificate registered for this key",
            key.label_text(),
            key.id_hex()
        )));
    }
    let sha1 = URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(certificate));
    let sha256 = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(certificate));
    Ok((sha1, sha256))
}
