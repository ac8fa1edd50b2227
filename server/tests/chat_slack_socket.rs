//! Slack approvals in Socket Mode: a real belay-server with only an app-level token (no
//! signing secret, so no HTTP route for presses) opens a WebSocket to a fake Slack and
//! gets presses as `interactive` envelopes, exactly as Slack's Socket Mode documents
//! them: `apps.connections.open` with the `xapp-` token, `hello`, envelopes that must be
//! acknowledged, `disconnect` before a refresh.

#[path = "support/console.rs"]
mod console;
#[path = "support/console_client.rs"]
mod console_client;
#[path = "support/fake_slack.rs"]
mod fake_slack;
#[path = "support/fake_slack_socket.rs"]
mod fake_slack_socket;
#[path = "support/issuer.rs"]
mod issuer;
#[path = "support/slack_world.rs"]
mod slack_world;
mod support;

use std::num::NonZeroU32;
use std::time::Duration;

use belay_proto::v1;
use belay_server::approvals::{Approvals, MemoryStore};
use fake_slack::FakeSlack;
use fake_slack_socket::FakeSocket;
use slack_world::*;
use support::connect_request;

async fn socket_world(quorum: u32) -> (World, FakeSocket) {
    socket_world_with(quorum, FakeSlack::start().await).await
}

async fn socket_world_with(quorum: u32, slack: FakeSlack) -> (World, FakeSocket) {
    let socket = FakeSocket::start().await;
    slack.set_socket_url(&socket.url);
    let approvals =
        Approvals::new(MemoryStore::default()).with_quorum(NonZeroU32::new(quorum).unwrap());
    let world = World::start_inbound(
        approvals,
        slack,
        tempfile::tempdir().unwrap(),
        Inbound::SocketMode,
    )
    .await;
    socket
        .wait("the server's connection", |s| s.open_connections() == 1)
        .await;
    (world, socket)
}

#[tokio::test]
async fn a_press_over_socket_mode_is_acknowledged_and_reaches_the_agent() {
    let (world, socket) = socket_world(1).await;
    let mut agent = world.alice_agent().await;
    agent.submit(connect_request("web-1:sock", 5432)).await;
    world.slack.wait_message("web-1:sock", |_| true).await;

    let press = world.press_payload(BOB, "belay_approve", "web-1:sock");
    socket.interactive("env-1", &press);
    socket
        .wait("the acknowledgement", |s| s.acks() == ["env-1"])
        .await;
    let decision = agent.skip_to_decision().await;
    assert_eq!(decision.request_id, "web-1:sock");
    assert_eq!(decision.verdict(), v1::Verdict::Allow);
    let done = world
        .slack
        .wait_message("web-1:sock", |m| !has_buttons(m))
        .await;
    assert!(
        text_of(&done).contains("Approved by bob@example.com"),
        "{done}"
    );

    // Without a signing secret nothing is served over HTTP for Slack: a signed-looking
    // request there decides nothing.
    let body = world.press_body(BOB, "belay_deny", "web-1:sock");
    let ts = now().to_string();
    let signature = belay_server::chat::slack::verify::sign(SIGNING_SECRET, &ts, body.as_bytes());
    assert_eq!(world.send(&body, &ts, &signature).await, 404);
}

#[tokio::test]
async fn redeliveries_strangers_and_other_workspaces_decide_nothing_over_socket_mode() {
    let (world, socket) = socket_world(2).await;
    let agent = world.alice_agent().await;
    agent.submit(connect_request("web-1:s2", 5432)).await;
    world.slack.wait_message("web-1:s2", |_| true).await;

    // Bob's approval, delivered twice (Slack resends an envelope whose acknowledgement
    // it missed): counted once, answered once.
    let press = world.press_payload(BOB, "belay_approve", "web-1:s2");
    socket.interactive("env-a", &press);
    socket.interactive("env-a", &press);
    socket
        .wait("both acknowledgements", |s| s.acks().len() == 2)
        .await;
    let answers = world.slack.wait_ephemerals(1).await;
    assert!(
        answers[0]["text"].as_str().unwrap().contains("1 of 2"),
        "{answers:?}"
    );

    // A user mapped to nobody is told so; a press from another workspace is dropped.
    socket.interactive(
        "env-b",
        &world.press_payload(MALLORY, "belay_approve", "web-1:s2"),
    );
    let answers = world.slack.wait_ephemerals(2).await;
    assert!(
        answers[1]["text"].as_str().unwrap().contains("not mapped"),
        "{answers:?}"
    );
    let mut elsewhere = world.press_payload(CAROL, "belay_approve", "web-1:s2");
    elsewhere["team"]["id"] = "T0OTHER".into();
    elsewhere["user"]["team_id"] = "T0OTHER".into();
    socket.interactive("env-c", &elsewhere);
    socket
        .wait("three acknowledgements", |s| s.acks().len() == 4)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        world.slack.ephemerals().len(),
        2,
        "{:?}",
        world.slack.ephemerals()
    );
    assert_eq!(world.state_of("web-1:s2").await, v1::RequestState::Pending);
    drop(agent);
}

#[tokio::test]
async fn after_a_disconnect_the_server_reconnects_and_presses_still_decide() {
    let (world, socket) = socket_world(1).await;
    let mut agent = world.alice_agent().await;
    agent.submit(connect_request("web-1:s3", 5432)).await;
    world.slack.wait_message("web-1:s3", |_| true).await;
    assert_eq!(world.slack.socket_opens(), 1);

    socket.send(&serde_json::json!({
        "type": "disconnect",
        "reason": "refresh_requested",
        "debug_info": {"host": "fake-slack"},
    }));
    tokio::time::timeout(Duration::from_secs(10), async {
        while world.slack.socket_opens() < 2 || socket.open_connections() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the server asked for a new URL and connected again");

    socket.interactive(
        "env-after",
        &world.press_payload(CAROL, "belay_deny", "web-1:s3"),
    );
    let decision = agent.skip_to_decision().await;
    assert_eq!(decision.verdict(), v1::Verdict::Deny);
    assert_eq!(socket.acks(), ["env-after"]);
}

#[tokio::test]
async fn a_rate_limited_connections_open_is_asked_again_after_retry_after() {
    let slack = FakeSlack::start().await;
    slack.rate_limit_socket(1, 2);
    let (world, socket) = socket_world_with(1, slack).await;
    let asked = world.slack.socket_asked();
    assert_eq!(asked.len(), 2, "refused once, then answered");
    let waited = asked[1] - asked[0];
    assert!(
        waited >= Duration::from_secs(2),
        "asked again after {waited:?}, before Retry-After: 2"
    );
    assert_eq!(socket.open_connections(), 1);
}
