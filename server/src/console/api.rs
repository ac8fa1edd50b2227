//! The console's read routes (API.md, "Reads"). Each needs the viewer role, as the
//! same reads over gRPC do.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, Query, State};
use belay_proto::domain::{HostName, RequestId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Console;
use super::guard::{ApiError, Caller};
use super::views;
use crate::approvals::Store;
use crate::auth::Role;

/// Earlier requests for the same action shown on a request's page.
const HISTORY: usize = 20;
const DEFAULT_AUDIT_PAGE: usize = 100;
const MAX_AUDIT_PAGE: usize = 1000;

pub async fn session<S: Store>(
    State(console): State<Arc<Console<S>>>,
    caller: Caller,
) -> Json<Value> {
    let (csrf, expires_at) = match &caller.session {
        Some(session) => (
            Some(session.csrf.as_str()),
            Some(views::millis(session.expires_at)),
        ),
        None => (None, None),
    };
    Json(json!({
        "identity": caller.reviewer.identity,
        "role": caller.reviewer.role.map(|role| role.to_string()),
        "csrf": csrf,
        "expires_at": expires_at,
        "quorum": console.approvals.quorum(),
    }))
}

pub async fn pending<S: Store>(
    State(console): State<Arc<Console<S>>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let mut requests = console.approvals.list_pending().await?;
    requests.sort_by_key(|request| std::cmp::Reverse(request.created_at));
    let requests: Vec<Value> = requests.iter().map(views::request).collect();
    Ok(Json(json!({ "requests": requests })))
}

fn request_id(id: String) -> Result<RequestId, ApiError> {
    RequestId::new(id).map_err(|err| ApiError::bad_request(format!("invalid request id: {err}")))
}

pub async fn request<S: Store>(
    State(console): State<Arc<Console<S>>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let id = request_id(id)?;
    let request = console.approvals.get(&id).await?;
    let votes = console.approvals.votes(&id).await?;
    let history = console.approvals.history(&request, HISTORY).await?;
    let you_are_owner = belay_proto::domain::Identity::new(caller.reviewer.identity.clone())
        .is_ok_and(|you| you.same_as(&request.owner));
    Ok(Json(json!({
        "request": views::request(&request),
        "votes": votes.iter().map(views::vote).collect::<Vec<_>>(),
        "quorum": console.approvals.quorum(),
        "you_are_owner": you_are_owner,
        "history": history.iter().map(views::request).collect::<Vec<_>>(),
    })))
}

pub async fn agents<S: Store>(
    State(console): State<Arc<Console<S>>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let admin = caller.reviewer.role >= Some(Role::Admin);
    let mut pending: HashMap<HostName, u32> = HashMap::new();
    for request in console.approvals.list_pending().await? {
        *pending.entry(request.host).or_default() += 1;
    }
    let mut agents = console.approvals.agents();
    agents.sort_by(|a, b| a.identity.host.as_str().cmp(b.identity.host.as_str()));
    let agents: Vec<Value> = agents
        .iter()
        .map(|agent| {
            let host = &agent.identity.host;
            // Which version each agent runs and whether it applied: everyone; the text
            // of the fleet policy (below): admins.
            let policy = console.policy.state(host).map(|state| {
                json!({
                    "version": state.report.version,
                    "outcome": state.report.outcome.as_str(),
                    "message": state.report.message,
                    "reported_at": views::millis(state.reported_at),
                })
            });
            json!({
                "host": host.as_str(),
                "owner": agent.identity.owner.as_str(),
                "version": agent.version.as_str(),
                "connected_at": views::millis(agent.connected_at),
                "pending": pending.get(host).copied().unwrap_or(0),
                "policy": policy,
            })
        })
        .collect();
    let fleet_policy = if admin {
        console
            .approvals
            .store()
            .current_policy()
            .await
            .map_err(crate::approvals::ApprovalError::from)?
            .map(|policy| {
                json!({
                    "version": policy.version,
                    "sha256": policy.sha256,
                    "pushed_by": policy.pushed_by.as_str(),
                    "reason": policy.reason.as_str(),
                    "pushed_at": views::millis(policy.pushed_at),
                    "text": policy.text.as_str(),
                })
            })
    } else {
        None
    };
    Ok(Json(
        json!({ "agents": agents, "fleet_policy": fleet_policy }),
    ))
}

pub async fn grants<S: Store>(
    State(console): State<Arc<Console<S>>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let grants = console.approvals.grants_in_force(SystemTime::now()).await?;
    let mut out = Vec::with_capacity(grants.len());
    for grant in &grants {
        // The request that made the grant says what it covers in words.
        let request = console.approvals.get(&grant.from_request).await.ok();
        out.push(views::grant(grant, request.as_ref()));
    }
    Ok(Json(json!({ "grants": out })))
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

pub async fn audit<S: Store>(
    State(console): State<Arc<Console<S>>>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = match query.limit {
        None => DEFAULT_AUDIT_PAGE,
        Some(n) if (1..=MAX_AUDIT_PAGE).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "invalid limit {n}: must be in 1..={MAX_AUDIT_PAGE}"
            )));
        }
    };
    let records = console
        .approvals
        .store()
        .audit_records(query.after, limit)
        .await
        .map_err(crate::approvals::ApprovalError::from)?;
    let next_after = records.last().map_or(query.after, |record| record.seq);
    let records: Vec<Value> = records
        .iter()
        .map(|record| {
            // The body is the JSON text the hash covers; shown parsed, as it was written.
            let body = serde_json::from_str::<Value>(&record.body)
                .unwrap_or_else(|_| Value::String(record.body.clone()));
            json!({
                "seq": record.seq,
                "at": u64::try_from(record.at / 1_000_000).unwrap_or(0),
                "kind": record.kind,
                "request_id": record.request_id,
                "body": body,
                "hash": hex(&record.hash),
            })
        })
        .collect();
    Ok(Json(
        json!({ "records": records, "next_after": next_after }),
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn audit_verify<S: Store>(
    State(console): State<Arc<Console<S>>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(console.audit.verify().await))
}
