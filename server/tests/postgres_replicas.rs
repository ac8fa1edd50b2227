//! The server on PostgreSQL, through real gRPC clients on loopback: the request
//! lifecycle, two replicas sharing one database (agent on one, reviewer on the other; two
//! deciding at once), and a restart mid-request. Each test has a fresh database in the
//! process's throwaway cluster (`belay_server::testing::postgres`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use belay_proto::v1;
use belay_proto::v1::agent_service_client::AgentServiceClient;
use belay_proto::v1::reviewer_service_client::ReviewerServiceClient;
use belay_proto::v1::server_message::Kind;
use belay_server::approvals::{Approvals, AuditOptions, PostgresStore};
use belay_server::testing::postgres::database;
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
    approvals: Weak<Approvals<PostgresStore>>,
}

impl TestServer {
    /// A replica on the database `db`, signing with the key file `key`.
    async fn start(db: &str, key: &Path) -> Self {
        let options = AuditOptions {
            key: Some(key.to_path_buf()),
            checkpoint_every: 3,
        };
        let store = PostgresStore::connect(db, options).await.unwrap();
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

    /// Stops serving and waits until the store is dropped, as when the process exits.
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
                    .list_pending(v1::ListPendingRequest::default())
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

    /// The next decision, skipping other messages (policy updates and the like).
    async fn next_decision(&mut self) -> v1::Decision {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let message = self
                    .from_server
                    .message()
                    .await
                    .unwrap()
                    .expect("the server ended the stream");
                if let Some(Kind::Decision(decision)) = message.kind {
                    return decision;
                }
            }
        })
        .await
        .expect("no decision from the server in time")
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
        ..Default::default()
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
    let server = TestServer::start(&db, &key).await;
    let mut agent = server.agent("host-a", "alice@example.com").await;
    agent
        .submit(connect_request(
            "req-1",
            in_five_minutes(),
            v1::Verdict::Deny,
        ))
        .await;
    let pending = server.wait_pending("req-1").await;
    assert_eq!(pending.state, v1::RequestState::Pending as i32);
    assert_eq!(pending.host, "host-a");

    let own = server
        .decide("req-1", v1::Verdict::Allow, "alice@example.com")
        .await
        .unwrap_err();
    assert_eq!(own.code(), Code::PermissionDenied, "{own:?}");
    let decided = server
        .decide("req-1", v1::Verdict::Allow, "bob@example.com")
        .await
        .unwrap();
    assert_eq!(decided.state, v1::RequestState::Approved as i32);
    let decision = agent.next_decision().await;
    assert_eq!(decision.request_id, "req-1");
    assert_eq!(decision.verdict, v1::Verdict::Allow as i32);

    let again = server
        .decide("req-1", v1::Verdict::Deny, "carol@example.com")
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert_eq!(server.get("req-1").await, decided);
    drop(agent);
    server.stop().await;
}

#[tokio::test]
async fn an_agent_on_one_replica_gets_the_decision_taken_on_the_other() {
    let db = database().await;
    let (_dir, key) = key_file();
    let a = TestServer::start(&db, &key).await;
    let b = TestServer::start(&db, &key).await;
    let mut agent = a.agent("host-a", "alice@example.com").await;
    agent
        .submit(connect_request(
            "req-ab",
            in_five_minutes(),
            v1::Verdict::Deny,
        ))
        .await;
    // Submitted on A, listed by B: one database.
    b.wait_pending("req-ab").await;
    let decided = b
        .decide("req-ab", v1::Verdict::Kill, "bob@example.com")
        .await
        .unwrap();
    assert_eq!(decided.state, v1::RequestState::Denied as i32);
    let decision = agent.next_decision().await;
    assert_eq!(
        (decision.request_id.as_str(), decision.verdict),
        ("req-ab", v1::Verdict::Kill as i32)
    );
    assert_eq!(a.get("req-ab").await, decided);
    drop(agent);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn two_replicas_deciding_the_same_request_make_exactly_one_winner() {
    let db = database().await;
    let (_dir, key) = key_file();
    let a = TestServer::start(&db, &key).await;
    let b = TestServer::start(&db, &key).await;
    let mut agent = a.agent("host-a", "alice@example.com").await;
    let ids: Vec<String> = (0..20).map(|n| format!("race-{n}")).collect();
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
        assert_eq!(a.get(id).await, winner);
        assert_eq!(b.get(id).await, winner);
        let decision = agent.next_decision().await;
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
    let submitted = connect_request("req-restart", deadline, v1::Verdict::Deny);
    // Due while the server is down: the restarted server expires it.
    let short = connect_request(
        "req-short",
        SystemTime::now() + Duration::from_millis(500),
        v1::Verdict::Kill,
    );

    let server = TestServer::start(&db, &key).await;
    let agent = server.agent("host-a", "alice@example.com").await;
    agent.submit(submitted.clone()).await;
    agent.submit(short).await;
    let before = server.wait_pending("req-restart").await;
    server.wait_pending("req-short").await;
    assert_eq!(before.deadline, Some(deadline.into()));
    drop(agent);
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    let server = TestServer::start(&db, &key).await;
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
    let decided = server
        .decide("req-restart", v1::Verdict::Allow, "bob@example.com")
        .await
        .unwrap();
    assert_eq!(decided.state, v1::RequestState::Approved as i32);
    let decision = agent.next_decision().await;
    assert_eq!(
        (decision.request_id.as_str(), decision.verdict),
        ("req-restart", v1::Verdict::Allow as i32)
    );
    drop(agent);
    server.stop().await;

    let server = TestServer::start(&db, &key).await;
    assert_eq!(server.get("req-restart").await, decided);
    server.stop().await;
}
