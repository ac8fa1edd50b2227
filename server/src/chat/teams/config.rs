//! The `[teams]` table of the chat config file, and what it becomes: the verifier of
//! inbound activities, the Connector client and the map from Teams users to belay
//! identities.
//!
//! ```toml
//! [teams]
//! app_id = "00000000-0000-0000-0000-000000000000"   # the Azure Bot's Microsoft App ID
//! app_password_file = "teams-app-password"           # its client secret, first line
//! # tenant_id = "..."            # single-tenant bots: tokens come from this tenant
//! # service_url = "https://smba.trafficmanager.net/teams/"  # where messages are posted
//! # allowed_tenant_ids = ["..."] # only users of these tenants decide (channelData.tenant.id)
//!
//! [[teams.user]]
//! aad_object_id = "6f1c...e2"     # Entra ID object id (`from.aadObjectId`), preferred
//! identity = "alice@example.com"  # the belay identity it is (roles come from the chat config)
//! # user_id = "29:1a2b..."        # Teams user id (MRI): the card refreshes by itself for them
//!
//! [[teams.user]]
//! upn = "bob@example.com"         # fallback: the UPN Teams reports for the user
//! identity = "bob@example.com"
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use belay_proto::domain::Identity;
use serde::Deserialize;

use super::auth::BotVerifier;
use super::connector::TeamsConnector;

/// Bot Framework's OpenID metadata: names the JWKS that signs every inbound activity.
pub const DEFAULT_OPENID_METADATA_URL: &str =
    "https://login.botframework.com/v1/.well-known/openidconfiguration";
/// The global Teams endpoint for messages a bot starts (proactive messages); a
/// conversation's regional service URL also works.
pub const DEFAULT_SERVICE_URL: &str = "https://smba.trafficmanager.net/teams/";
/// Most Teams user ids a card may name for automatic refresh.
pub const MAX_REFRESH_USERS: usize = 60;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfig {
    /// The Microsoft App ID of the Azure Bot: the `aud` of inbound tokens and the client
    /// id of outbound ones.
    pub app_id: String,
    /// A file whose first line is the app's client secret (relative to the config file).
    pub app_password_file: PathBuf,
    /// Single-tenant bots: their tenant id, in place of `botframework.com`.
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub openid_metadata_url: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub service_url: Option<String>,
    /// Entra ID tenants (GUIDs) whose activities may decide; empty: any tenant the bot
    /// is installed in.
    #[serde(default)]
    pub allowed_tenant_ids: Vec<String>,
    #[serde(default, rename = "user")]
    pub users: Vec<TeamsUserConfig>,
}

/// One Teams user and the belay identity they are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsUserConfig {
    #[serde(default)]
    pub aad_object_id: Option<String>,
    #[serde(default)]
    pub upn: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    pub identity: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TeamsConfigError {
    #[error("teams.app_id is empty")]
    NoAppId,
    #[error("teams.app_password_file {}: {err}", path.display())]
    PasswordUnreadable {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("teams.app_password_file {} is empty", path.display())]
    PasswordEmpty { path: PathBuf },
    #[error("teams.tenant_id {0:?} is not a tenant id or domain")]
    BadTenant(String),
    #[error("teams.allowed_tenant_ids: {0:?} is not a tenant id (a GUID)")]
    BadAllowedTenant(String),
    #[error("teams.{field}: {problem}")]
    BadUrl {
        field: &'static str,
        problem: String,
    },
    #[error("teams.user #{index}: {problem}")]
    BadUser { index: usize, problem: String },
    #[error("cannot build the HTTP client for Bot Framework: {0}")]
    Http(#[source] reqwest::Error),
}

/// Teams users by how they can be recognised.
#[derive(Debug, Default)]
pub struct TeamsUsers {
    /// Entra ID object id (lower case) -> identity.
    by_object_id: HashMap<String, Identity>,
    /// UPN (lower case) -> identity; only used with a UPN the Connector itself reported.
    by_upn: HashMap<String, Identity>,
    refresh_ids: Vec<String>,
}

impl TeamsUsers {
    /// The identity of the user with Entra ID object id `aad_object_id`.
    pub fn by_object_id(&self, aad_object_id: &str) -> Option<&Identity> {
        self.by_object_id.get(&aad_object_id.to_ascii_lowercase())
    }

    /// The identity of the user whose UPN the Connector reported as `upn`.
    pub fn by_upn(&self, upn: &str) -> Option<&Identity> {
        self.by_upn.get(&upn.to_lowercase())
    }

    pub fn has_upns(&self) -> bool {
        !self.by_upn.is_empty()
    }

    /// Teams user ids the cards refresh for by themselves (at most 60, as Teams allows).
    pub fn refresh_ids(&self) -> &[String] {
        &self.refresh_ids
    }
}

/// The Teams surface, ready to use: the lead mounts [`super::router`] with `verifier` and
/// `users`, and gives `connector` to the outbox worker.
#[derive(Debug, Clone)]
pub struct Teams {
    pub verifier: Arc<BotVerifier>,
    pub connector: TeamsConnector,
    pub users: Arc<TeamsUsers>,
    /// Tenant ids (lower case) whose activities may decide; empty: any.
    pub allowed_tenants: Arc<Vec<String>>,
}

/// Builds the Teams surface from its config section; relative paths are relative to
/// `base_dir` (the chat config file's directory).
pub fn load(raw: TeamsConfig, base_dir: &Path) -> Result<Teams, TeamsConfigError> {
    let app_id = raw.app_id.trim().to_owned();
    if app_id.is_empty() {
        return Err(TeamsConfigError::NoAppId);
    }
    let password = read_password(&base_dir.join(&raw.app_password_file))?;
    let authority = match &raw.tenant_id {
        Some(tenant) if is_tenant(tenant) => tenant.clone(),
        Some(tenant) => return Err(TeamsConfigError::BadTenant(tenant.clone())),
        None => "botframework.com".to_owned(),
    };
    let token_url = raw.token_url.unwrap_or_else(|| {
        format!("https://login.microsoftonline.com/{authority}/oauth2/v2.0/token")
    });
    let metadata_url = raw
        .openid_metadata_url
        .unwrap_or_else(|| DEFAULT_OPENID_METADATA_URL.to_owned());
    let service_url = raw
        .service_url
        .unwrap_or_else(|| DEFAULT_SERVICE_URL.to_owned());
    for (field, url) in [
        ("token_url", &token_url),
        ("openid_metadata_url", &metadata_url),
        ("service_url", &service_url),
    ] {
        belay_config_file::check_url(url)
            .map_err(|problem| TeamsConfigError::BadUrl { field, problem })?;
    }
    let mut allowed_tenants = Vec::new();
    for tenant in raw.allowed_tenant_ids {
        if !is_guid(&tenant) {
            return Err(TeamsConfigError::BadAllowedTenant(tenant));
        }
        allowed_tenants.push(tenant.to_ascii_lowercase());
    }
    let users = Arc::new(users(raw.users)?);
    let http = reqwest::Client::builder()
        .timeout(super::HTTP_TIMEOUT)
        .user_agent(concat!("belay-server/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(TeamsConfigError::Http)?;
    let verifier = Arc::new(BotVerifier::new(app_id.clone(), metadata_url, http.clone()));
    let connector = TeamsConnector::new(
        super::connector::Credentials {
            app_id,
            password,
            token_url,
        },
        service_url,
        users.refresh_ids().to_vec(),
        http,
    );
    Ok(Teams {
        verifier,
        connector,
        users,
        allowed_tenants: Arc::new(allowed_tenants),
    })
}

fn read_password(path: &Path) -> Result<super::connector::Secret, TeamsConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|err| TeamsConfigError::PasswordUnreadable {
            path: path.to_owned(),
            err,
        })?;
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.is_empty() {
        return Err(TeamsConfigError::PasswordEmpty {
            path: path.to_owned(),
        });
    }
    Ok(super::connector::Secret(secret.to_owned()))
}

/// `8-4-4-4-12` hex digits.
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A GUID or a domain: it becomes part of the token URL's path.
fn is_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 253
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

fn users(raw: Vec<TeamsUserConfig>) -> Result<TeamsUsers, TeamsConfigError> {
    let mut users = TeamsUsers::default();
    for (index, user) in raw.into_iter().enumerate() {
        let index = index + 1;
        let bad = |problem: String| TeamsConfigError::BadUser { index, problem };
        let identity = Identity::new(user.identity.as_str())
            .map_err(|err| bad(format!("identity {:?}: {err}", user.identity)))?
            .canonical();
        if user.aad_object_id.is_none() && user.upn.is_none() {
            return Err(bad("needs aad_object_id (or upn)".into()));
        }
        if let Some(id) = user.aad_object_id {
            let key = id.trim().to_ascii_lowercase();
            if key.is_empty() {
                return Err(bad("aad_object_id is empty".into()));
            }
            if users.by_object_id.insert(key, identity.clone()).is_some() {
                return Err(bad(format!("aad_object_id {id:?} is mapped twice")));
            }
        }
        if let Some(upn) = user.upn {
            let key = upn.trim().to_lowercase();
            if key.is_empty() {
                return Err(bad("upn is empty".into()));
            }
            if users.by_upn.insert(key, identity.clone()).is_some() {
                return Err(bad(format!("upn {upn:?} is mapped twice")));
            }
        }
        if let Some(id) = user.user_id {
            if users.refresh_ids.len() >= MAX_REFRESH_USERS {
                return Err(bad(format!(
                    "more than {MAX_REFRESH_USERS} users with a user_id: Teams refreshes cards by themselves for at most {MAX_REFRESH_USERS}"
                )));
            }
            users.refresh_ids.push(id);
        }
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> TeamsConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn loads_users_and_reads_the_password_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let teams = load(
            config(
                r#"
                app_id = "app"
                app_password_file = "pw"
                [[user]]
                aad_object_id = "AB-CD"
                identity = "Alice@Example.com"
                user_id = "29:alice"
                "#,
            ),
            dir.path(),
        )
        .unwrap();
        assert_eq!(
            teams.users.by_object_id("ab-cd").unwrap().as_str(),
            "alice@example.com"
        );
        assert_eq!(teams.users.refresh_ids(), ["29:alice"]);
    }

    #[test]
    fn allowed_tenants_must_be_guids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let with = |tenants: &str| {
            load(
                config(&format!(
                    "app_id = \"app\"\napp_password_file = \"pw\"\nallowed_tenant_ids = {tenants}"
                )),
                dir.path(),
            )
        };
        let teams = with(r#"["72F988BF-86f1-41af-91ab-2d7cd011db47"]"#).unwrap();
        assert_eq!(
            *teams.allowed_tenants,
            ["72f988bf-86f1-41af-91ab-2d7cd011db47"]
        );
        let err = with(r#"["contoso.onmicrosoft.com"]"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "teams.allowed_tenant_ids: \"contoso.onmicrosoft.com\" is not a tenant id (a GUID)"
        );
        assert!(with(r#"["72f988bf-86f1-41af-91ab-2d7cd011db4"]"#).is_err());
    }

    #[test]
    fn unreadable_or_empty_password_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let raw = config("app_id = \"app\"\napp_password_file = \"missing\"");
        let err = load(raw, dir.path()).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let raw = config("app_id = \"app\"\napp_password_file = \"empty\"");
        let err = load(raw, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("empty") && err.contains("app_password_file"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_users_are_refused() {
        assert!(
            toml::from_str::<TeamsConfig>("app_id = \"a\"\napp_password_file = \"p\"\nsecret = 1")
                .is_err()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "x").unwrap();
        let raw =
            config("app_id = \"a\"\napp_password_file = \"pw\"\n[[user]]\nidentity = \"alice\"");
        let err = load(raw, dir.path()).unwrap_err().to_string();
        assert!(err.contains("user #1"), "{err}");
        let raw = config("app_id = \"a\"\napp_password_file = \"pw\"\ntenant_id = \"x/../y\"");
        assert!(matches!(
            load(raw, dir.path()),
            Err(TeamsConfigError::BadTenant(_))
        ));
        let raw = config(
            "app_id = \"a\"\napp_password_file = \"pw\"\nservice_url = \"http://example.com/\"",
        );
        assert!(matches!(
            load(raw, dir.path()),
            Err(TeamsConfigError::BadUrl {
                field: "service_url",
                ..
            })
        ));
    }
}
