//! Helpers shared by the server tests: the real server on a loopback port, a real agent
//! session on it, and the requests they exchange. Each test file takes what it needs
//! (`mod support;`) and adds its own `impl TestServer` blocks for what only it uses.
//! `issuer.rs` beside this file is the test OIDC issuer, included on its own by the tests
//! that need it (cli/tests too).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use belay_proto::domain::{
    Action, ConnectAction, HostName, Identity, Name, NewRequest, Protocol, RequestId, Verdict,
};
use belay_proto::v1;
use belay_proto::v1::agent_service_client::AgentServiceClient;
use belay_proto::v1::reviewer_service_client::ReviewerServiceClient;
use belay_proto::v1::server_message::Kind;
use belay_server::approvals::{AgentIdentity, Approvals, Store};
use belay_server::{ServeError, ServeOptions, serve};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// Long enough for a loaded CI machine; every wait in these tests is bounded by it.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The real server (`serve`) on a free loopback port, stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub url: String,
    /// The HTTP endpoints (health, metrics), when the options had a listener for them.
    pub http: Option<SocketAddr>,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), ServeError>>,
    /// How many owners the server's `Approvals` has left: 0 once the store is closed.
    owners: Box<dyn Fn() -> usize + Send + Sync>,
}

impl TestServer {
    pub async fn start<S: Store>(store: S, options: ServeOptions) -> Self {
        Self::start_approvals(Approvals::new(store), options).await
    }

    /// Serves `approvals` as built (a quorum, say).
    pub async fn start_approvals<S: Store>(approvals: Approvals<S>, options: ServeOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let http = options.http.as_ref().map(|l| l.local_addr().unwrap());
        let approvals = Arc::new(approvals);
        let weak = Arc::downgrade(&approvals);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, approvals, options, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            url: format!("http://{addr}"),
            http,
            stop: Some(stop),
            task,
            owners: Box::new(move || weak.strong_count()),
        }
    }

    /// Stops serving and waits until the store is closed, as when the process exits, so
    /// the same database can be opened again.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, async {
            (&mut self.task).await.unwrap().unwrap();
            while (self.owners)() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the server did not stop in time");
    }

    pub async fn reviewer(&self) -> ReviewerServiceClient<Channel> {
        ReviewerServiceClient::connect(self.url.clone())
            .await
            .unwrap()
    }

    /// An agent of `owner` on `host`, its session open.
    pub async fn agent(&self, host: &str, owner: &str) -> TestAgent {
        self.try_agent(hello(host, owner)).await.unwrap()
    }

    /// A session that opens with `first`, or the status the server refused it with.
    pub async fn try_agent(&self, first: v1::AgentMessage) -> Result<TestAgent, Status> {
        let client = AgentServiceClient::connect(self.url.clone()).await.unwrap();
        TestAgent::open(client, first).await
    }

    /// Waits until `id` is pending; submissions travel on another stream.
    pub async fn wait_pending(&self, id: &str) -> v1::Request {
        wait_pending(&mut self.reviewer().await, id).await
    }

    pub async fn get_request(&self, id: &str) -> v1::Request {
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
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
        self.task.abort();
    }
}

/// Polls `reviewer` until it lists `id` as pending.
pub async fn wait_pending(reviewer: &mut ReviewerServiceClient<Channel>, id: &str) -> v1::Request {
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

/// An agent's session: what it sends up and what the server sends down.
pub struct TestAgent {
    pub to_server: mpsc::Sender<v1::AgentMessage>,
    pub from_server: Streaming<v1::ServerMessage>,
}

impl TestAgent {
    /// A session on `client` that opens with `first`, or the status the server refused
    /// it with.
    pub async fn open(
        mut client: AgentServiceClient<Channel>,
        first: v1::AgentMessage,
    ) -> Result<Self, Status> {
        let (to_server, outbound) = mpsc::channel(16);
        to_server.send(first).await.unwrap();
        let from_server = client
            .session(ReceiverStream::new(outbound))
            .await?
            .into_inner();
        Ok(Self {
            to_server,
            from_server,
        })
    }

    pub async fn send(&self, kind: v1::agent_message::Kind) {
        self.to_server
            .send(v1::AgentMessage { kind: Some(kind) })
            .await
            .unwrap();
    }

    pub async fn submit(&self, request: v1::NewRequest) {
        self.send(v1::agent_message::Kind::Request(request)).await;
    }

    /// The next message down, or the status the server ended the stream with.
    pub async fn next(&mut self) -> Result<Kind, Status> {
        let message = tokio::time::timeout(PATIENCE, self.from_server.message())
            .await
            .expect("no message from the server in time")?
            .expect("the server ended the stream");
        Ok(message.kind.expect("message without kind"))
    }

    /// The next message, which must be a decision.
    pub async fn next_decision(&mut self) -> v1::Decision {
        match self.next().await.unwrap() {
            Kind::Decision(decision) => decision,
            other => panic!("expected a decision, got {other:?}"),
        }
    }

    /// The next decision, skipping other messages (policy updates and the like).
    pub async fn skip_to_decision(&mut self) -> v1::Decision {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Kind::Decision(decision) = self.next().await.unwrap() {
                    return decision;
                }
            }
        })
        .await
        .expect("no decision from the server in time")
    }

    pub async fn next_cancel(&mut self) -> v1::Cancel {
        match self.next().await.unwrap() {
            Kind::Cancel(cancel) => cancel,
            other => panic!("expected a cancel, got {other:?}"),
        }
    }

    pub async fn next_policy(&mut self) -> v1::PolicyUpdate {
        match self.next().await.unwrap() {
            Kind::Policy(policy) => policy,
            other => panic!("expected a policy, got {other:?}"),
        }
    }
}

/// The first message of an agent of `owner` on `host`.
pub fn hello(host: &str, owner: &str) -> v1::AgentMessage {
    v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(v1::Hello {
            host: host.into(),
            version: "0.1.0-test".into(),
            owner: owner.into(),
        })),
    }
}

/// A request `id` to connect to 192.0.2.10:`port`, due in five minutes, denied by default.
pub fn connect_request(id: &str, port: u32) -> v1::NewRequest {
    v1::NewRequest {
        id: id.into(),
        agent_name: "copilot".into(),
        pid: 4242,
        uid: 1000,
        action: Some(v1::Action {
            kind: Some(v1::action::Kind::Connect(v1::Connect {
                address: "192.0.2.10".into(),
                port,
                protocol: v1::Protocol::Tcp.into(),
            })),
        }),
        deadline: Some((SystemTime::now() + Duration::from_secs(300)).into()),
        default_verdict: v1::Verdict::Deny.into(),
        rule: "egress-unknown".into(),
        ..Default::default()
    }
}

/// The `sha256` an auth config gives `token`.
pub fn hex_sha256(token: &str) -> String {
    belay_server::auth::hash_line(token)
        .trim_start_matches("sha256 = \"")
        .trim_end_matches('"')
        .to_owned()
}

/// `message` sent with `Authorization: Bearer <token>`.
pub fn with_bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// `belay-server ARGS` run to completion, with no `BELAY_DB` from the environment.
pub fn run_server(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_belay-server"))
        .args(args)
        .env_remove("BELAY_DB")
        .output()
        .unwrap()
}

/// An agent of alice on `host`, as the store knows it.
pub fn agent_identity(host: &str) -> AgentIdentity {
    AgentIdentity {
        host: HostName::new(host).unwrap(),
        owner: Identity::new("alice").unwrap(),
    }
}

/// What `Approvals::submit` takes: request `id` of copilot to connect to 192.0.2.1:443,
/// due at `deadline`, denied by default.
pub fn domain_request(id: &str, deadline: SystemTime) -> NewRequest {
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
        default_verdict: Verdict::Deny,
        rule: Name::new("egress").unwrap(),
        owner: None,
        context: Default::default(),
    }
}
