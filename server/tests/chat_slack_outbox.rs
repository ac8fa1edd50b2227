//! Slack approvals end to end, the messages: posted once, updated after any decision
//! (gRPC, the deadline), kept through Slack outages, rate limits and restarts.

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

use std::time::{Duration, SystemTime};

use belay_proto::v1;
use belay_server::approvals::Approvals;
use console::{CAROL_TOKEN, email};
use fake_slack::FakeSlack;
use slack_world::*;
use support::{PATIENCE, connect_request, with_bearer};

#[tokio::test]
async fn a_decision_over_grpc_updates_the_slack_message() {
    let world = World::start(1).await;
    let mut agent = world.alice_agent().await;
    agent.submit(connect_request("web-1:cli", 5432)).await;
    world.slack.wait_message("web-1:cli", |_| true).await;

    world
        .console
        .server
        .reviewer()
        .await
        .decide(with_bearer(
            CAROL_TOKEN,
            v1::DecideRequest {
                request_id: "web-1:cli".into(),
                verdict: v1::Verdict::Deny.into(),
                reason: "not during the freeze".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_eq!(agent.skip_to_decision().await.verdict(), v1::Verdict::Deny);
    let done = world
        .slack
        .wait_message("web-1:cli", |m| !has_buttons(m))
        .await;
    save_rendered("denied", &done);
    assert!(
        text_of(&done).contains("Denied by carol@example.com"),
        "{done}"
    );
    assert!(text_of(&done).contains("not during the freeze"), "{done}");
}

#[tokio::test]
async fn unrouted_requests_are_not_posted() {
    let world = World::start(1).await;
    let db = world.console.server.agent("db-1", &email("alice")).await;
    db.submit(connect_request("db-1:a", 5432)).await;
    let web = world.alice_agent().await;
    web.submit(connect_request("web-1:b", 5432)).await;
    world.slack.wait_message("web-1:b", |_| true).await;
    assert!(world.slack.message_about("db-1:a").is_none());
    assert_eq!(world.slack.posts().len(), 1);
}

#[tokio::test]
async fn slack_down_for_a_while_then_back_gets_every_message_once() {
    let world = World::start(1).await;
    world.slack.set_outage(true);
    let agent = world.alice_agent().await;
    for n in 0..3 {
        agent
            .submit(connect_request(&format!("web-1:out{n}"), 5432))
            .await;
    }
    // Tried and failed meanwhile.
    tokio::time::timeout(PATIENCE, async {
        while world
            .slack
            .calls()
            .iter()
            .filter(|c| c.status == 503)
            .count()
            < 3
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(world.slack.posts().is_empty());
    world.slack.set_outage(false);
    for n in 0..3 {
        world
            .slack
            .wait_message(&format!("web-1:out{n}"), |_| true)
            .await;
    }
    // Another change later (a decision) must not post anything again.
    world
        .console
        .server
        .reviewer()
        .await
        .decide(with_bearer(
            CAROL_TOKEN,
            v1::DecideRequest {
                request_id: "web-1:out0".into(),
                verdict: v1::Verdict::Deny.into(),
                reason: "no".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    world
        .slack
        .wait_message("web-1:out0", |m| !has_buttons(m))
        .await;
    let posts = world.slack.posts();
    assert_eq!(posts.len(), 3, "each posted exactly once: {posts:?}");
    for n in 0..3 {
        let id = format!("web-1:out{n}");
        assert_eq!(
            posts
                .iter()
                .filter(|p| fake_slack::mentions(p, &id))
                .count(),
            1
        );
    }
    drop(agent);
}

#[tokio::test]
async fn a_429_retry_after_is_honoured() {
    let world = World::start(1).await;
    world.slack.rate_limit(1, 2);
    let agent = world.alice_agent().await;
    agent.submit(connect_request("web-1:slow", 5432)).await;
    world.slack.wait_message("web-1:slow", |_| true).await;
    let calls = world.slack.calls();
    let limited = calls.iter().find(|c| c.status == 429).expect("a 429 first");
    let after: Vec<_> = calls.iter().filter(|c| c.at > limited.at).collect();
    assert!(!after.is_empty());
    for call in after {
        let waited = call.at - limited.at;
        assert!(
            waited >= Duration::from_secs(2),
            "called again after {waited:?}"
        );
    }
    assert_eq!(world.slack.posts().len(), 1);
    drop(agent);
}

#[tokio::test]
async fn after_a_restart_nothing_is_posted_twice_and_old_messages_are_still_updated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    let slack = FakeSlack::start().await;
    let sqlite = || belay_server::approvals::SqliteStore::open(&db).unwrap();
    let world = World::start_with(
        Approvals::new(sqlite()),
        slack.clone(),
        tempfile::tempdir().unwrap(),
    )
    .await;
    let agent = world.alice_agent().await;
    agent.submit(connect_request("web-1:r1", 5432)).await;
    agent.submit(connect_request("web-1:r2", 5433)).await;
    slack.wait_message("web-1:r1", |_| true).await;
    slack.wait_message("web-1:r2", |_| true).await;
    drop(agent);
    let World { console, .. } = world;
    console.server.stop().await;

    let world = World::start_with(
        Approvals::new(sqlite()),
        slack.clone(),
        tempfile::tempdir().unwrap(),
    )
    .await;
    // Decided on the new process, over gRPC: the message posted by the old one changes.
    world
        .console
        .server
        .reviewer()
        .await
        .decide(with_bearer(
            CAROL_TOKEN,
            v1::DecideRequest {
                request_id: "web-1:r1".into(),
                verdict: v1::Verdict::Deny.into(),
                reason: "after the restart".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let done = slack.wait_message("web-1:r1", |m| !has_buttons(m)).await;
    assert!(text_of(&done).contains("after the restart"), "{done}");
    // Give the new worker time to (wrongly) post the still pending r2 again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(slack.posts().len(), 2, "{:?}", slack.posts());
}

#[tokio::test]
async fn an_expired_request_shows_as_expired() {
    let world = World::start(1).await;
    let mut agent = world.alice_agent().await;
    let mut request = connect_request("web-1:late", 5432);
    request.deadline = Some((SystemTime::now() + Duration::from_secs(2)).into());
    agent.submit(request).await;
    world.slack.wait_message("web-1:late", has_buttons).await;
    assert_eq!(agent.skip_to_decision().await.verdict(), v1::Verdict::Deny);
    let done = world
        .slack
        .wait_message("web-1:late", |m| !has_buttons(m))
        .await;
    assert!(
        text_of(&done).contains("Expired (deny by default)"),
        "{done}"
    );
}

#[tokio::test]
async fn a_channel_slack_refuses_is_given_up_and_the_request_stays_decidable() {
    let world = World::start(1).await;
    let mut agent = world.console.server.agent("gone-1", &email("alice")).await;
    agent.submit(connect_request("gone-1:a", 5432)).await;
    let to_missing = || {
        world
            .slack
            .calls()
            .into_iter()
            .filter(|c| c.method == "chat.postMessage" && c.body["channel"] == MISSING_CHANNEL)
            .count()
    };
    tokio::time::timeout(PATIENCE, async {
        while to_missing() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    // Given up: no retries (the first backoff would be half a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(to_missing(), 1);
    world
        .console
        .server
        .reviewer()
        .await
        .decide(with_bearer(
            CAROL_TOKEN,
            v1::DecideRequest {
                request_id: "gone-1:a".into(),
                verdict: v1::Verdict::Allow.into(),
                reason: "fine".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_eq!(agent.skip_to_decision().await.verdict(), v1::Verdict::Allow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(world.slack.updates().is_empty(), "nothing to update");
    assert_eq!(to_missing(), 1);
}
