//! What the approval rules answer: the outcomes of submitting and deciding, and the
//! errors a caller can get (each a rule that said no, or the store failing).

use std::time::SystemTime;

use belay_proto::domain::{HostName, Identity, Request, RequestId, RequestState};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no request with id {0}")]
    NotFound(RequestId),
    #[error("request {id} is already {state}")]
    AlreadyResolved { id: RequestId, state: RequestState },
    #[error("{reviewer} owns the agent that made request {id} and may not approve it")]
    SelfApproval { id: RequestId, reviewer: Identity },
    #[error("request id {0} belongs to another agent")]
    IdOfAnotherAgent(RequestId),
    #[error(
        "request id {id} is not one of host {host}: a host's request ids start with its \
         name and a colon ({host}:...)"
    )]
    IdNotOfHost { id: RequestId, host: HostName },
    #[error("request id {0} was already submitted with different content")]
    IdReused(RequestId),
    #[error("{reviewer} has already approved request {id}; it needs {quorum} different reviewers")]
    AlreadyVoted {
        id: RequestId,
        reviewer: Identity,
        quorum: u32,
    },
    #[error("a kill applies to this request only: its scope must be once")]
    ScopedKill,
    #[error("no grant with id {0}: no decision on that request created one")]
    GrantNotFound(RequestId),
    #[error("grant {id} expired at {} and can no longer be revoked", unix_secs(*expired_at))]
    GrantExpired {
        id: RequestId,
        expired_at: SystemTime,
    },
    #[error("grant {id} was already revoked by {by} at {}", unix_secs(*at))]
    GrantAlreadyRevoked {
        id: RequestId,
        by: Identity,
        at: SystemTime,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn unix_secs(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    format!("unix time {secs}")
}

/// Outcome of [`super::Approvals::submit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// A new request; its decision will be delivered to the agent's session.
    New(Request),
    /// A resubmission; the stored request, which may be final already.
    Existing(Request),
}

impl Submitted {
    pub fn request(&self) -> &Request {
        match self {
            Self::New(request) | Self::Existing(request) => request,
        }
    }
}

/// Outcome of [`super::Approvals::decide_counted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The request after the decision: still pending while an approval waits for its
    /// quorum.
    pub request: Request,
    /// Distinct approvals counted (1 without a quorum).
    pub approvals: u32,
    pub quorum: u32,
}
