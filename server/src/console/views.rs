//! The JSON the console's API answers with (API.md, "Request (JSON)"). Every string is
//! passed on as the agent or reviewer sent it: the page shows them as text, never as
//! markup, and escapes invisible characters itself.

use std::time::{SystemTime, UNIX_EPOCH};

use belay_proto::domain::{Action, Outcome, Request};
use serde_json::{Value, json};

use crate::approvals::{Grant, Vote};

/// Milliseconds since the Unix epoch, the unit of every time in the API.
pub fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The action in one line, for lists: the program and its arguments, or where a
/// connection goes.
pub fn summary(action: &Action) -> String {
    match action {
        Action::Exec(exec) => {
            let mut line = exec.path().to_owned();
            for arg in exec.argv().iter().skip(1) {
                line.push(' ');
                line.push_str(arg);
            }
            line
        }
        Action::Connect(connect) => {
            let address = match connect.address {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            format!(
                "connect {} {address}:{}",
                connect.protocol.as_str(),
                connect.port
            )
        }
    }
}

pub fn request(request: &Request) -> Value {
    let (kind, exec, connect) = match &request.action {
        Action::Exec(exec) => (
            "exec",
            json!({
                "path": exec.path(),
                "argv": exec.argv(),
                "cwd": exec.cwd(),
                "env": exec.env(),
            }),
            Value::Null,
        ),
        Action::Connect(connect) => (
            "connect",
            Value::Null,
            json!({
                "address": connect.address.to_string(),
                "port": connect.port.get(),
                "protocol": connect.protocol.as_str(),
            }),
        ),
    };
    let context = &request.context;
    let ancestry: Vec<Value> = context
        .ancestry()
        .iter()
        .map(|a| json!({"pid": a.pid(), "comm": a.comm(), "exe": a.exe()}))
        .collect();
    let resolution = request.resolution.as_ref().map(|resolution| {
        let (outcome, verdict, reviewer) = match &resolution.outcome {
            Outcome::Decided { verdict, reviewer } => {
                ("decided", Some(verdict.as_str()), Some(reviewer.as_str()))
            }
            Outcome::Expired { verdict } => ("expired", Some(verdict.as_str()), None),
            Outcome::Cancelled => ("cancelled", None, None),
        };
        json!({
            "outcome": outcome,
            "verdict": verdict,
            "reviewer": reviewer,
            "reason": resolution.reason.as_str(),
            "at": millis(resolution.resolved_at),
        })
    });
    json!({
        "id": request.id.as_str(),
        "host": request.host.as_str(),
        "agent": request.agent_name.as_str(),
        "owner": request.owner.as_str(),
        "pid": request.pid,
        "uid": request.uid,
        "state": request.state().as_str(),
        "kind": kind,
        "summary": summary(&request.action),
        "exec": exec,
        "connect": connect,
        "rule": request.rule.as_str(),
        "default_verdict": request.default_verdict.as_str(),
        "created_at": millis(request.created_at),
        "deadline": millis(request.deadline),
        "context": {
            "ancestry": ancestry,
            "user": context.user(),
            "cgroup": context.cgroup(),
            "container_id": context.container_id(),
            "pod_uid": context.pod_uid(),
            "cwd": context.cwd(),
            "subject": context.subject(),
            "hostnames": context.hostnames(),
        },
        "resolution": resolution,
        "intent": context.intent().map(crate::audit::intent_json),
    })
}

pub fn vote(vote: &Vote) -> Value {
    json!({
        "reviewer": vote.reviewer.as_str(),
        "reason": vote.reason.as_str(),
        "scope": vote.scope.as_str(),
        "at": millis(vote.at),
    })
}

pub fn grant(grant: &Grant, request: Option<&Request>) -> Value {
    json!({
        "id": grant.from_request.as_str(),
        "verdict": grant.verdict.as_str(),
        "reviewer": grant.reviewer.as_str(),
        "reason": grant.reason.as_str(),
        "scope": grant.scope.as_str(),
        "host": request.map(|r| r.host.as_str()),
        "agent": request.map(|r| r.agent_name.as_str()),
        "action": request.map(|r| summary(&r.action)),
        "granted_at": millis(grant.granted_at),
        "expires_at": millis(grant.expires_at),
    })
}
