//! A daemon that dies leaves its pauses held (the kernel keeps the tasks stopped and
//! the maps pinned); the next daemon finds them and decides each, by its policy or as a
//! request.
use super::harness::{AGENT_UID, Stopped, config, connect, request_to, start};
use crate::kernel::{FakeKernel, Verdict};

fn policy(docs: &str) -> String {
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
        action: {docs}
"
    )
}

#[tokio::test(start_paused = true)]
async fn the_next_daemon_decides_the_pauses_a_crashed_one_left() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy("ask")).unwrap();
    let agent = Stopped::new();
    let kernel = FakeKernel::new();
    let mut config = config(dir.path());
    config.policy = Some(file.clone());
    config.watch_pids = vec![agent.pid()];

    // The first daemon on a runtime of its own: dropping the runtime mid-request is a
    // crash (nothing of the shutdown runs).
    let (k, c, pid) = (kernel.clone(), config.clone(), agent.pid());
    let held = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let held = rt.block_on(async {
            let daemon = start(&k, c).await;
            let held = [
                k.pause(pid, AGENT_UID, connect("192.0.2.1:443")),
                k.pause(pid, AGENT_UID, connect("198.51.100.1:443")),
            ];
            daemon.until_pending(2).await;
            held
        });
        drop(rt);
        held
    })
    .await
    .unwrap();
    assert!(kernel.verdicts().is_empty(), "a crash decides nothing");
    assert!(!kernel.detached(), "a crash leaves the hooks attached");
    assert_eq!(kernel.held().len(), 2);

    // Edited while no daemon ran.
    std::fs::write(&file, policy("deny")).unwrap();
    let daemon = start(&kernel, config).await;
    assert_eq!(
        kernel.verdict(held[0].key).await,
        Verdict::Deny,
        "decided by the policy now in force"
    );
    let pending = daemon.until_pending(1).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let request = request_to(&pending, "198.51.100.1");
    assert_eq!(request.tgid, agent.pid());
    daemon.decide(request.id, Verdict::Allow).await;
    assert_eq!(kernel.verdict(held[1].key).await, Verdict::Allow);
    assert_eq!(kernel.verdicts().len(), 2, "one verdict each");
    assert!(kernel.held().is_empty());
    daemon.stop().await.unwrap();
}
