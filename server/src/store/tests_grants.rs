//! The [`Store`] contract for revoking grants, listing those in force, and the history
//! of an action, run against every backend.

use crate::store::{AuditLogStore as _, GrantStore as _, RequestStore as _};
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU16;
use std::time::Duration;

use belay_proto::domain::{
    Action, ConnectAction, ExecAction, HostName, Identity, Name, Outcome, Protocol, Reason,
    Request, RequestId, Resolution, Scope, Verdict,
};

use super::testing::{Backend, for_each_backend};
use super::tests::{at, request};
use super::{Grant, GrantKey, Revocation, Revoked};

fn id(value: &str) -> RequestId {
    RequestId::new(value).unwrap()
}

fn key(host: &str, agent: Option<&str>, action: &str) -> GrantKey {
    GrantKey {
        host: HostName::new(host).unwrap(),
        agent: agent.map(|name| Name::new(name).unwrap()),
        action: action.to_owned(),
    }
}

/// A host-scoped grant from request `from`, made at `granted` for `minutes`.
fn grant(key: GrantKey, from: &str, granted: u64, minutes: u64) -> Grant {
    let duration = Duration::from_secs(60 * minutes);
    Grant {
        key,
        verdict: Verdict::Allow,
        reviewer: Identity::new("bob").unwrap(),
        reason: Reason::new("fine for now").unwrap(),
        from_request: id(from),
        scope: Scope::Host(duration),
        granted_at: at(granted),
        expires_at: at(granted) + duration,
    }
}

fn revocation(reviewer: &str, time: u64) -> Revocation {
    Revocation {
        reviewer: Identity::new(reviewer).unwrap(),
        reason: Reason::new("the job is done").unwrap(),
        at: at(time),
    }
}

fn ids(requests: &[Request]) -> Vec<&str> {
    requests.iter().map(|request| request.id.as_str()).collect()
}

fn from_requests(grants: &[Grant]) -> Vec<&str> {
    grants
        .iter()
        .map(|grant| grant.from_request.as_str())
        .collect()
}

async fn a_revoked_grant_settles_nothing_and_is_revoked_once<B: Backend>() {
    let store = B::open();
    for name in ["r1", "r2", "r3"] {
        store
            .insert_if_absent(request(name, at(0), at(600)))
            .await
            .unwrap();
    }
    let abc = key("host-a", None, "abc");
    store
        .add_grant(grant(abc.clone(), "r1", 0, 10))
        .await
        .unwrap();
    store
        .add_grant(grant(key("host-a", None, "def"), "r2", 60, 30))
        .await
        .unwrap();
    store
        .add_grant(grant(abc.clone(), "r3", 0, 1))
        .await
        .unwrap();
    // A decision creates one grant at most: the grant's id is its request.
    assert!(
        store
            .add_grant(grant(abc.clone(), "r1", 5, 10))
            .await
            .is_err()
    );
    let before = store.audit_records(0, 100).await.unwrap().len();

    assert_eq!(
        store
            .revoke_grant(&id("r1"), revocation("carol", 120))
            .await
            .unwrap(),
        Revoked::Now(grant(abc.clone(), "r1", 0, 10))
    );
    assert!(store.find_grants(&abc, at(121)).await.unwrap().is_empty());
    assert_eq!(
        from_requests(&store.grants_in_force(at(121), 10).await.unwrap()),
        ["r2"]
    );

    // Refusals say why, and change and record nothing.
    assert_eq!(
        store
            .revoke_grant(&id("r1"), revocation("dave", 130))
            .await
            .unwrap(),
        Revoked::Already(grant(abc.clone(), "r1", 0, 10), revocation("carol", 120))
    );
    assert_eq!(
        store
            .revoke_grant(&id("r3"), revocation("dave", 60))
            .await
            .unwrap(),
        Revoked::Expired(grant(abc.clone(), "r3", 0, 1)),
        "expired at exactly that instant"
    );
    assert_eq!(
        store
            .revoke_grant(&id("r9"), revocation("dave", 130))
            .await
            .unwrap(),
        Revoked::NotFound
    );

    let records = store.audit_records(0, 100).await.unwrap();
    assert_eq!(
        records.len(),
        before + 1,
        "one record, for the one revocation"
    );
    let revoked = records.last().unwrap();
    assert_eq!(
        (revoked.kind.as_str(), revoked.request_id.as_str()),
        ("grant_revoked", "r1")
    );
    let body: serde_json::Value = serde_json::from_str(&revoked.body).unwrap();
    assert_eq!(body["reviewer"], "carol");
    assert_eq!(body["reason"], "the job is done");
    assert_eq!(body["granted_by"], "bob");
    assert_eq!(body["scope"], "host");
    assert_eq!(body["verdict"], "allow");
    assert_eq!(body["host"], "host-a");
}

async fn grants_in_force_are_every_keys_newest_first_within_the_limit<B: Backend>() {
    let store = B::open();
    for name in ["r1", "r2", "r3", "r4"] {
        store
            .insert_if_absent(request(name, at(0), at(600)))
            .await
            .unwrap();
    }
    let grants = [
        grant(key("host-a", Some("copilot"), "abc"), "r1", 0, 10),
        grant(key("host-a", None, "def"), "r2", 60, 30),
        grant(key("host-b", None, "abc"), "r3", 120, 30),
        grant(key("host-a", None, "abc"), "r4", 30, 1),
    ];
    for grant in &grants {
        store.add_grant(grant.clone()).await.unwrap();
    }

    // r4's expired at 90 s.
    let listed = store.grants_in_force(at(180), 10).await.unwrap();
    assert_eq!(
        listed,
        [grants[2].clone(), grants[1].clone(), grants[0].clone()]
    );
    assert_eq!(
        from_requests(&store.grants_in_force(at(180), 2).await.unwrap()),
        ["r3", "r2"]
    );
    assert_eq!(
        from_requests(&store.grants_in_force(at(89), 10).await.unwrap()),
        ["r3", "r2", "r4", "r1"]
    );
    // r1's expires at 600 s: gone at exactly that instant.
    assert_eq!(
        from_requests(&store.grants_in_force(at(600), 10).await.unwrap()),
        ["r3", "r2"]
    );
}

fn connect(port: u16) -> Action {
    Action::Connect(ConnectAction {
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        port: NonZeroU16::new(port).unwrap(),
        protocol: Protocol::Tcp,
    })
}

fn exec(argv: &[&str]) -> Action {
    let argv = argv.iter().map(|arg| (*arg).to_owned()).collect();
    Action::Exec(ExecAction::new("/usr/bin/git", argv, Some("/src".into())).unwrap())
}

/// A request for `action` on `host`, created at `created`, ended at `created + 1` s
/// (`Some`) or pending.
fn made(name: &str, host: &str, action: Action, created: u64, ended: Option<Verdict>) -> Request {
    let mut made = request(name, at(created), at(created + 600));
    made.host = HostName::new(host).unwrap();
    made.action = action;
    made.resolution = ended.map(|verdict| Resolution {
        outcome: Outcome::Decided {
            verdict,
            reviewer: Identity::new("bob").unwrap(),
        },
        reason: Reason::new("checked").unwrap(),
        resolved_at: at(created + 1),
    });
    made
}

async fn history_is_the_ended_requests_for_the_same_action_on_the_same_host<B: Backend>() {
    let store = B::open();
    let mut other_agent = made("r2", "host-a", connect(443), 10, Some(Verdict::Deny));
    other_agent.agent_name = Name::new("claude").unwrap();
    let requests = [
        made("r1", "host-a", connect(443), 0, Some(Verdict::Allow)),
        other_agent,
        made("r3", "host-a", connect(443), 20, None),
        made("r4", "host-b", connect(443), 30, Some(Verdict::Allow)),
        made("r5", "host-a", connect(80), 40, Some(Verdict::Allow)),
        made("r6", "host-a", connect(443), 50, None),
        made("r7", "host-a", connect(443), 60, Some(Verdict::Allow)),
        made("r8", "host-a", connect(443), 5, None),
        made(
            "e1",
            "host-a",
            exec(&["git", "push"]),
            0,
            Some(Verdict::Allow),
        ),
        made(
            "e2",
            "host-a",
            exec(&["git", "pull"]),
            5,
            Some(Verdict::Allow),
        ),
        made("e3", "host-a", exec(&["git", "push"]), 10, None),
    ];
    for request in &requests {
        store.insert_if_absent(request.clone()).await.unwrap();
    }
    // Ended through the usual path, after it was stored.
    store
        .resolve_pending(
            &id("r8"),
            Resolution {
                outcome: Outcome::Expired {
                    verdict: Verdict::Deny,
                },
                reason: Reason::new("no decision").unwrap(),
                resolved_at: at(65),
            },
        )
        .await
        .unwrap();

    let r6 = &requests[5];
    // Not r3 (pending), r4 (another host), r5 (another port), r7 (later), r6 itself.
    assert_eq!(
        ids(&store.history(r6, 10).await.unwrap()),
        ["r2", "r8", "r1"]
    );
    assert_eq!(ids(&store.history(r6, 2).await.unwrap()), ["r2", "r8"]);
    assert_eq!(
        ids(&store.history(&requests[1], 10).await.unwrap()),
        ["r8", "r1"]
    );
    assert!(store.history(&requests[0], 10).await.unwrap().is_empty());
    // The same argv only.
    assert_eq!(
        ids(&store.history(&requests[10], 10).await.unwrap()),
        ["e1"]
    );
    // A later request's: r6 and r3 are still pending.
    let full = store.history(&requests[6], 10).await.unwrap();
    assert_eq!(ids(&full), ["r2", "r8", "r1"]);
    assert_eq!(full[1].state(), belay_proto::domain::RequestState::Expired);
}

for_each_backend!(
    a_revoked_grant_settles_nothing_and_is_revoked_once,
    grants_in_force_are_every_keys_newest_first_within_the_limit,
    history_is_the_ended_requests_for_the_same_action_on_the_same_host,
);
