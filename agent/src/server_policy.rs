//! The fleet policy an agent run with `--policy-from-server` last applied, kept on disk
//! so that a restart without a reachable server goes on enforcing it.
//!
//! One JSON file (version, SHA-256, text), mode 0600, replaced atomically: written to a
//! temporary file in the same directory, synced, renamed over the old one, and the
//! directory synced. A crash leaves the old file or the new one, never half of one.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Its name in the agent's state directory (`--cert-dir`).
pub const FILE_NAME: &str = "server-policy.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a saved belay-server policy: {problem}", path.display())]
    Damaged { path: PathBuf, problem: String },
}

/// A policy as received from belay-server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub version: u64,
    /// Lower-case hex SHA-256 of `text`.
    pub sha256: String,
    pub text: String,
}

impl Saved {
    pub fn new(version: u64, text: String) -> Self {
        Self {
            version,
            sha256: belay_proto::domain::sha256_hex(text.as_bytes()),
            text,
        }
    }
}

/// The saved policy, `None` if none was ever saved. A file that does not match its own
/// digest is an error, not a policy.
pub fn load(path: &Path) -> Result<Option<Saved>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let damaged = |problem: String| StateError::Damaged {
        path: path.to_owned(),
        problem,
    };
    let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    if belay_proto::domain::sha256_hex(saved.text.as_bytes()) != saved.sha256 {
        return Err(damaged("its text does not match its SHA-256".into()));
    }
    Ok(Some(saved))
}

/// Replaces the saved policy atomically; the file is readable by root only (the policy
/// says what is watched and allowed, which is nobody else's business).
pub fn save(path: &Path, saved: &Saved) -> Result<(), StateError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StateError::Io { path, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec(saved).map_err(|e| StateError::Damaged {
        path: path.to_owned(),
        problem: e.to_string(),
    })?;
    {
        // A leftover from a crash is ours to replace.
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        // The mode above is filtered by the umask; 0600 is meant exactly.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io(&tmp))?;
        file.write_all(&body).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_policies_round_trip_with_mode_0600_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(FILE_NAME);
        assert_eq!(load(&path).unwrap(), None);
        let saved = Saved::new(4, "version: 1\nsubjects: []\n".into());
        save(&path, &saved).unwrap();
        assert_eq!(load(&path).unwrap(), Some(saved.clone()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let newer = Saved::new(5, "version: 1\n".into());
        save(&path, &newer).unwrap();
        assert_eq!(load(&path).unwrap(), Some(newer));
        assert!(!path.with_extension("json.tmp").exists());

        let mut edited = saved;
        edited.text.push('#');
        std::fs::write(&path, serde_json::to_vec(&edited).unwrap()).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("does not match its SHA-256"), "{err}");
    }
}
