//! The fleet policy in force on this server process, and what each agent made of it.
//!
//! Pushes are stored first ([`PolicyStore::push_policy`]: numbered, audited, announced
//! to the other replicas), then published on a watch channel that every agent session
//! follows: a session sends the current version right after the hello, then every newer
//! one. Another replica's push arrives through [`PolicyStore::remote_policy_changes`]
//! and is read back from the store, so every replica publishes exactly what is stored.
//!
//! Reports are kept in memory per host: they describe live sessions, which belong to
//! this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use belay_proto::domain::{HostName, PolicyReport};
use belay_proto::v1;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::{NewPolicy, PolicyStore, PolicyVote, StoreError, StoredPolicy};

/// With a quorum, the admins' pushes of one text count together only within this
/// window: an approval given long ago, for a fleet that has moved on, is not a vote for
/// a push today.
pub const VOTE_WINDOW: Duration = Duration::from_secs(3600);

/// Outcome of [`FleetPolicy::propose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proposed {
    /// Stored as a new version and sent to the agents.
    Pushed {
        policy: StoredPolicy,
        approvals: u32,
    },
    /// Counted; the text needs more distinct admins to push it.
    Waiting { approvals: u32, quorum: u32 },
}

/// How often a replica reads the stored fleet policy besides the notices of the others.
const RECHECK: Duration = Duration::from_secs(60);

/// A stored version with its wire form built once: the text is shared by every
/// session's message (`bytes::Bytes`), not copied per agent.
#[derive(Debug)]
pub struct Published {
    pub policy: StoredPolicy,
    pub wire: v1::PolicyUpdate,
}

impl Published {
    fn new(policy: StoredPolicy) -> Self {
        let wire = v1::PolicyUpdate {
            version: policy.version,
            sha256: policy.sha256.clone(),
            text: prost::bytes::Bytes::copy_from_slice(policy.text.as_str().as_bytes()),
        };
        Self { policy, wire }
    }
}

/// An agent's last report, as `ListAgents` and `GetPolicy` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPolicyState {
    pub report: PolicyReport,
    pub reported_at: SystemTime,
}

/// The fleet policy of this server process; one per `serve`.
#[derive(Debug)]
pub struct FleetPolicy {
    current: watch::Sender<Option<Arc<Published>>>,
    reports: Mutex<HashMap<HostName, AgentPolicyState>>,
}

impl Default for FleetPolicy {
    fn default() -> Self {
        Self {
            current: watch::channel(None).0,
            reports: Mutex::default(),
        }
    }
}

impl FleetPolicy {
    /// The version in force (`None` until one is pushed or loaded), then every newer
    /// one.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Published>>> {
        self.current.subscribe()
    }

    pub fn current(&self) -> Option<Arc<Published>> {
        self.current.borrow().clone()
    }

    /// Publishes `policy` unless a version at least as new is published already (a
    /// replica's notice and a reload can arrive in either order).
    fn publish(&self, policy: StoredPolicy) -> bool {
        self.current.send_if_modified(|current| {
            if current
                .as_ref()
                .is_some_and(|c| c.policy.version >= policy.version)
            {
                return false;
            }
            tracing::info!(version = policy.version, sha256 = %policy.sha256, "fleet policy in force");
            *current = Some(Arc::new(Published::new(policy)));
            true
        })
    }

    /// Stores a new version and sends it to the agents connected here (the store tells
    /// the other replicas).
    /// A push under a quorum of `quorum` admins (`--quorum`, the same as for requests):
    /// with 1, [`FleetPolicy::push`]; above, the push counts as `new.pushed_by`'s vote
    /// for that text, and the text is stored and sent once `quorum` distinct admins
    /// (compared as identities are, see `Identity::canonical`) pushed it within
    /// [`VOTE_WINDOW`]. The stored version names them all; its votes are used up.
    pub async fn propose<S: PolicyStore>(
        &self,
        store: &S,
        mut new: NewPolicy,
        quorum: u32,
    ) -> Result<Proposed, StoreError> {
        if quorum <= 1 {
            let policy = self.push(store, new).await?;
            return Ok(Proposed::Pushed {
                policy,
                approvals: 1,
            });
        }
        new.pushed_by = new.pushed_by.canonical();
        let vote = PolicyVote {
            sha256: new.text.sha256(),
            admin: new.pushed_by.clone(),
            reason: new.reason.clone(),
            at: new.pushed_at,
        };
        let since = new
            .pushed_at
            .checked_sub(VOTE_WINDOW)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let votes = store.add_policy_vote(vote, since).await?;
        let approvals = u32::try_from(votes.len()).unwrap_or(u32::MAX);
        if approvals < quorum {
            tracing::info!(sha256 = %new.text.sha256(), admin = %new.pushed_by, approvals, quorum, "fleet policy push counted, waiting for more admins");
            return Ok(Proposed::Waiting { approvals, quorum });
        }
        let admins: Vec<&str> = votes.iter().map(|v| v.admin.as_str()).collect();
        new.reason = belay_proto::domain::Reason::new(format!(
            "{} (pushed by {})",
            new.reason,
            admins.join(", ")
        ))
        .unwrap_or(new.reason);
        let policy = self.push(store, new).await?;
        Ok(Proposed::Pushed { policy, approvals })
    }

    pub async fn push<S: PolicyStore>(
        &self,
        store: &S,
        new: NewPolicy,
    ) -> Result<StoredPolicy, StoreError> {
        let stored = store.push_policy(new).await?;
        tracing::info!(version = stored.version, sha256 = %stored.sha256, pushed_by = %stored.pushed_by, size = stored.text.len(), "fleet policy pushed");
        self.publish(stored.clone());
        Ok(stored)
    }

    /// Publishes the newest stored version, if any is newer than the one published.
    pub async fn refresh<S: PolicyStore>(&self, store: &S) -> Result<(), StoreError> {
        if let Some(policy) = store.current_policy().await? {
            self.publish(policy);
        }
        Ok(())
    }

    /// Loads the stored version, then follows other replicas' pushes until `stop`.
    /// Without a shared store, only loads. A notice missed while the store's listening
    /// connection was down is caught up by reading the store every [`RECHECK`].
    pub async fn follow<S: PolicyStore>(&self, store: &S, stop: CancellationToken) {
        // Subscribed before the first read, so that a push in between is not missed.
        let changes = store.remote_policy_changes();
        if let Err(err) = self.refresh(store).await {
            tracing::error!(error = %err, "cannot read the stored fleet policy");
        }
        let Some(mut changes) = changes else {
            return;
        };
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recheck.tick().await;
        loop {
            let version = tokio::select! {
                () = stop.cancelled() => return,
                _ = recheck.tick() => {
                    if let Err(err) = self.refresh(store).await {
                        tracing::warn!(error = %err, "cannot read the stored fleet policy");
                    }
                    continue;
                }
                version = changes.recv() => version,
            };
            let Some(version) = version else {
                tracing::error!("the store stopped reporting other replicas' policy pushes");
                return;
            };
            if self.current().is_some_and(|c| c.policy.version >= version) {
                continue;
            }
            if let Err(err) = self.refresh(store).await {
                tracing::error!(version, error = %err, "cannot read a fleet policy another replica pushed");
            }
        }
    }

    /// Records what the agent of `host` did with a version.
    pub fn report(&self, host: &HostName, report: PolicyReport, at: SystemTime) {
        self.lock().insert(
            host.clone(),
            AgentPolicyState {
                report,
                reported_at: at,
            },
        );
    }

    /// A new session of `host` starts: its previous answers describe another session.
    pub fn forget(&self, host: &HostName) {
        self.lock().remove(host);
    }

    pub fn state(&self, host: &HostName) -> Option<AgentPolicyState> {
        self.lock().get(host).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<HostName, AgentPolicyState>> {
        // Every critical section is a single map operation: a poisoned lock still guards
        // a valid map.
        self.reports.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AgentPolicyState {
    pub fn to_wire(&self) -> v1::AgentPolicyStatus {
        v1::AgentPolicyStatus {
            version: self.report.version,
            outcome: v1::PolicyOutcome::from(self.report.outcome) as i32,
            message: self.report.message.clone(),
            reported_at: Some(self.reported_at.into()),
        }
    }
}

/// The wire form of a stored version; the text only when asked for.
pub fn fleet_policy_message(policy: &StoredPolicy, include_text: bool) -> v1::FleetPolicy {
    v1::FleetPolicy {
        version: policy.version,
        sha256: policy.sha256.clone(),
        pushed_by: policy.pushed_by.as_str().to_owned(),
        pushed_at: Some(policy.pushed_at.into()),
        reason: policy.reason.as_str().to_owned(),
        text: if include_text {
            policy.text.as_str().as_bytes().to_vec()
        } else {
            Vec::new()
        },
        size: u32::try_from(policy.text.len()).unwrap_or(u32::MAX),
    }
}
