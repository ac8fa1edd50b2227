//! The policy in force, and replacing it: on SIGHUP or when its file changes, or, for an
//! agent run with `--policy-from-server`, when belay-server sends a new fleet policy. A
//! file or a text that does not load leaves the policy in force untouched.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{SystemTime, UNIX_EPOCH},
};

pub use belay_agent_api::PolicyStatus;

use crate::{
    policy::{Policy, PolicyError},
    server_policy::{self, Saved, StateError},
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

/// Why a policy from belay-server was not installed.
#[derive(Debug, thiserror::Error)]
pub enum ServerPolicyError {
    #[error(transparent)]
    Parse(#[from] PolicyError),
    #[error("cannot save the policy: {0}")]
    State(#[from] StateError),
    #[error("this agent uses a local policy (run without --policy-from-server)")]
    NotAccepted,
}

/// What [`LivePolicy::install_from_server`] did.
#[derive(Debug)]
pub enum Installed {
    /// Now in force and saved; the kernel must be told.
    New(Arc<Policy>),
    /// This version was in force already (a reconnect sends it again).
    Unchanged,
}

/// The name a server policy's errors give as their file: `belay-server policy version
/// N:LINE:COL: problem`.
fn server_source(version: u64) -> PathBuf {
    PathBuf::from(format!("belay-server policy version {version}"))
}

pub struct LivePolicy {
    current: RwLock<Arc<Policy>>,
    source: Option<PathBuf>,
    /// The file as last read, loaded or not, so one bad edit is reported once.
    seen: Mutex<Option<Stamp>>,
    status: Mutex<PolicyStatus>,
    /// Where the last policy from belay-server is saved; `None`: this agent does not
    /// take policies from the server.
    server_state: Option<PathBuf>,
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
            server_state: None,
        })
    }

    /// For `--policy-from-server`: starts with the policy last received from the server
    /// and saved at `state`, or with `fallback` until the server sends one. A saved
    /// policy that no longer loads is an error, as a bad `--policy` file is.
    pub fn from_server(state: &Path, fallback: Policy) -> Result<Self, ServerPolicyError> {
        let saved = server_policy::load(state)?;
        let (policy, source, version, sha256) = match saved {
            Some(saved) => {
                let source = server_source(saved.version);
                let policy = Policy::parse(&saved.text, &source)?;
                (
                    policy,
                    Some(format!("{} (saved)", source.display())),
                    Some(saved.version),
                    Some(saved.sha256),
                )
            }
            None => (fallback, None, None, None),
        };
        let status = PolicyStatus {
            source,
            subjects: policy.subjects.iter().map(|s| s.name.clone()).collect(),
            loaded_unix_ms: unix_ms(),
            server_version: version,
            server_sha256: sha256,
            ..PolicyStatus::default()
        };
        Ok(Self {
            current: RwLock::new(Arc::new(policy)),
            source: None,
            seen: Mutex::new(None),
            status: Mutex::new(status),
            server_state: Some(state.to_owned()),
        })
    }

    /// Whether policies from belay-server are installed (`--policy-from-server`).
    pub fn takes_server_policy(&self) -> bool {
        self.server_state.is_some()
    }

    /// Installs version `version` of the fleet policy: parsed with the same parser as a
    /// file, saved, then put in force, in that order, so that on any error the policy in
    /// force (and the saved one) stay as they were; the error is kept for `belay status`.
    pub fn install_from_server(
        &self,
        version: u64,
        text: &str,
    ) -> Result<Installed, ServerPolicyError> {
        let Some(state) = &self.server_state else {
            return Err(ServerPolicyError::NotAccepted);
        };
        let saved = Saved::new(version, text.to_owned());
        let mut status = lock(&self.status);
        if status.server_version == Some(version)
            && status.server_sha256.as_deref() == Some(saved.sha256.as_str())
        {
            return Ok(Installed::Unchanged);
        }
        let source = server_source(version);
        let result = Policy::parse(text, &source)
            .map_err(ServerPolicyError::from)
            .and_then(|policy| {
                server_policy::save(state, &saved)?;
                Ok(policy)
            });
        match result {
            Ok(policy) => {
                let policy = Arc::new(policy);
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = policy.clone();
                status.source = Some(source.display().to_string());
                status.subjects = policy.subjects.iter().map(|s| s.name.clone()).collect();
                status.loaded_unix_ms = unix_ms();
                status.reloads += 1;
                status.last_error = None;
                status.server_version = Some(version);
                status.server_sha256 = Some(saved.sha256);
                Ok(Installed::New(policy))
            }
            Err(e) => {
                status.failed_reloads += 1;
                status.last_error = Some(e.to_string());
                Err(e)
            }
        }
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

    const BAD: &str = "version: 1\nsubjects:\n  - name: a\n    ownr: o\n";

    #[test]
    fn a_server_policy_applies_and_is_saved_and_a_restart_loads_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(server_policy::FILE_NAME);
        let live = LivePolicy::from_server(&state, fallback()).unwrap();
        assert!(live.takes_server_policy());
        assert_eq!(
            live.get().subjects[0].name,
            "enrolled",
            "built-in until sent"
        );
        assert_eq!(live.status().server_version, None);

        let Installed::New(policy) = live.install_from_server(3, GOOD).unwrap() else {
            panic!("a new version must be installed");
        };
        assert_eq!(policy.subjects[0].name, "a");
        assert_eq!(live.get().subjects[0].name, "a");
        let st = live.status();
        assert_eq!(st.server_version, Some(3));
        assert_eq!(st.source.as_deref(), Some("belay-server policy version 3"));
        assert!(matches!(
            live.install_from_server(3, GOOD).unwrap(),
            Installed::Unchanged
        ));

        // A restart, with no server in sight: the saved version is enforced.
        drop(live);
        let restarted = LivePolicy::from_server(&state, fallback()).unwrap();
        assert_eq!(restarted.get().subjects[0].name, "a");
        let st = restarted.status();
        assert_eq!(st.server_version, Some(3));
        assert_eq!(
            st.source.as_deref(),
            Some("belay-server policy version 3 (saved)")
        );
    }

    #[test]
    fn a_bad_server_policy_keeps_the_old_one_in_force_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(server_policy::FILE_NAME);
        let live = LivePolicy::from_server(&state, fallback()).unwrap();
        live.install_from_server(1, GOOD).unwrap();

        let err = live.install_from_server(2, BAD).unwrap_err().to_string();
        assert!(
            err.starts_with("belay-server policy version 2:4:"),
            "errors name the version, line and column: {err}"
        );
        assert_eq!(live.get().subjects[0].name, "a", "old policy in force");
        let st = live.status();
        assert_eq!(st.server_version, Some(1));
        assert_eq!(st.last_error.as_deref(), Some(err.as_str()));
        assert_eq!(st.failed_reloads, 1);
        let saved = server_policy::load(&state).unwrap().unwrap();
        assert_eq!((saved.version, saved.text.as_str()), (1, GOOD));

        // The next good version clears the error.
        live.install_from_server(3, OTHER).unwrap();
        assert_eq!(live.get().subjects[0].name, "b");
        assert_eq!(live.status().last_error, None);
    }

    #[test]
    fn a_saved_policy_that_no_longer_parses_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(server_policy::FILE_NAME);
        server_policy::save(&state, &Saved::new(7, BAD.into())).unwrap();
        let err = LivePolicy::from_server(&state, fallback())
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("belay-server policy version 7:"), "{err}");
    }

    #[test]
    fn an_agent_with_a_local_policy_does_not_accept_the_servers() {
        let live = LivePolicy::load(None, fallback()).unwrap();
        assert!(!live.takes_server_policy());
        assert!(matches!(
            live.install_from_server(1, GOOD),
            Err(ServerPolicyError::NotAccepted)
        ));
        assert_eq!(live.get().subjects[0].name, "enrolled");
    }

    #[test]
    fn without_a_file_the_fallback_is_used_and_nothing_reloads() {
        let live = LivePolicy::load(None, fallback()).unwrap();
        assert_eq!(live.get().subjects[0].name, "enrolled");
        assert!(!live.changed_on_disk());
        assert!(live.reload().unwrap().is_none());
    }
}
