//! The approval rules, independent of any transport.
//!
//! A request goes pending -> approved | denied | expired | cancelled, and never leaves a
//! final state. The rules:
//! - a decided request cannot be decided again;
//! - the identity that owns the requesting agent can never approve its own request
//!   (denying it is allowed: it only makes things safer);
//! - a request still pending at its deadline ends as expired with its default verdict,
//!   either through [`Approvals::expire_due`] or when someone tries to decide it late;
//! - request ids are namespaced by host: an agent's ids start with its host name and a
//!   colon (`web-1:...`), so no host can take, or squat ahead of time, an id of another
//!   (host names with a colon cannot own ids at all);
//! - the same request id submitted again by the same agent with the same content is the
//!   same request; an id cannot be reused by another agent or for another action;
//! - with a quorum of N, an approval takes N distinct reviewers (none of them the
//!   owner); a single denial or kill ends the request at once;
//! - a decision with a scope wider than once becomes a grant that settles the same
//!   action for a while (see [`grants`]); a grant never approves a request of its own
//!   reviewer, and a standing denial wins over a standing approval; a reviewer can
//!   revoke a grant in force, which then settles nothing more (see [`reviewing`]).
//!
//! Time is always passed in (`now`), so every rule is testable without sleeping.
//!
//! The methods that change a request (`submit`, `decide`, `withdraw`, `expire_due`) are
//! not cancel safe: a future dropped after the store recorded a resolution but before
//! the decision went to the agent's session leaves the agent to learn it only when it
//! resubmits. Run them to completion (on a task of their own when the caller may go
//! away, as a gRPC handler does).

pub mod grants;
mod outbox;
mod outcomes;
mod reviewing;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_audit;
#[cfg(test)]
mod tests_grants;
#[cfg(test)]
mod tests_identity;
#[cfg(test)]
mod tests_scopes;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::SystemTime;

use belay_proto::domain::{
    Decision, Hello, HostName, Identity, NewRequest, Outcome, Reason, Request, RequestId,
    Resolution, ReviewerDecision, Scope, Verdict, Withdraw,
};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

pub use outbox::{AgentIdentity, AgentSession, ConnectedAgent};
pub use outcomes::{ApprovalError, Decided, Submitted};
pub use reviewing::MAX_GRANTS_LISTED;
// The store's types, where the approval rules' users have always found them.
pub use crate::store::{
    AuditLogStore, EnrollmentStore, GrantStore, PolicyStore, RequestStore, VoteStore,
};
pub use crate::store::{
    AuditOptions, EnrollToken, Grant, GrantKey, Inserted, MemoryStore, RemoteChange, Resolved,
    Revocation, Revoked, SqliteStore, Store, StoreError, Vote, Voted,
};
pub use crate::store::{EnrollOutcome, Enrollment, IssuedCertificate, token_id};
pub use crate::store::{NewPolicy, PolicyVote, StoredPolicy};
pub use crate::store::{PostgresStore, is_postgres_url};

use outbox::Outbox;

const EXPIRED_REASON: &str = "no decision before the deadline";
/// Changes kept for slow watchers before they lag (and must list pending again).
const CHANGES_BACKLOG: usize = 4096;

/// The approval service core: rules over a [`Store`], plus delivery of decisions to the
/// agents' sessions.
#[derive(Debug)]
pub struct Approvals<S = MemoryStore> {
    store: S,
    outbox: Arc<Outbox>,
    deadlines_changed: Notify,
    /// The earliest deadline added since the expiry task last looked.
    new_deadline: std::sync::Mutex<Option<SystemTime>>,
    changes: broadcast::Sender<Request>,
    /// Requests whose approvals were counted without deciding them (quorum): their
    /// state did not change, so [`Self::changes`] does not report them, but chat
    /// messages show the count ("1 of 2").
    votes_counted: broadcast::Sender<RequestId>,
    quorum: NonZeroU32,
}

impl<S: Store> Approvals<S> {
    pub fn new(store: S) -> Self {
        Self {
            store,
            outbox: Arc::default(),
            deadlines_changed: Notify::new(),
            new_deadline: std::sync::Mutex::new(None),
            changes: broadcast::channel(CHANGES_BACKLOG).0,
            votes_counted: broadcast::channel(CHANGES_BACKLOG).0,
            quorum: NonZeroU32::MIN,
        }
    }

    /// Approvals then take `quorum` distinct reviewers.
    #[must_use]
    pub fn with_quorum(mut self, quorum: NonZeroU32) -> Self {
        self.quorum = quorum;
        self
    }

    pub fn quorum(&self) -> u32 {
        self.quorum.get()
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Every request created or changed from now on, here or on another replica. A
    /// receiver that lags loses changes (`RecvError::Lagged`) and must list the pending
    /// requests again.
    pub fn changes(&self) -> broadcast::Receiver<Request> {
        self.changes.subscribe()
    }

    /// Ids of pending requests that got an approval counted towards their quorum here,
    /// from now on (not those counted on other replicas: watchers re-read periodically).
    pub fn votes_counted(&self) -> broadcast::Receiver<RequestId> {
        self.votes_counted.subscribe()
    }

    fn publish(&self, request: &Request) {
        // No receiver is fine: nobody is watching.
        let _ = self.changes.send(request.clone());
    }

    /// Follows the changes other replicas make to a shared store until `stop`: their
    /// decisions go to the agents connected here, and watchers here see them. Returns at
    /// once for a store no other process shares.
    pub async fn follow_remote_changes(&self, stop: CancellationToken) {
        let Some(mut changes) = self.store.remote_changes() else {
            return;
        };
        loop {
            let change = tokio::select! {
                () = stop.cancelled() => return,
                change = changes.recv() => change,
            };
            let Some(change) = change else {
                tracing::error!("the store stopped reporting other replicas' changes");
                return;
            };
            let (RemoteChange::Submitted(id) | RemoteChange::Resolved(id)) = &change;
            let request = match self.get(id).await {
                Ok(request) => request,
                Err(err) => {
                    tracing::error!(id = %id, error = %err, "cannot read a request another replica changed");
                    continue;
                }
            };
            match change {
                RemoteChange::Submitted(_) => self.deadline_added(request.deadline),
                RemoteChange::Resolved(_) => self.outbox.deliver(&request),
            }
            self.publish(&request);
        }
    }

    /// Registers an agent session: decisions on requests of `hello.host` go to the
    /// returned receiver until the session is dropped or replaced by a newer one.
    pub fn attach_agent(&self, hello: &Hello) -> (AgentSession, mpsc::UnboundedReceiver<Decision>) {
        self.outbox.attach(ConnectedAgent {
            identity: AgentIdentity {
                host: hello.host.clone(),
                owner: hello.owner.clone(),
            },
            version: hello.version.clone(),
            // Shown to people only; no rule depends on it, so the clock is read here.
            connected_at: SystemTime::now(),
        })
    }

    /// Agents with a live session on this server process, by host.
    pub fn agents(&self) -> Vec<ConnectedAgent> {
        self.outbox.agents()
    }

    pub async fn submit(
        &self,
        agent: &AgentIdentity,
        submitted: NewRequest,
        now: SystemTime,
    ) -> Result<Submitted, ApprovalError> {
        if !id_of_host(&submitted.id, &agent.host) {
            return Err(ApprovalError::IdNotOfHost {
                id: submitted.id,
                host: agent.host.clone(),
            });
        }
        let mut submitted = submitted;
        // Owners are kept in the form identities are compared in, so that no other
        // spelling of the owner's name can approve (see `Identity::canonical`).
        submitted.owner = submitted.owner.as_ref().map(Identity::canonical);
        // The host names each watched agent's owner; without one, the session's owner.
        let owner = submitted
            .owner
            .clone()
            .unwrap_or_else(|| agent.owner.canonical());
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
                self.publish(&request);
                if request.deadline <= now {
                    // Arrived too late to be decided by anyone: settle it right away so
                    // the agent is not left waiting for the expiry sweep.
                    let expired = self.expire(&request.id, now).await?;
                    return Ok(Submitted::New(expired));
                }
                if let Some(settled) = self.settle_by_grant(&request, now).await? {
                    return Ok(Submitted::New(settled));
                }
                self.deadline_added(request.deadline);
                Ok(Submitted::New(request))
            }
        }
    }

    /// A standing grant for the same action settles a new request without a reviewer.
    async fn settle_by_grant(
        &self,
        request: &Request,
        now: SystemTime,
    ) -> Result<Option<Request>, ApprovalError> {
        for key in grants::candidate_keys(request) {
            let found = self.store.find_grants(&key, now).await?;
            let Some(grant) = grants::applicable(request, &found) else {
                continue;
            };
            let resolution = Resolution {
                outcome: Outcome::Decided {
                    verdict: grant.verdict,
                    reviewer: grant.reviewer.clone(),
                },
                reason: grants::settled_reason(grant),
                resolved_at: now,
            };
            let settled = self.resolve(&request.id, resolution).await?;
            tracing::info!(id = %settled.id, grant_from = %grant.from_request, verdict = %grant.verdict, "request settled by a grant");
            return Ok(Some(settled));
        }
        Ok(None)
    }

    pub async fn decide(
        &self,
        decision: ReviewerDecision,
        now: SystemTime,
    ) -> Result<Request, ApprovalError> {
        Ok(self.decide_counted(decision, now).await?.request)
    }

    /// Decides, or counts an approval towards the quorum; says how many are counted.
    pub async fn decide_counted(
        &self,
        decision: ReviewerDecision,
        now: SystemTime,
    ) -> Result<Decided, ApprovalError> {
        if decision.verdict == Verdict::Kill && decision.scope != Scope::Once {
            return Err(ApprovalError::ScopedKill);
        }
        let mut decision = decision;
        // Recorded, counted towards a quorum and compared with the owner in one form:
        // `Alice@Example.com` is alice, and cannot approve alice's request nor count as
        // a second reviewer beside her.
        decision.reviewer = decision.reviewer.canonical();
        let request = self.get(&decision.request_id).await?;
        if decision.verdict == Verdict::Allow && decision.reviewer.same_as(&request.owner) {
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
        let quorum = self.quorum.get();
        let mut scope = decision.scope;
        let mut reason = decision.reason;
        let mut approvals = 1;
        if decision.verdict == Verdict::Allow && quorum > 1 {
            let vote = Vote {
                reviewer: decision.reviewer.clone(),
                reason: reason.clone(),
                scope,
                at: now,
            };
            let votes = match self.store.add_vote(&request.id, vote).await? {
                Voted::Added(votes) => votes,
                Voted::AlreadyVoted(_) => {
                    return Err(ApprovalError::AlreadyVoted {
                        id: request.id,
                        reviewer: decision.reviewer,
                        quorum,
                    });
                }
            };
            approvals = u32::try_from(votes.len()).unwrap_or(u32::MAX);
            if approvals < quorum {
                tracing::info!(id = %request.id, reviewer = %decision.reviewer, approvals, quorum, "approval counted, waiting for more");
                // No receiver is fine: nobody is watching.
                let _ = self.votes_counted.send(request.id.clone());
                return Ok(Decided {
                    request,
                    approvals,
                    quorum,
                });
            }
            // The grant covers no more than every approver agreed to.
            scope = votes
                .iter()
                .fold(scope, |narrowest, vote| narrowest.narrowest(vote.scope));
            let reviewers: Vec<&str> = votes.iter().map(|vote| vote.reviewer.as_str()).collect();
            reason = Reason::new(format!("{reason} (approved by {})", reviewers.join(", ")))
                .unwrap_or(reason);
        }
        let resolution = Resolution {
            outcome: Outcome::Decided {
                verdict: decision.verdict,
                reviewer: decision.reviewer.clone(),
            },
            reason: reason.clone(),
            resolved_at: now,
        };
        let decided = self.resolve(&request.id, resolution).await?;
        tracing::info!(id = %decided.id, state = %decided.state(), "request decided");
        if let Some(grant) = grants::grant_for(
            &decided,
            decision.verdict,
            decision.reviewer,
            reason,
            scope,
            now,
        ) {
            let expires_in = scope.duration().unwrap_or_default();
            match self.store.add_grant(grant).await {
                Ok(()) => {
                    tracing::info!(id = %decided.id, scope = scope.as_str(), expires_in_s = expires_in.as_secs(), "grant recorded")
                }
                // The decision stands; without the grant, later requests are only asked
                // again, which is the safe side.
                Err(err) => {
                    tracing::error!(id = %decided.id, error = %err, "cannot record the grant")
                }
            }
        }
        Ok(Decided {
            request: decided,
            approvals,
            quorum,
        })
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

    /// Wakes when a request with a new deadline arrives, with the earliest such deadline
    /// since the last call, so the expiry task can sleep until the earliest deadline
    /// without polling, and without asking the store once per new request.
    pub async fn deadlines_changed(&self) -> Option<SystemTime> {
        self.deadlines_changed.notified().await;
        self.new_deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn deadline_added(&self, deadline: SystemTime) {
        {
            let mut earliest = self
                .new_deadline
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *earliest = Some(earliest.map_or(deadline, |known| known.min(deadline)));
        }
        self.deadlines_changed.notify_one();
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
                self.publish(&request);
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

/// Whether `id` is in the namespace of `host`: `HOST:` and at least one more character.
/// Ids are global in the store (reviewers name requests by id alone), so the namespace
/// is what keeps one host from taking another's ids, even ones not yet used.
pub fn id_of_host(id: &RequestId, host: &HostName) -> bool {
    id.as_str()
        .split_once(':')
        .is_some_and(|(prefix, rest)| prefix == host.as_str() && !rest.is_empty())
}
