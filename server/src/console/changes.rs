//! The console's changes (API.md, "Changes"): decisions and grant revocations, under
//! the same rules as over gRPC — the reviewer role, the decider is the signed-in
//! identity (never a name in the body), no self-approval, the quorum — because they
//! end in the same [`crate::approvals::Approvals`] calls.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use belay_proto::domain::{Identity, Reason, RequestId, ReviewerDecision, Scope, Verdict};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Console;
use super::guard::{ApiError, Caller, check_change};
use super::views;
use crate::approvals::Store;
use crate::auth::Role;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    verdict: String,
    reason: String,
    #[serde(default = "once")]
    scope: String,
    duration_seconds: Option<u64>,
}

fn once() -> String {
    "once".to_owned()
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(body)| body)
        .map_err(|err| ApiError::bad_request(format!("invalid body: {}", err.body_text())))
}

fn scope(name: &str, seconds: Option<u64>) -> Result<Scope, ApiError> {
    let duration = || {
        let seconds = seconds.ok_or_else(|| {
            ApiError::bad_request(format!("scope {name:?} needs duration_seconds"))
        })?;
        let duration = Duration::from_secs(seconds);
        if seconds == 0 || duration > belay_proto::domain::MAX_GRANT {
            return Err(ApiError::bad_request(format!(
                "duration_seconds must be in 1..={}, got {seconds}",
                belay_proto::domain::MAX_GRANT.as_secs()
            )));
        }
        Ok(duration)
    };
    match name {
        "once" if seconds.is_none() => Ok(Scope::Once),
        "once" => Err(ApiError::bad_request(
            "scope \"once\" takes no duration_seconds",
        )),
        "agent" => Ok(Scope::Agent(duration()?)),
        "host" => Ok(Scope::Host(duration()?)),
        other => Err(ApiError::bad_request(format!(
            "unknown scope {other:?} (expected once, agent or host)"
        ))),
    }
}

/// `POST /api/requests/{id}/decision`.
pub async fn decide<S: Store>(
    State(console): State<Arc<Console<S>>>,
    headers: HeaderMap,
    caller: Caller,
    Path(id): Path<String>,
    decision: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    check_change(&headers, &caller, &console.origin, true)?;
    caller.require(Role::Reviewer)?;
    let decision = body(decision)?;
    let request_id = RequestId::new(id)
        .map_err(|err| ApiError::bad_request(format!("invalid request id: {err}")))?;
    let verdict: Verdict =
        decision
            .verdict
            .parse()
            .map_err(|err: belay_proto::domain::UnknownVerdict| {
                ApiError::bad_request(err.to_string())
            })?;
    let scope = scope(&decision.scope, decision.duration_seconds)?;
    let auth_caller = caller.as_auth_caller();
    let reason = auth_caller.annotate_reason(decision.reason);
    let reason = Reason::new(reason)
        .map_err(|err| ApiError::bad_request(format!("invalid reason: {err}")))?;
    let reviewer = Identity::new(auth_caller.decider("")?)
        .map_err(|err| ApiError::bad_request(format!("unusable identity: {err}")))?;
    let decision = ReviewerDecision {
        request_id,
        verdict,
        reviewer,
        reason,
        scope,
    };
    let span = tracing::info_span!("console_decide", id = %decision.request_id, reviewer = %decision.reviewer, verdict = %verdict);
    let _entered = span.enter();
    // On a task of its own, like the gRPC handler: a browser that goes away must not cut
    // a decision in half (recorded, but not yet sent to the agent).
    let approvals = Arc::clone(&console.approvals);
    let decided =
        tokio::spawn(async move { approvals.decide_counted(decision, SystemTime::now()).await })
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "deciding failed");
                ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "deciding failed",
                )
            })??;
    Ok(Json(json!({
        "request": views::request(&decided.request),
        "approvals": decided.approvals,
        "quorum": decided.quorum,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    reason: String,
}

/// `POST /api/grants/{id}/revoke`.
pub async fn revoke<S: Store>(
    State(console): State<Arc<Console<S>>>,
    headers: HeaderMap,
    caller: Caller,
    Path(id): Path<String>,
    revoke: Result<Json<RevokeBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    check_change(&headers, &caller, &console.origin, true)?;
    caller.require(Role::Reviewer)?;
    let revoke = body(revoke)?;
    let id = RequestId::new(id)
        .map_err(|err| ApiError::bad_request(format!("invalid grant id: {err}")))?;
    let reason = Reason::new(revoke.reason)
        .map_err(|err| ApiError::bad_request(format!("invalid reason: {err}")))?;
    let reviewer = Identity::new(caller.reviewer.identity.clone())
        .map_err(|err| ApiError::bad_request(format!("unusable identity: {err}")))?;
    let approvals = Arc::clone(&console.approvals);
    tokio::spawn(async move {
        approvals
            .revoke_grant(&id, reviewer, reason, SystemTime::now())
            .await
    })
    .await
    .map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "revoking failed",
        )
    })??;
    Ok(Json(json!({ "revoked": true })))
}
