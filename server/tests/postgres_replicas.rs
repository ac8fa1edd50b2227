//! The server on PostgreSQL, through real gRPC clients on loopback: the request
//! lifecycle, two replicas sharing one database (agent on one, reviewer on the other; two
//! deciding at once), and a restart mid-request. Each test has a fresh database in the
//! process's throwaway cluster (`belay_server::testing::postgres`).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use belay_proto::v1;
use belay_server::ServeOptions;
use belay_server::approvals::{AuditOptions, PostgresStore};
use belay_server::testing::postgres::database;
use support::{PATIENCE, TestServer};
use tonic::Code;

/// A replica on the database `db`, signing with the key file `key`.
async fn start(db: &str, key: &Path) -> TestServer {
    let options = AuditOptions {
        key: Some(key.to_path_buf()),
        checkpoint_every: 3,
    };
    let store = PostgresStore::connect(db, options).await.unwrap();
    TestServer::start(store, ServeOptions::default()).await
}

impl TestServer {
    async fn decide(
        &self,
        id: &str,
        verdict: v1::Verdict,
        reviewer: &str,
    ) -> tonic::Result<v1::Request> {
        self.reviewer()
            .await
            .decide(v1::DecideRequest {
                request_id: id.into(),
                verdict: verdict.into(),
                reason: format!("{reviewer} looked at it"),
                reviewer: reviewer.into(),
                ..Default::default()
            })
            .await
            .map(|response| response.into_inner().request.unwrap())
    }
}

fn connect_request(id: &str, deadline: SystemTime, default_verdict: v1::Verdict) -> v1::NewRequest {
    v1::NewRequest {
        deadline: Some(deadline.into()),
        default_verdict: default_verdict.into(),
        ..support::connect_request(id, 443)
    }
}

fn key_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit-key");
    (dir, key)
}

fn in_five_minutes() -> SystemTime {
    SystemTime::now() + Duration::from_secs(300)
}

#[tokio::test]
async fn a_request_goes_from_pending_to_decided_on_postgres() {
    let db = database().await;
    let (_dir, key) = key_file();
    let server = start(&db, &key).await;
    let mut agent = server.agent("host-a", "alice@example.com").await;
    agent
        .submit(connect_request(
            "host-a:req-1",
            in_five_minutes(),
            v1::Verdict::Deny,
        ))
        .await;
    let pending = server.wait_pending("host-a:req-1").await;
    assert_eq!(pending.state, v1::RequestState::Pending as i32);
    assert_eq!(pending.host, "host-a");

    let own = server
        .decide("host-a:req-1", v1::Verdict::Allow, "alice@example.com")
        .await
        .unwrap_err();
    assert_eq!(own.code(), Code::PermissionDenied, "{own:?}");
    let decided = server
        .decide("host-a:req-1", v1::Verdict::Allow, "bob@example.com")
        .await
        .unwrap();
    assert_eq!(decided.state, v1::RequestState::Approved as i32);
    let decision = agent.skip_to_decision().await;
    assert_eq!(decision.request_id, "host-a:req-1");
    assert_eq!(decision.verdict, v1::Verdict::Allow as i32);

    let again = server
        .decide("host-a:req-1", v1::Verdict::Deny, "carol@example.com")
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert_eq!(server.get_request("host-a:req-1").await, decided);
    drop(agent);
    server.stop().await;
}

#[tokio::test]
async fn an_agent_on_one_replica_gets_the_decision_taken_on_the_other() {
    let db = database().await;
    let (_dir, key) = key_file();
    let a = start(&db, &key).await;
    let b = start(&db, &key).await;
    let mut agent = a.agent("host-a", "alice@example.com").await;
    agent
        .submit(connect_request(
            "host-a:req-ab",
            in_five_minutes(),
            v1::Verdict::Deny,
        ))
        .await;
    // Submitted on A, listed by B: one database.
    b.wait_pending("host-a:req-ab").await;
    let decided = b
        .decide("host-a:req-ab", v1::Verdict::Kill, "bob@example.com")
        .await
        .unwrap();
    assert_eq!(decided.state, v1::RequestState::Denied as i32);
    let decision = agent.skip_to_decision().await;
    assert_eq!(
        (decision.request_id.as_str(), decision.verdict),
        ("host-a:req-ab", v1::Verdict::Kill as i32)
    );
    assert_eq!(a.get_request("host-a:req-ab").await, decided);
    drop(agent);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn two_replicas_deciding_the_same_request_make_exactly_one_winner() {
    let db = database().await;
    let (_dir, key) = key_file();
    let a = start(&db, &key).await;
    let b = start(&db, &key).await;
    let mut agent = a.agent("host-a", "alice@example.com").await;
    let ids: Vec<String> = (0..20).map(|n| format!("host-a:race-{n}")).collect();
    for id in &ids {
        agent
            .submit(connect_request(id, in_five_minutes(), v1::Verdict::Deny))
            .await;
    }
    for id in &ids {
        b.wait_pending(id).await;
    }
    for id in &ids {
        let (on_a, on_b) = tokio::join!(
            a.decide(id, v1::Verdict::Allow, "bob@example.com"),
            b.decide(id, v1::Verdict::Deny, "carol@example.com"),
        );
        let winner = match (on_a, on_b) {
            (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => {
                assert_eq!(lost.code(), Code::FailedPrecondition, "{id}: {lost:?}");
                won
            }
            (a, b) => panic!("{id}: expected one winner, got {a:?} and {b:?}"),
        };
        // Both replicas, and the agent, see the winner's decision and only that one.
        assert_eq!(a.get_request(id).await, winner);
        assert_eq!(b.get_request(id).await, winner);
        let decision = agent.skip_to_decision().await;
        assert_eq!(decision.request_id, *id);
        assert_eq!(decision.state, winner.state);
    }
    drop(agent);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_request_submitted_before_a_restart_is_decided_after_it_on_postgres() {
    let db = database().await;
    let (_dir, key) = key_file();
    let deadline = in_five_minutes();
    let submitted = connect_request("host-a:req-restart", deadline, v1::Verdict::Deny);
    let server = start(&db, &key).await;
    let agent = server.agent("host-a", "alice@example.com").await;
    agent.submit(submitted.clone()).await;
    // Due while the server is down: the restarted server expires it. The deadline is
    // taken once the server is up and leaves seconds for the checks below, so that a
    // slow start on a loaded machine cannot expire it while the server still runs.
    let short_deadline = SystemTime::now() + Duration::from_secs(4);
    agent
        .submit(connect_request(
            "host-a:req-short",
            short_deadline,
            v1::Verdict::Kill,
        ))
        .await;
    let before = server.wait_pending("host-a:req-restart").await;
    server.wait_pending("host-a:req-short").await;
    assert_eq!(before.deadline, Some(deadline.into()));
    drop(agent);
    server.stop().await;
    let due_in = short_deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(due_in + Duration::from_millis(200)).await;

    let server = start(&db, &key).await;
    let after = server.wait_pending("host-a:req-restart").await;
    assert_eq!(after, before, "the request and its deadline survived");
    let expired = tokio::time::timeout(PATIENCE, async {
        loop {
            let request = server.get_request("host-a:req-short").await;
            if request.state != v1::RequestState::Pending as i32 {
                return request;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("req-short never expired");
    assert_eq!(expired.state, v1::RequestState::Expired as i32);
    assert_eq!(
        expired.resolution.unwrap().verdict,
        v1::Verdict::Kill as i32
    );

    // The agent reconnects and resubmits what it still holds, under the same id.
    let mut agent = server.agent("host-a", "alice@example.com").await;
    agent.submit(submitted).await;
    let decided = server
        .decide("host-a:req-restart", v1::Verdict::Allow, "bob@example.com")
        .await
        .unwrap();
    assert_eq!(decided.state, v1::RequestState::Approved as i32);
    let decision = agent.skip_to_decision().await;
    assert_eq!(
        (decision.request_id.as_str(), decision.verdict),
        ("host-a:req-restart", v1::Verdict::Allow as i32)
    );
    drop(agent);
    server.stop().await;

    let server = start(&db, &key).await;
    assert_eq!(server.get_request("host-a:req-restart").await, decided);
    server.stop().await;
}
