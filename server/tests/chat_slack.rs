//! Slack approvals end to end: a real belay-server (console listener, chat outbox),
//! agents over gRPC, and a fake Slack Web API on loopback; button presses are sent
//! signed exactly as Slack documents them (form body with a `payload` field, the
//! `X-Slack-Signature` and `X-Slack-Request-Timestamp` headers).

#[path = "support/console.rs"]
mod console;
#[path = "support/console_client.rs"]
mod console_client;
#[path = "support/fake_slack.rs"]
mod fake_slack;
#[path = "support/issuer.rs"]
mod issuer;
mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use belay_proto::v1;
use belay_server::approvals::{Approvals, MemoryStore};
use belay_server::chat::ChatConfig;
use belay_server::chat::slack::verify::sign;
use belay_server::console::AuditCheck;
use console::{CAROL_TOKEN, TestConsole, email, urlencode};
use fake_slack::{BOT_TOKEN, FakeSlack};
use serde_json::{Value, json};
use support::{PATIENCE, TestAgent, connect_request, run_server, with_bearer};

const SIGNING_SECRET: &str = "test-signing-secret-0123456789";
const CHANNEL: &str = "CAPPROVALS";
/// alice owns the agents; bob is mapped by his confirmed email; carol explicitly;
/// mallory's email is unconfirmed, so she maps to nobody.
const ALICE: &str = "UALICE";
const BOB: &str = "UBOB";
const CAROL: &str = "UCAROL";
const MALLORY: &str = "UMALLORY";

struct World {
    console: TestConsole,
    slack: FakeSlack,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(quorum: u32) -> Self {
        let approvals = Approvals::new(MemoryStore::default())
            .with_quorum(std::num::NonZeroU32::new(quorum).unwrap());
        Self::start_with(
            approvals,
            FakeSlack::start().await,
            tempfile::tempdir().unwrap(),
        )
        .await
    }

    /// A world whose server keeps its requests (and chat outbox) in `approvals`, and
    /// talks to `slack`; `dir` holds the chat config and its secrets.
    async fn start_with<S: belay_server::approvals::Store>(
        approvals: Approvals<S>,
        slack: FakeSlack,
        dir: tempfile::TempDir,
    ) -> Self {
        slack.add_user(BOB, "Bob@Example.com", true);
        slack.add_user(MALLORY, "carol@example.com", false);
        std::fs::write(dir.path().join("bot-token"), format!("{BOT_TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("signing-secret"), SIGNING_SECRET).unwrap();
        let config = format!(
            r#"
[slack]
bot_token_file = "bot-token"
signing_secret_file = "signing-secret"
api_url = "{}"
map_by_email = true

[[slack.user]]
id = "{ALICE}"
identity = "alice@example.com"

[[slack.user]]
id = "{CAROL}"
identity = "carol@example.com"

[reviewers]
"alice@example.com" = "reviewer"
"bob@example.com" = "reviewer"
"carol@example.com" = "reviewer"

[[route]]
host = "db-*"

[[route]]
slack_channel = "{CHANNEL}"
"#,
            slack.api_url()
        );
        let config = ChatConfig::parse(&dir.path().join("chat.toml"), &config).unwrap();
        let console = TestConsole::start_with_chat(
            approvals,
            AuditCheck::Unavailable,
            Duration::from_secs(3600),
            Some(config),
        )
        .await;
        let http = console.http();
        Self {
            console,
            slack,
            http,
            _dir: dir,
        }
    }

    async fn alice_agent(&self) -> TestAgent {
        self.console.server.agent("web-1", &email("alice")).await
    }

    /// The interaction body Slack sends when `user` presses `action_id` on the message
    /// about `request_id`.
    fn press_body(&self, user: &str, action_id: &str, request_id: &str) -> String {
        let (ts, _) = self.slack.message_about(request_id).unwrap_or_default();
        let payload = json!({
            "type": "block_actions",
            "user": {"id": user, "username": "someone", "team_id": "T0001"},
            "api_app_id": "A0001",
            "team": {"id": "T0001", "domain": "example"},
            "container": {"type": "message", "message_ts": ts, "channel_id": CHANNEL, "is_ephemeral": false},
            "channel": {"id": CHANNEL, "name": "approvals"},
            "message": {"ts": ts, "type": "message"},
            "response_url": self.slack.response_url(1),
            "trigger_id": "1.2.3",
            "actions": [{
                "type": "button",
                "block_id": "belay_decision",
                "action_id": action_id,
                "value": request_id,
                "action_ts": "1700000001.000200",
            }],
        });
        format!("payload={}", urlencode(&payload.to_string()))
    }

    /// Posts `body` to the interactions endpoint with these headers.
    async fn send(&self, body: &str, timestamp: &str, signature: &str) -> reqwest::StatusCode {
        self.http
            .post(format!("{}/chat/slack/interactions", self.console.origin))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", timestamp)
            .header("x-slack-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .status()
    }

    /// `user` presses `action_id` on the message about `request_id`, signed now.
    async fn press(&self, user: &str, action_id: &str, request_id: &str) -> reqwest::StatusCode {
        let body = self.press_body(user, action_id, request_id);
        let ts = now().to_string();
        let signature = sign(SIGNING_SECRET, &ts, body.as_bytes());
        self.send(&body, &ts, &signature).await
    }

    async fn state_of(&self, id: &str) -> v1::RequestState {
        let request = self
            .console
            .server
            .reviewer()
            .await
            .get_request(with_bearer(
                CAROL_TOKEN,
                v1::GetRequestRequest {
                    request_id: id.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .request
            .unwrap();
        request.state()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn has_buttons(message: &Value) -> bool {
    message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["type"] == "actions")
}

fn text_of(message: &Value) -> String {
    message.to_string()
}

/// Writes a rendered message where the lead can show it: target/chat-rendered/.
fn save_rendered(name: &str, message: &Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/chat-rendered");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("slack-{name}.json")),
        serde_json::to_string_pretty(message).unwrap(),
    )
    .unwrap();
}

/// An exec request with a masked context and a declared intent.
fn exec_with_intent(id: &str) -> v1::NewRequest {
    let mut request = connect_request(id, 443);
    request.action = Some(v1::Action {
        kind: Some(v1::action::Kind::Exec(v1::Exec {
            path: "/usr/bin/psql".into(),
            argv: vec![
                "psql".into(),
                "--password=***".into(),
                "<!channel> DROP TABLE".into(),
            ],
            ..Default::default()
        })),
    });
    request.context = Some(v1::RequestContext {
        subject: "deploy-bot".into(),
        user: "deploy".into(),
        cwd: "/srv/app".into(),
        ancestry: vec![v1::Ancestor {
            pid: 10,
            comm: "claude".into(),
            exe: String::new(),
        }],
        intent: Some(v1::DeclaredIntent {
            text: "apply the <@U0ADMIN> migration the user asked for".into(),
            model: "claude-x".into(),
            declared_by_pid: 10,
            declared_at: Some(SystemTime::now().into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    request
}

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
    drop(agent);
}

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
        String::from_utf8_lossy(&ok.stdout).starts_with("ok: 1 route(s)"),
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
