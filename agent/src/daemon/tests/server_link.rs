//! With a belay-server configured (a real one, in process, on loopback): requests go
//! there and are decided there, never on the local socket; its fleet policy is
//! installed, applied to the kernel and reported back.
use std::{sync::Arc, time::Duration};

use belay_proto::v1::{self, reviewer_service_client::ReviewerServiceClient};
use belay_server::{
    ServeOptions,
    approvals::{Approvals, MemoryStore},
    serve,
};
use tonic::transport::Channel;

use super::harness::{AGENT_UID, Daemon, Stopped, config, connect, start};
use crate::{
    api::{ApiRequest, ApiResponse},
    kernel::{Action, FakeKernel, Transport, Verdict},
};

const PATIENCE: Duration = Duration::from_secs(20);
/// A fleet policy the agent takes.
const GOOD: &str = "version: 1\nsubjects:\n  - name: ci\n    owner: o\n    default: ask\n";
/// `ownr` is no key of a subject: line 4, column 5.
const BAD: &str = "version: 1\nsubjects:\n  - name: ci\n    ownr: o\n    default: ask\n";

/// A belay-server with an in-memory store on a free loopback port, and a reviewer
/// client of it.
async fn server() -> (String, ReviewerServiceClient<Channel>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let approvals = Arc::new(Approvals::new(MemoryStore::new()));
    tokio::spawn(async move {
        serve(
            listener,
            approvals,
            ServeOptions::default(),
            std::future::pending(),
        )
        .await
        .unwrap();
    });
    let reviewer = ReviewerServiceClient::connect(url.clone()).await.unwrap();
    (url, reviewer)
}

async fn server_pending(
    reviewer: &mut ReviewerServiceClient<Channel>,
    n: usize,
) -> Vec<v1::Request> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let requests = reviewer
                .list_pending(v1::ListPendingRequest {})
                .await
                .unwrap()
                .into_inner()
                .requests;
            if requests.len() >= n {
                return requests;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the request never reached belay-server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_decided_on_the_server_never_on_the_local_socket() {
    let (url, mut reviewer) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Stopped::new();
    let kernel = FakeKernel::new();
    let mut config = config(dir.path());
    config.server = Some(url);
    config.watch_pids = vec![agent.pid()];
    let daemon = start(&kernel, config).await;
    let ev = kernel.pause(agent.pid(), AGENT_UID, connect("192.0.2.10:443"));

    let on_server = server_pending(&mut reviewer, 1).await;
    assert_eq!(on_server.len(), 1);
    let request = &on_server[0];
    assert_eq!((request.pid, request.uid), (agent.pid(), AGENT_UID));
    assert!(
        request
            .id
            .starts_with(&format!("{}:", crate::context::hostname())),
        "{}",
        request.id
    );
    let local = daemon.until_pending(1).await;
    assert_eq!(local[0].server_id.as_deref(), Some(request.id.as_str()));

    // One local root cannot approve alone what belay-server's reviewers are to decide.
    match daemon.decide(local[0].id, Verdict::Allow).await {
        ApiResponse::Error { message } => {
            assert!(message.contains("decided on belay-server"), "{message}");
        }
        other => panic!("decided locally: {other:?}"),
    }
    assert!(kernel.verdicts().is_empty());

    reviewer
        .decide(v1::DecideRequest {
            request_id: request.id.clone(),
            verdict: v1::Verdict::Allow.into(),
            reason: "fine".into(),
            reviewer: "bob@example.com".into(),
            scope: None,
        })
        .await
        .unwrap();
    assert_eq!(kernel.verdict(ev.key).await, Verdict::Allow);
    assert_eq!(kernel.verdicts().len(), 1);
    assert!(daemon.pending().await.is_empty());
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_request_stays_on_the_local_socket_with_a_server() {
    let (url, mut reviewer) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Stopped::new();
    let kernel = FakeKernel::new();
    let mut config = config(dir.path());
    config.server = Some(url);
    config.watch_pids = vec![agent.pid()];
    let daemon = start(&kernel, config).await;
    // belay-server's protocol has no Unix sockets yet: this one is decided here.
    let ev = kernel.pause(
        agent.pid(),
        AGENT_UID,
        Action::ConnectUnix {
            path: "/run/docker.sock".into(),
            transport: Transport::Tcp,
        },
    );
    let local = daemon.until_pending(1).await;
    assert_eq!(local[0].server_id, None);
    let decided = daemon.decide(local[0].id, Verdict::Deny).await;
    assert!(
        matches!(decided, ApiResponse::Decided { .. }),
        "{decided:?}"
    );
    assert_eq!(kernel.verdict(ev.key).await, Verdict::Deny);
    let on_server = reviewer
        .list_pending(v1::ListPendingRequest {})
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert!(on_server.is_empty(), "{on_server:?}");
    daemon.stop().await.unwrap();
}

/// What belay-server shows of this host's answer to policy `version`.
async fn agent_policy_status(
    reviewer: &mut ReviewerServiceClient<Channel>,
    version: u64,
) -> v1::AgentPolicyStatus {
    let host = crate::context::hostname();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let view = reviewer
                .get_policy(v1::GetPolicyRequest::default())
                .await
                .unwrap()
                .into_inner();
            if let Some(status) = view
                .agents
                .into_iter()
                .find(|a| a.host == host)
                .and_then(|a| a.status)
                .filter(|s| s.version == version)
            {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the agent's answer never showed")
}

async fn policy_status(daemon: &Daemon) -> crate::reload::PolicyStatus {
    match daemon.call(ApiRequest::Status).await {
        ApiResponse::Status { status } => status.policy,
        other => panic!("status: {other:?}"),
    }
}

/// Was `cli/tests/agent_policy_link.rs`, which copied the daemon's handling of a pushed
/// policy; this runs the daemon's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_fleet_policy_is_applied_to_the_kernel_and_reported_and_a_bad_one_refused() {
    let (url, mut reviewer) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let kernel = FakeKernel::new();
    let mut config = config(dir.path());
    std::fs::create_dir_all(&config.server_cert_dir).unwrap();
    let state = config.server_cert_dir.join(crate::server_policy::FILE_NAME);
    config.server = Some(url);
    config.policy_from_server = true;
    let daemon = start(&kernel, config).await;
    let before = kernel.applied(1).await;
    let ci = agent_common::subject_id(b"ci");
    assert!(!before.subjects.iter().any(|&(id, _)| id == ci));

    reviewer
        .push_policy(v1::PushPolicyRequest {
            text: GOOD.into(),
            reason: String::new(),
        })
        .await
        .unwrap();
    let status = agent_policy_status(&mut reviewer, 1).await;
    assert_eq!(status.outcome, v1::PolicyOutcome::Applied as i32);
    let tables = kernel.tables();
    assert!(
        tables
            .last()
            .unwrap()
            .subjects
            .iter()
            .any(|&(id, _)| id == ci),
        "the fleet policy is in the kernel"
    );
    let local = policy_status(&daemon).await;
    assert_eq!(local.subjects, ["ci"]);
    assert_eq!(local.server_version, Some(1));

    // The server does not parse policies; this agent does, and refuses it.
    reviewer
        .push_policy(v1::PushPolicyRequest {
            text: BAD.into(),
            reason: String::new(),
        })
        .await
        .unwrap();
    let status = agent_policy_status(&mut reviewer, 2).await;
    assert_eq!(status.outcome, v1::PolicyOutcome::Failed as i32);
    assert!(
        status
            .message
            .starts_with("belay-server policy version 2:4:5:"),
        "{}",
        status.message
    );
    assert_eq!(
        policy_status(&daemon).await.server_version,
        Some(1),
        "version 1 in force"
    );
    assert_eq!(
        kernel.tables().len(),
        tables.len(),
        "the kernel was not touched"
    );
    assert_eq!(
        crate::server_policy::load(&state).unwrap().unwrap().version,
        1,
        "and saved"
    );
    daemon.stop().await.unwrap();
}
