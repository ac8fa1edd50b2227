//! API tokens for automation: the server keeps only their SHA-256, so the file that
//! lists them grants nothing to whoever reads it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use super::config::ApiTokenConfig;
use super::{AuthError, Reviewer, Via};

/// Prefix of the tokens `belay-server api-token new` makes. Any other string works as a
/// token too; the prefix only makes them recognisable in leaked-secret scanners.
pub const TOKEN_PREFIX: &str = "belay_";

#[derive(Debug)]
pub struct ApiTokens {
    by_hash: HashMap<[u8; 32], ApiTokenConfig>,
}

impl ApiTokens {
    pub fn new(tokens: &[ApiTokenConfig]) -> Self {
        Self {
            by_hash: tokens.iter().map(|t| (t.sha256, t.clone())).collect(),
        }
    }

    /// The reviewer `token` stands for. The lookup is by hash of the presented token, so
    /// its timing tells nothing about the stored secrets.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Reviewer, AuthError> {
        let entry = self
            .by_hash
            .get(&sha256(token))
            .ok_or(AuthError::UnknownApiToken)?;
        if let Some(expires) = entry.expires
            && now >= expires
        {
            return Err(AuthError::ApiTokenExpired {
                name: entry.name.clone(),
                unix: expires
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            });
        }
        // A token linked to a person decides as that person: the approval rules then
        // see alice, whichever of her credentials she uses.
        let identity = entry.owner.clone().unwrap_or_else(|| entry.name.clone());
        Ok(Reviewer {
            identity,
            role: Some(entry.role),
            via: Via::ApiToken {
                name: entry.name.clone(),
            },
        })
    }
}

pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The line to paste into the `[[api_token]]` entry of `token`.
pub fn hash_line(token: &str) -> String {
    let mut hex = String::with_capacity(64);
    for byte in sha256(token) {
        let _ = write!(hex, "{byte:02x}");
    }
    format!("sha256 = \"{hex}\"")
}

/// A fresh random token: 32 bytes of the OS's randomness, base64url.
pub fn generate() -> std::io::Result<String> {
    use base64::Engine as _;
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}
