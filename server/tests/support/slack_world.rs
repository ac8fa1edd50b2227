//! A belay-server with its console and Slack approvals on, talking to a fake Slack
//! ([`crate::fake_slack`]), and Slack's signed button presses. Included with `#[path]`
//! as `slack_world`, beside `support`, `console`, `console_client`, `issuer` and
//! `fake_slack`.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use belay_proto::v1;
use belay_server::approvals::{Approvals, MemoryStore};
use belay_server::chat::ChatConfig;
use belay_server::chat::slack::verify::sign;
use belay_server::console::AuditCheck;
use serde_json::{Value, json};

use crate::console::{CAROL_TOKEN, TestConsole, email, urlencode};
use crate::fake_slack::{BOT_TOKEN, FakeSlack};
use crate::support::{TestAgent, connect_request, with_bearer};

pub const SIGNING_SECRET: &str = "test-signing-secret-0123456789";
pub const CHANNEL: &str = "CAPPROVALS";
/// A channel the fake Slack does not know (`channel_not_found`).
pub const MISSING_CHANNEL: &str = crate::fake_slack::MISSING_CHANNEL;
/// alice owns the agents; bob is mapped by his confirmed email; carol explicitly;
/// mallory's email is unconfirmed, so she maps to nobody.
pub const ALICE: &str = "UALICE";
pub const BOB: &str = "UBOB";
pub const CAROL: &str = "UCAROL";
pub const MALLORY: &str = "UMALLORY";
/// The workspace the app is installed in.
pub const TEAM: &str = "T0001";

/// How presses reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Signed HTTP requests to `/chat/slack/interactions` (`signing_secret_file`).
    Http,
    /// Socket Mode only (`app_token_file`, no signing secret): the route is not served.
    SocketMode,
}

pub struct World {
    pub console: TestConsole,
    pub slack: FakeSlack,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl World {
    pub async fn start(quorum: u32) -> Self {
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
    pub async fn start_with<S: belay_server::approvals::Store>(
        approvals: Approvals<S>,
        slack: FakeSlack,
        dir: tempfile::TempDir,
    ) -> Self {
        Self::start_inbound(approvals, slack, dir, Inbound::Http).await
    }

    /// A world whose presses arrive as `inbound` says.
    pub async fn start_inbound<S: belay_server::approvals::Store>(
        approvals: Approvals<S>,
        slack: FakeSlack,
        dir: tempfile::TempDir,
        inbound: Inbound,
    ) -> Self {
        slack.add_user(BOB, "Bob@Example.com", true);
        slack.add_user(MALLORY, "carol@example.com", false);
        std::fs::write(dir.path().join("bot-token"), format!("{BOT_TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("signing-secret"), SIGNING_SECRET).unwrap();
        std::fs::write(dir.path().join("app-token"), crate::fake_slack::APP_TOKEN).unwrap();
        let inbound_keys = match inbound {
            Inbound::Http => "signing_secret_file = \"signing-secret\"",
            Inbound::SocketMode => "app_token_file = \"app-token\"",
        };
        let config = format!(
            r#"
[slack]
bot_token_file = "bot-token"
{inbound_keys}
api_url = "{}"
map_by_email = true
team_id = "{TEAM}"

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
host = "gone-*"
slack_channel = "{MISSING_CHANNEL}"

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

    pub async fn alice_agent(&self) -> TestAgent {
        self.console.server.agent("web-1", &email("alice")).await
    }

    /// The interaction body Slack sends when `user` presses `action_id` on the message
    /// about `request_id`.
    pub fn press_body(&self, user: &str, action_id: &str, request_id: &str) -> String {
        self.press_body_in(TEAM, TEAM, user, action_id, request_id)
    }

    /// The `block_actions` payload of `user` pressing `action_id` about `request_id`.
    pub fn press_payload(&self, user: &str, action_id: &str, request_id: &str) -> Value {
        self.payload_in(TEAM, TEAM, user, action_id, request_id)
    }

    /// [`Self::press_body`] in workspace `team` by a user whose own workspace is
    /// `user_team` (another one for a guest of a Slack Connect channel).
    pub fn press_body_in(
        &self,
        team: &str,
        user_team: &str,
        user: &str,
        action_id: &str,
        request_id: &str,
    ) -> String {
        let payload = self.payload_in(team, user_team, user, action_id, request_id);
        format!("payload={}", urlencode(&payload.to_string()))
    }

    fn payload_in(
        &self,
        team: &str,
        user_team: &str,
        user: &str,
        action_id: &str,
        request_id: &str,
    ) -> Value {
        let (ts, _) = self.slack.message_about(request_id).unwrap_or_default();
        json!({
            "type": "block_actions",
            "user": {"id": user, "username": "someone", "team_id": user_team},
            "api_app_id": "A0001",
            "team": {"id": team, "domain": "example"},
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
        })
    }

    /// Posts `body` to the interactions endpoint with these headers.
    pub async fn send(&self, body: &str, timestamp: &str, signature: &str) -> reqwest::StatusCode {
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
    pub async fn press(
        &self,
        user: &str,
        action_id: &str,
        request_id: &str,
    ) -> reqwest::StatusCode {
        let body = self.press_body(user, action_id, request_id);
        let ts = now().to_string();
        let signature = sign(SIGNING_SECRET, &ts, body.as_bytes());
        self.send(&body, &ts, &signature).await
    }

    pub async fn state_of(&self, id: &str) -> v1::RequestState {
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

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn has_buttons(message: &Value) -> bool {
    message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["type"] == "actions")
}

pub fn text_of(message: &Value) -> String {
    message.to_string()
}

/// Writes a rendered message where the lead can show it: target/chat-rendered/.
pub fn save_rendered(name: &str, message: &Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/chat-rendered");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("slack-{name}.json")),
        serde_json::to_string_pretty(message).unwrap(),
    )
    .unwrap();
}

/// An exec request with a masked context and a declared intent.
pub fn exec_with_intent(id: &str) -> v1::NewRequest {
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
