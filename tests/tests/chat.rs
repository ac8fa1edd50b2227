//! Chat approvals end to end, in QEMU with BPF LSM: an AI agent declares why it acts
//! (`belay intent`), the exec it starts is paused in the kernel, reaches belay-server
//! through belay-agent, is posted to (a loopback fake of) Slack's Web API with the
//! intent, and is approved with the message's button: an interaction signed exactly as
//! Slack signs them, sent to the console listener. The intent ends in the audit log.
#![cfg(feature = "vm")]

mod common;
#[path = "../../server/tests/support/fake_slack.rs"]
mod fake_slack;

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, SystemTime};

use belay_tests::{binary, wait_until};
use common::belay_server::Server;
use common::{Agent, LONG, actor_path, ok};
use serde_json::{Value, json};

const SIGNING_SECRET: &str = "vm-signing-secret-0123456789";
const CHANNEL: &str = "CVMAPPROVALS";
const DANA: &str = "UDANA";
const INTENT: &str = "reach the billing API the user asked about, ticket OPS-77";

fn free_addr() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `X-Slack-Signature` as Slack computes it: `v0=` hex HMAC-SHA256 of
/// `v0:{timestamp}:{body}` under the signing secret.
fn slack_signature(timestamp: &str, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SIGNING_SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, format!("v0:{timestamp}:{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The server's pending request whose exec runs `path`.
fn pending_exec_of(server: &Server, path: &str) -> Value {
    let mut found = None;
    assert!(
        wait_until(LONG, || {
            let out = server.belay("bob", &["pending", "--output", "json"]);
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            found = v["requests"].as_array().and_then(|r| {
                r.iter()
                    .find(|r| r["action"]["kind"] == "exec" && r["action"]["path"] == path)
                    .cloned()
            });
            found.is_some()
        }),
        "a pending exec of {path} on belay-server"
    );
    found.unwrap()
}

#[test]
fn a_paused_exec_with_a_declared_intent_is_approved_from_slack_and_the_intent_is_audited() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let slack = runtime.block_on(fake_slack::FakeSlack::start());
    slack.add_user(DANA, "dana@example.com", true);

    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("bot-token"), fake_slack::BOT_TOKEN).unwrap();
    std::fs::write(state.path().join("signing-secret"), SIGNING_SECRET).unwrap();
    let chat = state.path().join("chat.toml");
    std::fs::write(
        &chat,
        format!(
            "[slack]\nbot_token_file = \"bot-token\"\nsigning_secret_file = \"signing-secret\"\n\
             api_url = \"{}\"\nmap_by_email = true\n\n[reviewers]\n\"dana@example.com\" = \"reviewer\"\n\n\
             [[route]]\nslack_channel = \"{CHANNEL}\"\n",
            slack.api_url()
        ),
    )
    .unwrap();
    let console = free_addr();
    let origin = format!("https://{console}");
    let server = Server::start_with(
        free_addr(),
        state.path(),
        &[
            "--console-listen",
            &console.to_string(),
            "--console-url",
            &origin,
            "--chat-config",
            chat.to_str().unwrap(),
        ],
    );
    assert!(
        wait_until(LONG, || TcpStream::connect(console).is_ok()),
        "the console listens on {console}"
    );
    let certs = server.enroll();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "version: 1\nsubjects:\n  - {name: t, owner: carol@example.com, match: {enrolled: true}, default: ask}\n",
    )
    .unwrap();
    let agent = Agent::start(&[
        "--policy",
        policy.to_str().unwrap(),
        "--server",
        &server.url,
        "--cert-dir",
        certs.path().to_str().unwrap(),
    ]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dst = listener.local_addr().unwrap();
    let belay = binary("belay").unwrap().display().to_string();
    let actor = actor_path();
    let mut run = agent.run(&[
        &belay,
        "intent",
        INTENT,
        "--model",
        "vm-model",
        "--",
        &actor,
        "connect",
        &dst.to_string(),
    ]);

    // `belay run` starting `belay intent` is held first; the CLI lets it run.
    let first = pending_exec_of(&server, &belay);
    assert!(first["context"]["intent"].is_null(), "{first}");
    ok(&server.belay(
        "bob",
        &["approve", first["id"].as_str().unwrap(), "--reason", "ok"],
    ));

    // The actor's exec carries the intent, and Slack gets a message with it.
    let exec = pending_exec_of(&server, &actor);
    let id = exec["id"].as_str().unwrap().to_owned();
    assert_eq!(exec["context"]["intent"]["text"], INTENT, "{exec}");
    assert_eq!(exec["context"]["intent"]["verified"], false, "{exec}");
    let message = runtime.block_on(slack.wait_message(&id, |_| true));
    let text = message.to_string();
    assert!(text.contains(INTENT), "the intent is posted: {text}");
    assert!(text.contains("unverified"), "labelled: {text}");
    assert_eq!(message["channel"], CHANNEL);
    let (ts, _) = slack.message_about(&id).unwrap();

    // Dana presses Approve; Slack signs the interaction.
    let payload = json!({
        "type": "block_actions",
        "user": {"id": DANA, "username": "dana", "team_id": "T0001"},
        "api_app_id": "A0001",
        "team": {"id": "T0001", "domain": "example"},
        "container": {"type": "message", "message_ts": ts, "channel_id": CHANNEL, "is_ephemeral": false},
        "channel": {"id": CHANNEL, "name": "approvals"},
        "message": {"ts": ts, "type": "message"},
        "response_url": slack.response_url(1),
        "trigger_id": "1.2.3",
        "actions": [{"type": "button", "block_id": "belay_decision", "action_id": "belay_approve",
            "value": id, "action_ts": "1700000001.000200"}],
    });
    let body = format!("payload={}", form_encode(&payload.to_string()));
    let timestamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let ca = std::fs::read(state.path().join("ca.pem")).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let status = runtime.block_on(async {
        http.post(format!("{origin}/chat/slack/interactions"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", &timestamp)
            .header("x-slack-signature", slack_signature(&timestamp, &body))
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);

    // The exec runs; its connect (with the same intent, from its environment) is held
    // next and let through by the CLI.
    run.ready().unwrap();
    run.go().unwrap();
    let connect = server.pending("connect");
    assert_eq!(connect["context"]["intent"]["text"], INTENT, "{connect}");
    ok(&server.belay(
        "bob",
        &["approve", connect["id"].as_str().unwrap(), "--reason", "ok"],
    ));
    let (out, exit) = run.finish(LONG).unwrap();
    assert_eq!(out.trim(), "connect ok");
    assert!(exit.success());

    // Decided by dana from Slack; the message shows it, without buttons.
    let shown: Value =
        serde_json::from_str(&ok(&server.belay("bob", &["show", &id, "--output", "json"])))
            .unwrap();
    assert_eq!(
        shown["resolution"]["reviewer"], "dana@example.com",
        "{shown}"
    );
    let updated =
        runtime.block_on(slack.wait_message(&id, |m| !m.to_string().contains("belay_approve")));
    assert!(
        updated.to_string().contains("dana@example.com"),
        "{updated}"
    );

    // The audit log holds the intent with the submission, marked unverified.
    let log: Value = serde_json::from_str(&ok(
        &server.belay("bob", &["audit", "log", "--output", "json"])
    ))
    .unwrap();
    let submitted = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "submitted" && r["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no submitted record for {id}: {log}"));
    assert_eq!(submitted["body"]["intent"]["text"], INTENT);
    assert_eq!(submitted["body"]["intent"]["model"], "vm-model");
    assert_eq!(submitted["body"]["intent"]["verified"], false);
    let decided = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "decided" && r["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no decided record for {id}: {log}"));
    assert_eq!(decided["body"]["reviewer"], "dana@example.com", "{decided}");
}
