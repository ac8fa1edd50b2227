//! The [`Store`] contract for grants, votes and audit reading, run against every
//! backend (enrollment: `tests_enrollment`).

use crate::store::{AuditLogStore as _, GrantStore as _, RequestStore as _, VoteStore as _};
use std::time::Duration;

use belay_proto::domain::{HostName, Identity, Name, Reason, RequestId, Scope, Verdict};

use super::testing::{Backend, for_each_backend};
use super::tests::{at, request};
use super::{Grant, GrantKey, Vote, Voted};

fn key(agent: Option<&str>, action: &str) -> GrantKey {
    GrantKey {
        host: HostName::new("host-a").unwrap(),
        agent: agent.map(|name| Name::new(name).unwrap()),
        action: action.to_owned(),
    }
}

fn grant(key: GrantKey, reviewer: &str, from: &str, granted: u64, minutes: u64) -> Grant {
    let duration = Duration::from_secs(60 * minutes);
    Grant {
        key,
        verdict: Verdict::Allow,
        reviewer: Identity::new(reviewer).unwrap(),
        reason: Reason::new("fine").unwrap(),
        from_request: RequestId::new(from).unwrap(),
        scope: Scope::Agent(duration),
        granted_at: at(granted),
        expires_at: at(granted) + duration,
    }
}

fn vote(reviewer: &str, time: u64) -> Vote {
    Vote {
        reviewer: Identity::new(reviewer).unwrap(),
        reason: Reason::new("ok").unwrap(),
        scope: Scope::Host(Duration::from_secs(600)),
        at: at(time),
    }
}

async fn grants_are_found_by_exact_key_until_they_expire_newest_first<B: Backend>() {
    let store = B::open();
    for name in ["r1", "r2"] {
        store
            .insert_if_absent(request(name, at(0), at(600)))
            .await
            .unwrap();
    }
    store
        .add_grant(grant(key(Some("copilot"), "abc"), "bob", "r1", 0, 10))
        .await
        .unwrap();
    store
        .add_grant(grant(key(Some("copilot"), "abc"), "carol", "r2", 60, 30))
        .await
        .unwrap();

    let found = store
        .find_grants(&key(Some("copilot"), "abc"), at(120))
        .await
        .unwrap();
    let reviewers: Vec<&str> = found.iter().map(|g| g.reviewer.as_str()).collect();
    assert_eq!(reviewers, ["carol", "bob"]);
    assert_eq!(
        found[1],
        grant(key(Some("copilot"), "abc"), "bob", "r1", 0, 10)
    );

    // bob's expires at 600 s: gone at exactly that instant.
    let found = store
        .find_grants(&key(Some("copilot"), "abc"), at(600))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert!(
        store
            .find_grants(&key(None, "abc"), at(120))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .find_grants(&key(Some("other"), "abc"), at(120))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .find_grants(&key(Some("copilot"), "abd"), at(120))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_reviewer_is_counted_once_per_request<B: Backend>() {
    let store = B::open();
    store
        .insert_if_absent(request("r1", at(0), at(600)))
        .await
        .unwrap();
    store
        .insert_if_absent(request("r2", at(0), at(600)))
        .await
        .unwrap();
    let r1 = RequestId::new("r1").unwrap();

    assert_eq!(
        store.add_vote(&r1, vote("bob", 1)).await.unwrap(),
        Voted::Added(vec![vote("bob", 1)])
    );
    assert_eq!(
        store.add_vote(&r1, vote("bob", 2)).await.unwrap(),
        Voted::AlreadyVoted(vec![vote("bob", 1)])
    );
    assert_eq!(
        store.add_vote(&r1, vote("carol", 3)).await.unwrap(),
        Voted::Added(vec![vote("bob", 1), vote("carol", 3)])
    );
    // Votes are per request.
    let r2 = RequestId::new("r2").unwrap();
    assert_eq!(
        store.add_vote(&r2, vote("bob", 4)).await.unwrap(),
        Voted::Added(vec![vote("bob", 4)])
    );
    assert_eq!(store.votes(&r1).await.unwrap().len(), 2);
}

async fn audit_records_page_in_order_and_include_votes_and_grants<B: Backend>() {
    let store = B::open();
    store
        .insert_if_absent(request("r1", at(0), at(600)))
        .await
        .unwrap();
    let r1 = RequestId::new("r1").unwrap();
    store.add_vote(&r1, vote("bob", 1)).await.unwrap();
    store.add_vote(&r1, vote("bob", 2)).await.unwrap(); // not counted, not recorded
    store
        .add_grant(grant(key(Some("copilot"), "abc"), "bob", "r1", 3, 10))
        .await
        .unwrap();

    let all = store.audit_records(0, 100).await.unwrap();
    let kinds: Vec<&str> = all.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["submitted", "voted", "granted"]);
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(
        all[2].body.contains("\"scope\":\"agent\""),
        "{}",
        all[2].body
    );

    let page = store.audit_records(1, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].seq, 2);
    assert!(store.audit_records(3, 10).await.unwrap().is_empty());
}

for_each_backend!(
    grants_are_found_by_exact_key_until_they_expire_newest_first,
    a_reviewer_is_counted_once_per_request,
    audit_records_page_in_order_and_include_votes_and_grants,
);
