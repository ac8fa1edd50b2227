//! Inbound activities come with `Authorization: Bearer <JWT>` signed by Bot Framework
//! ("Authenticate requests from the Bot Connector service"): RS256 with a key from the
//! JWKS its OpenID metadata names, `iss` = `https://api.botframework.com`, `aud` = our
//! app id, `exp`/`nbf` with five minutes of clock skew, and a `serviceurl` claim that
//! must equal the activity's `serviceUrl` (otherwise a token for one conversation could
//! carry a forged activity pointing us elsewhere). A key with `endorsements` may only
//! sign for the channels it lists.
//!
//! Keys are cached; an unknown `kid` refetches them at most once per
//! [`MIN_REFETCH`], so forged key ids cannot make us hammer Microsoft (or stall here).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The issuer of every token the Bot Connector sends to bots.
pub const BOT_FRAMEWORK_ISSUER: &str = "https://api.botframework.com";
/// Clock skew allowed on `exp` and `nbf`, as Bot Framework's own SDKs allow.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Least time between two fetches of the keys caused by an unknown `kid`.
pub const MIN_REFETCH: Duration = Duration::from_secs(60);
/// Keys older than this are fetched again before use (Bot Framework rotates them, and
/// announces new ones in advance).
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
const SERVICE_URL_CLAIM: &str = "serviceurl";

#[derive(Debug, thiserror::Error)]
pub enum BotAuthError {
    #[error("no Authorization: Bearer token")]
    Missing,
    #[error("token is not a JWT: {0}")]
    Malformed(String),
    #[error("token algorithm {0:?} refused: Bot Framework signs with RS256")]
    Algorithm(Algorithm),
    #[error("token signed with unknown key {0:?}")]
    UnknownKey(Option<String>),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token is for another bot (aud)")]
    WrongAudience,
    #[error("token not issued by Bot Framework (iss)")]
    WrongIssuer,
    #[error("token has no serviceurl claim")]
    NoServiceUrl,
    #[error("token is for service URL {claim:?}, the activity names {activity:?}")]
    ServiceUrlMismatch { claim: String, activity: String },
    #[error("the signing key is not endorsed for channel {0:?}")]
    NotEndorsed(String),
    #[error("cannot fetch Bot Framework's signing keys: {0}")]
    KeysUnavailable(String),
}

struct Key {
    decoding: DecodingKey,
    /// `None`: the key names no channels, and may sign for any.
    endorsements: Option<Vec<String>>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    fetched_at: Option<Instant>,
}

pub struct BotVerifier {
    app_id: String,
    metadata_url: String,
    http: reqwest::Client,
    keys: RwLock<KeySet>,
    /// The last fetch attempt; held while fetching, so concurrent tokens with a new
    /// `kid` wait for one fetch.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for BotVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotVerifier")
            .field("app_id", &self.app_id)
            .field("metadata_url", &self.metadata_url)
            .finish_non_exhaustive()
    }
}

/// A token that verified: what it lets the activity claim.
#[derive(Debug)]
pub struct VerifiedToken {
    service_url: String,
    endorsements: Option<Vec<String>>,
}

impl VerifiedToken {
    /// Whether the activity the token came with is one it covers: the same service URL,
    /// and a channel the signing key is endorsed for.
    pub fn check_activity(&self, service_url: &str, channel_id: &str) -> Result<(), BotAuthError> {
        if self.service_url != service_url {
            return Err(BotAuthError::ServiceUrlMismatch {
                claim: self.service_url.clone(),
                activity: service_url.to_owned(),
            });
        }
        if let Some(endorsements) = &self.endorsements
            && !endorsements.iter().any(|e| e == channel_id)
        {
            return Err(BotAuthError::NotEndorsed(channel_id.to_owned()));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Metadata {
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<Value>,
}

impl BotVerifier {
    pub fn new(app_id: String, metadata_url: String, http: reqwest::Client) -> Self {
        Self {
            app_id,
            metadata_url,
            http,
            keys: RwLock::default(),
            last_fetch: tokio::sync::Mutex::new(None),
        }
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Verifies the `Authorization` header's bearer token; the caller then checks the
    /// activity against it ([`VerifiedToken::check_activity`]).
    pub async fn verify(&self, authorization: Option<&str>) -> Result<VerifiedToken, BotAuthError> {
        let token = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(BotAuthError::Missing)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|err| BotAuthError::Malformed(err.to_string()))?;
        // Before any key lookup: an HMAC or other algorithm must never get to use a
        // public key.
        if header.alg != Algorithm::RS256 {
            return Err(BotAuthError::Algorithm(header.alg));
        }
        let key = self.key_for(header.kid.as_deref()).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[BOT_FRAMEWORK_ISSUER]);
        validation.set_audience(&[&self.app_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = CLOCK_SKEW.as_secs();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|err| match err.kind() {
                ErrorKind::InvalidSignature => BotAuthError::BadSignature,
                ErrorKind::ExpiredSignature => BotAuthError::Expired,
                ErrorKind::ImmatureSignature => BotAuthError::NotYetValid,
                ErrorKind::InvalidAudience => BotAuthError::WrongAudience,
                ErrorKind::InvalidIssuer => BotAuthError::WrongIssuer,
                other => BotAuthError::Malformed(format!("{other:?}")),
            })?;
        // Bot Framework spells it in lower case; accept any case, as its SDKs do.
        let service_url = data
            .claims
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(SERVICE_URL_CLAIM))
            .and_then(|(_, value)| value.as_str())
            .ok_or(BotAuthError::NoServiceUrl)?;
        Ok(VerifiedToken {
            service_url: service_url.to_owned(),
            endorsements: key.endorsements.clone(),
        })
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<Arc<Key>, BotAuthError> {
        let (cached, fresh) = self.cached(kid);
        if let (Some(key), true) = (&cached, fresh) {
            return Ok(Arc::clone(key));
        }
        let mut last_fetch = self.last_fetch.lock().await;
        let (again, fresh) = self.cached(kid);
        if let (Some(key), true) = (&again, fresh) {
            return Ok(key.clone());
        }
        let stale = again.or(cached);
        let now = Instant::now();
        if last_fetch.is_some_and(|last| now.duration_since(last) < MIN_REFETCH) {
            return stale.ok_or_else(|| BotAuthError::UnknownKey(kid.map(str::to_owned)));
        }
        *last_fetch = Some(now);
        match self.fetch_keys().await {
            Ok(set) => {
                tracing::info!(
                    keys = set.by_kid.len(),
                    "fetched Bot Framework's signing keys"
                );
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = set;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot fetch Bot Framework's signing keys");
                // Keys we had still verify: Microsoft being slow must not stop approvals.
                return stale.ok_or(BotAuthError::KeysUnavailable(err));
            }
        }
        self.cached(kid)
            .0
            .ok_or_else(|| BotAuthError::UnknownKey(kid.map(str::to_owned)))
    }

    fn cached(&self, kid: Option<&str>) -> (Option<Arc<Key>>, bool) {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let fresh = keys
            .fetched_at
            .is_some_and(|at| at.elapsed() < KEYS_MAX_AGE);
        // Bot Framework always names the key; a token without `kid` is not one of its.
        let key = kid.and_then(|kid| keys.by_kid.get(kid).cloned());
        (key, fresh)
    }

    async fn fetch_keys(&self) -> Result<KeySet, String> {
        let metadata: Metadata = self.get_json(&self.metadata_url).await?;
        belay_config_file::check_url(&metadata.jwks_uri)
            .map_err(|err| format!("{}: jwks_uri {err}", self.metadata_url))?;
        let jwks: RawJwks = self.get_json(&metadata.jwks_uri).await?;
        let mut by_kid = HashMap::new();
        for raw in jwks.keys {
            let endorsements = raw
                .get("endorsements")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                });
            // One key of a type we do not know must not hide the others.
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let (Some(kid), AlgorithmParameters::RSA(rsa)) = (&jwk.common.key_id, &jwk.algorithm)
            else {
                continue;
            };
            let Ok(decoding) = DecodingKey::from_rsa_components(&rsa.n, &rsa.e) else {
                continue;
            };
            by_kid.insert(
                kid.clone(),
                Arc::new(Key {
                    decoding,
                    endorsements,
                }),
            );
        }
        Ok(KeySet {
            by_kid,
            fetched_at: Some(Instant::now()),
        })
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
