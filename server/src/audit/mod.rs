//! The audit trail of belay-server: every state change of a request (submitted,
//! decided, expired, cancelled, voted, granted, grant_revoked) as an [`Event`] appended
//! to the hash-chained log with signed checkpoints that `belay_audit` defines and
//! verifies.
//!
//! Here: the records of a request's own lifecycle (`submitted`, `resolved`) and the
//! body every request record starts with (`request_body`); the store builds the
//! records of what it keeps besides requests (votes, grants and their revocations,
//! enrollments, policies) on that body, and appends them in the same transaction (or
//! critical section) as the change they record (see `store`). [`verify`] checks a
//! SQLite database, [`postgres::verify`] a PostgreSQL one.
//!
//! The bottom layer of the server: it imports no other module of it but leaves
//! (`epoch`, `canonical_action`, `database_url`).

pub mod postgres;

use belay_proto::domain::{Intent, Outcome, Request};

use crate::canonical_action::action_fields;
use crate::epoch::nanos;

pub use belay_audit::{
    AuditError, AuditKey, AuditSigner, Checkpoint, DEFAULT_CHECKPOINT_EVERY, Event, GENESIS,
    MemoryChain, Problem, Record, Report, Verifier, checkpoint_message, default_key_path, key_id,
    parse_public_key, public_key_hex, record_hash, resolve_public_key, verify, verify_records,
};

/// A record's columns in the table `audit` of either database, in the order every
/// reader of records takes them.
pub(crate) const SELECT_RECORDS: &str =
    "SELECT seq, at, kind, request_id, body, prev_hash, hash FROM audit";

/// The common part of the body of every record about `request`; `serde_json::Value`
/// keeps keys sorted, so the text is canonical.
pub(crate) fn request_body(
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
    body.insert(
        "action".into(),
        serde_json::Value::Object(action_fields(&request.action)),
    );
    body
}

/// The record of `body` (built on [`request_body`]) about `request`.
pub(crate) fn request_event(
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
    let mut body = request_body(request, "submitted", at);
    body.insert("pid".into(), request.pid.into());
    body.insert("uid".into(), request.uid.into());
    body.insert("rule".into(), request.rule.as_str().into());
    body.insert("deadline".into(), nanos(request.deadline).into());
    body.insert(
        "default_verdict".into(),
        request.default_verdict.as_str().into(),
    );
    if let Some(intent) = request.context.intent() {
        body.insert("intent".into(), intent_json(intent));
    }
    request_event(request, "submitted", at, body)
}

/// A declared intent as the audit log, the console and the exports show it. `verified`
/// is always false: these are the agent's own words, and every reader must be told so.
pub fn intent_json(intent: &Intent) -> serde_json::Value {
    serde_json::json!({
        "text": intent.text(),
        "model": intent.model(),
        "session_id": intent.session_id(),
        "tool_call_id": intent.tool_call_id(),
        "user_request_id": intent.user_request_id(),
        "declared_by_pid": intent.declared_by_pid(),
        "declared_at": nanos(intent.declared_at()),
        "verified": false,
    })
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
    let mut body = request_body(request, kind, at);
    body.insert("state".into(), resolution.outcome.state().as_str().into());
    body.insert("reason".into(), resolution.reason.as_str().into());
    if let Some(verdict) = resolution.outcome.verdict() {
        body.insert("verdict".into(), verdict.as_str().into());
    }
    if let Some(reviewer) = resolution.outcome.reviewer() {
        body.insert("reviewer".into(), reviewer.as_str().into());
    }
    Some(request_event(request, kind, at, body))
}
