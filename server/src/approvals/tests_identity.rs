//! Who counts as whom, and what a grant covers, run once per store backend: another
//! spelling of the owner's name is the owner, one person is one vote, and a grant
//! settles only the argv, environment and directory that were reviewed.

use std::num::NonZeroU32;
use std::time::Duration;

use belay_proto::domain::{Action, ExecAction, RequestState, Scope, Verdict};

use super::tests::{agent, at, decision, hello, id, new_request};
use super::*;
use crate::store::testing::{Backend, Opened, for_each_backend};

const MINUTES_30: Duration = Duration::from_secs(30 * 60);

fn with_quorum<B: Backend>(quorum: u32) -> Opened<Approvals<B::Store>> {
    B::open().map(|store| Approvals::new(store).with_quorum(NonZeroU32::new(quorum).unwrap()))
}

async fn state_of<S: Store>(approvals: &Approvals<S>, request: &str) -> RequestState {
    approvals.get(&id(request)).await.unwrap().state()
}

fn exec(argv: &[&str], env: &[&str], cwd: &str) -> Action {
    let exec = ExecAction::new(
        "/usr/bin/curl",
        argv.iter().map(|a| (*a).to_owned()).collect(),
        Some(cwd.to_owned()),
    )
    .unwrap()
    .with_env(env.iter().map(|e| (*e).to_owned()).collect())
    .unwrap();
    Action::Exec(exec)
}

fn exec_request(request_id: &str, action: Action) -> NewRequest {
    NewRequest {
        action,
        ..new_request(request_id, at(3000), Verdict::Deny)
    }
}

async fn a_grant_covers_only_the_argv_env_and_cwd_that_were_reviewed<B: Backend>() {
    let approvals = with_quorum::<B>(1);
    let (session, _decisions) = approvals.attach_agent(&hello("host-a", "alice"));
    let me = session.identity();
    let argv = ["curl", "https://api.example.com/"];
    let env = ["PATH=/usr/bin", "HOME=/home/agent"];
    let reviewed = exec(&argv, &env, "/srv/work");
    approvals
        .submit(me, exec_request("host-a:r1", reviewed.clone()), at(0))
        .await
        .unwrap();
    approvals
        .decide(
            ReviewerDecision {
                scope: Scope::Host(MINUTES_30),
                ..decision("host-a:r1", Verdict::Allow, "bob")
            },
            at(1),
        )
        .await
        .unwrap();

    // Exactly what bob saw: settled by his grant.
    approvals
        .submit(me, exec_request("host-a:same", reviewed), at(2))
        .await
        .unwrap();
    assert_eq!(
        state_of(&approvals, "host-a:same").await,
        RequestState::Approved
    );

    // Anything else bob did not see is asked again.
    let unseen = [
        (
            "host-a:argv",
            exec(&["curl", "https://evil.example/"], &env, "/srv/work"),
        ),
        (
            "host-a:env",
            exec(
                &argv,
                &["PATH=/usr/bin", "HOME=/home/agent", "LD_PRELOAD=/tmp/x.so"],
                "/srv/work",
            ),
        ),
        ("host-a:cwd", exec(&argv, &env, "/tmp/elsewhere")),
        (
            "host-a:env-order",
            exec(&argv, &["HOME=/home/agent", "PATH=/usr/bin"], "/srv/work"),
        ),
    ];
    for (what, action) in unseen {
        approvals
            .submit(me, exec_request(what, action), at(3))
            .await
            .unwrap();
        assert_eq!(
            state_of(&approvals, what).await,
            RequestState::Pending,
            "a different {what} is not covered by the grant"
        );
    }
}

async fn no_other_spelling_of_the_owner_approves_or_grants<B: Backend>() {
    let approvals = with_quorum::<B>(1);
    let (alices, _d) = approvals.attach_agent(&hello("host-a", "alice@example.com"));
    approvals
        .submit(
            alices.identity(),
            new_request("host-a:r1", at(600), Verdict::Deny),
            at(0),
        )
        .await
        .unwrap();
    for spelling in ["Alice@Example.com", "ALICE@EXAMPLE.COM"] {
        let err = approvals
            .decide(decision("host-a:r1", Verdict::Allow, spelling), at(1))
            .await
            .unwrap_err();
        assert!(matches!(err, ApprovalError::SelfApproval { .. }), "{err:?}");
    }
    assert_eq!(
        state_of(&approvals, "host-a:r1").await,
        RequestState::Pending
    );

    // The owner as the host spells it is no way round either.
    let shouting = agent("host-b", "Alice@EXAMPLE.com");
    approvals
        .submit(
            &shouting,
            new_request("host-b:r2", at(600), Verdict::Deny),
            at(1),
        )
        .await
        .unwrap();
    let err = approvals
        .decide(
            decision("host-b:r2", Verdict::Allow, "alice@example.com"),
            at(2),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::SelfApproval { .. }), "{err:?}");

    // A grant alice (under another spelling) gives on bob's agent settles nothing of
    // hers on that host.
    let bobs = agent("host-a", "bob@example.com");
    approvals
        .submit(
            &bobs,
            new_request("host-a:r3", at(600), Verdict::Deny),
            at(3),
        )
        .await
        .unwrap();
    approvals
        .decide(
            ReviewerDecision {
                scope: Scope::Host(MINUTES_30),
                ..decision("host-a:r3", Verdict::Allow, "Alice@Example.com")
            },
            at(4),
        )
        .await
        .unwrap();
    approvals
        .submit(
            alices.identity(),
            new_request("host-a:r4", at(600), Verdict::Deny),
            at(5),
        )
        .await
        .unwrap();
    assert_eq!(
        state_of(&approvals, "host-a:r4").await,
        RequestState::Pending
    );
}

async fn one_person_under_two_spellings_is_one_vote<B: Backend>() {
    let approvals = with_quorum::<B>(2);
    let (session, _d) = approvals.attach_agent(&hello("host-a", "alice@example.com"));
    approvals
        .submit(
            session.identity(),
            new_request("host-a:r1", at(600), Verdict::Deny),
            at(0),
        )
        .await
        .unwrap();
    let first = approvals
        .decide_counted(
            decision("host-a:r1", Verdict::Allow, "Bob@Example.com"),
            at(1),
        )
        .await
        .unwrap();
    assert_eq!((first.approvals, first.quorum), (1, 2));
    let err = approvals
        .decide_counted(
            decision("host-a:r1", Verdict::Allow, "bob@example.com"),
            at(2),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApprovalError::AlreadyVoted { quorum: 2, .. }),
        "{err:?}"
    );
    assert_eq!(
        state_of(&approvals, "host-a:r1").await,
        RequestState::Pending
    );
}

for_each_backend!(
    a_grant_covers_only_the_argv_env_and_cwd_that_were_reviewed,
    no_other_spelling_of_the_owner_approves_or_grants,
    one_person_under_two_spellings_is_one_vote,
);
