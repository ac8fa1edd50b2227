//! Scoped grants and quorum, run once per store backend.

use std::num::NonZeroU32;
use std::time::Duration;

use belay_proto::domain::{Action, ExecAction, Name, RequestState, Scope, Verdict};

use super::tests::{agent, at, decision, hello, id, new_request, received};
use super::*;
use crate::store::testing::{Backend, Opened, for_each_backend};

const MINUTES_30: Duration = Duration::from_secs(30 * 60);

fn scoped(id: &str, verdict: Verdict, reviewer: &str, scope: Scope) -> ReviewerDecision {
    ReviewerDecision {
        scope,
        ..decision(id, verdict, reviewer)
    }
}

fn with_quorum<B: Backend>(quorum: u32) -> Opened<Approvals<B::Store>> {
    B::open().map(|store| Approvals::new(store).with_quorum(NonZeroU32::new(quorum).unwrap()))
}

async fn state_of<S: Store>(approvals: &Approvals<S>, request: &str) -> RequestState {
    approvals.get(&id(request)).await.unwrap().state()
}

async fn an_agent_scoped_approval_settles_the_same_action_until_it_expires<B: Backend>() {
    let approvals = with_quorum::<B>(1);
    let (session, mut decisions) = approvals.attach_agent(&hello("host-a", "alice"));
    let me = session.identity();
    approvals
        .submit(me, new_request("host-a:r1", at(600), Verdict::Deny), at(0))
        .await
        .unwrap();
    approvals
        .decide(
            scoped("host-a:r1", Verdict::Allow, "bob", Scope::Agent(MINUTES_30)),
            at(10),
        )
        .await
        .unwrap();
    received(&mut decisions);

    // The same connect from the same agent, 20 minutes later: settled, nobody asked.
    let again = approvals
        .submit(
            me,
            new_request("host-a:r2", at(1800), Verdict::Deny),
            at(1200),
        )
        .await
        .unwrap();
    let settled = again.request();
    assert_eq!(settled.state(), RequestState::Approved);
    let resolution = settled.resolution.as_ref().unwrap();
    assert_eq!(resolution.outcome.reviewer().unwrap().as_str(), "bob");
    assert!(
        resolution
            .reason
            .as_str()
            .contains("grant of bob on request host-a:r1"),
        "{}",
        resolution.reason
    );
    let pushed = received(&mut decisions);
    assert_eq!(pushed.len(), 1);
    assert_eq!(
        (pushed[0].request_id.as_str(), pushed[0].verdict),
        ("host-a:r2", Verdict::Allow)
    );

    // A different action is not covered.
    let mut other = new_request("host-a:r3", at(1800), Verdict::Deny);
    other.action = Action::Exec(ExecAction::new("/usr/bin/curl", vec![], None).unwrap());
    approvals.submit(me, other, at(1200)).await.unwrap();
    assert_eq!(
        state_of(&approvals, "host-a:r3").await,
        RequestState::Pending
    );

    // After 30 minutes from the decision (at 10 s), the grant is gone.
    approvals
        .submit(
            me,
            new_request("host-a:r4", at(3600), Verdict::Deny),
            at(10 + 1800),
        )
        .await
        .unwrap();
    assert_eq!(
        state_of(&approvals, "host-a:r4").await,
        RequestState::Pending
    );
}

async fn an_agent_scope_does_not_cover_another_agent_but_a_host_scope_does<B: Backend>() {
    let approvals = with_quorum::<B>(1);
    let (session, _decisions) = approvals.attach_agent(&hello("host-a", "alice"));
    let me = session.identity();
    approvals
        .submit(me, new_request("host-a:r1", at(600), Verdict::Deny), at(0))
        .await
        .unwrap();
    approvals
        .decide(
            scoped("host-a:r1", Verdict::Allow, "bob", Scope::Agent(MINUTES_30)),
            at(1),
        )
        .await
        .unwrap();
    let mut from_other_agent = new_request("host-a:r2", at(600), Verdict::Deny);
    from_other_agent.agent_name = Name::new("another-bot").unwrap();
    approvals
        .submit(me, from_other_agent.clone(), at(2))
        .await
        .unwrap();
    assert_eq!(
        state_of(&approvals, "host-a:r2").await,
        RequestState::Pending
    );

    approvals
        .decide(
            scoped("host-a:r2", Verdict::Allow, "bob", Scope::Host(MINUTES_30)),
            at(3),
        )
        .await
        .unwrap();
    from_other_agent.id = id("host-a:r3");
    from_other_agent.agent_name = Name::new("third-bot").unwrap();
    approvals.submit(me, from_other_agent, at(4)).await.unwrap();
    assert_eq!(
        state_of(&approvals, "host-a:r3").await,
        RequestState::Approved
    );

    // Another host is never covered.
    let (other_host, _d) = approvals.attach_agent(&hello("host-b", "alice"));
    approvals
        .submit(
            other_host.identity(),
            new_request("host-b:r4", at(600), Verdict::Deny),
            at(5),
        )
        .await
        .unwrap();
    assert_eq!(
        state_of(&approvals, "host-b:r4").await,
        RequestState::Pending
    );
}

async fn a_grant_never_approves_a_request_owned_by_its_reviewer<B: Backend>() {
    let approvals = with_quorum::<B>(1);
    let (alice_host, _d) = approvals.attach_agent(&hello("host-a", "alice"));
    approvals
        .submit(
            alice_host.identity(),
            new_request("host-a:r1", at(600), Verdict::Deny),
            at(0),
        )
        .await
        .unwrap();
    // bob approves alice's agent for the whole host...
    approvals
        .decide(
            scoped("host-a:r1", Verdict::Allow, "bob", Scope::Host(MINUTES_30)),
            at(1),
        )
        .await
        .unwrap();
    // ...then bob's own agent on that host does the same thing: bob may not approve it,
    // not even through a grant he made before.
    let bobs = agent("host-a", "bob");
    approvals
        .submit(
            &bobs,
            new_request("host-a:r2", at(600), Verdict::Deny),
            at(2),
        )
        .await
        .unwrap();
    assert_eq!(
        state_of(&approvals, "host-a:r2").await,
        RequestState::Pending
    );
}

async fn a_standing_denial_wins_over_a_standing_approval<B: Backend>() {
    let approvals = with_quorum::<B>(1);
    let (session, _d) = approvals.attach_agent(&hello("host-a", "alice"));
    let me = session.identity();
    // Both pending before either is decided, so neither is settled by the other's grant.
    for request in ["host-a:r1", "host-a:r2"] {
        approvals
            .submit(me, new_request(request, at(600), Verdict::Deny), at(0))
            .await
            .unwrap();
    }
    for (request, verdict) in [("host-a:r1", Verdict::Allow), ("host-a:r2", Verdict::Deny)] {
        approvals
            .decide(
                scoped(request, verdict, "bob", Scope::Agent(MINUTES_30)),
                at(1),
            )
            .await
            .unwrap();
    }
    let settled = approvals
        .submit(
            me,
            new_request("host-a:r3", at(600), Verdict::Allow),
            at(20),
        )
        .await
        .unwrap();
    assert_eq!(settled.request().state(), RequestState::Denied);
}

async fn a_kill_cannot_carry_a_scope<B: Backend>() {
    let approvals = with_quorum::<B>(1);
    let (session, _d) = approvals.attach_agent(&hello("host-a", "alice"));
    approvals
        .submit(
            session.identity(),
            new_request("host-a:r1", at(600), Verdict::Deny),
            at(0),
        )
        .await
        .unwrap();
    let err = approvals
        .decide(
            scoped("host-a:r1", Verdict::Kill, "bob", Scope::Host(MINUTES_30)),
            at(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::ScopedKill), "{err:?}");
    assert_eq!(
        state_of(&approvals, "host-a:r1").await,
        RequestState::Pending
    );
}

async fn a_quorum_of_two_needs_two_distinct_reviewers_none_of_them_the_owner<B: Backend>() {
    let approvals = with_quorum::<B>(2);
    let (session, mut decisions) = approvals.attach_agent(&hello("host-a", "alice"));
    approvals
        .submit(
            session.identity(),
            new_request("host-a:r1", at(600), Verdict::Deny),
            at(0),
        )
        .await
        .unwrap();

    let first = approvals
        .decide_counted(decision("host-a:r1", Verdict::Allow, "bob"), at(1))
        .await
        .unwrap();
    assert_eq!((first.approvals, first.quorum), (1, 2));
    assert_eq!(first.request.state(), RequestState::Pending);
    assert!(
        received(&mut decisions).is_empty(),
        "one approval is not enough"
    );

    let err = approvals
        .decide_counted(decision("host-a:r1", Verdict::Allow, "bob"), at(2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApprovalError::AlreadyVoted { quorum: 2, .. }),
        "{err:?}"
    );
    let err = approvals
        .decide_counted(decision("host-a:r1", Verdict::Allow, "alice"), at(2))
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::SelfApproval { .. }), "{err:?}");
    assert_eq!(
        state_of(&approvals, "host-a:r1").await,
        RequestState::Pending
    );

    let second = approvals
        .decide_counted(decision("host-a:r1", Verdict::Allow, "carol"), at(3))
        .await
        .unwrap();
    assert_eq!((second.approvals, second.quorum), (2, 2));
    assert_eq!(second.request.state(), RequestState::Approved);
    let reason = second
        .request
        .resolution
        .as_ref()
        .unwrap()
        .reason
        .as_str()
        .to_owned();
    assert!(reason.contains("approved by bob, carol"), "{reason}");
    let pushed = received(&mut decisions);
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].verdict, Verdict::Allow);
}

async fn under_a_quorum_one_denial_ends_the_request<B: Backend>() {
    let approvals = with_quorum::<B>(2);
    let (session, mut decisions) = approvals.attach_agent(&hello("host-a", "alice"));
    approvals
        .submit(
            session.identity(),
            new_request("host-a:r1", at(600), Verdict::Allow),
            at(0),
        )
        .await
        .unwrap();
    approvals
        .decide_counted(decision("host-a:r1", Verdict::Allow, "bob"), at(1))
        .await
        .unwrap();
    let denied = approvals
        .decide_counted(decision("host-a:r1", Verdict::Deny, "carol"), at(2))
        .await
        .unwrap();
    assert_eq!(denied.request.state(), RequestState::Denied);
    assert_eq!(received(&mut decisions)[0].verdict, Verdict::Deny);
}

async fn a_quorum_grant_covers_no_more_than_every_approver_agreed_to<B: Backend>() {
    let approvals = with_quorum::<B>(2);
    let (session, _d) = approvals.attach_agent(&hello("host-a", "alice"));
    let me = session.identity();
    approvals
        .submit(me, new_request("host-a:r1", at(600), Verdict::Deny), at(0))
        .await
        .unwrap();
    approvals
        .decide(
            scoped("host-a:r1", Verdict::Allow, "bob", Scope::Host(MINUTES_30)),
            at(1),
        )
        .await
        .unwrap();
    approvals
        .decide(
            scoped(
                "host-a:r1",
                Verdict::Allow,
                "carol",
                Scope::Agent(Duration::from_secs(60)),
            ),
            at(2),
        )
        .await
        .unwrap();
    // Narrowed to this agent, for one minute from the decision at 2 s.
    let mut other_agent = new_request("host-a:r2", at(600), Verdict::Deny);
    other_agent.agent_name = Name::new("another-bot").unwrap();
    approvals.submit(me, other_agent, at(10)).await.unwrap();
    assert_eq!(
        state_of(&approvals, "host-a:r2").await,
        RequestState::Pending
    );
    approvals
        .submit(me, new_request("host-a:r3", at(600), Verdict::Deny), at(30))
        .await
        .unwrap();
    assert_eq!(
        state_of(&approvals, "host-a:r3").await,
        RequestState::Approved
    );
    approvals
        .submit(me, new_request("host-a:r4", at(600), Verdict::Deny), at(62))
        .await
        .unwrap();
    assert_eq!(
        state_of(&approvals, "host-a:r4").await,
        RequestState::Pending
    );
}

async fn watchers_see_each_new_request_and_each_resolution_in_order<B: Backend>() {
    let approvals = with_quorum::<B>(1);
    let mut changes = approvals.changes();
    let (session, _d) = approvals.attach_agent(&hello("host-a", "alice"));
    approvals
        .submit(
            session.identity(),
            new_request("host-a:r1", at(600), Verdict::Deny),
            at(0),
        )
        .await
        .unwrap();
    approvals
        .decide(decision("host-a:r1", Verdict::Deny, "bob"), at(1))
        .await
        .unwrap();
    let seen: Vec<(String, RequestState)> = std::iter::from_fn(|| changes.try_recv().ok())
        .map(|request| (request.id.as_str().to_owned(), request.state()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("host-a:r1".to_owned(), RequestState::Pending),
            ("host-a:r1".to_owned(), RequestState::Denied)
        ]
    );
}

for_each_backend!(
    an_agent_scoped_approval_settles_the_same_action_until_it_expires,
    an_agent_scope_does_not_cover_another_agent_but_a_host_scope_does,
    a_grant_never_approves_a_request_owned_by_its_reviewer,
    a_standing_denial_wins_over_a_standing_approval,
    a_kill_cannot_carry_a_scope,
    a_quorum_of_two_needs_two_distinct_reviewers_none_of_them_the_owner,
    under_a_quorum_one_denial_ends_the_request,
    a_quorum_grant_covers_no_more_than_every_approver_agreed_to,
    watchers_see_each_new_request_and_each_resolution_in_order,
);
