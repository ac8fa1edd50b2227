//! Starts the real server on a loopback port and drives it with real tonic clients.

mod support;

use std::time::{Duration, SystemTime};

use belay_proto::v1;
use belay_server::ServeOptions;
use belay_server::approvals::{Approvals, MemoryStore};
use support::{PATIENCE, TestServer, hello};
use tonic::Code;

async fn start() -> TestServer {
    start_with_quorum(1).await
}

async fn start_with_quorum(quorum: u32) -> TestServer {
    let quorum = std::num::NonZeroU32::new(quorum).unwrap();
    let approvals = Approvals::new(MemoryStore::new()).with_quorum(quorum);
    TestServer::start_approvals(approvals, ServeOptions::default()).await
}

fn connect_request(id: &str, port: u32, deadline_in: Duration) -> v1::NewRequest {
    v1::NewRequest {
        deadline: Some((SystemTime::now() + deadline_in).into()),
        ..support::connect_request(id, port)
    }
}

fn request(id: &str) -> v1::NewRequest {
    connect_request(id, 443, Duration::from_secs(300))
}

fn decide(id: &str, verdict: v1::Verdict, reviewer: &str) -> v1::DecideRequest {
    v1::DecideRequest {
        request_id: id.into(),
        verdict: verdict.into(),
        reason: format!("{reviewer} looked at it"),
        reviewer: reviewer.into(),
        scope: None,
    }
}

#[tokio::test]
async fn a_reviewer_decision_reaches_the_agent_that_asked() {
    let server = start().await;
    let mut alice_agent = server.agent("host-a", "alice@example.com").await;
    let mut carol_agent = server.agent("host-c", "carol@example.com").await;
    alice_agent.submit(request("host-a:req-a")).await;

    let pending = server.wait_pending("host-a:req-a").await;
    assert_eq!(pending.host, "host-a");
    assert_eq!(pending.owner, "alice@example.com");
    assert_eq!(pending.state, v1::RequestState::Pending as i32);
    let mut reviewer = server.reviewer().await;
    let fetched = reviewer
        .get_request(v1::GetRequestRequest {
            request_id: "host-a:req-a".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(fetched, pending);

    let decided = reviewer
        .decide(decide(
            "host-a:req-a",
            v1::Verdict::Allow,
            "bob@example.com",
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(decided.state, v1::RequestState::Approved as i32);
    assert_eq!(decided.resolution.unwrap().reviewer, "bob@example.com");

    assert_eq!(
        alice_agent.next_decision().await,
        v1::Decision {
            request_id: "host-a:req-a".into(),
            verdict: v1::Verdict::Allow.into(),
            reason: "bob@example.com looked at it".into(),
            state: v1::RequestState::Approved.into(),
        }
    );

    // Carol's agent was not sent alice's decision: the first thing it gets is its own.
    carol_agent.submit(request("host-c:req-c")).await;
    server.wait_pending("host-c:req-c").await;
    reviewer
        .decide(decide("host-c:req-c", v1::Verdict::Kill, "bob@example.com"))
        .await
        .unwrap();
    let decision = carol_agent.next_decision().await;
    assert_eq!(decision.request_id, "host-c:req-c");
    assert_eq!(decision.verdict, v1::Verdict::Kill as i32);
    assert_eq!(decision.state, v1::RequestState::Denied as i32);
}

#[tokio::test]
async fn the_owner_a_host_names_for_one_agent_may_not_approve_its_requests() {
    let server = start().await;
    // The host's session says alice; this agent's policy subject belongs to carol.
    let mut agent = server.agent("host-a", "alice@example.com").await;
    agent
        .submit(v1::NewRequest {
            owner: "carol@example.com".into(),
            ..request("host-a:req-c")
        })
        .await;
    server.wait_pending("host-a:req-c").await;
    let mut reviewer = server.reviewer().await;
    let status = reviewer
        .decide(decide(
            "host-a:req-c",
            v1::Verdict::Allow,
            "carol@example.com",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // The host's owner is not this agent's owner: it may decide.
    reviewer
        .decide(decide(
            "host-a:req-c",
            v1::Verdict::Allow,
            "alice@example.com",
        ))
        .await
        .unwrap();
    assert_eq!(
        agent.next_decision().await.verdict,
        v1::Verdict::Allow as i32
    );
}

#[tokio::test]
async fn self_approval_and_a_second_decision_are_refused() {
    let server = start().await;
    let mut agent = server.agent("host-a", "alice@example.com").await;
    agent.submit(request("host-a:req-1")).await;
    server.wait_pending("host-a:req-1").await;
    let mut reviewer = server.reviewer().await;

    let status = reviewer
        .decide(decide(
            "host-a:req-1",
            v1::Verdict::Allow,
            "alice@example.com",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "alice@example.com owns the agent that made request host-a:req-1 and may not approve it"
    );

    reviewer
        .decide(decide("host-a:req-1", v1::Verdict::Deny, "bob@example.com"))
        .await
        .unwrap();
    assert_eq!(
        agent.next_decision().await.verdict,
        v1::Verdict::Deny as i32
    );

    let status = reviewer
        .decide(decide(
            "host-a:req-1",
            v1::Verdict::Allow,
            "dave@example.com",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "request host-a:req-1 is already denied");

    let status = reviewer
        .decide(decide(
            "host-a:req-404",
            v1::Verdict::Deny,
            "bob@example.com",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no request with id host-a:req-404");
}

#[tokio::test]
async fn malformed_submissions_are_cancelled_with_invalid_argument_and_the_stream_goes_on() {
    let server = start().await;
    let mut agent = server.agent("host-a", "alice@example.com").await;

    agent
        .submit(connect_request(
            "host-a:port-zero",
            0,
            Duration::from_secs(60),
        ))
        .await;
    assert_eq!(
        agent.next_cancel().await,
        v1::Cancel {
            request_id: "host-a:port-zero".into(),
            code: Code::InvalidArgument as i32,
            message: "invalid request.action.connect.port: must be in 1..=65535, got 0".into(),
        }
    );

    agent
        .submit(v1::NewRequest {
            action: None,
            ..request("host-a:no-action")
        })
        .await;
    let cancel = agent.next_cancel().await;
    assert_eq!(cancel.code, Code::InvalidArgument as i32);
    assert_eq!(cancel.message, "invalid request.action: missing");

    agent.submit(request("host-a:fine")).await;
    server.wait_pending("host-a:fine").await;
    let pending = server
        .reviewer()
        .await
        .list_pending(v1::ListPendingRequest {})
        .await
        .unwrap()
        .into_inner()
        .requests;
    let ids: Vec<&str> = pending.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["host-a:fine"]);

    // Same id, different content: refused, and the stored request is untouched.
    agent
        .submit(connect_request(
            "host-a:fine",
            8443,
            Duration::from_secs(300),
        ))
        .await;
    let cancel = agent.next_cancel().await;
    assert_eq!(cancel.code, Code::AlreadyExists as i32);
    assert_eq!(
        cancel.message,
        "request id host-a:fine was already submitted with different content"
    );
}

#[tokio::test]
async fn a_host_cannot_squat_the_ids_of_another() {
    let server = start().await;
    let mut mallory = server.agent("host-b", "mallory@example.com").await;
    // host-a's next id, taken ahead of it: refused, and nothing is stored.
    mallory.submit(request("host-a:1700000000000:1")).await;
    let cancel = mallory.next_cancel().await;
    assert_eq!(cancel.code, Code::PermissionDenied as i32);
    assert_eq!(cancel.request_id, "host-a:1700000000000:1");
    assert!(
        cancel.message.contains("not one of host host-b"),
        "{}",
        cancel.message
    );
    // So host-a's own request with that id is its own.
    let _alice = {
        let agent = server.agent("host-a", "alice@example.com").await;
        agent.submit(request("host-a:1700000000000:1")).await;
        agent
    };
    let pending = server.wait_pending("host-a:1700000000000:1").await;
    assert_eq!(pending.host, "host-a");
    assert_eq!(pending.owner, "alice@example.com");
}

#[tokio::test]
async fn malformed_reviewer_calls_are_invalid_argument() {
    let server = start().await;
    let mut reviewer = server.reviewer().await;

    let status = reviewer
        .decide(decide("host-a:req-1", v1::Verdict::Unspecified, "bob"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "invalid verdict: must not be unspecified");

    let status = reviewer
        .decide(decide("host-a:req-1", v1::Verdict::Deny, ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "invalid reviewer: must not be empty");

    let status = reviewer
        .get_request(v1::GetRequestRequest {
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "invalid request_id: must not be empty");
}

#[tokio::test]
async fn a_session_must_open_with_a_valid_hello() {
    let server = start().await;

    let not_hello = v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Request(request("host-a:early"))),
    };
    let status = server.try_agent(not_hello).await.err().unwrap();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "the first message of a session must be a hello"
    );

    let status = server.try_agent(hello("host-a", "")).await.err().unwrap();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "invalid hello.owner: must not be empty");
}

#[tokio::test]
async fn an_unanswered_request_ends_with_its_default_verdict() {
    let server = start().await;
    let mut agent = server.agent("host-a", "alice@example.com").await;
    agent
        .submit(v1::NewRequest {
            default_verdict: v1::Verdict::Kill.into(),
            ..connect_request("host-a:slow", 443, Duration::from_millis(300))
        })
        .await;

    let decision = agent.next_decision().await;
    assert_eq!(decision.request_id, "host-a:slow");
    assert_eq!(decision.verdict, v1::Verdict::Kill as i32);
    assert_eq!(decision.state, v1::RequestState::Expired as i32);
}

#[tokio::test]
async fn a_reconnecting_agent_learns_decisions_made_while_it_was_away() {
    let server = start().await;
    let agent = server.agent("host-a", "alice@example.com").await;
    let submitted = request("host-a:req-away");
    agent.submit(submitted.clone()).await;
    server.wait_pending("host-a:req-away").await;
    drop(agent);

    server
        .reviewer()
        .await
        .decide(decide(
            "host-a:req-away",
            v1::Verdict::Allow,
            "bob@example.com",
        ))
        .await
        .unwrap();

    let mut agent = server.agent("host-a", "alice@example.com").await;
    agent.submit(submitted).await;
    let decision = agent.next_decision().await;
    assert_eq!(decision.request_id, "host-a:req-away");
    assert_eq!(decision.verdict, v1::Verdict::Allow as i32);
}

#[tokio::test]
async fn shutdown_ends_agent_sessions_with_unavailable() {
    let mut server = start().await;
    let mut agent = server.agent("host-a", "alice@example.com").await;

    server.stop.take().unwrap().send(()).unwrap();

    let status = agent.next().await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let served = tokio::time::timeout(PATIENCE, &mut server.task)
        .await
        .expect("server did not stop in time")
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
}

fn scope(kind: v1::ScopeKind, seconds: i64) -> Option<v1::Scope> {
    Some(v1::Scope {
        kind: kind.into(),
        duration: Some(prost_types::Duration { seconds, nanos: 0 }),
    })
}

#[tokio::test]
async fn a_scoped_approval_settles_the_next_identical_request_without_a_reviewer() {
    let server = start().await;
    let mut agent = server.agent("host-a", "alice@example.com").await;
    agent.submit(request("host-a:req-1")).await;
    server.wait_pending("host-a:req-1").await;
    let mut reviewer = server.reviewer().await;

    // Longer than a day: refused, and nothing decided.
    let status = reviewer
        .decide(v1::DecideRequest {
            scope: scope(v1::ScopeKind::Agent, 25 * 3600),
            ..decide("host-a:req-1", v1::Verdict::Allow, "bob@example.com")
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("scope.duration"), "{status:?}");

    reviewer
        .decide(v1::DecideRequest {
            scope: scope(v1::ScopeKind::Agent, 600),
            ..decide("host-a:req-1", v1::Verdict::Allow, "bob@example.com")
        })
        .await
        .unwrap();
    assert_eq!(agent.next_decision().await.request_id, "host-a:req-1");

    // The same connect again: decided at once by the grant, never pending.
    agent.submit(request("host-a:req-2")).await;
    let decision = agent.next_decision().await;
    assert_eq!(decision.request_id, "host-a:req-2");
    assert_eq!(decision.verdict, v1::Verdict::Allow as i32);
    assert!(
        decision
            .reason
            .contains("grant of bob@example.com on request host-a:req-1"),
        "{decision:?}"
    );
    let pending = reviewer
        .list_pending(v1::ListPendingRequest {})
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert!(pending.is_empty(), "{pending:?}");
}

#[tokio::test]
async fn with_a_quorum_of_two_the_first_approval_is_counted_and_the_second_decides() {
    let server = start_with_quorum(2).await;
    let mut agent = server.agent("host-a", "alice@example.com").await;
    agent.submit(request("host-a:req-q")).await;
    server.wait_pending("host-a:req-q").await;
    let mut reviewer = server.reviewer().await;

    let first = reviewer
        .decide(decide(
            "host-a:req-q",
            v1::Verdict::Allow,
            "bob@example.com",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.approvals, first.quorum), (1, 2));
    assert_eq!(
        first.request.unwrap().state,
        v1::RequestState::Pending as i32
    );

    let status = reviewer
        .decide(decide(
            "host-a:req-q",
            v1::Verdict::Allow,
            "bob@example.com",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    let second = reviewer
        .decide(decide(
            "host-a:req-q",
            v1::Verdict::Allow,
            "carol@example.com",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((second.approvals, second.quorum), (2, 2));
    assert_eq!(
        second.request.unwrap().state,
        v1::RequestState::Approved as i32
    );
    let decision = agent.next_decision().await;
    assert_eq!(
        (decision.request_id.as_str(), decision.verdict),
        ("host-a:req-q", v1::Verdict::Allow as i32)
    );
}
