//! The cards as Teams gets them; each rendered card is also written to
//! `target/chat-rendered/teams-*.json`, to paste into the Adaptive Cards designer.

use std::time::{Duration, SystemTime};

use belay_proto::domain::{
    Action, ExecAction, HostName, Identity, Intent, IntentDetails, Name, NewRequest, Outcome,
    Reason, Request, RequestContext, RequestId, Resolution, Verdict,
};
use belay_proto::v1;
use serde_json::Value;

use super::*;

fn request() -> Request {
    let exec = ExecAction::new(
        "/usr/bin/curl",
        vec![
            "curl".into(),
            "[approve](https://evil.example)".into(),
            "**bold** \u{202e}gnp.exe".into(),
        ],
        Some("/srv/app".into()),
    )
    .unwrap();
    let context = RequestContext::try_from(v1::RequestContext {
        user: "dev".into(),
        cwd: "/srv/app".into(),
        ..Default::default()
    })
    .unwrap()
    .with_intent(Some(
        Intent::new(
            "Fetch the release notes the user asked for".into(),
            IntentDetails {
                model: Some("gpt-x".into()),
                ..Default::default()
            },
            4242,
            SystemTime::UNIX_EPOCH,
        )
        .unwrap(),
    ));
    let submitted = NewRequest {
        id: RequestId::new("web-1:r1").unwrap(),
        agent_name: Name::new("copilot").unwrap(),
        pid: 4242,
        uid: 1000,
        action: Action::Exec(exec),
        deadline: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        default_verdict: Verdict::Deny,
        rule: Name::new("egress").unwrap(),
        owner: None,
        context,
    };
    Request::new(
        submitted,
        HostName::new("web-1").unwrap(),
        Identity::new("alice@example.com").unwrap(),
        SystemTime::UNIX_EPOCH,
    )
}

fn save(name: &str, card: &Value) {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("chat-rendered");
    std::fs::create_dir_all(&dir).unwrap();
    let text = serde_json::to_string_pretty(card).unwrap();
    std::fs::write(dir.join(format!("teams-{name}.json")), text).unwrap();
}

/// Every `text` in the card, in order.
fn texts(card: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(text)) = map.get("text") {
                    out.push(text.clone());
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(card, &mut out);
    out
}

#[test]
fn open_card_has_the_request_the_buttons_and_the_quorum() {
    let card = RequestCard {
        request: request(),
        approvals: 1,
        quorum: 2,
    };
    let rendered = render(&card, &["29:alice".into()]);
    save("open-quorum", &rendered);
    assert_eq!(rendered["version"], "1.5");
    let all = texts(&rendered).join("\n");
    for expected in [
        "web-1:r1",
        "copilot",
        "alice@example.com",
        "exec /usr/bin/curl",
        "egress",
        "2027-01-15 08:00:00 UTC (then deny)",
        "Approvals: 1 of 2",
        "Declared by the agent (unverified)",
        "Fetch the release notes",
    ] {
        assert!(all.contains(expected), "{expected:?} missing from {all}");
    }
    let verbs: Vec<&str> = rendered["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["type"], "Action.Execute");
            assert_eq!(a["data"]["request_id"], "web-1:r1");
            a["verb"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        verbs,
        [
            "belay_approve",
            "belay_approve_30m",
            "belay_deny",
            "belay_kill"
        ]
    );
    assert_eq!(rendered["refresh"]["action"]["verb"], REFRESH_VERB);
    assert_eq!(rendered["refresh"]["userIds"][0], "29:alice");
}

#[test]
fn untrusted_text_is_never_markdown_and_bidi_is_escaped() {
    let rendered = render(
        &RequestCard {
            request: request(),
            approvals: 0,
            quorum: 1,
        },
        &[],
    );
    let json = rendered.to_string();
    assert!(!json.contains('\u{202e}'), "bidi override passed through");
    // Every piece of text the agent controls sits in a TextRun (never Markdown), not a
    // TextBlock.
    fn check(value: &Value) {
        match value {
            Value::Object(map) => {
                if map.get("type") == Some(&Value::String("TextBlock".into())) {
                    let text = map["text"].as_str().unwrap();
                    assert!(!text.contains("evil") && !text.contains("Fetch"), "{text}");
                }
                map.values().for_each(check);
            }
            Value::Array(items) => items.iter().for_each(check),
            _ => {}
        }
    }
    check(&rendered);
    assert!(
        texts(&rendered)
            .iter()
            .any(|t| t.contains("[approve](https://evil.example)"))
    );
}

#[test]
fn final_card_says_who_decided_and_why_and_has_no_buttons() {
    let mut request = request();
    request.resolution = Some(Resolution {
        outcome: Outcome::Decided {
            verdict: Verdict::Allow,
            reviewer: Identity::new("bob@example.com").unwrap(),
        },
        reason: Reason::new("from chat (teams:bob)").unwrap(),
        resolved_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_799_999_000),
    });
    let rendered = render(
        &RequestCard {
            request,
            approvals: 1,
            quorum: 1,
        },
        &[],
    );
    save("final-approved", &rendered);
    assert!(rendered.get("actions").is_none());
    assert!(rendered.get("refresh").is_none());
    let all = texts(&rendered).join("\n");
    assert!(all.contains("belay: approved"), "{all}");
    assert!(all.contains("Approved by bob@example.com"), "{all}");
    assert!(all.contains("from chat (teams:bob)"), "{all}");
}

#[test]
fn a_refusal_notice_sits_above_the_current_card() {
    let card = RequestCard {
        request: request(),
        approvals: 0,
        quorum: 1,
    };
    let rendered = with_notice("You own the agent", Some((&card, &[])));
    save("refused-owner", &rendered);
    let all = texts(&rendered);
    assert!(all[0].contains("You own the agent"), "{all:?}");
    assert!(rendered["actions"].is_array());
    let alone = with_notice("not mapped", None);
    assert_eq!(texts(&alone), ["not mapped"]);
}
