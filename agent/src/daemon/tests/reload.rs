//! The policy file is reloaded when it changes: later pauses are decided by the new
//! policy, and a file that does not load leaves the one in force.
use std::{path::Path, time::Duration};

use super::harness::{AGENT_UID, Stopped, config, connect, start};
use crate::kernel::{FakeKernel, Verdict};

fn policy(action: &str) -> String {
    format!(
        "version: 1
subjects:
  - name: agents
    owner: alice@example.com
    match:
      enrolled: true
    default: ask
    egress:
      - name: docs
        to: [192.0.2.0/24]
        action: {action}
"
    )
}

/// Replaces the file as an editor does (a new file renamed over the old one).
fn write(path: &Path, text: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, text).unwrap();
    std::fs::rename(&new, path).unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_edited_policy_decides_later_pauses_and_a_broken_edit_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    write(&file, &policy("deny"));
    let agent = Stopped::new();
    let kernel = FakeKernel::new();
    let mut config = config(dir.path());
    config.policy = Some(file.clone());
    config.watch_pids = vec![agent.pid()];
    let daemon = start(&kernel, config).await;
    let subject = kernel.watched_as(agent.pid()).await;
    assert_eq!(subject, agent_common::subject_id(b"agents"));
    let first = kernel.applied(1).await;

    let ev = kernel.pause(agent.pid(), AGENT_UID, connect("192.0.2.7:443"));
    assert_eq!(kernel.verdict(ev.key).await, Verdict::Deny);
    assert!(daemon.pending().await.is_empty(), "the policy decided");

    write(&file, &policy("allow"));
    // Edits are noticed every 2 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = kernel.applied(2).await;
    assert_ne!(first, second, "the new policy went into the kernel");
    let ev = kernel.pause(agent.pid(), AGENT_UID, connect("192.0.2.7:443"));
    assert_eq!(kernel.verdict(ev.key).await, Verdict::Allow);

    write(&file, "version: 1\nsubjects: [this is not a subject]\n");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ev = kernel.pause(agent.pid(), AGENT_UID, connect("192.0.2.7:443"));
    assert_eq!(
        kernel.verdict(ev.key).await,
        Verdict::Allow,
        "the last policy that loaded stays in force"
    );
    assert_eq!(kernel.tables().last(), Some(&second));
    assert!(daemon.pending().await.is_empty());
    daemon.stop().await.unwrap();
}
