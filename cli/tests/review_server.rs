//! The `belay` binary's `watch`, `agents` and `audit log` against a real belay-server
//! (the library's `serve` on loopback) with a real agent stream submitting requests.

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc as std_mpsc;

use belay_proto::v1;
use belay_server::ServeOptions;
use serde_json::Value;
use support::{
    PATIENCE, agent_session, belay_ok, connect_request, drain, hello, message, start_with,
    wait_pending,
};
use tokio::sync::mpsc;

struct Setup {
    url: String,
    /// Keeps the agent's stream open.
    agent: mpsc::Sender<v1::AgentMessage>,
    _server: tokio::task::JoinHandle<()>,
}

async fn start() -> Setup {
    let (url, server) = start_with(ServeOptions::default()).await;
    let (agent, inbound) = agent_session(&url, hello("build-7", "1.2.3")).await;
    // The stream must stay open: the server drops the session when it ends.
    drain(inbound);
    Setup {
        url,
        agent,
        _server: server,
    }
}

fn request(id: &str) -> v1::AgentMessage {
    message(v1::agent_message::Kind::Request(v1::NewRequest {
        context: Some(v1::RequestContext {
            cwd: "/work/repo".into(),
            hostnames: vec!["api.example.com".into()],
            ..Default::default()
        }),
        ..connect_request(id, 77)
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_lists_the_connected_agent_as_table_and_json() {
    let setup = start().await;
    setup.agent.send(request("build-7:req-1")).await.unwrap();
    wait_pending(&setup.url, 1).await;

    let json: Value =
        serde_json::from_str(&belay_ok(&setup.url, &["agents", "--output", "json"]).await).unwrap();
    let agents = json["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["host"], "build-7");
    assert_eq!(agents[0]["owner"], "alice@example.com");
    assert_eq!(agents[0]["version"], "1.2.3");
    assert_eq!(agents[0]["pending"], 1);

    let table = belay_ok(&setup.url, &["agents"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("HOST"), "{table}");
    let fields: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(fields[..3], ["build-7", "alice@example.com", "1.2.3"]);
    assert_eq!(fields.last(), Some(&"1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_pending_then_live_requests_and_decisions() {
    let setup = start().await;
    setup.agent.send(request("build-7:req-1")).await.unwrap();
    wait_pending(&setup.url, 1).await;

    let mut child = Command::new(env!("CARGO_BIN_EXE_belay"))
        .args(["--server", &setup.url, "watch", "--output", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std_mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || -> Value {
        let line = lines
            .recv_timeout(PATIENCE)
            .expect("belay watch printed nothing in time");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    };

    let first = next();
    assert_eq!(first["kind"], "request");
    assert_eq!(first["request"]["id"], "build-7:req-1");
    assert_eq!(first["request"]["state"], "pending");
    assert_eq!(first["request"]["context"]["cwd"], "/work/repo");
    assert_eq!(next()["kind"], "synced");

    setup.agent.send(request("build-7:req-2")).await.unwrap();
    let created = next();
    assert_eq!(created["request"]["id"], "build-7:req-2");
    assert_eq!(created["request"]["state"], "pending");
    assert_eq!(
        created["request"]["context"]["hostnames"][0],
        "api.example.com"
    );

    let decided = belay_ok(
        &setup.url,
        &[
            "--reviewer",
            "bob@example.com",
            "approve",
            "build-7:req-2",
            "--reason",
            "fine",
        ],
    )
    .await;
    assert!(decided.contains("build-7:req-2"), "{decided}");
    let approved = next();
    assert_eq!(approved["request"]["id"], "build-7:req-2");
    assert_eq!(approved["request"]["state"], "approved");
    assert_eq!(
        approved["request"]["resolution"]["reviewer"],
        "bob@example.com"
    );
    assert_eq!(approved["request"]["resolution"]["reason"], "fine");

    child.kill().unwrap();
    child.wait().unwrap();

    // The audit log shows the same story, in order.
    let log: Value =
        serde_json::from_str(&belay_ok(&setup.url, &["audit", "log", "--output", "json"]).await)
            .unwrap();
    let kinds: Vec<(u64, &str, &str)> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["kind"].as_str().unwrap(),
                r["request_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (1, "submitted", "build-7:req-1"),
            (2, "submitted", "build-7:req-2"),
            (3, "decided", "build-7:req-2")
        ]
    );
    assert_eq!(log["next_after_seq"], 3);
    let tail: Value = serde_json::from_str(
        &belay_ok(
            &setup.url,
            &[
                "audit", "log", "--after", "1", "--limit", "1", "--output", "json",
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(tail["records"].as_array().unwrap().len(), 1);
    assert_eq!(tail["records"][0]["seq"], 2);
}
