//! Scoped grants: a decision that also settles the same action for a while.
//!
//! "The same action" is everything the reviewer saw of what runs: for an exec the
//! program path, the exact arguments, the working directory (relative paths in argv,
//! and which `.git` or config file a program picks up, depend on it) and the
//! environment (`LD_PRELOAD`, `PATH`, `GIT_*` change what a program does); for a
//! connect the address, port and protocol. A grant given on one argv, environment or
//! directory settles nothing else. The key is a SHA-256 of a canonical JSON form, so
//! stores compare fixed-size strings. Grants recorded under an older, narrower key
//! simply stop matching, which only means people are asked again.

use std::time::SystemTime;

use belay_proto::domain::{Action, Protocol, Reason, Request, Scope, Verdict};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::store::{Grant, GrantKey};

/// Hex SHA-256 of the canonical form of `action`.
pub fn action_digest(action: &Action) -> String {
    let canonical = match action {
        // Version 2 of the form: version 1 left out cwd and env.
        Action::Exec(exec) => json!({
            "type": "exec",
            "form": 2,
            "path": exec.path(),
            "argv": exec.argv(),
            // `None` (unknown) and every known directory are different actions.
            "cwd": exec.cwd(),
            "env": exec.env(),
        }),
        Action::Connect(connect) => json!({
            "type": "connect",
            "address": connect.address.to_string(),
            "port": connect.port.get(),
            "protocol": match connect.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            },
        }),
    };
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The keys a grant for `request` could be stored under: this agent's, then any
/// agent's on the host.
pub fn candidate_keys(request: &Request) -> [GrantKey; 2] {
    let action = action_digest(&request.action);
    [
        GrantKey {
            host: request.host.clone(),
            agent: Some(request.agent_name.clone()),
            action: action.clone(),
        },
        GrantKey {
            host: request.host.clone(),
            agent: None,
            action,
        },
    ]
}

/// The grant a decision on `request` creates, if its scope is wider than the request.
pub fn grant_for(
    request: &Request,
    verdict: Verdict,
    reviewer: belay_proto::domain::Identity,
    reason: Reason,
    scope: Scope,
    now: SystemTime,
) -> Option<Grant> {
    let duration = scope.duration()?;
    let [agent_key, host_key] = candidate_keys(request);
    let key = match scope {
        Scope::Once => return None,
        Scope::Agent(_) => agent_key,
        Scope::Host(_) => host_key,
    };
    Some(Grant {
        key,
        verdict,
        reviewer,
        reason,
        from_request: request.id.clone(),
        scope,
        granted_at: now,
        expires_at: now + duration,
    })
}

/// Which of the active grants applies to `request`: a denial before any approval (the
/// safer standing decision wins), and never an approval granted by the request's own
/// owner (no self-approval, not even ahead of time).
pub fn applicable<'g>(request: &Request, grants: &'g [Grant]) -> Option<&'g Grant> {
    grants
        .iter()
        .find(|grant| grant.verdict != Verdict::Allow)
        .or_else(|| {
            grants.iter().find(|grant| {
                grant.verdict == Verdict::Allow && !grant.reviewer.same_as(&request.owner)
            })
        })
}

/// The reason recorded on a request settled by `grant`.
pub fn settled_reason(grant: &Grant) -> Reason {
    let expires = humantime_secs(grant.expires_at);
    let text = format!(
        "by the {} grant of {} on request {} (until {expires}): {}",
        grant.scope.as_str(),
        grant.reviewer,
        grant.from_request,
        grant.reason
    );
    Reason::new(text.clone())
        .or_else(|_| {
            Reason::new(format!(
                "by the {} grant of {} on request {}",
                grant.scope.as_str(),
                grant.reviewer,
                grant.from_request
            ))
        })
        .unwrap_or_else(|_| Reason::empty())
}

fn humantime_secs(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("unix time {secs}")
}
