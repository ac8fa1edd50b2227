//! The agent's side of the fleet policy without a kernel: belay-agent's real link to
//! belay-server (`upstream::Upstream`) receives a pushed policy, the agent's
//! `LivePolicy` installs it as the daemon does, and the answer sent back up shows in
//! `GetPolicy`. A version that does not parse on the agent leaves the old one in force,
//! and its error is what the server shows.

mod support;

use std::time::Duration;

use belay_agent::kernel::Verdict;
use belay_agent::reload::{Installed, LivePolicy};
use belay_agent::upstream::{Down, Up, Upstream};
use belay_policy::Policy;
use belay_proto::domain::{PolicyOutcome, PolicyReport};
use belay_proto::v1;
use belay_proto::v1::reviewer_service_client::ReviewerServiceClient;
use support::{BAD, GOOD, PATIENCE, start};
use tokio::sync::mpsc;

/// What the daemon does with a `Down::Policy`, short of telling the kernel.
fn install(live: &LivePolicy, version: u64, text: &str) -> PolicyReport {
    match live.install_from_server(version, text) {
        Ok(Installed::New(_) | Installed::Unchanged) => {
            PolicyReport::clipped(version, PolicyOutcome::Applied, "")
        }
        Err(e) => PolicyReport::clipped(version, PolicyOutcome::Failed, &e.to_string()),
    }
}

async fn next_policy(down: &mut mpsc::UnboundedReceiver<Down>) -> (u64, String) {
    match tokio::time::timeout(PATIENCE, down.recv()).await {
        Ok(Some(Down::Policy { version, text })) => (version, text),
        other => panic!("expected a policy, got {other:?}"),
    }
}

async fn wait_status(
    reviewer: &mut ReviewerServiceClient<tonic::transport::Channel>,
    version: u64,
) -> v1::AgentPolicyStatus {
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
                .find(|a| a.host == "node-1")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_link_installs_pushed_policies_and_reports_back() {
    let url = start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(belay_agent::server_policy::FILE_NAME);
    let live = LivePolicy::from_server(
        &state,
        Policy::standalone_default(Duration::from_secs(60), Verdict::Deny),
    )
    .unwrap();
    let (down_tx, mut down) = mpsc::unbounded_channel();
    let hello = v1::Hello {
        host: "node-1".into(),
        version: "0.1.0-test".into(),
        owner: "owner@example.com".into(),
    };
    let link = Upstream::start(url.clone(), None, hello, down_tx).unwrap();
    let mut reviewer = ReviewerServiceClient::connect(url.clone()).await.unwrap();
    tokio::time::timeout(PATIENCE, async {
        while !link.status().connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the link never connected");

    reviewer
        .push_policy(v1::PushPolicyRequest {
            text: GOOD.into(),
            reason: String::new(),
        })
        .await
        .unwrap();
    let (version, text) = next_policy(&mut down).await;
    assert_eq!((version, text.as_str()), (1, GOOD));
    link.send(Up::PolicyReport(install(&live, version, &text)));
    let status = wait_status(&mut reviewer, 1).await;
    assert_eq!(status.outcome, v1::PolicyOutcome::Applied as i32);
    assert_eq!(live.get().subjects[0].name, "ci");
    assert_eq!(live.status().server_version, Some(1));

    // The server does not parse policies; this agent does, and refuses it.
    reviewer
        .push_policy(v1::PushPolicyRequest {
            text: BAD.into(),
            reason: String::new(),
        })
        .await
        .unwrap();
    let (version, text) = next_policy(&mut down).await;
    assert_eq!(version, 2);
    link.send(Up::PolicyReport(install(&live, version, &text)));
    let status = wait_status(&mut reviewer, 2).await;
    assert_eq!(status.outcome, v1::PolicyOutcome::Failed as i32);
    assert!(
        status
            .message
            .starts_with("belay-server policy version 2:4:5:"),
        "{}",
        status.message
    );
    assert_eq!(live.status().server_version, Some(1), "version 1 in force");
    assert_eq!(
        belay_agent::server_policy::load(&state)
            .unwrap()
            .unwrap()
            .version,
        1,
        "and saved"
    );
}
