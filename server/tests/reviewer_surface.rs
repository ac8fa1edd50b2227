//! The reviewer surface beyond single requests, against the real server on loopback with
//! a real SQLite store: the live watch, the connected agents, pages of the audit log,
//! the request context end to end, and the HTTP health and metrics endpoints.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use belay_proto::v1;
use belay_proto::v1::watch_requests_response::Kind as Watched;
use belay_server::ServeOptions;
use belay_server::approvals::SqliteStore;
use support::{PATIENCE, TestServer, connect_request};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tonic::{Code, Streaming};

/// The server on the SQLite file `db`, with its HTTP endpoints.
async fn start(db: &Path) -> TestServer {
    let mut options = ServeOptions::default();
    options.http = Some(TcpListener::bind("127.0.0.1:0").await.unwrap());
    TestServer::start(SqliteStore::open(db).unwrap(), options).await
}

impl TestServer {
    /// `id` once it is pending, as `GetRequest` shows it.
    async fn pending_request(&self, id: &str) -> v1::Request {
        self.wait_pending(id).await;
        self.get_request(id).await
    }

    /// An agent that reports version 0.9.1-test, which the agent list shows.
    async fn agent_0_9(&self, host: &str, owner: &str) -> support::TestAgent {
        let hello = v1::Hello {
            host: host.into(),
            version: "0.9.1-test".into(),
            owner: owner.into(),
        };
        self.try_agent(v1::AgentMessage {
            kind: Some(v1::agent_message::Kind::Hello(hello)),
        })
        .await
        .unwrap()
    }

    /// GET `path` on the HTTP endpoints: status code and body.
    async fn get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.http.unwrap()).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
            .await
            .unwrap()
            .unwrap();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// The value of the sample `series` (name with labels) on /metrics.
    async fn metric(&self, series: &str) -> f64 {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{body}"))
            .parse()
            .unwrap()
    }

    /// Waits until `series` reads `want` (counters follow changes asynchronously).
    async fn expect_metric(&self, series: &str, want: f64) {
        let outcome = tokio::time::timeout(PATIENCE, async {
            loop {
                if self.metric(series).await == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if outcome.is_err() {
            panic!("{series} is {}, expected {want}", self.metric(series).await);
        }
    }
}

/// Polls `probe` until it yields something, for at most [`PATIENCE`].
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    mut probe: impl FnMut() -> F,
) -> T {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition not met in time")
}

fn context() -> v1::RequestContext {
    v1::RequestContext {
        ancestry: vec![
            v1::Ancestor {
                pid: 4000,
                comm: "node".into(),
                exe: "/usr/bin/node".into(),
            },
            v1::Ancestor {
                pid: 1,
                comm: "systemd".into(),
                exe: "/usr/lib/systemd/systemd".into(),
            },
        ],
        user: "dev".into(),
        cgroup: "/kubepods.slice/kubepods-pod0b6f3a4e_1c2d_4e5f_8a9b_0c1d2e3f4a5b.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope".into(),
        container_id: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
        pod_uid: "0b6f3a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
        cwd: "/work/repo".into(),
        subject: "copilot".into(),
        hostnames: vec!["api.example.com".into()],
        intent: None,
    }
}

fn decide(id: &str, verdict: v1::Verdict, reviewer: &str) -> v1::DecideRequest {
    v1::DecideRequest {
        request_id: id.into(),
        verdict: verdict.into(),
        reason: "looked at it".into(),
        reviewer: reviewer.into(),
        ..Default::default()
    }
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("server.db")
}

async fn next_watched(watch: &mut Streaming<v1::WatchRequestsResponse>) -> Watched {
    tokio::time::timeout(PATIENCE, watch.message())
        .await
        .expect("nothing watched in time")
        .unwrap()
        .expect("the watch ended")
        .kind
        .expect("empty watch message")
}

fn watched_request(kind: Watched) -> (String, v1::RequestState) {
    match kind {
        Watched::Request(r) => (r.id.clone(), r.state()),
        Watched::Synced(_) => panic!("expected a request, got the synced marker"),
    }
}

#[tokio::test]
async fn watch_sends_the_pending_set_then_every_change_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&db(&dir)).await;
    let agent = server.agent_0_9("host-a", "alice@example.com").await;
    agent.submit(connect_request("host-a:old-1", 443)).await;
    agent.submit(connect_request("host-a:old-2", 444)).await;
    server.pending_request("host-a:old-2").await;

    let mut reviewer = server.reviewer().await;
    let mut watch = reviewer
        .watch_requests(v1::WatchRequestsRequest {})
        .await
        .unwrap()
        .into_inner();
    use v1::RequestState::{Approved, Denied, Pending};
    assert_eq!(
        watched_request(next_watched(&mut watch).await),
        ("host-a:old-1".into(), Pending)
    );
    assert_eq!(
        watched_request(next_watched(&mut watch).await),
        ("host-a:old-2".into(), Pending)
    );
    assert!(matches!(next_watched(&mut watch).await, Watched::Synced(_)));

    agent.submit(connect_request("host-a:new-1", 445)).await;
    assert_eq!(
        watched_request(next_watched(&mut watch).await),
        ("host-a:new-1".into(), Pending)
    );
    reviewer
        .decide(decide(
            "host-a:new-1",
            v1::Verdict::Allow,
            "bob@example.com",
        ))
        .await
        .unwrap();
    assert_eq!(
        watched_request(next_watched(&mut watch).await),
        ("host-a:new-1".into(), Approved)
    );
    reviewer
        .decide(decide("host-a:old-1", v1::Verdict::Deny, "bob@example.com"))
        .await
        .unwrap();
    match next_watched(&mut watch).await {
        Watched::Request(r) => {
            assert_eq!((r.id.as_str(), r.state()), ("host-a:old-1", Denied));
            let resolution = r.resolution.unwrap();
            assert_eq!(resolution.reviewer, "bob@example.com");
            assert_eq!(resolution.reason, "looked at it");
        }
        other => panic!("expected old-1 denied, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn list_agents_shows_connected_agents_until_their_stream_ends() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&db(&dir)).await;
    let mut reviewer = server.reviewer().await;
    assert!(
        reviewer
            .list_agents(v1::ListAgentsRequest {})
            .await
            .unwrap()
            .into_inner()
            .agents
            .is_empty()
    );

    let before = SystemTime::now() - Duration::from_secs(1);
    let agent_b = server.agent_0_9("host-b", "bob@example.com").await;
    let agent_a = server.agent_0_9("host-a", "alice@example.com").await;
    agent_a.submit(connect_request("host-a:a-1", 443)).await;
    agent_a.submit(connect_request("host-a:a-2", 444)).await;
    server.pending_request("host-a:a-2").await;

    let agents = reviewer
        .list_agents(v1::ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    let summary: Vec<_> = agents
        .iter()
        .map(|a| {
            (
                a.host.as_str(),
                a.owner.as_str(),
                a.version.as_str(),
                a.pending,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("host-a", "alice@example.com", "0.9.1-test", 2),
            ("host-b", "bob@example.com", "0.9.1-test", 0),
        ]
    );
    let since = SystemTime::try_from(agents[0].connected_at.unwrap()).unwrap();
    assert!(since >= before && since <= SystemTime::now(), "{since:?}");

    drop(agent_a);
    let left = eventually(|| {
        let mut reviewer = reviewer.clone();
        async move {
            let agents = reviewer
                .list_agents(v1::ListAgentsRequest {})
                .await
                .unwrap()
                .into_inner()
                .agents;
            (agents.len() == 1).then_some(agents)
        }
    })
    .await;
    assert_eq!(left[0].host, "host-b");
    drop(agent_b);
    server.stop().await;
}

#[tokio::test]
async fn query_audit_pages_through_the_records_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&db(&dir)).await;
    let agent = server.agent_0_9("host-a", "alice@example.com").await;
    for (i, id) in ["host-a:r-1", "host-a:r-2", "host-a:r-3"]
        .iter()
        .enumerate()
    {
        agent.submit(connect_request(id, 443 + i as u32)).await;
        server.pending_request(id).await;
    }
    let mut reviewer = server.reviewer().await;
    reviewer
        .decide(decide("host-a:r-2", v1::Verdict::Deny, "bob@example.com"))
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let page = reviewer
            .query_audit(v1::QueryAuditRequest {
                after_seq: after,
                limit: 2,
            })
            .await
            .unwrap()
            .into_inner();
        if page.records.is_empty() {
            assert_eq!(page.next_after_seq, after);
            break;
        }
        assert!(page.records.len() <= 2);
        pages += 1;
        for record in &page.records {
            assert!(record.at.is_some());
            assert_eq!(record.hash.len(), 32);
            seen.push((record.seq, record.kind.clone(), record.request_id.clone()));
        }
        after = page.next_after_seq;
    }
    assert_eq!(pages, 2);
    assert_eq!(
        seen,
        [
            (1, "submitted".into(), "host-a:r-1".into()),
            (2, "submitted".into(), "host-a:r-2".into()),
            (3, "submitted".into(), "host-a:r-3".into()),
            (4, "decided".into(), "host-a:r-2".into()),
        ]
    );

    // Pages chain: each record's prev_hash is the hash of the one before it.
    let all = reviewer
        .query_audit(v1::QueryAuditRequest {
            after_seq: 0,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.records.len(), 4);
    assert_eq!(all.next_after_seq, 4);
    for pair in all.records.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }

    let refused = reviewer
        .query_audit(v1::QueryAuditRequest {
            after_seq: 0,
            limit: 1001,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("limit"), "{}", refused.message());
    server.stop().await;
}

#[tokio::test]
async fn context_goes_from_agent_to_reviewer_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&db(&dir)).await;
    let agent = server.agent_0_9("host-a", "alice@example.com").await;
    let mut reviewer = server.reviewer().await;
    let mut watch = reviewer
        .watch_requests(v1::WatchRequestsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next_watched(&mut watch).await, Watched::Synced(_)));

    agent
        .submit(v1::NewRequest {
            context: Some(context()),
            ..connect_request("host-a:ctx-1", 443)
        })
        .await;
    match next_watched(&mut watch).await {
        Watched::Request(r) => assert_eq!(r.context, Some(context())),
        other => panic!("expected ctx-1, got {other:?}"),
    }
    assert_eq!(
        server.pending_request("host-a:ctx-1").await.context,
        Some(context())
    );

    // A resubmission with another context is the same request; the first context stands.
    let mut other = context();
    other.cwd = "/elsewhere".into();
    agent
        .submit(v1::NewRequest {
            context: Some(other),
            ..connect_request("host-a:ctx-1", 443)
        })
        .await;
    // A request without context: absent stays absent.
    agent.submit(connect_request("host-a:bare-1", 444)).await;
    assert_eq!(server.pending_request("host-a:bare-1").await.context, None);
    assert_eq!(
        server.pending_request("host-a:ctx-1").await.context,
        Some(context())
    );

    drop(agent);
    drop(watch);
    server.stop().await;
    let server = start(&db(&dir)).await;
    assert_eq!(
        server.pending_request("host-a:ctx-1").await.context,
        Some(context())
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_or_oversized_context_is_refused_and_nothing_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&db(&dir)).await;
    let mut agent = server.agent_0_9("host-a", "alice@example.com").await;
    let mut reviewer = server.reviewer().await;

    let mut malformed = context();
    malformed.container_id = "not-hex".into();
    let mut oversized = context();
    oversized.ancestry = vec![oversized.ancestry[0].clone(); 33];
    let mut escape = context();
    escape.ancestry[0].comm = "node\u{1b}[2J".into();
    let cases = [
        (
            "bad-1",
            malformed,
            "invalid request.context.container_id: must be 64 lowercase hex digits",
        ),
        (
            "bad-2",
            oversized,
            "invalid request.context.ancestry: has 33 entries, at most 32 allowed",
        ),
        (
            "bad-3",
            escape,
            "invalid request.context.ancestry[0].comm: contains the forbidden character '\\u{1b}'",
        ),
    ];
    for (id, context, message) in cases {
        agent
            .submit(v1::NewRequest {
                context: Some(context),
                ..connect_request(id, 443)
            })
            .await;
        let cancel = agent.next_cancel().await;
        assert_eq!(cancel.request_id, id);
        assert_eq!(cancel.code, Code::InvalidArgument as i32);
        assert_eq!(cancel.message, message);
        let lookup = reviewer
            .get_request(v1::GetRequestRequest {
                request_id: id.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(lookup.code(), Code::NotFound);
    }
    let audit = reviewer
        .query_audit(v1::QueryAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(audit.records.is_empty(), "{:?}", audit.records);
    server.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_follow_the_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&db(&dir)).await;
    assert_eq!(server.get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(server.get("/readyz").await, (200, "ready\n".into()));
    assert_eq!(server.get("/nope").await.0, 404);

    assert_eq!(server.metric("belay_requests_pending").await, 0.0);
    assert_eq!(server.metric("belay_connected_agents").await, 0.0);
    assert_eq!(
        server.metric("belay_decision_latency_seconds_count").await,
        0.0
    );

    let agent = server.agent_0_9("host-a", "alice@example.com").await;
    server.expect_metric("belay_connected_agents", 1.0).await;
    for (i, id) in ["host-a:m-1", "host-a:m-2", "host-a:m-3"]
        .iter()
        .enumerate()
    {
        agent.submit(connect_request(id, 443 + i as u32)).await;
    }
    server.pending_request("host-a:m-3").await;
    assert_eq!(server.metric("belay_requests_pending").await, 3.0);
    server
        .expect_metric("belay_requests_created_total", 3.0)
        .await;

    let mut reviewer = server.reviewer().await;
    reviewer
        .decide(decide("host-a:m-1", v1::Verdict::Allow, "bob@example.com"))
        .await
        .unwrap();
    reviewer
        .decide(decide("host-a:m-2", v1::Verdict::Kill, "bob@example.com"))
        .await
        .unwrap();
    agent
        .to_server
        .send(v1::AgentMessage {
            kind: Some(v1::agent_message::Kind::Withdraw(v1::Withdraw {
                request_id: "host-a:m-3".into(),
                reason: "process exited".into(),
            })),
        })
        .await
        .unwrap();
    server
        .expect_metric("belay_requests_resolved_total{state=\"cancelled\"}", 1.0)
        .await;
    assert_eq!(server.metric("belay_requests_pending").await, 0.0);
    assert_eq!(
        server
            .metric("belay_requests_resolved_total{state=\"approved\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("belay_requests_resolved_total{state=\"denied\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("belay_requests_resolved_total{state=\"expired\"}")
            .await,
        0.0
    );
    // Two reviewer decisions, each well within a minute of its request.
    assert_eq!(
        server.metric("belay_decision_latency_seconds_count").await,
        2.0
    );
    assert_eq!(
        server
            .metric("belay_decision_latency_seconds_bucket{le=\"60\"}")
            .await,
        2.0
    );
    assert!(server.metric("belay_decision_latency_seconds_sum").await < 120.0);

    let (_, body) = server.get("/metrics").await;
    assert!(body.contains("# TYPE belay_decision_latency_seconds histogram"));

    drop(agent);
    server.expect_metric("belay_connected_agents", 0.0).await;
    server.stop().await;
}
