//! Helpers shared by the CLI tests: an in-process belay-server on loopback, an agent
//! session on it, and the `belay` binary run against it.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use belay_proto::v1;
use belay_proto::v1::agent_service_client::AgentServiceClient;
use belay_server::approvals::{Approvals, MemoryStore};
use belay_server::{ServeOptions, serve};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

pub const PATIENCE: Duration = Duration::from_secs(20);
pub const GOOD: &str = "version: 1\nsubjects:\n  - name: ci\n    owner: o\n    default: ask\n";
/// `ownr` is no key of a subject: line 4, column 5.
pub const BAD: &str = "version: 1\nsubjects:\n  - name: ci\n    ownr: o\n    default: ask\n";

/// A belay-server with an in-memory store on a free loopback port: its URL and its task.
pub async fn start_with(options: ServeOptions) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let approvals = Arc::new(Approvals::new(MemoryStore::new()));
    let server = tokio::spawn(async move {
        serve(listener, approvals, options, std::future::pending())
            .await
            .unwrap();
    });
    (url, server)
}

/// [`start_with`] the default options, serving until the test ends.
pub async fn start() -> String {
    start_with(ServeOptions::default()).await.0
}

/// The hello of an agent of alice on `host`, running `version`.
pub fn hello(host: &str, version: &str) -> v1::Hello {
    v1::Hello {
        host: host.into(),
        version: version.into(),
        owner: "alice@example.com".into(),
    }
}

pub fn message(kind: v1::agent_message::Kind) -> v1::AgentMessage {
    v1::AgentMessage { kind: Some(kind) }
}

/// An agent session that has said `hello`: the sender (the session lasts as long as it
/// does) and what the server sends down.
pub async fn agent_session(
    url: &str,
    hello: v1::Hello,
) -> (
    mpsc::Sender<v1::AgentMessage>,
    tonic::Streaming<v1::ServerMessage>,
) {
    let mut client = AgentServiceClient::connect(url.to_owned()).await.unwrap();
    let (agent, outbound) = mpsc::channel(16);
    agent
        .send(message(v1::agent_message::Kind::Hello(hello)))
        .await
        .unwrap();
    let inbound = client
        .session(ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    (agent, inbound)
}

/// Drains what the server sends down, so the session stays open without a reader.
pub fn drain(mut inbound: tonic::Streaming<v1::ServerMessage>) {
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
}

/// A request of agent process `pid` to connect to 192.0.2.10:443, denied by default.
pub fn connect_request(id: &str, pid: u32) -> v1::NewRequest {
    v1::NewRequest {
        id: id.into(),
        agent_name: "copilot".into(),
        pid,
        uid: 1000,
        action: Some(v1::Action {
            kind: Some(v1::action::Kind::Connect(v1::Connect {
                address: "192.0.2.10".into(),
                port: 443,
                protocol: v1::Protocol::Tcp.into(),
            })),
        }),
        deadline: Some((SystemTime::now() + Duration::from_secs(300)).into()),
        default_verdict: v1::Verdict::Deny.into(),
        rule: "egress-unknown".into(),
        ..Default::default()
    }
}

/// Runs `belay --server URL ARGS` to completion, off the runtime.
pub async fn belay(url: &str, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_belay"));
    command.args(["--server", url]).args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// [`belay`], which must succeed: its stdout.
pub async fn belay_ok(url: &str, args: &[&str]) -> String {
    let output = belay(url, args).await;
    assert!(
        output.status.success(),
        "belay {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Waits until belay-server at `url` holds at least `count` pending requests.
pub async fn wait_pending(url: &str, count: usize) {
    let mut reviewer = v1::reviewer_service_client::ReviewerServiceClient::connect(url.to_owned())
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, async {
        while reviewer
            .list_pending(v1::ListPendingRequest {})
            .await
            .unwrap()
            .into_inner()
            .requests
            .len()
            < count
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("requests never became pending");
}
