//! The approval rules, run once per store backend (`memory::…`, `sqlite::…`).

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU16;
use std::time::{Duration, SystemTime};

use belay_proto::domain::{
    Action, ConnectAction, Decision, Hello, HostName, Identity, Name, NewRequest, Protocol, Reason,
    RequestId, RequestState, ReviewerDecision, Verdict, Withdraw,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;

use super::*;
use crate::store::testing::{Backend, Opened, for_each_backend};

const T0: Duration = Duration::from_secs(1_800_000_000);

pub(super) fn at(offset_secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(offset_secs)
}

pub(super) fn hello(host: &str, owner: &str) -> Hello {
    Hello {
        host: HostName::new(host).unwrap(),
        version: Name::new("test").unwrap(),
        owner: Identity::new(owner).unwrap(),
    }
}

pub(super) fn agent(host: &str, owner: &str) -> AgentIdentity {
    AgentIdentity {
        host: HostName::new(host).unwrap(),
        owner: Identity::new(owner).unwrap(),
    }
}

pub(super) fn new_request(id: &str, deadline: SystemTime, default_verdict: Verdict) -> NewRequest {
    NewRequest {
        id: RequestId::new(id).unwrap(),
        agent_name: Name::new("copilot").unwrap(),
        pid: 77,
        uid: 1000,
        action: Action::Connect(ConnectAction {
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            port: NonZeroU16::new(443).unwrap(),
            protocol: Protocol::Tcp,
        }),
        deadline,
        default_verdict,
        rule: Name::new("egress").unwrap(),
        owner: None,
        context: Default::default(),
    }
}

pub(super) fn decision(id: &str, verdict: Verdict, reviewer: &str) -> ReviewerDecision {
    ReviewerDecision {
        request_id: RequestId::new(id).unwrap(),
        verdict,
        reason: Reason::new("checked").unwrap(),
        reviewer: Identity::new(reviewer).unwrap(),
        scope: belay_proto::domain::Scope::Once,
    }
}

pub(super) fn id(value: &str) -> RequestId {
    RequestId::new(value).unwrap()
}

fn approvals<B: Backend>() -> Opened<Approvals<B::Store>> {
    B::open().map(Approvals::new)
}

pub(super) fn received(decisions: &mut UnboundedReceiver<Decision>) -> Vec<Decision> {
    std::iter::from_fn(|| decisions.try_recv().ok()).collect()
}

/// An alice-owned agent on host-a with request r1 pending (deadline T0+60 s, default Deny).
async fn with_pending_request<B: Backend>() -> (
    Opened<Approvals<B::Store>>,
    AgentSession,
    UnboundedReceiver<Decision>,
) {
    let approvals = approvals::<B>();
    let (session, decisions) = approvals.attach_agent(&hello("host-a", "alice"));
    approvals
        .submit(
            session.identity(),
            new_request("host-a:r1", at(60), Verdict::Deny),
            at(0),
        )
        .await
        .unwrap();
    (approvals, session, decisions)
}

async fn submitted_request_is_pending_and_owned_by_the_session_identity<B: Backend>() {
    let (approvals, _session, mut decisions) = with_pending_request::<B>().await;
    let request = approvals.get(&id("host-a:r1")).await.unwrap();
    assert_eq!(request.state(), RequestState::Pending);
    assert_eq!(request.host.as_str(), "host-a");
    assert_eq!(request.owner.as_str(), "alice");
    assert_eq!(request.created_at, at(0));
    assert_eq!(approvals.list_pending().await.unwrap(), vec![request]);
    assert!(received(&mut decisions).is_empty());
}

async fn approval_is_recorded_and_pushed_to_the_agent_that_asked<B: Backend>() {
    let (approvals, _session, mut decisions) = with_pending_request::<B>().await;
    let (_other_session, mut other_decisions) = approvals.attach_agent(&hello("host-b", "carol"));

    let decided = approvals
        .decide(decision("host-a:r1", Verdict::Allow, "bob"), at(5))
        .await
        .unwrap();

    assert_eq!(decided.state(), RequestState::Approved);
    let resolution = decided.resolution.as_ref().unwrap();
    assert_eq!(resolution.outcome.reviewer().unwrap().as_str(), "bob");
    assert_eq!(resolution.resolved_at, at(5));
    assert_eq!(
        received(&mut decisions),
        vec![Decision {
            request_id: id("host-a:r1"),
            verdict: Verdict::Allow,
            reason: Reason::new("checked").unwrap(),
            state: RequestState::Approved,
        }]
    );
    assert!(
        received(&mut other_decisions).is_empty(),
        "only the asking agent hears of it"
    );
    assert!(approvals.list_pending().await.unwrap().is_empty());
}

async fn deny_and_kill_end_as_denied_with_that_verdict<B: Backend>() {
    for verdict in [Verdict::Deny, Verdict::Kill] {
        let (approvals, _session, mut decisions) = with_pending_request::<B>().await;
        let decided = approvals
            .decide(decision("host-a:r1", verdict, "bob"), at(5))
            .await
            .unwrap();
        assert_eq!(decided.state(), RequestState::Denied);
        assert_eq!(received(&mut decisions)[0].verdict, verdict);
    }
}

async fn a_decided_request_cannot_be_decided_again<B: Backend>() {
    let (approvals, _session, mut decisions) = with_pending_request::<B>().await;
    approvals
        .decide(decision("host-a:r1", Verdict::Deny, "bob"), at(5))
        .await
        .unwrap();

    let err = approvals
        .decide(decision("host-a:r1", Verdict::Allow, "dave"), at(6))
        .await
        .unwrap_err();

    assert!(
        matches!(
            err,
            ApprovalError::AlreadyResolved {
                state: RequestState::Denied,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "request host-a:r1 is already denied");
    let request = approvals.get(&id("host-a:r1")).await.unwrap();
    assert_eq!(
        request.resolution.unwrap().outcome.verdict(),
        Some(Verdict::Deny)
    );
    assert_eq!(
        received(&mut decisions).len(),
        1,
        "no second decision pushed"
    );
}

async fn the_owner_cannot_approve_their_own_agents_request<B: Backend>() {
    let (approvals, _session, mut decisions) = with_pending_request::<B>().await;

    let err = approvals
        .decide(decision("host-a:r1", Verdict::Allow, "alice"), at(5))
        .await
        .unwrap_err();

    assert!(matches!(err, ApprovalError::SelfApproval { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "alice owns the agent that made request host-a:r1 and may not approve it"
    );
    assert_eq!(
        approvals.get(&id("host-a:r1")).await.unwrap().state(),
        RequestState::Pending
    );
    assert!(received(&mut decisions).is_empty());
}

async fn the_owner_may_still_deny_their_own_agents_request<B: Backend>() {
    let (approvals, _session, _decisions) = with_pending_request::<B>().await;
    let decided = approvals
        .decide(decision("host-a:r1", Verdict::Kill, "alice"), at(5))
        .await
        .unwrap();
    assert_eq!(decided.state(), RequestState::Denied);
}

async fn expiry_applies_the_default_verdict_at_the_deadline<B: Backend>() {
    let (approvals, session, mut decisions) = with_pending_request::<B>().await;
    approvals
        .submit(
            session.identity(),
            new_request("host-a:r2", at(120), Verdict::Allow),
            at(0),
        )
        .await
        .unwrap();

    assert!(approvals.expire_due(at(59)).await.unwrap().is_empty());
    let expired = approvals.expire_due(at(60)).await.unwrap();

    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, id("host-a:r1"));
    assert_eq!(expired[0].state(), RequestState::Expired);
    assert_eq!(
        received(&mut decisions),
        vec![Decision {
            request_id: id("host-a:r1"),
            verdict: Verdict::Deny,
            reason: Reason::new(EXPIRED_REASON).unwrap(),
            state: RequestState::Expired,
        }]
    );
    let pending = approvals.list_pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, id("host-a:r2"));
    assert_eq!(approvals.next_deadline().await.unwrap(), Some(at(120)));

    let expired = approvals.expire_due(at(500)).await.unwrap();
    assert_eq!(
        expired[0].resolution.as_ref().unwrap().outcome.verdict(),
        Some(Verdict::Allow)
    );
    assert_eq!(approvals.next_deadline().await.unwrap(), None);
}

async fn a_decision_after_the_deadline_is_refused_and_the_request_expires<B: Backend>() {
    let (approvals, _session, mut decisions) = with_pending_request::<B>().await;

    let err = approvals
        .decide(decision("host-a:r1", Verdict::Allow, "bob"), at(61))
        .await
        .unwrap_err();

    assert_eq!(err.to_string(), "request host-a:r1 is already expired");
    assert_eq!(received(&mut decisions)[0].state, RequestState::Expired);
}

async fn a_request_arriving_past_its_deadline_expires_at_once<B: Backend>() {
    let approvals = approvals::<B>();
    let (session, mut decisions) = approvals.attach_agent(&hello("host-a", "alice"));
    let submitted = approvals
        .submit(
            session.identity(),
            new_request("host-a:late", at(10), Verdict::Kill),
            at(11),
        )
        .await
        .unwrap();
    assert_eq!(submitted.request().state(), RequestState::Expired);
    assert_eq!(received(&mut decisions)[0].verdict, Verdict::Kill);
    assert!(approvals.list_pending().await.unwrap().is_empty());
}

async fn resubmitting_the_same_id_returns_the_same_request<B: Backend>() {
    let (approvals, session, _decisions) = with_pending_request::<B>().await;
    let original = approvals.get(&id("host-a:r1")).await.unwrap();

    let again = approvals
        .submit(
            session.identity(),
            new_request("host-a:r1", at(60), Verdict::Deny),
            at(30),
        )
        .await
        .unwrap();

    assert_eq!(again, Submitted::Existing(original.clone()));
    assert_eq!(approvals.list_pending().await.unwrap(), vec![original]);

    approvals
        .decide(decision("host-a:r1", Verdict::Allow, "bob"), at(31))
        .await
        .unwrap();
    let after_decision = approvals
        .submit(
            session.identity(),
            new_request("host-a:r1", at(60), Verdict::Deny),
            at(32),
        )
        .await
        .unwrap();
    assert_eq!(after_decision.request().state(), RequestState::Approved);
}

async fn an_id_cannot_be_reused_by_another_agent_or_for_another_action<B: Backend>() {
    let (approvals, session, _decisions) = with_pending_request::<B>().await;

    let err = approvals
        .submit(
            &agent("host-b", "mallory"),
            new_request("host-a:r1", at(60), Verdict::Deny),
            at(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::IdNotOfHost { .. }), "{err:?}");

    let err = approvals
        .submit(
            session.identity(),
            new_request("host-a:r1", at(60), Verdict::Allow),
            at(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::IdReused(_)), "{err:?}");

    let stored = approvals.get(&id("host-a:r1")).await.unwrap();
    assert_eq!(
        (stored.host.as_str(), stored.default_verdict),
        ("host-a", Verdict::Deny)
    );
}

async fn withdrawing_cancels_without_a_verdict_and_only_for_the_submitting_agent<B: Backend>() {
    let (approvals, session, mut decisions) = with_pending_request::<B>().await;
    let withdraw = Withdraw {
        request_id: id("host-a:r1"),
        reason: Reason::new("process exited").unwrap(),
    };

    let err = approvals
        .withdraw(&agent("host-b", "mallory"), withdraw.clone(), at(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::NotFound(_)), "{err:?}");

    let cancelled = approvals
        .withdraw(session.identity(), withdraw, at(2))
        .await
        .unwrap();
    assert_eq!(cancelled.state(), RequestState::Cancelled);
    assert!(received(&mut decisions).is_empty(), "nothing to apply");

    let err = approvals
        .decide(decision("host-a:r1", Verdict::Allow, "bob"), at(3))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "request host-a:r1 is already cancelled");
    assert!(approvals.expire_due(at(100)).await.unwrap().is_empty());
}

async fn unknown_ids_are_not_found<B: Backend>() {
    let approvals = approvals::<B>();
    let err = approvals
        .decide(decision("nope", Verdict::Deny, "bob"), at(0))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no request with id nope");
    assert!(matches!(
        approvals.get(&id("nope")).await,
        Err(ApprovalError::NotFound(_))
    ));
}

async fn a_reconnecting_agent_replaces_its_old_session<B: Backend>() {
    let (approvals, old_session, mut old_decisions) = with_pending_request::<B>().await;
    let (_new_session, mut new_decisions) = approvals.attach_agent(&hello("host-a", "alice"));
    // The old stream ending late must not unregister the new one.
    drop(old_session);

    approvals
        .decide(decision("host-a:r1", Verdict::Allow, "bob"), at(5))
        .await
        .unwrap();

    assert_eq!(received(&mut new_decisions).len(), 1);
    assert_eq!(old_decisions.try_recv(), Err(TryRecvError::Disconnected));
}

async fn pending_requests_are_listed_oldest_first<B: Backend>() {
    let approvals = approvals::<B>();
    let agent = agent("host-a", "alice");
    for (name, created) in [("host-a:b", 2), ("host-a:a", 1), ("host-a:c", 3)] {
        approvals
            .submit(
                &agent,
                new_request(name, at(60), Verdict::Deny),
                at(created),
            )
            .await
            .unwrap();
    }
    approvals
        .decide(decision("host-a:c", Verdict::Deny, "bob"), at(4))
        .await
        .unwrap();
    let ids: Vec<String> = approvals
        .list_pending()
        .await
        .unwrap()
        .into_iter()
        .map(|request| request.id.into_string())
        .collect();
    assert_eq!(ids, ["host-a:a", "host-a:b"]);
}

async fn a_host_can_neither_claim_nor_squat_another_hosts_ids<B: Backend>() {
    let approvals = approvals::<B>();
    let mallory = agent("host-b", "mallory");
    // Ahead of host-a, with the id host-a will use next: refused, nothing stored.
    for stolen in [
        "host-a:1700000000000:7",
        "host-a:x",
        "host-ab:1",
        "host-a",
        "plain",
    ] {
        let err = approvals
            .submit(&mallory, new_request(stolen, at(60), Verdict::Deny), at(0))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ApprovalError::IdNotOfHost { .. }),
            "{stolen}: {err:?}"
        );
    }
    assert!(approvals.list_pending().await.unwrap().is_empty());
    // So host-a's request with that id is its own.
    let (session, _decisions) = approvals.attach_agent(&hello("host-a", "alice"));
    let submitted = approvals
        .submit(
            session.identity(),
            new_request("host-a:1700000000000:7", at(60), Verdict::Deny),
            at(1),
        )
        .await
        .unwrap();
    assert!(matches!(submitted, Submitted::New(_)), "{submitted:?}");
    assert_eq!(submitted.request().host.as_str(), "host-a");
    // A host whose name has a colon cannot own ids: refused, not mistaken for another.
    let colon = agent("host-a:1700000000000", "mallory");
    let err = approvals
        .submit(
            &colon,
            new_request("host-a:1700000000000:8", at(60), Verdict::Deny),
            at(2),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::IdNotOfHost { .. }), "{err:?}");
}

for_each_backend!(
    a_host_can_neither_claim_nor_squat_another_hosts_ids,
    submitted_request_is_pending_and_owned_by_the_session_identity,
    approval_is_recorded_and_pushed_to_the_agent_that_asked,
    deny_and_kill_end_as_denied_with_that_verdict,
    a_decided_request_cannot_be_decided_again,
    the_owner_cannot_approve_their_own_agents_request,
    the_owner_may_still_deny_their_own_agents_request,
    expiry_applies_the_default_verdict_at_the_deadline,
    a_decision_after_the_deadline_is_refused_and_the_request_expires,
    a_request_arriving_past_its_deadline_expires_at_once,
    resubmitting_the_same_id_returns_the_same_request,
    an_id_cannot_be_reused_by_another_agent_or_for_another_action,
    withdrawing_cancels_without_a_verdict_and_only_for_the_submitting_agent,
    unknown_ids_are_not_found,
    a_reconnecting_agent_replaces_its_old_session,
    pending_requests_are_listed_oldest_first,
);
