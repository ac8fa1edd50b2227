//! What reviewers read besides pending requests, and the one change they make besides
//! deciding: the grants in force and revoking one, the earlier decisions on the same
//! action, the approvals counted towards a quorum.

use std::time::SystemTime;

use belay_proto::domain::{Identity, Reason, Request, RequestId};

use super::{ApprovalError, Approvals, Grant, Revocation, Revoked, Store, Vote};

/// At most this many grants are listed as in force.
pub const MAX_GRANTS_LISTED: usize = 500;

impl<S: Store> Approvals<S> {
    /// The grants in force at `now` (not expired, not revoked), whatever host, agent or
    /// action they cover, newest first, at most [`MAX_GRANTS_LISTED`]. A grant's id is
    /// its `from_request`.
    pub async fn grants_in_force(&self, now: SystemTime) -> Result<Vec<Grant>, ApprovalError> {
        Ok(self.store.grants_in_force(now, MAX_GRANTS_LISTED).await?)
    }

    /// Ends the grant that the decision on request `id` created: from `now` on it settles
    /// nothing, and later requests for its action wait for a person again. Recorded with
    /// `reviewer`, `now` and `reason`, and in the audit log (`grant_revoked`) in the same
    /// transaction. Returns the grant as it was. An unknown, expired or already revoked
    /// grant is an error that says which, and changes nothing.
    ///
    /// Whether `reviewer` may revoke (the reviewer role) is the caller's to check.
    pub async fn revoke_grant(
        &self,
        id: &RequestId,
        reviewer: Identity,
        reason: Reason,
        now: SystemTime,
    ) -> Result<Grant, ApprovalError> {
        let revocation = Revocation {
            reviewer: reviewer.canonical(),
            reason,
            at: now,
        };
        match self.store.revoke_grant(id, revocation.clone()).await? {
            Revoked::Now(grant) => {
                tracing::info!(grant = %id, reviewer = %revocation.reviewer, "grant revoked");
                Ok(grant)
            }
            Revoked::NotFound => Err(ApprovalError::GrantNotFound(id.clone())),
            Revoked::Expired(grant) => Err(ApprovalError::GrantExpired {
                id: id.clone(),
                expired_at: grant.expires_at,
            }),
            Revoked::Already(_, earlier) => Err(ApprovalError::GrantAlreadyRevoked {
                id: id.clone(),
                by: earlier.reviewer,
                at: earlier.at,
            }),
        }
    }

    /// The earlier requests from the same host for the same action as `request` (what a
    /// grant compares: for an exec path, argv, cwd and environment; for a connect
    /// address, port and protocol), whatever agent made them: those that have ended,
    /// made before `request` or at the same time, newest first, at most `limit`.
    /// Neither `request` itself nor pending ones.
    pub async fn history(
        &self,
        request: &Request,
        limit: usize,
    ) -> Result<Vec<Request>, ApprovalError> {
        Ok(self.store.history(request, limit).await?)
    }

    /// The approvals counted so far towards the quorum of request `id`, oldest first
    /// (none for an unknown request, or once no quorum is needed).
    pub async fn votes(&self, id: &RequestId) -> Result<Vec<Vote>, ApprovalError> {
        Ok(self.store.votes(id).await?)
    }
}
