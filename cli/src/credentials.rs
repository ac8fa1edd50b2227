//! The reviewer credential `belay --server` sends as `authorization: Bearer ...`: where
//! `belay login` stores it (`$XDG_CONFIG_HOME/belay/credentials`, mode 0600), and the
//! interceptor that sends it. Which token to send (`BELAY_TOKEN`, or the stored one,
//! refreshed) is `login::bearer`'s business.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tonic::metadata::{Ascii, MetadataValue};

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
