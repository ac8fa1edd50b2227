//! Who is calling the reviewer service: OIDC ID tokens (verified against the issuer's
//! JWKS) or API tokens, sent as `authorization: Bearer <token>`, and the role each gets.
//!
//! [`Authenticated`] wraps the whole reviewer service, so every RPC — including ones added
//! later — is authenticated and checked against [`required_role`] before its handler
//! runs; handlers read the caller with [`caller`].

mod api_token;
mod args;
mod config;
mod layer;
mod oidc;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use belay_proto::domain::Identity;
use tonic::Status;

pub use api_token::{TOKEN_PREFIX, generate as generate_token, hash_line};
pub use args::{AuthArgs, TokenCommand, check_config};
pub use config::{AuthConfig, ClientSecret, ConfigError, IssuerConfig, check_url};
pub use layer::Authenticated;
pub use oidc::{LoginEndpoints, OidcIssuer};

use api_token::ApiTokens;

/// What a caller may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// List, get and watch requests; list agents; query the audit log.
    Viewer,
    /// And decide.
    Reviewer,
    /// And administer the server (enrollment tokens, the fleet policy...).
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        })
    }
}

/// The role each reviewer-service method needs. Methods not listed need `admin`: a new
/// RPC is closed until someone decides who may call it.
pub fn required_role(path: &str) -> Role {
    let method = path.rsplit('/').next().unwrap_or(path);
    match method {
        "ListPending" | "GetRequest" | "WatchRequests" | "ListAgents" | "QueryAudit"
        | "GetPolicy" => Role::Viewer,
        "Decide" => Role::Reviewer,
        "PushPolicy" => Role::Admin,
        _ => Role::Admin,
    }
}

/// How a reviewer proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Oidc {
        issuer: String,
    },
    /// The token's name; the identity is its owner's when the config links one.
    ApiToken {
        name: String,
    },
}

/// A caller whose credential verified.
#[derive(Debug, Clone)]
pub struct Reviewer {
    pub identity: String,
    /// `None`: signed in, but none of its groups maps to a role.
    pub role: Option<Role>,
    pub via: Via,
}

impl Reviewer {
    /// PERMISSION_DENIED unless the caller has `role` (or a higher one).
    pub fn require(&self, role: Role) -> Result<(), Status> {
        match self.role {
            Some(have) if have >= role => Ok(()),
            Some(have) => Err(Status::permission_denied(format!(
                "{} has role {have}; this needs {role}",
                self.identity
            ))),
            None => Err(Status::permission_denied(format!(
                "{} has no belay role: none of its groups maps to one in the server's auth config",
                self.identity
            ))),
        }
    }
}

/// Who is calling, as the reviewer service's handlers see it.
#[derive(Debug, Clone)]
pub enum Caller {
    Authenticated(Reviewer),
    /// The server runs with `--insecure`: callers are whoever they say they are.
    Insecure,
}

impl Caller {
    /// The identity a decision is recorded under. Authenticated: the credential's; a
    /// non-empty `asserted` reviewer must equal it. Insecure: `asserted`, as sent.
    pub fn decider(&self, asserted: &str) -> Result<String, Status> {
        match self {
            Caller::Insecure => Ok(asserted.to_owned()),
            Caller::Authenticated(reviewer) => {
                let same = || {
                    let (Ok(asserted), Ok(identity)) = (
                        Identity::new(asserted),
                        Identity::new(reviewer.identity.clone()),
                    ) else {
                        return false;
                    };
                    asserted.same_as(&identity)
                };
                if !asserted.is_empty() && !same() {
                    return Err(Status::permission_denied(format!(
                        "reviewer {asserted:?} does not match the authenticated identity {:?}; leave reviewer empty",
                        reviewer.identity
                    )));
                }
                Ok(reviewer.identity.clone())
            }
        }
    }

    /// The reason a decision is recorded with: a token that acts for a person decides as
    /// that person, so the record says which credential was used.
    pub fn annotate_reason(&self, reason: String) -> String {
        if let Caller::Authenticated(Reviewer {
            via: Via::ApiToken { name },
            identity,
            ..
        }) = self
            && name != identity
        {
            let annotated = format!("{reason} [API token {name}]");
            if annotated.len() <= belay_proto::domain::limits::MAX_REASON_LEN {
                return annotated;
            }
        }
        reason
    }
}

/// The caller of `request`, as [`Authenticated`] established it. Fails closed: a
/// handler reached without the layer gets UNAUTHENTICATED, not a free pass.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::unauthenticated("the reviewer service runs without authentication"))
}

/// Why a credential was refused. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "missing credential: send `authorization: Bearer <token>` (run `belay login`, or set BELAY_TOKEN)"
    )]
    Missing,
    #[error("the authorization metadata must be `Bearer <token>`")]
    NotBearer,
    #[error(
        "reviewer authentication is not configured: start belay-server with --auth-config FILE (or --insecure for development)"
    )]
    NotConfigured,
    #[error("unknown API token")]
    UnknownApiToken,
    #[error("API token {name:?} expired (at unix time {unix})")]
    ApiTokenExpired { name: String, unix: u64 },
    #[error("malformed ID token: {0}")]
    NotAJwt(String),
    #[error("ID token issuer {0:?} is not trusted by this server")]
    UntrustedIssuer(String),
    #[error("ID token signature does not verify with the keys of {issuer}")]
    BadSignature { issuer: String },
    #[error("ID token has expired")]
    Expired,
    #[error("ID token is not valid yet (nbf in the future)")]
    NotYetValid,
    #[error("ID token audience is not {audience:?} (this server's audience for {issuer})")]
    WrongAudience { issuer: String, audience: String },
    #[error("ID token signed with unknown key id {} of {issuer}", kid.as_deref().unwrap_or("(none)"))]
    UnknownKey { issuer: String, kid: Option<String> },
    #[error("{0}")]
    Malformed(String),
    #[error("cannot fetch the signing keys of {issuer}: {problem}")]
    IssuerUnavailable { issuer: String, problem: String },
    #[error("{0}")]
    Identity(String),
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        let message = err.to_string();
        match err {
            AuthError::IssuerUnavailable { .. } => Status::unavailable(message),
            _ => Status::unauthenticated(message),
        }
    }
}

/// Verifies credentials against an [`AuthConfig`].
#[derive(Debug)]
pub struct Authenticator {
    issuers: Vec<OidcIssuer>,
    api_tokens: ApiTokens,
    groups: std::collections::HashMap<String, Role>,
    http: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for OIDC discovery and JWKS")]
pub struct SetupError(#[source] reqwest::Error);

impl Authenticator {
    pub fn new(config: AuthConfig) -> Result<Self, SetupError> {
        let http = reqwest::Client::builder()
            .timeout(oidc::HTTP_TIMEOUT)
            .user_agent(concat!("belay-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SetupError)?;
        Ok(Self {
            issuers: config
                .issuers
                .into_iter()
                .map(|issuer| OidcIssuer::new(issuer, http.clone()))
                .collect(),
            api_tokens: ApiTokens::new(&config.api_tokens),
            groups: config.groups,
            http,
        })
    }

    /// The OIDC issuers, in the config's order (the console's sign-in page lists them).
    pub fn issuers(&self) -> &[OidcIssuer] {
        &self.issuers
    }

    /// The client for requests to issuers (discovery, keys, token exchange).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The reviewer an ID token from the console's sign-in stands for: it must be a
    /// valid token of the issuer the sign-in started with (not merely of any trusted
    /// one) and carry the nonce that sign-in sent, so that a token issued for another
    /// login cannot be replayed into this one.
    pub async fn sign_in(
        &self,
        issuer: &OidcIssuer,
        id_token: &str,
        nonce: &str,
    ) -> Result<Reviewer, AuthError> {
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|err| AuthError::NotAJwt(err.to_string()))?;
        let claims = issuer.verify(id_token, &header).await?;
        // Not a secret once the browser carried it back: a plain comparison will do.
        let same_nonce = claims.nonce.as_deref() == Some(nonce);
        if !same_nonce {
            return Err(AuthError::Malformed(
                "ID token nonce does not match this sign-in".into(),
            ));
        }
        self.reviewer_of(issuer, &claims)
    }

    fn reviewer_of(
        &self,
        issuer: &OidcIssuer,
        claims: &oidc::VerifiedClaims,
    ) -> Result<Reviewer, AuthError> {
        let identity = scoped_identity(issuer.issuer(), issuer.identity_claim(), &claims.identity)
            .map_err(|err| AuthError::Identity(format!("ID token identity is unusable: {err}")))?;
        let role = claims
            .groups
            .iter()
            .filter_map(|group| self.groups.get(group).copied())
            .max();
        Ok(Reviewer {
            identity: identity.into_string(),
            role,
            via: Via::Oidc {
                issuer: issuer.issuer().to_owned(),
            },
        })
    }

    /// The reviewer behind an `authorization` metadata value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Reviewer, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::NotBearer)?;
        // A JWT is three dot-separated parts; API tokens have no dots.
        if token.matches('.').count() != 2 {
            return self.api_tokens.verify(token, SystemTime::now());
        }
        self.verify_id_token(token).await
    }

    async fn verify_id_token(&self, token: &str) -> Result<Reviewer, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|err| AuthError::NotAJwt(err.to_string()))?;
        // The issuer picks the keys; the signature check below then vouches for it.
        #[derive(serde::Deserialize)]
        struct Peek {
            iss: Option<String>,
        }
        let peek: Peek = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|err| AuthError::NotAJwt(err.to_string()))?;
        let iss = peek
            .iss
            .ok_or_else(|| AuthError::Malformed("ID token has no \"iss\" claim".into()))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer() == iss)
            .ok_or(AuthError::UntrustedIssuer(iss))?;
        let claims = issuer.verify(token, &header).await?;
        self.reviewer_of(issuer, &claims)
    }
}

/// The identity an ID token stands for, in the form identities are compared in. A
/// verified email names one mailbox whoever vouches for it; any other claim (`sub`,
/// `preferred_username`) is only unique within its issuer, so it is qualified with it:
/// `ISSUER#VALUE`. Otherwise a `sub` of one issuer could pass for an owner or another
/// reviewer known to a different one.
pub(crate) fn scoped_identity(
    issuer: &str,
    claim: &str,
    value: &str,
) -> Result<Identity, belay_proto::domain::ValidationError> {
    let identity = if claim == "email" {
        Identity::new(value)?
    } else {
        Identity::new(format!("{issuer}#{value}"))?
    };
    Ok(identity.canonical())
}

/// How the reviewer service checks its callers.
#[derive(Debug, Clone, Default)]
pub enum ReviewerAuth {
    /// Callers are whoever `DecideRequest.reviewer` says (tests, `--insecure`
    /// development servers). The library default, for tests; the binary never falls
    /// back to it silently.
    #[default]
    Insecure,
    /// Every call is refused: a server started with neither `--auth-config` nor
    /// `--insecure`.
    Unconfigured,
    Verified(Arc<Authenticator>),
}
