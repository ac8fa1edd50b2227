//! The approval rules, independent of any transport.
//!
//! A request goes pending -> approved | denied | expired | cancelled, and never leaves a
//! final state. The rules:
//! - a decided request cannot be decided again;
//! - the identity that owns the requesting agent can never approve its own request
//!   (denying it is allowed: it only makes things safer);
//! - a request still pending at its deadline ends as expired with its default verdict,
//!   either through [`Approvals::expire_due`] or when someone tries to decide it late;
//! - the same request id submitted again by the same agent with the same content is the
//!   same request; an id cannot be reused by another agent or for another action.
//!
//! Time is always passed in (`now`), so every rule is testable without sleeping.
//!
//! The methods that change a request (`submit`, `decide`, `withdraw`, `expire_due`) are
//! not cancel safe: a future dropped after the store recorded a resolution but before
//! the decision went to the agent's session leaves the agent to learn it only when it
//! resubmits. Run them to completion (on a task of their own when the caller may go
//! away, as a gRPC handler does).

mod outbox;
mod store;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::SystemTime;

use belay_proto::domain::{
    Decision, Hello, Identity, NewRequest, Outcome, Reason, Request, RequestId, RequestState,
    Resolution, ReviewerDecision, Verdict, Withdraw,
};
use tokio::sync::{Notify, mpsc};

pub use outbox::{AgentIdentity, AgentSession};
pub use store::{AuditOptions, Inserted, MemoryStore, Resolved, SqliteStore, Store, StoreError};

use outbox::Outbox;

const EXPIRED_REASON: &str = "no decision before the deadline";

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
    #[error("request id {0} was already submitted with different content")]
    IdReused(RequestId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Outcome of [`Approvals::submit`].
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

/// The approval service core: rules over a [`Store`], plus delivery of decisions to the
/// agents' sessions.
#[derive(Debug)]
pub struct Approvals<S = MemoryStore> {
    store: S,
    outbox: Arc<Outbox>,
    deadlines_changed: Notify,
}

impl<S: Store> Approvals<S> {
    pub fn new(store: S) -> Self {
        Self {
            store,
            outbox: Arc::default(),
            deadlines_changed: Notify::new(),
        }
    }

    /// Registers an agent session: decisions on requests of `hello.host` go to the
    /// returned receiver until the session is dropped or replaced by a newer one.
    pub fn attach_agent(&self, hello: &Hello) -> (AgentSession, mpsc::UnboundedReceiver<Decision>) {
        let identity = AgentIdentity {
            host: hello.host.clone(),
            owner: hello.owner.clone(),
        };
        self.outbox.attach(identity)
    }

    pub async fn submit(
        &self,
        agent: &AgentIdentity,
        submitted: NewRequest,
        now: SystemTime,
    ) -> Result<Submitted, ApprovalError> {
        // The host names each watched agent's owner; without one, the session's owner.
        let owner = submitted
            .owner
            .clone()
            .unwrap_or_else(|| agent.owner.clone());
        let request = Request::new(submitted.clone(), agent.host.clone(), owner, now);
        match self.store.insert_if_absent(request).await? {
            Inserted::Existing(existing) => {
                if existing.host != agent.host {
                    return Err(ApprovalError::IdOfAnotherAgent(submitted.id));
                }
                if !existing.matches(&submitted) {
                    return Err(ApprovalError::IdReused(submitted.id));
                }
                Ok(Submitted::Existing(existing))
            }
            Inserted::New(request) => {
                tracing::info!(id = %request.id, host = %request.host, owner = %request.owner, "request pending");
                if request.deadline <= now {
                    // Arrived too late to be decided by anyone: settle it right away so
                    // the agent is not left waiting for the expiry sweep.
                    let expired = self.expire(&request.id, now).await?;
                    return Ok(Submitted::New(expired));
                }
                self.deadlines_changed.notify_one();
                Ok(Submitted::New(request))
            }
        }
    }

    pub async fn decide(
        &self,
        decision: ReviewerDecision,
        now: SystemTime,
    ) -> Result<Request, ApprovalError> {
        let request = self.get(&decision.request_id).await?;
        if decision.verdict == Verdict::Allow && decision.reviewer == request.owner {
            return Err(ApprovalError::SelfApproval {
                id: request.id,
                reviewer: decision.reviewer,
            });
        }
        if let Some(resolution) = &request.resolution {
            return Err(ApprovalError::AlreadyResolved {
                id: request.id,
                state: resolution.outcome.state(),
            });
        }
        if request.deadline <= now {
            let expired = self.expire(&request.id, now).await?;
            return Err(ApprovalError::AlreadyResolved {
                state: expired.state(),
                id: expired.id,
            });
        }
        let resolution = Resolution {
            outcome: Outcome::Decided {
                verdict: decision.verdict,
                reviewer: decision.reviewer,
            },
            reason: decision.reason,
            resolved_at: now,
        };
        let decided = self.resolve(&request.id, resolution).await?;
        tracing::info!(id = %decided.id, state = %decided.state(), "request decided");
        Ok(decided)
    }

    /// The agent no longer needs a decision (the process is gone). Only the agent that
    /// submitted a request can withdraw it; to others it does not exist.
    pub async fn withdraw(
        &self,
        agent: &AgentIdentity,
        withdraw: Withdraw,
        now: SystemTime,
    ) -> Result<Request, ApprovalError> {
        let request = self.get(&withdraw.request_id).await?;
        if request.host != agent.host {
            return Err(ApprovalError::NotFound(withdraw.request_id));
        }
        let resolution = Resolution {
            outcome: Outcome::Cancelled,
            reason: withdraw.reason,
            resolved_at: now,
        };
        let cancelled = self.resolve(&request.id, resolution).await?;
        tracing::info!(id = %cancelled.id, "request withdrawn by its agent");
        Ok(cancelled)
    }

    /// Ends every pending request whose deadline is at or before `now` with its default
    /// verdict, and returns them.
    pub async fn expire_due(&self, now: SystemTime) -> Result<Vec<Request>, ApprovalError> {
        let mut expired = Vec::new();
        for id in self.store.pending_due(now).await? {
            match self.expire(&id, now).await {
                Ok(request) => expired.push(request),
                // Decided or withdrawn between the listing and now: nothing to expire.
                Err(ApprovalError::AlreadyResolved { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(expired)
    }

    pub async fn get(&self, id: &RequestId) -> Result<Request, ApprovalError> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| ApprovalError::NotFound(id.clone()))
    }

    pub async fn list_pending(&self) -> Result<Vec<Request>, ApprovalError> {
        Ok(self.store.pending().await?)
    }

    pub async fn next_deadline(&self) -> Result<Option<SystemTime>, ApprovalError> {
        Ok(self.store.next_deadline().await?)
    }

    /// Wakes when a request with a new deadline arrives, so the expiry task can sleep
    /// until the earliest deadline instead of polling.
    pub async fn deadlines_changed(&self) {
        self.deadlines_changed.notified().await;
    }

    async fn expire(&self, id: &RequestId, now: SystemTime) -> Result<Request, ApprovalError> {
        let request = self.get(id).await?;
        let resolution = Resolution {
            outcome: Outcome::Expired {
                verdict: request.default_verdict,
            },
            reason: Reason::new(EXPIRED_REASON).expect("constant reason is valid"),
            resolved_at: now,
        };
        let expired = self.resolve(id, resolution).await?;
        tracing::info!(id = %expired.id, verdict = %expired.default_verdict, "request expired");
        Ok(expired)
    }

    /// The only path by which a request changes state; delivers the decision to the
    /// agent when there is one to apply.
    async fn resolve(
        &self,
        id: &RequestId,
        resolution: Resolution,
    ) -> Result<Request, ApprovalError> {
        match self.store.resolve_pending(id, resolution).await? {
            Resolved::Now(request) => {
                self.outbox.deliver(&request);
                Ok(request)
            }
            Resolved::Already(request) => Err(ApprovalError::AlreadyResolved {
                state: request.state(),
                id: request.id,
            }),
            Resolved::NotFound => Err(ApprovalError::NotFound(id.clone())),
        }
    }
}
