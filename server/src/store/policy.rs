//! The fleet policy as the store keeps it: every pushed version, each appended to the
//! audit log in the same transaction (kind `policy`, with the version, the SHA-256 and
//! who pushed it; not the text, which can be a megabyte).

use std::time::SystemTime;

use belay_proto::domain::{Identity, PolicyText, Reason};

use super::StoreError;
use super::columns::{from_nanos, nanos};
use crate::audit;

/// A new version of the fleet policy, before the store numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPolicy {
    pub text: PolicyText,
    pub pushed_by: Identity,
    pub reason: Reason,
    pub pushed_at: SystemTime,
}

/// A stored version of the fleet policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    /// 1 for the first push, one more for each after it, across replicas.
    pub version: u64,
    pub text: PolicyText,
    /// Lower-case hex SHA-256 of the text.
    pub sha256: String,
    pub pushed_by: Identity,
    pub reason: Reason,
    pub pushed_at: SystemTime,
}

impl StoredPolicy {
    pub(crate) fn numbered(version: u64, new: NewPolicy) -> Self {
        Self {
            version,
            sha256: new.text.sha256(),
            text: new.text,
            pushed_by: new.pushed_by,
            reason: new.reason,
            pushed_at: new.pushed_at,
        }
    }
}

/// The audit record of a push. Not tied to a request: its request id is empty.
pub(crate) fn audit_event(policy: &StoredPolicy) -> audit::Event {
    let at = nanos(policy.pushed_at);
    let body = serde_json::json!({
        "kind": "policy",
        "at": at,
        "request_id": "",
        "version": policy.version,
        "sha256": policy.sha256,
        "size": policy.text.len(),
        "pushed_by": policy.pushed_by.as_str(),
        "reason": policy.reason.as_str(),
    });
    audit::Event {
        at,
        kind: "policy",
        request_id: String::new(),
        body: body.to_string(),
    }
}

/// A stored row back into a policy, refusing one that no longer matches its digest.
pub(super) fn decode(
    version: i64,
    text: String,
    sha256: &str,
    pushed_by: String,
    reason: String,
    pushed_at: i64,
) -> Result<StoredPolicy, StoreError> {
    let bad = |problem: &dyn std::fmt::Display| {
        StoreError::Backend(
            format!("the stored fleet policy version {version} is damaged: {problem}").into(),
        )
    };
    let version = u64::try_from(version).map_err(|err| bad(&err))?;
    let text = PolicyText::new(text).map_err(|err| bad(&err))?;
    if text.sha256() != sha256 {
        return Err(bad(&"its text does not match its SHA-256"));
    }
    Ok(StoredPolicy {
        version,
        sha256: sha256.to_owned(),
        text,
        pushed_by: Identity::new(pushed_by).map_err(|err| bad(&err))?,
        reason: Reason::new(reason).map_err(|err| bad(&err))?,
        pushed_at: from_nanos(pushed_at),
    })
}

/// One admin's push of a policy text while pushes need a quorum (`--quorum` above 1):
/// it counts towards that text (by digest) being stored and sent to the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVote {
    /// SHA-256 (hex) of the text pushed.
    pub sha256: String,
    /// In the form identities are compared in (one vote per person).
    pub admin: Identity,
    pub reason: Reason,
    pub at: SystemTime,
}

/// The audit record of an admin's vote for a policy text.
pub(crate) fn vote_audit_event(vote: &PolicyVote) -> audit::Event {
    let at = nanos(vote.at);
    let body = serde_json::json!({
        "kind": "policy_vote",
        "at": at,
        "request_id": "",
        "sha256": vote.sha256,
        "admin": vote.admin.as_str(),
        "reason": vote.reason.as_str(),
    });
    audit::Event {
        at,
        kind: "policy_vote",
        request_id: String::new(),
        body: body.to_string(),
    }
}

/// A stored vote row back into a vote.
pub(super) fn decode_vote(
    sha256: String,
    admin: String,
    reason: String,
    at: i64,
) -> Result<PolicyVote, StoreError> {
    let bad = |problem: &dyn std::fmt::Display| {
        StoreError::Backend(format!("a stored policy vote is damaged: {problem}").into())
    };
    Ok(PolicyVote {
        sha256,
        admin: Identity::new(admin).map_err(|err| bad(&err))?,
        reason: Reason::new(reason).map_err(|err| bad(&err))?,
        at: from_nanos(at),
    })
}
