//! The policy in force, and replacing it: on SIGHUP or when its file changes. A file
//! that does not load leaves the policy in force untouched.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{
    policy::{Policy, PolicyError},
    sync::lock,
};

/// What identifies a version of the file on disk, to notice edits without inotify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    dev: u64,
    size: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        dev: m.dev(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What `belay status` shows about the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// The file, or None for the built-in standalone policy.
    pub source: Option<String>,
    pub subjects: Vec<String>,
    pub loaded_unix_ms: u64,
    pub reloads: u64,
    pub failed_reloads: u64,
    /// Why the last reload failed, while the file still does not load.
    pub last_error: Option<String>,
    /// What the kernel could not be told (missing files, rules over the limit).
    #[serde(default)]
    pub warnings: Vec<String>,
}

pub struct LivePolicy {
    current: RwLock<Arc<Policy>>,
    source: Option<PathBuf>,
    /// The file as last read, loaded or not, so one bad edit is reported once.
    seen: Mutex<Option<Stamp>>,
    status: Mutex<PolicyStatus>,
}

impl LivePolicy {
    /// Loads the file, or uses `fallback` when there is none.
    pub fn load(source: Option<&Path>, fallback: Policy) -> Result<Self, PolicyError> {
        let (policy, seen) = match source {
            Some(path) => {
                let before = stamp(path);
                (Policy::load(path)?, before)
            }
            None => (fallback, None),
        };
        let status = PolicyStatus {
            source: source.map(|p| p.display().to_string()),
            subjects: policy.subjects.iter().map(|s| s.name.clone()).collect(),
            loaded_unix_ms: unix_ms(),
            ..PolicyStatus::default()
        };
        Ok(Self {
            current: RwLock::new(Arc::new(policy)),
            source: source.map(Path::to_owned),
            seen: Mutex::new(seen),
            status: Mutex::new(status),
        })
    }

    pub fn get(&self) -> Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn status(&self) -> PolicyStatus {
        lock(&self.status).clone()
    }

    pub fn set_warnings(&self, warnings: Vec<String>) {
        lock(&self.status).warnings = warnings;
    }

    /// True when the file differs from the version last read.
    pub fn changed_on_disk(&self) -> bool {
        let Some(path) = &self.source else {
            return false;
        };
        let now = stamp(path);
        *lock(&self.seen) != now
    }

    /// Reads the file again. `Ok(None)`: there is no file (built-in policy). On error
    /// the policy in force stays, and the error is kept for `belay status`.
    pub fn reload(&self) -> Result<Option<Arc<Policy>>, PolicyError> {
        let Some(path) = &self.source else {
            return Ok(None);
        };
        let before = stamp(path);
        *lock(&self.seen) = before;
        let mut status = lock(&self.status);
        match Policy::load(path) {
            Ok(policy) => {
                let policy = Arc::new(policy);
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = policy.clone();
                status.subjects = policy.subjects.iter().map(|s| s.name.clone()).collect();
                status.loaded_unix_ms = unix_ms();
                status.reloads += 1;
                status.last_error = None;
                Ok(Some(policy))
            }
            Err(e) => {
                status.failed_reloads += 1;
                status.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "version: 1\nsubjects:\n  - name: a\n    owner: o\n    default: ask\n";
    const OTHER: &str = "version: 1\nsubjects:\n  - name: b\n    owner: o\n    default: deny\n";

    fn fallback() -> Policy {
        Policy::standalone_default(
            std::time::Duration::from_secs(60),
            crate::kernel::Verdict::Deny,
        )
    }

    #[test]
    fn bad_edit_keeps_the_policy_in_force_and_reports_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let live = LivePolicy::load(Some(&path), fallback()).unwrap();
        assert!(!live.changed_on_disk());
        assert_eq!(live.get().subjects[0].name, "a");

        std::fs::write(&path, "version: 1\nsubjects:\n  - name: a\n    ownr: o\n").unwrap();
        assert!(live.changed_on_disk());
        let err = live.reload().unwrap_err().to_string();
        assert!(err.contains("policy.yaml:4"), "{err}");
        assert!(!live.changed_on_disk(), "the bad version is not read again");
        assert_eq!(
            live.get().subjects[0].name,
            "a",
            "old policy still in force"
        );
        let st = live.status();
        assert_eq!((st.reloads, st.failed_reloads), (0, 1));
        assert_eq!(st.last_error.as_deref(), Some(err.as_str()));

        std::fs::write(&path, OTHER).unwrap();
        assert!(live.changed_on_disk());
        let p = live.reload().unwrap().unwrap();
        assert_eq!(p.subjects[0].name, "b");
        assert_eq!(live.get().subjects[0].name, "b");
        let st = live.status();
        assert_eq!((st.reloads, st.failed_reloads), (1, 1));
        assert_eq!(st.last_error, None);
        assert_eq!(st.subjects, vec!["b".to_string()]);
    }

    #[test]
    fn a_file_that_does_not_load_at_start_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "subjects: [").unwrap();
        assert!(LivePolicy::load(Some(&path), fallback()).is_err());
        let missing = dir.path().join("missing.yaml");
        assert!(LivePolicy::load(Some(&missing), fallback()).is_err());
    }

    #[test]
    fn without_a_file_the_fallback_is_used_and_nothing_reloads() {
        let live = LivePolicy::load(None, fallback()).unwrap();
        assert_eq!(live.get().subjects[0].name, "enrolled");
        assert!(!live.changed_on_disk());
        assert!(live.reload().unwrap().is_none());
    }
}
