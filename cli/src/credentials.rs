//! The reviewer credential `belay --server` sends as `authorization: Bearer ...`:
//! `BELAY_TOKEN`, else what `belay login` stored in `$XDG_CONFIG_HOME/belay/credentials`
//! (mode 0600).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tonic::metadata::{Ascii, MetadataValue};

/// Refresh an ID token this long before it expires, so it does not lapse in flight.
const EXPIRY_MARGIN_SECS: u64 = 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credential {
    /// From `belay login` (OIDC device flow).
    Oidc {
        issuer: String,
        client_id: String,
        id_token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refresh_token: Option<String>,
    },
    /// From `belay login --token`.
    ApiToken { token: String },
}

/// `$XDG_CONFIG_HOME/belay/credentials`, or `~/.config/belay/credentials`.
pub fn path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .context("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep credentials")?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(base.join("belay").join("credentials"))
}

pub fn load() -> anyhow::Result<Option<Credential>> {
    let path = path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let credential = serde_json::from_str(&text)
        .with_context(|| format!("{} is damaged: run `belay login` again", path.display()))?;
    Ok(Some(credential))
}

/// Writes `credential` readable by its owner only, replacing any other at once.
pub fn store(credential: &Credential) -> anyhow::Result<PathBuf> {
    let path = path()?;
    let dir = path.parent().context("credentials path has no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let temporary = dir.join(format!(".credentials.{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(serde_json::to_string_pretty(credential)?.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(path)
}

/// Removes the stored credential; whether there was one.
pub fn remove() -> anyhow::Result<bool> {
    let path = path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Whether a credential will be sent: then the server, not `$USER`, names the reviewer.
pub fn present() -> bool {
    std::env::var_os("BELAY_TOKEN").is_some_and(|t| !t.is_empty())
        || path().is_ok_and(|p| p.exists())
}

/// The bearer token to send, refreshing a stored ID token that is about to expire when
/// the issuer gave a refresh token.
pub async fn bearer() -> anyhow::Result<Option<String>> {
    if let Some(token) = std::env::var("BELAY_TOKEN").ok().filter(|t| !t.is_empty()) {
        return Ok(Some(token));
    }
    match load()? {
        None => Ok(None),
        Some(Credential::ApiToken { token }) => Ok(Some(token)),
        Some(Credential::Oidc {
            issuer,
            client_id,
            id_token,
            refresh_token,
        }) => {
            let expired =
                jwt_expiry(&id_token).is_some_and(|exp| exp <= unix_now() + EXPIRY_MARGIN_SECS);
            if !expired {
                return Ok(Some(id_token));
            }
            let Some(refresh_token) = refresh_token else {
                bail!("the ID token from `belay login` has expired: run `belay login` again");
            };
            let refreshed = crate::login::refresh(&issuer, &client_id, &refresh_token)
                .await
                .context(
                    "the ID token has expired and refreshing it failed: run `belay login` again",
                )?;
            let token = match &refreshed {
                Credential::Oidc { id_token, .. } => id_token.clone(),
                Credential::ApiToken { token } => token.clone(),
            };
            store(&refreshed)?;
            Ok(Some(token))
        }
    }
}

/// The `exp` of a JWT, read without verifying it: only to decide when to refresh.
fn jwt_expiry(token: &str) -> Option<u64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Adds the bearer token, if any, to every call.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<String>) -> anyhow::Result<Self> {
        let value = token
            .map(|token| {
                format!("Bearer {token}")
                    .parse()
                    .context("the credential holds characters a header cannot carry")
            })
            .transpose()?;
        Ok(Self(value))
    }

    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}
