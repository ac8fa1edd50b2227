//! The server on a SQLite file, restarted mid-request: what agents submitted before the
//! restart is decided after it, through real gRPC clients on loopback.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use belay_proto::v1;
use belay_server::ServeOptions;
use belay_server::approvals::SqliteStore;
use support::{PATIENCE, TestServer};
use tonic::Code;

async fn start(db: &Path) -> TestServer {
    TestServer::start(SqliteStore::open(db).unwrap(), ServeOptions::default()).await
}

fn connect_request(id: &str, deadline: SystemTime, default_verdict: v1::Verdict) -> v1::NewRequest {
    v1::NewRequest {
        deadline: Some(deadline.into()),
        default_verdict: default_verdict.into(),
        ..support::connect_request(id, 443)
    }
}

#[tokio::test]
async fn a_request_submitted_before_a_restart_is_decided_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    let deadline = SystemTime::now() + Duration::from_secs(300);
    let submitted = connect_request("host-a:req-restart", deadline, v1::Verdict::Deny);
    let server = start(&db).await;
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

    let server = start(&db).await;
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
    let mut reviewer = server.reviewer().await;
    let status = reviewer
        .decide(v1::DecideRequest {
            request_id: "host-a:req-restart".into(),
            verdict: v1::Verdict::Allow.into(),
            reason: "alice's owner is not me".into(),
            reviewer: "alice@example.com".into(),
            scope: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let decided = reviewer
        .decide(v1::DecideRequest {
            request_id: "host-a:req-restart".into(),
            verdict: v1::Verdict::Allow.into(),
            reason: "expected traffic".into(),
            reviewer: "bob@example.com".into(),
            scope: None,
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(decided.state, v1::RequestState::Approved as i32);
    assert_eq!(
        agent.next_decision().await,
        v1::Decision {
            request_id: "host-a:req-restart".into(),
            verdict: v1::Verdict::Allow.into(),
            reason: "expected traffic".into(),
            state: v1::RequestState::Approved.into(),
        }
    );
    drop(agent);
    server.stop().await;

    // And the decision itself survives the next restart.
    let server = start(&db).await;
    assert_eq!(server.get_request("host-a:req-restart").await, decided);
    let pending = server
        .reviewer()
        .await
        .list_pending(v1::ListPendingRequest {})
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert!(pending.is_empty(), "{pending:?}");
    server.stop().await;
}
