//! Revoking grants, listing those in force, the history of an action and the counted
//! votes, through the approval rules, once per store backend; and a revocation in a
//! SQLite audit log that `audit verify` checks.

use std::num::NonZeroU32;
use std::time::Duration;

use belay_proto::domain::{
    Action, ConnectAction, Identity, Protocol, Reason, RequestState, Scope, Verdict, Withdraw,
};

use super::tests::{agent, at, decision, id, new_request};
use super::*;
use crate::audit::{self, AuditKey};
use crate::store::testing::{Backend, Opened, for_each_backend};

const MINUTES_30: Duration = Duration::from_secs(30 * 60);

fn approvals<B: Backend>() -> Opened<Approvals<B::Store>> {
    B::open().map(Approvals::new)
}

fn host_scoped(id: &str, verdict: Verdict, reviewer: &str) -> ReviewerDecision {
    ReviewerDecision {
        scope: Scope::Host(MINUTES_30),
        ..decision(id, verdict, reviewer)
    }
}

fn reason(text: &str) -> Reason {
    Reason::new(text).unwrap()
}

fn carol() -> Identity {
    Identity::new("carol").unwrap()
}

fn port(port: u16) -> Action {
    Action::Connect(ConnectAction {
        address: [192, 0, 2, 1].into(),
        port: port.try_into().unwrap(),
        protocol: Protocol::Tcp,
    })
}

async fn kinds<S: Store>(approvals: &Approvals<S>) -> Vec<String> {
    let records = approvals.store().audit_records(0, 1000).await.unwrap();
    records.into_iter().map(|record| record.kind).collect()
}

/// The hash chain of the whole log, whatever the backend (checkpoints: see the SQLite
/// test below).
async fn assert_chain_intact<S: Store>(approvals: &Approvals<S>) {
    let records = approvals.store().audit_records(0, 1000).await.unwrap();
    let key = AuditKey::generate().unwrap().public_key();
    let report = audit::verify_records(&records, [], &key);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, records.len() as u64);
}

/// host-a:r1 approved by bob for the whole host for 30 minutes, at 10 s.
async fn with_host_grant<S: Store>(approvals: &Approvals<S>) {
    let me = agent("host-a", "alice");
    approvals
        .submit(&me, new_request("host-a:r1", at(600), Verdict::Deny), at(0))
        .await
        .unwrap();
    approvals
        .decide(host_scoped("host-a:r1", Verdict::Allow, "bob"), at(10))
        .await
        .unwrap();
}

async fn a_revoked_host_grant_no_longer_settles_the_next_request<B: Backend>() {
    let approvals = approvals::<B>();
    with_host_grant(&approvals).await;
    let me = agent("host-a", "alice");
    let settled = approvals
        .submit(
            &me,
            new_request("host-a:r2", at(900), Verdict::Deny),
            at(60),
        )
        .await
        .unwrap();
    assert_eq!(settled.request().state(), RequestState::Approved);
    let listed = approvals.grants_in_force(at(60)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].from_request, id("host-a:r1"));

    let revoked = approvals
        .revoke_grant(
            &id("host-a:r1"),
            Identity::new("Carol").unwrap(),
            reason("done"),
            at(120),
        )
        .await
        .unwrap();
    assert_eq!(revoked, listed[0]);
    assert!(approvals.grants_in_force(at(121)).await.unwrap().is_empty());

    // The same action again, well within the 30 minutes: a person decides.
    let waiting = approvals
        .submit(
            &me,
            new_request("host-a:r3", at(1200), Verdict::Deny),
            at(180),
        )
        .await
        .unwrap();
    assert_eq!(waiting.request().state(), RequestState::Pending);
    assert_eq!(approvals.list_pending().await.unwrap().len(), 1);

    let records = approvals.store().audit_records(0, 1000).await.unwrap();
    let revocation = records
        .iter()
        .find(|record| record.kind == "grant_revoked")
        .expect("the revocation is in the audit log");
    assert_eq!(revocation.request_id, "host-a:r1");
    let body: serde_json::Value = serde_json::from_str(&revocation.body).unwrap();
    assert_eq!(body["reviewer"], "carol", "recorded in canonical form");
    assert_eq!(body["reason"], "done");
    assert_eq!(body["granted_by"], "bob");
    assert_eq!(revocation.at, crate::epoch::nanos(at(120)));
    assert_chain_intact(&approvals).await;
}

async fn revoking_twice_or_what_cannot_be_revoked_fails_and_writes_nothing<B: Backend>() {
    let approvals = approvals::<B>();
    with_host_grant(&approvals).await;
    let me = agent("host-a", "alice");
    let settled = approvals
        .submit(
            &me,
            new_request("host-a:r2", at(600), Verdict::Deny),
            at(20),
        )
        .await
        .unwrap();
    assert_eq!(settled.request().state(), RequestState::Approved);
    approvals
        .revoke_grant(&id("host-a:r1"), carol(), reason("done"), at(100))
        .await
        .unwrap();
    let before = kinds(&approvals).await;

    let err = approvals
        .revoke_grant(&id("host-a:r1"), carol(), reason("again"), at(110))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApprovalError::GrantAlreadyRevoked { id: revoked, by, at: when }
            if *revoked == id("host-a:r1") && *by == carol() && *when == at(100)),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("already revoked by carol"),
        "{err}"
    );

    // r2 was settled by the grant: it created none.
    let err = approvals
        .revoke_grant(&id("host-a:r2"), carol(), reason("x"), at(110))
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::GrantNotFound(_)), "{err:?}");
    let err = approvals
        .revoke_grant(&id("host-a:nope"), carol(), reason("x"), at(110))
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::GrantNotFound(_)), "{err:?}");

    // Another host grant, left to expire.
    approvals
        .submit(
            &agent("host-b", "alice"),
            new_request("host-b:r1", at(600), Verdict::Deny),
            at(0),
        )
        .await
        .unwrap();
    approvals
        .decide(host_scoped("host-b:r1", Verdict::Deny, "bob"), at(10))
        .await
        .unwrap();
    let before_expired = kinds(&approvals).await;
    let err = approvals
        .revoke_grant(&id("host-b:r1"), carol(), reason("x"), at(10) + MINUTES_30)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApprovalError::GrantExpired { expired_at, .. } if *expired_at == at(10) + MINUTES_30),
        "{err:?}"
    );
    assert_eq!(kinds(&approvals).await, before_expired);
    assert_eq!(
        before_expired[..before.len()],
        before[..],
        "nothing was recorded for the refusals"
    );
    assert_eq!(
        before_expired
            .iter()
            .filter(|kind| *kind == "grant_revoked")
            .count(),
        1
    );
    assert_chain_intact(&approvals).await;
}

async fn in_force<S: Store>(approvals: &Approvals<S>, now: std::time::SystemTime) -> Vec<String> {
    let grants = approvals.grants_in_force(now).await.unwrap();
    grants
        .iter()
        .map(|grant| grant.from_request.as_str().to_owned())
        .collect()
}

async fn expired_grants_are_not_in_force<B: Backend>() {
    let approvals = approvals::<B>();
    with_host_grant(&approvals).await;
    let other = agent("host-b", "alice");
    approvals
        .submit(
            &other,
            new_request("host-b:r1", at(3600), Verdict::Deny),
            at(1000),
        )
        .await
        .unwrap();
    approvals
        .decide(host_scoped("host-b:r1", Verdict::Deny, "bob"), at(1000))
        .await
        .unwrap();
    assert_eq!(
        in_force(&approvals, at(1001)).await,
        ["host-b:r1", "host-a:r1"]
    );
    // host-a:r1's ended at 10 s + 30 min.
    assert_eq!(
        in_force(&approvals, at(10) + MINUTES_30).await,
        ["host-b:r1"]
    );
    assert!(in_force(&approvals, at(1000) + MINUTES_30).await.is_empty());
}

async fn history_is_the_earlier_ended_requests_for_the_action_on_the_host<B: Backend>() {
    let approvals = approvals::<B>();
    let me = agent("host-a", "alice");
    let submit = |name: &str, who: &AgentIdentity, action: Action, time: u64| {
        let mut request = new_request(name, at(time + 600), Verdict::Deny);
        request.action = action;
        let who = who.clone();
        let approvals = &approvals;
        async move { approvals.submit(&who, request, at(time)).await.unwrap() }
    };
    submit("host-a:r1", &me, port(443), 0).await;
    approvals
        .decide(decision("host-a:r1", Verdict::Deny, "bob"), at(1))
        .await
        .unwrap();
    submit("host-a:r2", &me, port(443), 10).await;
    approvals
        .decide(decision("host-a:r2", Verdict::Allow, "bob"), at(11))
        .await
        .unwrap();
    submit("host-a:r3", &me, port(443), 20).await;
    approvals
        .withdraw(
            &me,
            Withdraw {
                request_id: id("host-a:r3"),
                reason: reason("process exited"),
            },
            at(21),
        )
        .await
        .unwrap();
    let host_b = agent("host-b", "alice");
    submit("host-b:r1", &host_b, port(443), 30).await;
    approvals
        .decide(decision("host-b:r1", Verdict::Allow, "bob"), at(31))
        .await
        .unwrap();
    submit("host-a:r4", &me, port(80), 40).await;
    approvals
        .decide(decision("host-a:r4", Verdict::Allow, "bob"), at(41))
        .await
        .unwrap();
    submit("host-a:r5", &me, port(443), 45).await;
    let now = submit("host-a:r6", &me, port(443), 50).await;
    let now = now.request();

    let history = approvals.history(now, 10).await.unwrap();
    let ids: Vec<&str> = history.iter().map(|r| r.id.as_str()).collect();
    // Not host-b's, not the other port's, not r5 (pending), not r6 itself.
    assert_eq!(ids, ["host-a:r3", "host-a:r2", "host-a:r1"]);
    assert_eq!(history[0].state(), RequestState::Cancelled);
    assert_eq!(history[2].state(), RequestState::Denied);
    let two = approvals.history(now, 2).await.unwrap();
    assert_eq!(two, history[..2]);
}

async fn the_votes_counted_towards_a_quorum_are_readable<B: Backend>() {
    let approvals =
        B::open().map(|store| Approvals::new(store).with_quorum(NonZeroU32::new(2).unwrap()));
    let me = agent("host-a", "alice");
    approvals
        .submit(&me, new_request("host-a:r1", at(600), Verdict::Deny), at(0))
        .await
        .unwrap();
    assert!(approvals.votes(&id("host-a:r1")).await.unwrap().is_empty());
    approvals
        .decide(decision("host-a:r1", Verdict::Allow, "bob"), at(5))
        .await
        .unwrap();
    let votes = approvals.votes(&id("host-a:r1")).await.unwrap();
    assert_eq!(votes.len(), 1);
    assert_eq!((votes[0].reviewer.as_str(), votes[0].at), ("bob", at(5)));
}

for_each_backend!(
    a_revoked_host_grant_no_longer_settles_the_next_request,
    revoking_twice_or_what_cannot_be_revoked_fails_and_writes_nothing,
    expired_grants_are_not_in_force,
    history_is_the_earlier_ended_requests_for_the_action_on_the_host,
    the_votes_counted_towards_a_quorum_are_readable,
);

/// `belay-server audit verify` on a SQLite file whose log holds a revocation, with
/// checkpoints signed before and after it.
#[tokio::test]
async fn audit_verify_passes_on_a_log_with_a_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let options = AuditOptions {
        key: None,
        checkpoint_every: 2,
    };
    let store = SqliteStore::open_with(&path, options).unwrap();
    let key = store.audit_public_key();
    let approvals = Approvals::new(store);
    with_host_grant(&approvals).await;
    approvals
        .revoke_grant(&id("host-a:r1"), carol(), reason("done"), at(100))
        .await
        .unwrap();
    assert!(
        approvals
            .revoke_grant(&id("host-a:r1"), carol(), reason("again"), at(101))
            .await
            .is_err()
    );
    drop(approvals);

    let report = audit::verify(&path, &key).unwrap();
    assert!(report.is_intact(), "{report:?}");
    // submitted, decided, granted, grant_revoked.
    assert_eq!((report.records, report.unsigned_tail), (4, 0), "{report:?}");
}
