//! What the store keeps besides requests: one-time enrollment tokens, scoped grants
//! and their revocations, quorum votes, and the changes other server processes make.

use std::time::SystemTime;

use belay_proto::domain::{HostName, Identity, Name, Reason, Request, RequestId, Scope, Verdict};

use crate::audit;
use crate::epoch::nanos;

/// A one-time token an agent enrolls with. Only its SHA-256 is stored: whoever reads the
/// database cannot enroll with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollToken {
    pub hash: [u8; 32],
    /// The only host name that may enroll with it; `None`: any.
    pub host: Option<HostName>,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
}

/// What a scoped grant covers: an action (by its digest, see `approvals::grants`) on a
/// host, by one watched agent or by any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GrantKey {
    pub host: HostName,
    /// `None`: any watched agent on the host.
    pub agent: Option<Name>,
    /// Hex SHA-256 of the action's canonical form.
    pub action: String,
}

/// A standing decision: requests with the same key, made before `expires_at`, get
/// `verdict` without anyone being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub key: GrantKey,
    pub verdict: Verdict,
    pub reviewer: Identity,
    pub reason: Reason,
    /// The request whose decision created the grant.
    pub from_request: RequestId,
    pub scope: Scope,
    pub granted_at: SystemTime,
    pub expires_at: SystemTime,
}

impl Grant {
    /// The audit record of this grant, which a decision on `request` created.
    pub(crate) fn audit_event(&self, request: &Request) -> audit::Event {
        let at = nanos(self.granted_at);
        let mut body = audit::request_body(request, "granted", at);
        body.insert("reviewer".into(), self.reviewer.as_str().into());
        body.insert("verdict".into(), self.verdict.as_str().into());
        body.insert("reason".into(), self.reason.as_str().into());
        body.insert("scope".into(), self.scope.as_str().into());
        body.insert("expires_at".into(), nanos(self.expires_at).into());
        audit::request_event(request, "granted", at, body)
    }
}

/// Who ended a grant before it expired, when and why. A revoked grant settles nothing
/// more and is no longer in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub reviewer: Identity,
    pub reason: Reason,
    pub at: SystemTime,
}

impl Revocation {
    /// The audit record (kind `grant_revoked`) of this revocation of `grant`, which a
    /// decision on `request` created. `reviewer` and `reason` are the revocation's; the
    /// grant's own are `granted_by` and `grant_reason`.
    pub(crate) fn audit_event(&self, grant: &Grant, request: &Request) -> audit::Event {
        let at = nanos(self.at);
        let mut body = audit::request_body(request, "grant_revoked", at);
        body.insert("reviewer".into(), self.reviewer.as_str().into());
        body.insert("reason".into(), self.reason.as_str().into());
        body.insert("granted_by".into(), grant.reviewer.as_str().into());
        body.insert("grant_reason".into(), grant.reason.as_str().into());
        body.insert("verdict".into(), grant.verdict.as_str().into());
        body.insert("scope".into(), grant.scope.as_str().into());
        body.insert("granted_at".into(), nanos(grant.granted_at).into());
        body.insert("expires_at".into(), nanos(grant.expires_at).into());
        audit::request_event(request, "grant_revoked", at, body)
    }
}

/// Result of [`super::GrantStore::revoke_grant`]. Only [`Revoked::Now`] changed
/// anything (and appended an audit record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// The grant was in force and is now revoked; this is the grant.
    Now(Grant),
    /// No grant was created by that request.
    NotFound,
    /// The grant had expired at the revocation's time already.
    Expired(Grant),
    /// The grant had been revoked already, by this revocation.
    Already(Grant, Revocation),
}

impl Revoked {
    /// What revoking `stored` (a grant as read, with its revocation) at `at` answers:
    /// [`Revoked::Now`] if it is in force, which the caller then makes true by revoking
    /// it; otherwise the refusal, which changes nothing.
    pub(crate) fn would_be(stored: Option<(Grant, Option<Revocation>)>, at: SystemTime) -> Self {
        match stored {
            None => Self::NotFound,
            Some((grant, Some(earlier))) => Self::Already(grant, earlier),
            Some((grant, None)) if grant.expires_at <= at => Self::Expired(grant),
            Some((grant, None)) => Self::Now(grant),
        }
    }
}

/// One reviewer's approval of a request that needs several (quorum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    pub reviewer: Identity,
    pub reason: Reason,
    pub scope: Scope,
    pub at: SystemTime,
}

impl Vote {
    /// The audit record of this approval, counted towards the quorum of `request`.
    pub(crate) fn audit_event(&self, request: &Request) -> audit::Event {
        let at = nanos(self.at);
        let mut body = audit::request_body(request, "voted", at);
        body.insert("reviewer".into(), self.reviewer.as_str().into());
        body.insert("reason".into(), self.reason.as_str().into());
        body.insert("scope".into(), self.scope.as_str().into());
        audit::request_event(request, "voted", at, body)
    }
}

/// Result of [`super::VoteStore::add_vote`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Voted {
    /// Counted; every approval of the request so far, oldest first.
    Added(Vec<Vote>),
    /// This reviewer's approval was already counted; nothing changed.
    AlreadyVoted(Vec<Vote>),
}

/// A change made by another server process sharing the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteChange {
    Submitted(RequestId),
    Resolved(RequestId),
}
