//! `belay policy push | show` against a real belay-server (the library's `serve` on
//! loopback) with a real agent stream receiving the policy and answering.

mod support;

use std::time::Duration;

use belay_proto::v1;
use belay_proto::v1::reviewer_service_client::ReviewerServiceClient;
use serde_json::Value;
use support::{BAD, GOOD, PATIENCE, agent_session, belay, belay_ok, hello, start};

async fn stored_version(url: &str) -> Option<u64> {
    ReviewerServiceClient::connect(url.to_owned())
        .await
        .unwrap()
        .get_policy(v1::GetPolicyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .policy
        .map(|p| p.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_refused_with_its_position_and_nothing_is_pushed() {
    let url = start().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, BAD).unwrap();

    let output = belay(&url, &["policy", "push", bad.to_str().unwrap()]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:4:5:", bad.display())),
        "the error names file:line:col: {stderr}"
    );
    assert!(stderr.contains("nothing was pushed"), "{stderr}");
    assert_eq!(
        stored_version(&url).await,
        None,
        "nothing reached the server"
    );

    // A file that is not there is refused the same way.
    let output = belay(&url, &["policy", "push", "/nonexistent/policy.yaml"]).await;
    assert!(!output.status.success());
    assert_eq!(stored_version(&url).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_policy_reaches_the_agent_and_show_lists_its_answer() {
    let url = start().await;
    let (agent, mut inbound) = agent_session(&url, hello("build-7", "1.2.3")).await;

    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("fleet.yaml");
    std::fs::write(&good, GOOD).unwrap();
    let pushed: Value = serde_json::from_str(
        &belay_ok(
            &url,
            &[
                "policy",
                "push",
                good.to_str().unwrap(),
                "--reason",
                "first rollout",
                "--output",
                "json",
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(pushed["version"], 1);
    assert_eq!(pushed["reason"], "first rollout");
    assert_eq!(pushed["size"], GOOD.len());

    let message = tokio::time::timeout(PATIENCE, inbound.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(v1::server_message::Kind::Policy(update)) = message.kind else {
        panic!("expected the policy, got {message:?}");
    };
    assert_eq!(update.text.as_ref(), GOOD.as_bytes());
    assert_eq!(update.sha256, pushed["sha256"].as_str().unwrap());
    agent
        .send(v1::AgentMessage {
            kind: Some(v1::agent_message::Kind::PolicyReport(v1::PolicyReport {
                version: 1,
                outcome: v1::PolicyOutcome::NotAccepted as i32,
                message: "not accepted: this agent uses a local policy".into(),
            })),
        })
        .await
        .unwrap();

    let shown = tokio::time::timeout(PATIENCE, async {
        loop {
            let shown: Value = serde_json::from_str(
                &belay_ok(&url, &["policy", "show", "--output", "json"]).await,
            )
            .unwrap();
            if shown["agents"][0]["outcome"] != Value::Null {
                return shown;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the agent's answer never showed");
    assert_eq!(shown["policy"]["version"], 1);
    assert_eq!(shown["policy"]["pushed_by"], "anonymous");
    assert_eq!(shown["agents"][0]["host"], "build-7");
    assert_eq!(shown["agents"][0]["outcome"], "not-accepted");
    assert_eq!(shown["agents"][0]["version"], 1);

    let table = belay_ok(&url, &["policy", "show"]).await;
    assert!(table.contains("version    1"), "{table}");
    let row = table.lines().find(|l| l.starts_with("build-7")).unwrap();
    assert!(row.contains("not-accepted"), "{table}");
    let text = belay_ok(&url, &["policy", "show", "--text"]).await;
    assert_eq!(text, GOOD);
}
