//! The audit trail of belay-server: every state change of a request (submitted,
//! decided, expired, cancelled, voted, granted) as an [`Event`] appended to the
//! hash-chained log with signed checkpoints that `belay_audit` defines and verifies.
//!
//! Records are appended by the stores in the same transaction (or critical section) as
//! the state change they record: see `approvals::store`. [`verify`] checks a database.

pub mod postgres;
pub(crate) mod sqlite;

#[cfg(test)]
mod tests;

use belay_proto::domain::{Action, Outcome, Request};
use serde_json::json;

use crate::store::columns::nanos;

pub use belay_audit::{
    AuditError, AuditKey, AuditSigner, Checkpoint, DEFAULT_CHECKPOINT_EVERY, Event, GENESIS,
    MemoryChain, Problem, Record, Report, Verifier, checkpoint_message, default_key_path, key_id,
    parse_public_key, public_key_hex, record_hash, resolve_public_key, verify, verify_records,
};

fn action(action: &Action) -> serde_json::Value {
    match action {
        Action::Exec(exec) => json!({
            "type": "exec",
            "path": exec.path(),
            "argv": exec.argv(),
            "cwd": exec.cwd(),
        }),
        Action::Connect(connect) => json!({
            "type": "connect",
            "address": connect.address.to_string(),
            "port": connect.port.get(),
            "protocol": connect.protocol.as_str(),
        }),
    }
}

/// The common part of every body; `serde_json::Value` keeps keys sorted, so the text is
/// canonical.
fn base(
    request: &Request,
    kind: &'static str,
    at: i64,
) -> serde_json::Map<String, serde_json::Value> {
    let mut body = serde_json::Map::new();
    body.insert("kind".into(), kind.into());
    body.insert("at".into(), at.into());
    body.insert("request_id".into(), request.id.as_str().into());
    body.insert("host".into(), request.host.as_str().into());
    body.insert("owner".into(), request.owner.as_str().into());
    body.insert("agent".into(), request.agent_name.as_str().into());
    body.insert("action".into(), action(&request.action));
    body
}

fn event(
    request: &Request,
    kind: &'static str,
    at: i64,
    body: serde_json::Map<String, serde_json::Value>,
) -> Event {
    Event {
        at,
        kind,
        request_id: request.id.as_str().to_owned(),
        body: serde_json::Value::Object(body).to_string(),
    }
}

/// A request was submitted (recorded as it was stored, even if already final).
pub(crate) fn submitted(request: &Request) -> Event {
    let at = nanos(request.created_at);
    let mut body = base(request, "submitted", at);
    body.insert("pid".into(), request.pid.into());
    body.insert("uid".into(), request.uid.into());
    body.insert("rule".into(), request.rule.as_str().into());
    body.insert("deadline".into(), nanos(request.deadline).into());
    body.insert(
        "default_verdict".into(),
        request.default_verdict.as_str().into(),
    );
    event(request, "submitted", at, body)
}

/// A request ended: decided, expired or cancelled. `None` if it is still pending.
pub(crate) fn resolved(request: &Request) -> Option<Event> {
    let resolution = request.resolution.as_ref()?;
    let at = nanos(resolution.resolved_at);
    let kind = match &resolution.outcome {
        Outcome::Decided { .. } => "decided",
        Outcome::Expired { .. } => "expired",
        Outcome::Cancelled => "cancelled",
    };
    let mut body = base(request, kind, at);
    body.insert("state".into(), resolution.outcome.state().as_str().into());
    body.insert("reason".into(), resolution.reason.as_str().into());
    if let Some(verdict) = resolution.outcome.verdict() {
        body.insert("verdict".into(), verdict.as_str().into());
    }
    if let Some(reviewer) = resolution.outcome.reviewer() {
        body.insert("reviewer".into(), reviewer.as_str().into());
    }
    Some(event(request, kind, at, body))
}

/// A reviewer's approval was counted towards the request's quorum.
pub(crate) fn voted(request: &Request, vote: &crate::approvals::Vote) -> Event {
    let at = nanos(vote.at);
    let mut body = base(request, "voted", at);
    body.insert("reviewer".into(), vote.reviewer.as_str().into());
    body.insert("reason".into(), vote.reason.as_str().into());
    body.insert("scope".into(), vote.scope.as_str().into());
    event(request, "voted", at, body)
}

/// A decision on `request` became a standing grant for the same action.
pub(crate) fn granted(request: &Request, grant: &crate::approvals::Grant) -> Event {
    let at = nanos(grant.granted_at);
    let mut body = base(request, "granted", at);
    body.insert("reviewer".into(), grant.reviewer.as_str().into());
    body.insert("verdict".into(), grant.verdict.as_str().into());
    body.insert("reason".into(), grant.reason.as_str().into());
    body.insert("scope".into(), grant.scope.as_str().into());
    body.insert("expires_at".into(), nanos(grant.expires_at).into());
    event(request, "granted", at, body)
}
