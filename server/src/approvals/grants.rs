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

use belay_proto::domain::{Reason, Request, Scope, Verdict};

pub use crate::canonical_action::action_digest;
use crate::store::{Grant, GrantKey};

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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::num::NonZeroU16;

    use belay_proto::domain::{Action, ConnectAction, ExecAction, Protocol};
    use serde_json::json;
    use sha2::{Digest as _, Sha256};

    use super::*;

    fn sha256_hex(text: &str) -> String {
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// Grant keys already stored must keep matching: the digest is the one of the form
    /// as this module spelled it out before it shared the audit records' fields.
    #[test]
    fn digests_stay_those_of_form_2() {
        let exec = ExecAction::new("/usr/bin/curl", vec!["curl".into()], Some("/tmp".into()))
            .unwrap()
            .with_env(vec!["HOME=/root".into()])
            .unwrap();
        let expected = json!({
            "type": "exec",
            "form": 2,
            "path": exec.path(),
            "argv": exec.argv(),
            "cwd": exec.cwd(),
            "env": exec.env(),
        });
        assert_eq!(
            action_digest(&Action::Exec(exec)),
            sha256_hex(&expected.to_string())
        );
        let connect = ConnectAction {
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
            port: NonZeroU16::new(53).unwrap(),
            protocol: Protocol::Udp,
        };
        let expected = json!({
            "type": "connect",
            "address": "192.0.2.7",
            "port": 53,
            "protocol": "udp",
        });
        assert_eq!(
            action_digest(&Action::Connect(connect)),
            sha256_hex(&expected.to_string())
        );
    }
}
