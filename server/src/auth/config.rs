//! The reviewer authentication file (`--auth-config`): TOML, unknown keys refused, every
//! problem reported as `FILE:LINE:COL: problem`.
//!
//! ```toml
//! [[oidc]]
//! issuer = "https://login.example.com"
//! audience = "belay"                 # the client id `belay login` uses
//! # jwks_url = "https://..."         # default: from the issuer's discovery document
//! # identity_claim = "email"
//! # groups_claim = "groups"
//! # client_secret_file = "/etc/belay/oidc-secret"  # the console's sign-in, for an
//! #                                  # issuer that wants a confidential client
//!
//! [[api_token]]
//! name = "ci-bot"                    # the identity decisions are recorded under
//! sha256 = "9f86d0…"                 # `belay-server api-token hash` prints it
//! roles = ["reviewer"]
//! # expires = 2027-01-01T00:00:00Z
//! # owner = "alice@example.com"      # the person this token acts for: it decides as
//! #                                  # alice, so it never approves alice's agents and
//! #                                  # never counts as a reviewer beside her
//!
//! [groups]
//! "belay-admins" = "admin"
//! "sre" = "reviewer"
//! ```
//!
//! Identities are compared in lower case (`Identity::canonical`); two token names that
//! differ only in case are refused. An OIDC identity taken from the `email` claim is the
//! (verified) address; one taken from any other claim (`sub`, `preferred_username`)
//! means something only to its issuer, so it is scoped: recorded as `ISSUER#VALUE`, e.g.
//! `https://sso.example#248289761001`, and an agent's owner must be written that way to
//! be recognised.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use belay_config_file::Source;
use serde::Deserialize;
use toml::Spanned;

use super::Role;

/// JWKS refetches for an unknown `kid` are at most this frequent, so tokens with forged
/// key ids cannot make the server hammer the issuer.
const DEFAULT_MIN_REFETCH: u64 = 30;
/// Keys older than this are refetched even when every `kid` is known: a key the issuer
/// withdrew stops being accepted.
const DEFAULT_REFRESH: u64 = 3600;
/// Clock skew tolerated on `exp` and `nbf`.
const DEFAULT_LEEWAY: u64 = 30;

pub use belay_config_file::ConfigError;
pub use belay_config_file::check_url;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub issuers: Vec<IssuerConfig>,
    pub api_tokens: Vec<ApiTokenConfig>,
    /// Group name -> role given to its members.
    pub groups: HashMap<String, Role>,
}

#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Exactly as the tokens' `iss` claim carries it.
    pub issuer: String,
    pub audience: String,
    pub jwks_url: Option<String>,
    pub identity_claim: String,
    pub groups_claim: String,
    pub leeway: Duration,
    pub min_refetch: Duration,
    pub refresh: Duration,
    /// The console's token requests authenticate with it (HTTP Basic) when set; without
    /// it the console is a public client and PKCE alone binds the code to its login.
    pub client_secret: Option<ClientSecret>,
}

/// A client secret, kept out of logs and `Debug` output.
#[derive(Clone)]
pub struct ClientSecret(pub(super) String);

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(..)")
    }
}

#[derive(Debug, Clone)]
pub struct ApiTokenConfig {
    pub name: String,
    pub sha256: [u8; 32],
    pub role: Role,
    pub expires: Option<SystemTime>,
    /// The person the token acts for: its decisions are that person's.
    pub owner: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    oidc: Vec<RawIssuer>,
    #[serde(default)]
    api_token: Vec<RawApiToken>,
    #[serde(default)]
    groups: BTreeMap<String, Role>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: Spanned<HttpUrl>,
    audience: Spanned<String>,
    jwks_url: Option<HttpUrl>,
    #[serde(default = "default_identity_claim")]
    identity_claim: Spanned<String>,
    #[serde(default = "default_groups_claim")]
    groups_claim: String,
    #[serde(default = "default_leeway")]
    leeway_seconds: u64,
    #[serde(default = "default_min_refetch")]
    jwks_min_refetch_seconds: u64,
    #[serde(default = "default_refresh")]
    jwks_refresh_seconds: u64,
    client_secret_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiToken {
    name: Spanned<String>,
    sha256: Spanned<TokenHash>,
    roles: Spanned<Vec<Role>>,
    expires: Option<Spanned<toml::value::Datetime>>,
    owner: Option<Spanned<String>>,
}

fn default_identity_claim() -> Spanned<String> {
    Spanned::new(0..0, "email".to_owned())
}
fn default_groups_claim() -> String {
    "groups".to_owned()
}
fn default_leeway() -> u64 {
    DEFAULT_LEEWAY
}
fn default_min_refetch() -> u64 {
    DEFAULT_MIN_REFETCH
}
fn default_refresh() -> u64 {
    DEFAULT_REFRESH
}

/// An `https://` URL, or `http://` on a loopback host (development and tests): keys
/// fetched in the clear from elsewhere could be swapped on the way.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct HttpUrl(String);

impl TryFrom<String> for HttpUrl {
    type Error = String;

    fn try_from(url: String) -> Result<Self, String> {
        check_url(&url)?;
        Ok(Self(url))
    }
}

/// `sha256:<64 hex>` or the bare hex.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct TokenHash([u8; 32]);

impl TryFrom<String> for TokenHash {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let hex = text.strip_prefix("sha256:").unwrap_or(&text);
        let bad = || {
            format!(
                "a token hash is 64 hex digits (SHA-256 of the token, as `belay-server api-token hash` prints it), not {text:?}"
            )
        };
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

impl AuthConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(path, &belay_config_file::read(path)?)
    }

    /// Validates `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let source = Source::new(path, text);
        let at = |span, message: String| source.at(span, message);
        let raw: RawConfig = source.parse()?;

        let mut issuers = Vec::with_capacity(raw.oidc.len());
        let mut seen_issuers = HashSet::new();
        for issuer in raw.oidc {
            let url = issuer.issuer.get_ref().0.clone();
            if !seen_issuers.insert(url.clone()) {
                return Err(at(
                    issuer.issuer.span(),
                    format!("issuer {url:?} is declared twice"),
                ));
            }
            if issuer.audience.get_ref().trim().is_empty() {
                return Err(at(
                    issuer.audience.span(),
                    "audience must not be empty".into(),
                ));
            }
            if issuer.identity_claim.get_ref().trim().is_empty() {
                return Err(at(
                    issuer.identity_claim.span(),
                    "identity_claim must not be empty".into(),
                ));
            }
            let client_secret = match &issuer.client_secret_file {
                None => None,
                Some(file) => Some(
                    read_secret(path, file.get_ref())
                        .map_err(|message| at(file.span(), message))?,
                ),
            };
            issuers.push(IssuerConfig {
                issuer: url,
                audience: issuer.audience.into_inner(),
                jwks_url: issuer.jwks_url.map(|url| url.0),
                identity_claim: issuer.identity_claim.into_inner(),
                groups_claim: issuer.groups_claim,
                leeway: Duration::from_secs(issuer.leeway_seconds),
                min_refetch: Duration::from_secs(issuer.jwks_min_refetch_seconds),
                refresh: Duration::from_secs(issuer.jwks_refresh_seconds.max(1)),
                client_secret,
            });
        }

        let mut api_tokens = Vec::with_capacity(raw.api_token.len());
        let mut seen_names = HashSet::new();
        let mut seen_hashes = HashSet::new();
        for token in raw.api_token {
            let name = token.name.get_ref();
            if let Err(err) = belay_proto::domain::Identity::new(name.clone()) {
                return Err(at(token.name.span(), format!("name: {err}")));
            }
            // Compared as identities are: two names that differ only in case would be
            // one reviewer to the approval rules.
            let canonical = canonical_identity(name);
            if !seen_names.insert(canonical) {
                return Err(at(
                    token.name.span(),
                    format!(
                        "API token {name:?} is declared twice (names are compared in lower case)"
                    ),
                ));
            }
            let owner = match &token.owner {
                None => None,
                Some(owner) => match belay_proto::domain::Identity::new(owner.get_ref().clone()) {
                    Ok(identity) => Some(identity.canonical().into_string()),
                    Err(err) => return Err(at(owner.span(), format!("owner: {err}"))),
                },
            };
            if !seen_hashes.insert(token.sha256.get_ref().0) {
                return Err(at(
                    token.sha256.span(),
                    "this hash is already given to another API token".into(),
                ));
            }
            let Some(role) = token.roles.get_ref().iter().copied().max() else {
                return Err(at(
                    token.roles.span(),
                    "roles must name at least one of viewer, reviewer, admin".into(),
                ));
            };
            let expires = match token.expires {
                None => None,
                Some(expires) => Some(
                    datetime_to_system_time(expires.get_ref())
                        .map_err(|message| at(expires.span(), message))?,
                ),
            };
            api_tokens.push(ApiTokenConfig {
                name: token.name.into_inner(),
                sha256: token.sha256.get_ref().0,
                role,
                expires,
                owner,
            });
        }

        if issuers.is_empty() && api_tokens.is_empty() {
            return Err(source
                .whole("declares no [[oidc]] issuer and no [[api_token]]: nobody could sign in"));
        }
        Ok(Self {
            issuers,
            api_tokens,
            groups: raw.groups.into_iter().collect(),
        })
    }
}

/// The first line of the file `name` (relative to the config file's directory), which
/// must not be empty.
fn read_secret(config: &Path, name: &str) -> Result<ClientSecret, String> {
    let file = match config.parent() {
        Some(dir) if Path::new(name).is_relative() => dir.join(name),
        _ => Path::new(name).to_owned(),
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|err| format!("client_secret_file {}: {err}", file.display()))?;
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.is_empty() {
        return Err(format!("client_secret_file {} is empty", file.display()));
    }
    Ok(ClientSecret(secret.to_owned()))
}

/// `name` as identities are compared (it is a valid identity: checked just before).
fn canonical_identity(name: &str) -> String {
    belay_proto::domain::Identity::new(name)
        .map(|identity| identity.canonical().into_string())
        .unwrap_or_else(|_| name.to_owned())
}

/// A TOML offset date-time, or a bare date (midnight UTC).
fn datetime_to_system_time(value: &toml::value::Datetime) -> Result<SystemTime, String> {
    let Some(date) = value.date else {
        return Err("expires needs a date, e.g. 2027-01-01T00:00:00Z".into());
    };
    let (seconds_of_day, offset_minutes) = match (value.time, value.offset) {
        (None, None) => (0, 0),
        (Some(_), None) => {
            return Err(
                "expires needs a time zone (e.g. 2027-01-01T00:00:00Z): a local time is ambiguous"
                    .into(),
            );
        }
        (Some(time), Some(offset)) => {
            let offset = match offset {
                toml::value::Offset::Z => 0,
                toml::value::Offset::Custom { minutes } => i64::from(minutes),
            };
            let seconds = i64::from(time.hour) * 3600
                + i64::from(time.minute) * 60
                + i64::from(time.second.unwrap_or(0));
            (seconds, offset)
        }
        (None, Some(_)) => return Err("expires has an offset but no time".into()),
    };
    let days = days_from_civil(i64::from(date.year), date.month.into(), date.day.into());
    let unix = days * 86_400 + seconds_of_day - offset_minutes * 60;
    u64::try_from(unix)
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .map_err(|_| "expires is before 1970".into())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

impl fmt::Display for AuthConfig {
    /// One line per way in, for the start-up log and `check-config`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let issuers: Vec<&str> = self.issuers.iter().map(|i| i.issuer.as_str()).collect();
        write!(
            f,
            "{} OIDC issuer(s) [{}], {} API token(s), {} group mapping(s)",
            issuers.len(),
            issuers.join(", "),
            self.api_tokens.len(),
            self.groups.len()
        )
    }
}
