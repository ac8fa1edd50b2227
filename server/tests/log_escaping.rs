//! The `belay-server` binary's log shows what agents chose (their version, a policy
//! report's message) escaped: tracing's own sanitising leaves line breaks and bidi
//! overrides, with which an agent could forge log lines or reorder one.

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use belay_proto::v1;
use belay_proto::v1::agent_service_client::AgentServiceClient;
use belay_proto::v1::reviewer_service_client::ReviewerServiceClient;
use support::{PATIENCE, TestAgent};

const POLICY: &str = "version: 1\nsubjects:\n  - name: ci\n    owner: o\n    default: ask\n";
/// What a compromised agent reports: a second line that looks like one of the server's.
const FORGED: &str = "2026-12-06T00:00:00.000000Z  INFO belay_server: request approved";

/// Ends the server however the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_agents_send_is_logged_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_belay-server"))
        .env("BELAY_SERVER_LISTEN", "127.0.0.1:0")
        .env("BELAY_HTTP_LISTEN", "127.0.0.1:0")
        .env("BELAY_LOG", "info")
        .env("BELAY_DB", dir.path().join("server.db"))
        .env("BELAY_SERVER_INSECURE", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let server = Killed(child);
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.split(b'\n') {
            let Ok(line) = line else { break };
            if lines_tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let mut wait_for = |needle: &str| -> String {
        loop {
            let line = lines
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|_| panic!("no log line with {needle:?}: {log:#?}"));
            log.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    };
    // Not `http_local=`, which may come first.
    let addr = wait_for(" local=")
        .split_whitespace()
        .find_map(|field| field.strip_prefix("local="))
        .unwrap()
        .to_owned();
    let url = format!("http://{addr}");

    let hello = v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(v1::Hello {
            host: "build-7".into(),
            version: "1.2\u{202e}3".into(),
            owner: "alice@example.com".into(),
        })),
    };
    let client = AgentServiceClient::connect(url.clone()).await.unwrap();
    let mut agent = TestAgent::open(client, hello).await.unwrap();
    let connected = wait_for("agent connected");
    assert!(connected.contains(r"1.2\u{202e}3"), "{connected}");

    ReviewerServiceClient::connect(url)
        .await
        .unwrap()
        .push_policy(v1::PushPolicyRequest {
            text: POLICY.into(),
            reason: String::new(),
        })
        .await
        .unwrap();
    let update = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(v1::server_message::Kind::Policy(update)) = agent.next().await {
                return update;
            }
        }
    })
    .await
    .expect("the policy never came down");
    agent
        .send(v1::agent_message::Kind::PolicyReport(v1::PolicyReport {
            version: update.version,
            outcome: v1::PolicyOutcome::Failed as i32,
            message: format!("bad\u{202e} rule\n{FORGED}"),
        }))
        .await;
    let reported = wait_for("fleet policy not in force");
    assert!(
        reported.contains(&format!(r"bad\u{{202e}} rule\n{FORGED}")),
        "{reported}"
    );

    drop(server);
    log.extend(lines.try_iter());
    for line in &log {
        assert!(!line.contains('\u{202e}'), "raw bidi override: {line}");
        assert!(!line.starts_with(FORGED), "forged line: {log:#?}");
    }
}
