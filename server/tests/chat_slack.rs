//! Slack approvals end to end, the button presses: a real belay-server (console
//! listener, chat outbox), agents over gRPC, and a fake Slack Web API on loopback;
//! presses are sent signed exactly as Slack documents them (form body with a `payload`
//! field, the `X-Slack-Signature` and `X-Slack-Request-Timestamp` headers).

#[path = "support/console.rs"]
mod console;
#[path = "support/console_client.rs"]
mod console_client;
#[path = "support/fake_slack.rs"]
mod fake_slack;
#[path = "support/issuer.rs"]
mod issuer;
#[path = "support/slack_world.rs"]
mod slack_world;
mod support;

use std::time::Duration;

use belay_proto::v1;
use belay_server::approvals::Approvals;
use belay_server::chat::slack::verify::sign;
use fake_slack::FakeSlack;
use slack_world::*;
use support::{connect_request, run_server};

#[tokio::test]
async fn a_request_is_posted_with_its_intent_and_an_approval_from_slack_reaches_the_agent() {
    let world = World::start(1).await;
    let mut agent = world.alice_agent().await;
    agent.submit(exec_with_intent("web-1:intent")).await;

    let posted = world.slack.wait_message("web-1:intent", |_| true).await;
    save_rendered("pending", &posted);
    let text = text_of(&posted);
    assert_eq!(world.slack.posts()[0]["channel"], CHANNEL);
    assert!(has_buttons(&posted));
    assert!(
        text.contains("Declared by the agent (unverified)"),
        "{text}"
    );
    assert!(
        text.contains("apply the <@U0ADMIN> migration"),
        "intent shown as plain text: {text}"
    );
    assert!(
        text.contains("--password=***"),
        "masked argv shown as masked: {text}"
    );
    assert!(
        text.contains("subject: deploy-bot") && text.contains("claude (10)"),
        "{text}"
    );
    assert!(text.contains("Owner: alice@example.com"));
    // The agent's words are never in mrkdwn, where they could mention or link.
    for block in posted["blocks"].as_array().unwrap() {
        for field in block["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .chain([&block["text"]])
        {
            if field["type"] == "mrkdwn" {
                assert!(!field["text"].as_str().unwrap().contains("<@U0ADMIN>"));
            }
        }
    }

    assert_eq!(world.press(BOB, "belay_approve", "web-1:intent").await, 200);
    let decision = agent.skip_to_decision().await;
    assert_eq!(decision.request_id, "web-1:intent");
    assert_eq!(decision.verdict(), v1::Verdict::Allow);

    let done = world
        .slack
        .wait_message("web-1:intent", |m| !has_buttons(m))
        .await;
    save_rendered("approved", &done);
    assert!(
        text_of(&done).contains("Approved by bob@example.com"),
        "{done}"
    );
    assert!(text_of(&done).contains("from chat (slack:UBOB)"), "{done}");
    assert_eq!(world.slack.posts().len(), 1, "posted once");
}

#[tokio::test]
async fn the_owners_slack_account_cannot_approve() {
    let world = World::start(1).await;
    let agent = world.alice_agent().await;
    agent.submit(connect_request("web-1:own", 5432)).await;
    world.slack.wait_message("web-1:own", |_| true).await;

    assert_eq!(world.press(ALICE, "belay_approve", "web-1:own").await, 200);
    let answers = world.slack.wait_ephemerals(1).await;
    assert_eq!(answers[0]["response_type"], "ephemeral");
    assert!(
        answers[0]["text"]
            .as_str()
            .unwrap()
            .contains("may not approve"),
        "{answers:?}"
    );
    assert_eq!(world.state_of("web-1:own").await, v1::RequestState::Pending);
    assert!(world.slack.updates().is_empty(), "nothing to update");
    drop(agent);
}

#[tokio::test]
async fn a_quorum_of_two_slack_users_shows_1_of_2_then_approves() {
    let world = World::start(2).await;
    let mut agent = world.alice_agent().await;
    agent.submit(connect_request("web-1:q", 5432)).await;
    let posted = world.slack.wait_message("web-1:q", |_| true).await;
    assert!(text_of(&posted).contains("0 of 2"), "{posted}");

    assert_eq!(world.press(BOB, "belay_approve", "web-1:q").await, 200);
    let one = world
        .slack
        .wait_message("web-1:q", |m| text_of(m).contains("1 of 2"))
        .await;
    save_rendered("quorum-1-of-2", &one);
    assert!(has_buttons(&one));
    let answers = world.slack.wait_ephemerals(1).await;
    assert!(
        answers[0]["text"]
            .as_str()
            .unwrap()
            .contains("counted: 1 of 2"),
        "{answers:?}"
    );
    assert_eq!(world.state_of("web-1:q").await, v1::RequestState::Pending);

    assert_eq!(world.press(CAROL, "belay_approve", "web-1:q").await, 200);
    assert_eq!(agent.skip_to_decision().await.verdict(), v1::Verdict::Allow);
    let done = world
        .slack
        .wait_message("web-1:q", |m| !has_buttons(m))
        .await;
    assert!(
        text_of(&done).contains("Approved by carol@example.com"),
        "{done}"
    );
    assert!(
        text_of(&done).contains("approved by bob@example.com, carol@example.com"),
        "{done}"
    );
}

#[tokio::test]
async fn forged_stale_replayed_and_unmapped_presses_decide_nothing() {
    let world = World::start(2).await;
    let agent = world.alice_agent().await;
    agent.submit(connect_request("web-1:x", 5432)).await;
    world.slack.wait_message("web-1:x", |_| true).await;

    let body = world.press_body(BOB, "belay_deny", "web-1:x");
    let ts = now().to_string();
    // Signed with another secret.
    let forged = sign("not the secret", &ts, body.as_bytes());
    assert_eq!(world.send(&body, &ts, &forged).await, 401);
    // Signed correctly, six minutes ago.
    let old = (now() - 360).to_string();
    assert_eq!(
        world
            .send(&body, &old, &sign(SIGNING_SECRET, &old, body.as_bytes()))
            .await,
        401
    );
    // A signed body altered afterwards.
    let signed = sign(SIGNING_SECRET, &ts, body.as_bytes());
    let altered = world.press_body(BOB, "belay_kill", "web-1:x");
    assert_eq!(world.send(&altered, &ts, &signed).await, 401);
    assert_eq!(world.state_of("web-1:x").await, v1::RequestState::Pending);

    // The endpoint takes no cookie but keeps the console's headers, and a bounded body.
    let url = format!("{}/chat/slack/interactions", world.console.origin);
    let answer = world
        .http
        .post(&url)
        .body("payload=x")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(answer.headers()["x-content-type-options"], "nosniff");
    assert!(answer.headers().contains_key("content-security-policy"));
    let huge = "a".repeat(300 * 1024);
    let signature = sign(SIGNING_SECRET, &ts, huge.as_bytes());
    let answer = world
        .http
        .post(&url)
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", signature)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 413);

    // A genuine approval counts once; its replay is refused before it is read.
    let approve = world.press_body(BOB, "belay_approve", "web-1:x");
    let signature = sign(SIGNING_SECRET, &ts, approve.as_bytes());
    assert_eq!(world.send(&approve, &ts, &signature).await, 200);
    world.slack.wait_ephemerals(1).await;
    assert_eq!(world.send(&approve, &ts, &signature).await, 401);

    // A Slack user that maps to nobody (unconfirmed email) is told so.
    assert_eq!(world.press(MALLORY, "belay_deny", "web-1:x").await, 200);
    let answers = world.slack.wait_ephemerals(2).await;
    assert!(
        answers[1]["text"].as_str().unwrap().contains("not mapped"),
        "{answers:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        world.slack.ephemerals().len(),
        2,
        "the replay was not processed"
    );
    assert_eq!(world.state_of("web-1:x").await, v1::RequestState::Pending);

    // Operators see the attempts: forged, stale, altered, unsigned and replayed.
    let metrics = reqwest::get(&world.console.metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "belay_chat_presses_total{platform=\"slack\",result=\"unauthenticated\"} 5",
        "belay_chat_presses_total{platform=\"slack\",result=\"counted\"} 1",
        "belay_chat_presses_total{platform=\"slack\",result=\"unmapped\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    drop(agent);
}

/// The reason a reviewer types in the message goes with the decision: into the updated
/// message and the decision the agent gets; an over-long one decides nothing.
#[tokio::test]
async fn a_reason_typed_in_the_message_goes_with_the_decision() {
    let world = World::start(1).await;
    let mut agent = world.alice_agent().await;
    agent.submit(connect_request("web-1:why", 5432)).await;
    let posted = world.slack.wait_message("web-1:why", |_| true).await;
    let input = posted["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "input")
        .expect("a reason input while open");
    assert_eq!(input["block_id"], "belay_reason");
    assert_eq!(input["optional"], true);
    assert_eq!(input["element"]["max_length"], 500);

    let ts = now().to_string();
    let with_reason = |reason: &str| {
        let mut payload = world.press_payload(BOB, "belay_deny", "web-1:why");
        payload["state"] = serde_json::json!({"values": {"belay_reason": {"belay_reason_text": {
            "type": "plain_text_input", "value": reason}}}});
        format!("payload={}", console::urlencode(&payload.to_string()))
    };
    let long = with_reason(&"x".repeat(501));
    let signature = sign(SIGNING_SECRET, &ts, long.as_bytes());
    assert_eq!(world.send(&long, &ts, &signature).await, 200);
    let answers = world.slack.wait_ephemerals(1).await;
    assert!(
        answers[0]["text"]
            .as_str()
            .unwrap()
            .contains("the reason is refused: longer than 500 characters"),
        "{answers:?}"
    );
    assert_eq!(world.state_of("web-1:why").await, v1::RequestState::Pending);

    let body = with_reason("prod DB during the freeze <@U0ADMIN>");
    let signature = sign(SIGNING_SECRET, &ts, body.as_bytes());
    assert_eq!(world.send(&body, &ts, &signature).await, 200);
    let decision = agent.skip_to_decision().await;
    assert_eq!(decision.verdict(), v1::Verdict::Deny);
    assert_eq!(
        decision.reason,
        "prod DB during the freeze <@U0ADMIN> (from chat, slack:UBOB)"
    );
    let done = world
        .slack
        .wait_message("web-1:why", |m| !has_buttons(m))
        .await;
    assert!(
        done["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["type"] != "input"),
        "no input once decided: {done}"
    );
    assert!(
        text_of(&done)
            .contains("Reason: prod DB during the freeze <@U0ADMIN> (from chat, slack:UBOB)"),
        "{done}"
    );
}

/// A button press from another workspace, or by a guest from another workspace in a
/// Slack Connect channel, decides nothing even when the user would map to a reviewer.
#[tokio::test]
async fn presses_from_another_workspace_or_a_slack_connect_guest_decide_nothing() {
    let world = World::start(1).await;
    let mut agent = world.alice_agent().await;
    agent.submit(connect_request("web-1:ws", 5432)).await;
    world.slack.wait_message("web-1:ws", |_| true).await;
    let ts = now().to_string();
    for (team, user_team) in [("T0OTHER", "T0OTHER"), (TEAM, "T0GUEST")] {
        let body = world.press_body_in(team, user_team, BOB, "belay_approve", "web-1:ws");
        let signature = sign(SIGNING_SECRET, &ts, body.as_bytes());
        assert_eq!(
            world.send(&body, &ts, &signature).await,
            403,
            "team {team}, user's team {user_team}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(world.slack.ephemerals().is_empty());
    assert_eq!(world.state_of("web-1:ws").await, v1::RequestState::Pending);
    // The same user in the workspace itself decides.
    assert_eq!(world.press(BOB, "belay_approve", "web-1:ws").await, 200);
    let decision = agent.skip_to_decision().await;
    assert_eq!(decision.verdict(), v1::Verdict::Allow);
}

/// Replicas share one database, and a replay may be sent to any of them, or after a
/// restart: the record of accepted presses is the database's, not the process's.
#[tokio::test]
async fn a_press_replayed_to_another_replica_or_after_a_restart_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    let slack = FakeSlack::start().await;
    let sqlite = || belay_server::approvals::SqliteStore::open(&db).unwrap();
    let replica = || async {
        World::start_with(
            Approvals::new(sqlite()).with_quorum(std::num::NonZeroU32::new(2).unwrap()),
            slack.clone(),
            tempfile::tempdir().unwrap(),
        )
        .await
    };
    let a = replica().await;
    let agent = a.alice_agent().await;
    agent.submit(connect_request("web-1:rep", 5432)).await;
    slack.wait_message("web-1:rep", |_| true).await;
    // Started once a holds the outbox (SQLite tells no other process of new requests).
    let b = replica().await;

    let approve = a.press_body(BOB, "belay_approve", "web-1:rep");
    // A second ago, so that the fresh press below is signed differently.
    let ts = (now() - 1).to_string();
    let signature = sign(SIGNING_SECRET, &ts, approve.as_bytes());
    assert_eq!(a.send(&approve, &ts, &signature).await, 200);
    let answers = slack.wait_ephemerals(1).await;
    assert!(
        answers[0]["text"].as_str().unwrap().contains("1 of 2"),
        "{answers:?}"
    );
    assert_eq!(b.send(&approve, &ts, &signature).await, 401, "replica b");
    let World { console, .. } = a;
    console.server.stop().await;
    let restarted = replica().await;
    assert_eq!(
        restarted.send(&approve, &ts, &signature).await,
        401,
        "after a restart"
    );
    // A press of the same button signed anew is a new request: refused by the rules
    // (bob already voted), not by the replay check.
    assert_eq!(
        restarted.press(BOB, "belay_approve", "web-1:rep").await,
        200
    );
    let answers = slack.wait_ephemerals(2).await;
    assert!(
        answers[1]["text"].as_str().unwrap().contains("already"),
        "{answers:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        slack.ephemerals().len(),
        2,
        "the replays were not processed"
    );
    assert_eq!(
        restarted.state_of("web-1:rep").await,
        v1::RequestState::Pending
    );
    drop((agent, b));
}

#[test]
fn the_command_line_checks_the_chat_config_and_wants_the_console() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bot-token"), "xoxb-1\n").unwrap();
    std::fs::write(dir.path().join("signing-secret"), "s\n").unwrap();
    let good = dir.path().join("chat.toml");
    std::fs::write(
        &good,
        "[slack]\nbot_token_file = \"bot-token\"\nsigning_secret_file = \"signing-secret\"\n\
         [[route]]\nslack_channel = \"C1\"\n",
    )
    .unwrap();
    let good_arg = good.to_str().unwrap();
    let ok = run_server(&["check-config", "--chat", good_arg]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        String::from_utf8_lossy(&ok.stdout)
            .starts_with("ok: 1 route(s), 0 reviewer(s), slack on (HTTPS), teams off"),
        "{ok:?}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[slack]\nbot_token = \"xoxb-inline\"\n").unwrap();
    let refused = run_server(&["check-config", "--chat", bad.to_str().unwrap()]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("{}:2:1: unknown field `bot_token`", bad.display())),
        "{stderr}"
    );

    let no_console = run_server(&["--insecure", "--db", ":memory:", "--chat-config", good_arg]);
    assert!(!no_console.status.success());
    let stderr = String::from_utf8_lossy(&no_console.stderr);
    assert!(
        stderr.contains("--chat-config needs --console-listen"),
        "{stderr}"
    );
}

#[tokio::test]
async fn approve_for_30m_settles_the_same_action_of_that_agent_without_asking_again() {
    let world = World::start(1).await;
    let mut agent = world.alice_agent().await;
    agent.submit(connect_request("web-1:g1", 5432)).await;
    world.slack.wait_message("web-1:g1", |_| true).await;
    assert_eq!(
        world.press(BOB, "belay_approve_30m", "web-1:g1").await,
        reqwest::StatusCode::OK
    );
    let first = agent.skip_to_decision().await;
    assert_eq!(
        (first.request_id.as_str(), first.verdict()),
        ("web-1:g1", v1::Verdict::Allow)
    );

    // The same connect again: the grant settles it; nobody is asked, nothing is posted.
    agent.submit(connect_request("web-1:g2", 5432)).await;
    let second = agent.skip_to_decision().await;
    assert_eq!(
        (second.request_id.as_str(), second.verdict()),
        ("web-1:g2", v1::Verdict::Allow)
    );
    // Another port is another action: a person is asked again.
    agent.submit(connect_request("web-1:g3", 6543)).await;
    world.slack.wait_message("web-1:g3", |_| true).await;
    assert!(world.slack.message_about("web-1:g2").is_none());
    assert_eq!(world.state_of("web-1:g3").await, v1::RequestState::Pending);
}
