//! Delivers decisions to the agent that submitted the request.
//!
//! One live session per host: a reconnecting agent replaces its old session, whose
//! channel then closes. Decisions for a host with no session are not queued; the agent
//! learns them by resubmitting its pending request ids after reconnecting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use belay_proto::domain::{Decision, HostName, Identity, Name, Request};
use tokio::sync::mpsc;

/// Who a session speaks for, taken from its Hello (later from its mTLS certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub host: HostName,
    pub owner: Identity,
}

/// An agent with a live session here, as `ListAgents` and the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedAgent {
    pub identity: AgentIdentity,
    pub version: Name,
    pub connected_at: SystemTime,
}

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    sessions: Mutex<HashMap<HostName, Registration>>,
    next_session: AtomicU64,
}

#[derive(Debug)]
struct Registration {
    session: u64,
    agent: ConnectedAgent,
    // Unbounded: decisions are small and at most one per request, so the request count
    // bounds the queue; a bounded channel would force dropping decisions.
    decisions: mpsc::UnboundedSender<Decision>,
}

/// A registered agent session. Dropping it unregisters the session, unless a newer one
/// for the same host has replaced it already.
#[derive(Debug)]
pub struct AgentSession {
    identity: AgentIdentity,
    session: u64,
    outbox: Arc<Outbox>,
}

impl AgentSession {
    pub fn identity(&self) -> &AgentIdentity {
        &self.identity
    }
}

impl Drop for AgentSession {
    fn drop(&mut self) {
        let mut sessions = self.outbox.lock();
        if sessions
            .get(&self.identity.host)
            .is_some_and(|registration| registration.session == self.session)
        {
            sessions.remove(&self.identity.host);
        }
    }
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, HashMap<HostName, Registration>> {
        // Insert and remove are single operations; a poisoned map is still consistent.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn attach(
        self: &Arc<Self>,
        agent: ConnectedAgent,
    ) -> (AgentSession, mpsc::UnboundedReceiver<Decision>) {
        let (decisions, receiver) = mpsc::unbounded_channel();
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let identity = agent.identity.clone();
        self.lock().insert(
            identity.host.clone(),
            Registration {
                session,
                agent,
                decisions,
            },
        );
        let session = AgentSession {
            identity,
            session,
            outbox: Arc::clone(self),
        };
        (session, receiver)
    }

    /// The agents with a live session, by host.
    pub(crate) fn agents(&self) -> Vec<ConnectedAgent> {
        let mut agents: Vec<ConnectedAgent> = self
            .lock()
            .values()
            .map(|registration| registration.agent.clone())
            .collect();
        agents.sort_by(|a, b| a.identity.host.cmp(&b.identity.host));
        agents
    }

    /// Sends the decision of `request`, if it has one, to its agent's live session.
    pub(crate) fn deliver(&self, request: &Request) {
        let Some(decision) = Decision::for_request(request) else {
            return;
        };
        let sessions = self.lock();
        match sessions.get(&request.host) {
            Some(registration) => {
                if registration.decisions.send(decision).is_err() {
                    tracing::debug!(host = %request.host, request = %request.id, "session closed before the decision arrived");
                }
            }
            None => {
                tracing::info!(host = %request.host, request = %request.id, "agent not connected; it gets the decision when it resubmits");
            }
        }
    }
}
