//! The checkpoint signing key: 32 secret bytes, hex, in a file only its owner reads.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use super::AuditError;

/// An ed25519 signing key for checkpoints.
pub struct AuditKey {
    signing: SigningKey,
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditKey")
            .field("public", &public_key_hex(&self.public_key()))
            .finish_non_exhaustive()
    }
}

/// `<db>.audit-key`, next to the database.
pub fn default_key_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".audit-key");
    PathBuf::from(name)
}

pub fn public_key_hex(key: &VerifyingKey) -> String {
    hex(key.as_bytes())
}

/// Short name of a public key, stored with each checkpoint: the first 8 bytes of its
/// SHA-256, hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex(&Sha256::digest(key.as_bytes())[..8])
}

/// A public key as printed by belay-server: 64 hex digits.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = unhex(text.trim())
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or("a public key is 64 hex digits")?;
    VerifyingKey::from_bytes(&bytes).map_err(|err| format!("not an ed25519 public key: {err}"))
}

impl AuditKey {
    /// A new random key (from the kernel's random source).
    pub fn generate() -> std::io::Result<Self> {
        let mut secret = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
        Ok(Self {
            signing: SigningKey::from_bytes(&secret),
        })
    }

    /// Reads the key at `path`, or creates it (mode 0600) if there is no file.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        let fail = |problem: String| AuditError::Key {
            path: path.display().to_string(),
            problem,
        };
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => return Self::load(path),
            Err(err) => return Err(fail(format!("cannot create: {err}"))),
        };
        let key = Self::generate().map_err(|err| fail(format!("cannot generate: {err}")))?;
        writeln!(file, "{}", hex(key.signing.as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(|err| fail(format!("cannot write: {err}")))?;
        tracing::info!(path = %path.display(), "created the audit signing key");
        Ok(key)
    }

    /// Reads the key at `path`.
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        let fail = |problem: String| AuditError::Key {
            path: path.display().to_string(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|err| fail(err.to_string()))?;
        let secret: [u8; 32] = unhex(text.trim())
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| fail("not an audit key (64 hex digits)".into()))?;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "the audit signing key is readable by others");
        }
        Ok(Self {
            signing: SigningKey::from_bytes(&secret),
        })
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    pub fn key_id(&self) -> String {
        key_id(&self.public_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}
