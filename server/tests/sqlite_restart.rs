//! The server on a SQLite file, restarted mid-request: what agents submitted before the
//! restart is decided after it, through real gRPC clients on loopback.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use belay_proto::v1;
use belay_proto::v1::agent_service_client::AgentServiceClient;
use belay_proto::v1::reviewer_service_client::ReviewerServiceClient;
use belay_proto::v1::server_message::Kind;
use belay_server::approvals::{Approvals, SqliteStore};
use belay_server::{ServeError, serve};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// Long enough for a loaded CI machine; every wait in these tests is bounded by it.
const PATIENCE: Duration = Duration::from_secs(10);

struct TestServer {
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
    approvals: Weak<Approvals<SqliteStore>>,
}

impl TestServer {
    async fn start(db: &Path) -> Self {
        let store = SqliteStore::open(db).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let approvals = Arc::new(Approvals::new(store));
        let weak = Arc::downgrade(&approvals);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(
            listener,
            approvals,
            belay_server::ServeOptions::default(),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            url,
            stop,
            task,
            approvals: weak,
        }
    }

    /// Stops serving and waits until the store is closed, as when the process exits.
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(PATIENCE, async {
            self.task.await.unwrap().unwrap();
            while self.approvals.strong_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the server did not stop in time");
    }

    async fn reviewer(&self) -> ReviewerServiceClient<Channel> {
        ReviewerServiceClient::connect(self.url.clone())
            .await
            .unwrap()
    }

    async fn agent(&self, host: &str, owner: &str) -> TestAgent {
        let mut client = AgentServiceClient::connect(self.url.clone()).await.unwrap();
        let (to_server, outbound) = mpsc::channel(16);
        to_server
            .send(v1::AgentMessage {
                kind: Some(v1::agent_message::Kind::Hello(v1::Hello {
                    host: host.into(),
                    version: "0.1.0-test".into(),
                    owner: owner.into(),
                })),
            })
            .await
            .unwrap();
        let from_server = client
            .session(ReceiverStream::new(outbound))
            .await
            .unwrap()
            .into_inner();
        TestAgent {
            to_server,
            from_server,
        }
    }

    async fn get(&self, id: &str) -> v1::Request {
        self.reviewer()
            .await
            .get_request(v1::GetRequestRequest {
                request_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .request
            .unwrap()
    }

    /// Waits until `id` is stored as pending; submissions travel on another stream.
    async fn wait_pending(&self, id: &str) -> v1::Request {
        let mut reviewer = self.reviewer().await;
        tokio::time::timeout(PATIENCE, async {
            loop {
                let pending = reviewer
                    .list_pending(v1::ListPendingRequest {})
                    .await
                    .unwrap()
                    .into_inner()
                    .requests;
                if let Some(request) = pending.into_iter().find(|r| r.id == id) {
                    return request;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{id} never became pending"))
    }
}

struct TestAgent {
    to_server: mpsc::Sender<v1::AgentMessage>,
    from_server: Streaming<v1::ServerMessage>,
}

impl TestAgent {
    async fn submit(&self, request: v1::NewRequest) {
        self.to_server
            .send(v1::AgentMessage {
                kind: Some(v1::agent_message::Kind::Request(request)),
            })
            .await
            .unwrap();
    }

    async fn next_decision(&mut self) -> v1::Decision {
        let message = tokio::time::timeout(PATIENCE, self.from_server.message())
            .await
            .expect("no message from the server in time")
            .unwrap()
            .expect("the server ended the stream");
        match message.kind {
            Some(Kind::Decision(decision)) => decision,
            other => panic!("expected a decision, got {other:?}"),
        }
    }
}

fn connect_request(id: &str, deadline: SystemTime, default_verdict: v1::Verdict) -> v1::NewRequest {
    v1::NewRequest {
        id: id.into(),
        agent_name: "copilot".into(),
        pid: 4242,
        uid: 1000,
        action: Some(v1::Action {
            kind: Some(v1::action::Kind::Connect(v1::Connect {
                address: "192.0.2.10".into(),
                port: 443,
                protocol: v1::Protocol::Tcp.into(),
            })),
        }),
        deadline: Some(deadline.into()),
        default_verdict: default_verdict.into(),
        rule: "egress-unknown".into(),
        owner: String::new(),
        context: None,
    }
}

#[tokio::test]
async fn a_request_submitted_before_a_restart_is_decided_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    let deadline = SystemTime::now() + Duration::from_secs(300);
    let submitted = connect_request("req-restart", deadline, v1::Verdict::Deny);
    // Due while the server is down: the restarted server expires it.
    let short = connect_request(
        "req-short",
        SystemTime::now() + Duration::from_millis(500),
        v1::Verdict::Kill,
    );

    let server = TestServer::start(&db).await;
    let agent = server.agent("host-a", "alice@example.com").await;
    agent.submit(submitted.clone()).await;
    agent.submit(short).await;
    let before = server.wait_pending("req-restart").await;
    server.wait_pending("req-short").await;
    assert_eq!(before.deadline, Some(deadline.into()));
    drop(agent);
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    let server = TestServer::start(&db).await;
    let after = server.wait_pending("req-restart").await;
    assert_eq!(after, before, "the request and its deadline survived");
    let expired = tokio::time::timeout(PATIENCE, async {
        loop {
            let request = server.get("req-short").await;
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
            request_id: "req-restart".into(),
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
            request_id: "req-restart".into(),
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
            request_id: "req-restart".into(),
            verdict: v1::Verdict::Allow.into(),
            reason: "expected traffic".into(),
            state: v1::RequestState::Approved.into(),
        }
    );
    drop(agent);
    server.stop().await;

    // And the decision itself survives the next restart.
    let server = TestServer::start(&db).await;
    assert_eq!(server.get("req-restart").await, decided);
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
