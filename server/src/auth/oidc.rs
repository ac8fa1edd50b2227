//! ID tokens of one OIDC issuer, verified against its JWKS: signature, `iss`, `aud`,
//! `exp` and `nbf`. Keys are cached; an unknown `kid` triggers a refetch (at most one per
//! `jwks_min_refetch_seconds`, so forged key ids cannot make us hammer the issuer), and
//! keys older than `jwks_refresh_seconds` are refetched before use.

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::AuthError;
use super::config::IssuerConfig;

/// A key from the issuer's JWKS and the algorithms it may verify: never an HMAC one,
/// whatever a token's header says, so a public key cannot be used as a shared secret.
struct Key {
    decoding: DecodingKey,
    algorithms: Vec<Algorithm>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, std::sync::Arc<Key>>,
    fetched_at: Option<Instant>,
}

#[derive(Default)]
struct FetchState {
    /// From the configuration, or discovered once.
    jwks_url: Option<String>,
    last_attempt: Option<Instant>,
    /// Discovered once, at the first console sign-in.
    login: Option<LoginEndpoints>,
}

pub struct OidcIssuer {
    config: IssuerConfig,
    http: reqwest::Client,
    keys: RwLock<KeySet>,
    /// Held while fetching: concurrent tokens with a new `kid` wait for one fetch.
    fetch: tokio::sync::Mutex<FetchState>,
}

impl std::fmt::Debug for OidcIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcIssuer")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

/// What a verified ID token says about its bearer.
#[derive(Debug)]
pub struct VerifiedClaims {
    pub identity: String,
    pub groups: Vec<String>,
    /// The `nonce` of a token from the authorization code flow (the console's login).
    pub nonce: Option<String>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
}

/// Where a browser signs in with this issuer (authorization code flow with PKCE).
#[derive(Debug, Clone)]
pub struct LoginEndpoints {
    pub authorization: String,
    pub token: String,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<Value>,
}

impl OidcIssuer {
    pub fn new(config: IssuerConfig, http: reqwest::Client) -> Self {
        let fetch = FetchState {
            jwks_url: config.jwks_url.clone(),
            last_attempt: None,
            login: None,
        };
        Self {
            config,
            http,
            keys: RwLock::default(),
            fetch: tokio::sync::Mutex::new(fetch),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The claim that names the signed-in person.
    pub fn identity_claim(&self) -> &str {
        &self.config.identity_claim
    }

    /// Verifies `token`, whose header is `header`, as an ID token of this issuer.
    pub async fn verify(&self, token: &str, header: &Header) -> Result<VerifiedClaims, AuthError> {
        let key = self.key_for(header.kid.as_deref()).await?;
        if !key.algorithms.contains(&header.alg) {
            return Err(AuthError::Malformed(format!(
                "ID token algorithm {:?} does not match its key (allowed: {:?})",
                header.alg, key.algorithms
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway.as_secs();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|err| self.claim_error(err.kind()))?;
        self.claims(&data.claims)
    }

    fn claim_error(&self, kind: &ErrorKind) -> AuthError {
        let issuer = self.config.issuer.clone();
        match kind {
            ErrorKind::InvalidSignature => AuthError::BadSignature { issuer },
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAudience => AuthError::WrongAudience {
                issuer,
                audience: self.config.audience.clone(),
            },
            ErrorKind::InvalidIssuer => AuthError::UntrustedIssuer(issuer),
            ErrorKind::MissingRequiredClaim(claim) => {
                AuthError::Malformed(format!("ID token has no {claim:?} claim"))
            }
            other => AuthError::Malformed(format!("ID token rejected: {other:?}")),
        }
    }

    fn claims(&self, claims: &Map<String, Value>) -> Result<VerifiedClaims, AuthError> {
        let claim = &self.config.identity_claim;
        let identity = match claims.get(claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(AuthError::Malformed(format!(
                    "ID token has no string claim {claim:?} (the identity claim configured for {})",
                    self.config.issuer
                )));
            }
        };
        // An unverified address could be anyone's: the issuer says so itself.
        if claim == "email" && claims.get("email_verified") == Some(&Value::Bool(false)) {
            return Err(AuthError::Malformed(format!(
                "ID token email {identity:?} is not verified by {}",
                self.config.issuer
            )));
        }
        let groups = match claims.get(&self.config.groups_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(group)) => vec![group.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
            Some(_) => {
                return Err(AuthError::Malformed(format!(
                    "ID token claim {:?} is neither a string nor a list of strings",
                    self.config.groups_claim
                )));
            }
        };
        let nonce = claims
            .get("nonce")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(VerifiedClaims {
            identity,
            groups,
            nonce,
        })
    }

    /// The key `kid` names (or the only key, for tokens without a `kid`), fetching the
    /// JWKS when it is unknown or the cached set is stale.
    async fn key_for(&self, kid: Option<&str>) -> Result<std::sync::Arc<Key>, AuthError> {
        let (cached, fresh) = self.cached(kid);
        if let (Some(key), true) = (&cached, fresh) {
            return Ok(key.clone());
        }

        let mut fetch = self.fetch.lock().await;
        // Another task may have fetched while this one waited.
        let (again, fresh) = self.cached(kid);
        if let (Some(key), true) = (&again, fresh) {
            return Ok(key.clone());
        }
        // The key of a stale set, used if the refetch is refused or fails.
        let stale = again.or(cached);
        let now = Instant::now();
        let recently = fetch
            .last_attempt
            .is_some_and(|last| now.duration_since(last) < self.config.min_refetch);
        if recently {
            return stale.ok_or_else(|| self.unknown_kid(kid));
        }
        fetch.last_attempt = Some(now);
        match self.fetch_keys(&mut fetch).await {
            Ok(set) => {
                tracing::info!(issuer = %self.config.issuer, keys = set.by_kid.len(), "fetched the issuer's signing keys");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = set;
            }
            Err(err) => {
                tracing::warn!(issuer = %self.config.issuer, error = %err, "cannot fetch the issuer's signing keys");
                return match stale {
                    // Keep using what we had: the issuer being down must not lock
                    // everyone out at once.
                    Some(key) => Ok(key),
                    None => Err(AuthError::IssuerUnavailable {
                        issuer: self.config.issuer.clone(),
                        problem: err,
                    }),
                };
            }
        }
        match self.cached(kid) {
            (Some(key), _) => Ok(key),
            (None, _) => Err(self.unknown_kid(kid)),
        }
    }

    fn unknown_kid(&self, kid: Option<&str>) -> AuthError {
        AuthError::UnknownKey {
            issuer: self.config.issuer.clone(),
            kid: kid.map(str::to_owned),
        }
    }

    /// The cached key for `kid`, and whether the cached set is younger than the refresh
    /// period.
    fn cached(&self, kid: Option<&str>) -> (Option<std::sync::Arc<Key>>, bool) {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let fresh = keys
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.config.refresh);
        let key = match kid {
            Some(kid) => keys.by_kid.get(kid).cloned(),
            None if keys.by_kid.len() == 1 => keys.by_kid.values().next().cloned(),
            None => None,
        };
        (key, fresh)
    }

    async fn fetch_keys(&self, state: &mut FetchState) -> Result<KeySet, String> {
        let jwks_url = match &state.jwks_url {
            Some(url) => url.clone(),
            None => {
                let url = self.discover().await?;
                state.jwks_url = Some(url.clone());
                url
            }
        };
        let jwks: RawJwks = self.get_json(&jwks_url).await?;
        let mut by_kid = HashMap::new();
        for (index, raw) in jwks.keys.into_iter().enumerate() {
            // One key of a type we do not know must not hide the others.
            let jwk: Jwk = match serde_json::from_value(raw) {
                Ok(jwk) => jwk,
                Err(err) => {
                    tracing::debug!(index, error = %err, "skipping an unreadable JWKS key");
                    continue;
                }
            };
            let Some(kid) = jwk.common.key_id.clone() else {
                // Only usable when it is the only key, under the empty id.
                if let Some(key) = usable_key(&jwk) {
                    by_kid.insert(String::new(), std::sync::Arc::new(key));
                }
                continue;
            };
            if let Some(key) = usable_key(&jwk) {
                by_kid.insert(kid, std::sync::Arc::new(key));
            }
        }
        Ok(KeySet {
            by_kid,
            fetched_at: Some(Instant::now()),
        })
    }

    /// The `jwks_uri` of the issuer's discovery document, which must name this issuer.
    async fn discover(&self) -> Result<String, String> {
        let (url, discovery) = self.discovery().await?;
        super::config::check_url(&discovery.jwks_uri)
            .map_err(|err| format!("{url}: jwks_uri {err}"))?;
        Ok(discovery.jwks_uri)
    }

    /// The issuer's discovery document, which must name this issuer, and its address.
    async fn discovery(&self) -> Result<(String, Discovery), String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json(&url).await?;
        if discovery.issuer != self.config.issuer {
            return Err(format!(
                "{url} names issuer {:?}, not {:?}",
                discovery.issuer, self.config.issuer
            ));
        }
        Ok((url, discovery))
    }

    /// The authorization and token endpoints, from the discovery document (fetched once;
    /// a failed fetch is tried again at the next sign-in).
    pub async fn login_endpoints(&self) -> Result<LoginEndpoints, AuthError> {
        let mut fetch = self.fetch.lock().await;
        if let Some(login) = &fetch.login {
            return Ok(login.clone());
        }
        let unavailable = |problem: String| AuthError::IssuerUnavailable {
            issuer: self.config.issuer.clone(),
            problem,
        };
        let (url, discovery) = self.discovery().await.map_err(unavailable)?;
        let endpoint = |name: &str, value: Option<String>| {
            let value = value.ok_or_else(|| {
                unavailable(format!(
                    "{url} has no {name}: the issuer does not support browser sign-in"
                ))
            })?;
            super::config::check_url(&value)
                .map_err(|err| unavailable(format!("{url}: {name} {err}")))?;
            Ok::<_, AuthError>(value)
        };
        let login = LoginEndpoints {
            authorization: endpoint("authorization_endpoint", discovery.authorization_endpoint)?,
            token: endpoint("token_endpoint", discovery.token_endpoint)?,
        };
        fetch.login = Some(login.clone());
        Ok(login)
    }

    /// The client id browsers sign in with: the audience its ID tokens carry.
    pub fn client_id(&self) -> &str {
        &self.config.audience
    }

    pub fn client_secret(&self) -> Option<&str> {
        self.config.client_secret.as_ref().map(|s| s.0.as_str())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|err| format!("GET {url}: {err}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        response
            .json()
            .await
            .map_err(|err| format!("GET {url}: bad JSON: {err}"))
    }
}

/// A JWKS entry as a verification key, or `None` for one we must not or cannot use.
fn usable_key(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        _ => return None,
    };
    let algorithms = match jwk.common.key_algorithm {
        // A key pinned to one algorithm verifies only that one.
        Some(pinned) => {
            let pinned = Algorithm::from_str(&pinned.to_string()).ok()?;
            if !by_type.contains(&pinned) {
                return None;
            }
            vec![pinned]
        }
        None => by_type,
    };
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        decoding,
        algorithms,
    })
}

/// HTTP timeouts for discovery and JWKS: a slow issuer holds up sign-ins, not the server.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
