//! Microsoft Teams through the whole server: `--chat-config` with a `[teams]` section,
//! the outbox worker posting Adaptive Cards to (a fake of) the Bot Framework Connector,
//! and the card updated after a decision taken elsewhere (gRPC, what the CLI uses).

#[path = "support/console.rs"]
mod console;
#[path = "support/console_client.rs"]
mod console_client;
#[path = "support/fake_bot_framework.rs"]
mod fake_bot_framework;
#[path = "support/issuer.rs"]
mod issuer;
mod support;

use std::time::{Duration, SystemTime};

use belay_proto::v1;
use belay_server::approvals::{Approvals, MemoryStore};
use belay_server::chat::ChatConfig;
use belay_server::console::AuditCheck;
use console::{CAROL_TOKEN, TestConsole, email};
use fake_bot_framework::{APP_ID, APP_PASSWORD, FakeBotFramework};
use serde_json::Value;
use support::{PATIENCE, connect_request, with_bearer};

const CONVERSATION: &str = "19:approvals@thread.tacv2";
const INTENT: &str = "restore the staging database the user asked for";

/// Every text of a card, for "does it say".
fn texts(card: &Value) -> String {
    card.to_string()
}

fn card_of(body: &Value) -> &Value {
    &body["attachments"][0]["content"]
}

async fn wait_for(
    bf: &FakeBotFramework,
    what: &str,
    check: impl Fn(&[fake_bot_framework::Recorded]) -> bool,
) {
    let until = tokio::time::Instant::now() + PATIENCE;
    while !check(&bf.recorded()) {
        assert!(
            tokio::time::Instant::now() < until,
            "{what}; the Connector saw: {:#?}",
            bf.recorded()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_card_is_posted_with_the_intent_and_a_grpc_decision_refreshes_it() {
    let bf = FakeBotFramework::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("teams-pw"), format!("{APP_PASSWORD}\n")).unwrap();
    let config = format!(
        r#"
[teams]
app_id = "{APP_ID}"
app_password_file = "teams-pw"
openid_metadata_url = "{}"
token_url = "{}"
service_url = "{}"

[reviewers]
"carol@example.com" = "reviewer"

[[route]]
teams_conversation = "{CONVERSATION}"
"#,
        bf.metadata_url(),
        bf.token_url(),
        bf.service_url(),
    );
    let config = ChatConfig::parse(&dir.path().join("chat.toml"), &config).unwrap();
    let console = TestConsole::start_with_chat(
        Approvals::new(MemoryStore::default()),
        AuditCheck::Unavailable,
        Duration::from_secs(3600),
        Some(config),
    )
    .await;
    let mut agent = console.server.agent("web-1", &email("alice")).await;
    let mut request = connect_request("web-1:teams", 5432);
    request.context = Some(v1::RequestContext {
        intent: Some(v1::DeclaredIntent {
            text: INTENT.into(),
            model: "gpt-x".into(),
            declared_by_pid: 4242,
            declared_at: Some(SystemTime::now().into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    agent.submit(request).await;

    wait_for(&bf, "a card is posted", |r| {
        r.iter()
            .any(|c| c.method == "POST" && c.conversation_id == CONVERSATION)
    })
    .await;
    let posted = bf
        .recorded()
        .into_iter()
        .find(|c| c.method == "POST")
        .unwrap();
    let card = card_of(&posted.body);
    assert_eq!(card["type"], "AdaptiveCard", "{card}");
    assert_eq!(card["version"], "1.5", "{card}");
    assert!(texts(card).contains(INTENT), "{card}");
    assert!(texts(card).contains("(unverified)"), "{card}");
    assert!(texts(card).contains("Action.Execute"), "buttons: {card}");
    // The fake numbers the activities it is given.
    let activity_id = "1:activity-1";

    console
        .server
        .reviewer()
        .await
        .decide(with_bearer(
            CAROL_TOKEN,
            v1::DecideRequest {
                request_id: "web-1:teams".into(),
                verdict: v1::Verdict::Deny.into(),
                reason: "not on a Friday".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_eq!(agent.skip_to_decision().await.verdict(), v1::Verdict::Deny);
    wait_for(&bf, "the card is updated", |r| {
        r.iter().any(|c| c.method == "PUT")
    })
    .await;
    let updated = bf
        .recorded()
        .into_iter()
        .find(|c| c.method == "PUT")
        .unwrap();
    assert_eq!(updated.activity_id.as_deref(), Some(activity_id));
    let card = card_of(&updated.body);
    assert!(texts(card).contains("carol@example.com"), "{card}");
    assert!(texts(card).contains("not on a Friday"), "{card}");
    assert!(
        !texts(card).contains("Action.Execute"),
        "no buttons once decided: {card}"
    );
    assert_eq!(
        bf.recorded().iter().filter(|c| c.method == "POST").count(),
        1,
        "posted once"
    );
}
