//! Microsoft Teams approvals end to end on loopback: a fake Bot Framework signs real
//! RS256 tokens and records the Connector calls; belay's Teams endpoint decides real
//! requests in a real `Approvals`, whose agent session receives the decision.

#[path = "support/fake_bot_framework.rs"]
mod fake_bot_framework;
#[path = "support/issuer.rs"]
mod issuer;
mod support;
#[path = "support/teams_harness.rs"]
mod teams_harness;

use std::time::Duration;

use belay_proto::domain::{RequestId, Verdict};
use belay_server::chat::surface::{PostedMessage, SendError, Surface};
use belay_server::chat::teams::{self, TeamsMessage};
use issuer::now;
use reqwest::StatusCode;
use serde_json::{Value, json};
use teams_harness::{CONVERSATION, REQUEST, card_of, harness, key, texts, unsigned};

#[tokio::test]
async fn forged_or_misdirected_tokens_decide_nothing() {
    let mut h = harness(1).await;
    // Published from the start, but endorsed for another channel only.
    let webchat = key("webchat-only");
    h.bf.publish(&webchat, Some(&["webchat"]));
    let press = h.press("AAD-BOB", "belay_approve");
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = h.claims();
        change(&mut claims);
        claims
    };
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("bf-1".into());
        jsonwebtoken::encode(
            &header,
            &h.claims(),
            &jsonwebtoken::EncodingKey::from_secret(b"guessable"),
        )
        .unwrap()
    };
    // Each refused token, and what the verifier says about it.
    let refused: Vec<(Option<String>, &str)> = vec![
        (None, "no Authorization"),
        (
            Some(h.bf.key.sign(&with(&|c| c["aud"] = json!("another-bot")))),
            "another bot",
        ),
        (
            Some(
                h.bf.key
                    .sign(&with(&|c| c["iss"] = json!("https://sts.windows.net/x/"))),
            ),
            "not issued by Bot Framework",
        ),
        (
            // Past the five minutes of skew.
            Some(h.bf.key.sign(&with(&|c| {
                c["exp"] = json!(now() - 400);
                c["nbf"] = json!(now() - 1000);
            }))),
            "expired",
        ),
        (
            Some(h.bf.key.sign(&with(&|c| c["nbf"] = json!(now() + 600)))),
            "not valid yet",
        ),
        (Some(key("not-published").sign(&h.claims())), "unknown key"),
        (
            Some(h.bf.key.sign(&with(&|c| {
                c["serviceurl"] = json!("https://smba.trafficmanager.net/emea/")
            }))),
            "is for service URL",
        ),
        (
            Some(h.bf.key.sign(&with(&|c| {
                c.as_object_mut().unwrap().remove("serviceurl");
            }))),
            "no serviceurl claim",
        ),
        (Some(unsigned("none", &h.claims())), "not a JWT"),
        (Some(hs256), "HS256"),
        (Some(webchat.sign(&h.claims())), "not endorsed"),
    ];
    // Within the five minutes of skew, a token just expired or not quite valid yet
    // still verifies (clocks differ); the refusals below are past it.
    for skewed in [
        with(&|c| c["exp"] = json!(now() - 120)),
        with(&|c| c["nbf"] = json!(now() + 120)),
    ] {
        let header = format!("Bearer {}", h.bf.key.sign(&skewed));
        h.teams.verifier.verify(Some(&header)).await.unwrap();
    }

    for (token, why) in &refused {
        let (status, body) = h.send(token.as_deref(), &press).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
        h.assert_pending().await;
        let header = token.as_ref().map(|t| format!("Bearer {t}"));
        let verdict = match h.teams.verifier.verify(header.as_deref()).await {
            Ok(verified) => verified.check_activity(&h.bf.service_url(), "msteams"),
            Err(err) => Err(err),
        };
        let err = verdict.expect_err(why).to_string();
        assert!(err.contains(why), "expected {why:?}, got {err:?}");
    }

    // The activity says another service URL than the (valid) token.
    let mut elsewhere = press.clone();
    elsewhere["serviceUrl"] = json!("https://attacker.example/");
    let (status, _) = h.send(Some(&h.token()), &elsewhere).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    h.assert_pending().await;

    // The same press with a good token decides: the refusals above were the tokens.
    let card = h.card_for(&press).await;
    assert!(texts(&card).contains("Approved by bob"), "{card}");
    assert_eq!(h.decisions.recv().await.unwrap().verdict, Verdict::Allow);
    // Every refusal is counted for operators, apart from the decision.
    let presses = h.metrics.chat_presses();
    assert_eq!(
        presses.count("teams", "unauthenticated"),
        u64::try_from(refused.len() + 1).unwrap()
    );
    assert_eq!(presses.count("teams", "decided"), 1);
}

#[tokio::test]
async fn a_mapped_reviewer_approves_and_the_agent_gets_the_decision() {
    let mut h = harness(1).await;
    let card = h.card_for(&h.press("AAD-BOB", "belay_approve")).await;
    let shown = texts(&card);
    assert!(shown.contains("belay: approved"), "{shown}");
    assert!(shown.contains("Approved by bob"), "{shown}");
    assert!(card.get("actions").is_none(), "a final card has no buttons");
    let request = h
        .approvals
        .get(&RequestId::new(REQUEST).unwrap())
        .await
        .unwrap();
    assert_eq!(request.state().to_string(), "approved");
    let decision = tokio::time::timeout(support::PATIENCE, h.decisions.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decision.request_id.as_str(), REQUEST);
    assert_eq!(decision.verdict, Verdict::Allow);
    assert!(
        decision.reason.as_str().contains("teams:aad-bob"),
        "{}",
        decision.reason
    );

    // Nothing twice.
    let again = h.card_for(&h.press("aad-carol", "belay_deny")).await;
    assert!(texts(&again).contains("already approved"), "{again}");
}

#[tokio::test]
async fn the_owner_an_unmapped_user_and_a_viewer_are_refused() {
    let mut h = harness(1).await;
    let card = h.card_for(&h.press("aad-alice", "belay_approve")).await;
    assert!(texts(&card).contains("You own the agent"), "{card}");
    assert!(card["actions"].is_array(), "the owner may still deny");
    h.assert_pending().await;

    let card = h.card_for(&h.press("aad-stranger", "belay_approve")).await;
    let shown = texts(&card);
    assert!(shown.contains("not mapped"), "{shown}");
    assert!(
        !shown.contains(REQUEST),
        "an unmapped user sees no request: {shown}"
    );
    h.assert_pending().await;

    let card = h.card_for(&h.press("aad-vic", "belay_approve")).await;
    assert!(
        texts(&card).contains("vic has no belay reviewer role"),
        "{card}"
    );
    h.assert_pending().await;

    // A name in the card's data changes nothing: the decider is the verified sender.
    let mut forged = h.press("aad-stranger", "belay_approve");
    forged["value"]["action"]["data"]["reviewer"] = json!("bob");
    forged["from"]["name"] = json!("bob");
    let card = h.card_for(&forged).await;
    assert!(texts(&card).contains("not mapped"), "{card}");
    h.assert_pending().await;

    // The owner denying is allowed: it only makes things safer.
    let card = h.card_for(&h.press("aad-alice", "belay_deny")).await;
    assert!(texts(&card).contains("Denied by alice"), "{card}");
    assert_eq!(h.decisions.recv().await.unwrap().verdict, Verdict::Deny);
}

#[tokio::test]
async fn a_quorum_of_two_shows_one_of_two_then_approves() {
    let mut h = harness(2).await;
    let card = h.card_for(&h.press("AAD-BOB", "belay_approve")).await;
    assert!(texts(&card).contains("Approvals: 1 of 2"), "{card}");
    assert!(card["actions"].is_array());
    h.assert_pending().await;

    // Another viewer's client refreshes: the same progress, nothing decided.
    let card = h.card_for(&h.press("aad-vic", "belay_refresh")).await;
    assert!(texts(&card).contains("Approvals: 1 of 2"), "{card}");
    assert_eq!(card["refresh"]["userIds"], json!(["29:alice"]));
    h.assert_pending().await;

    let card = h.card_for(&h.press("aad-bob", "belay_approve")).await;
    assert!(texts(&card).contains("already approved"), "{card}");
    h.assert_pending().await;

    let card = h.card_for(&h.press("aad-carol", "belay_approve")).await;
    assert!(texts(&card).contains("belay: approved"), "{card}");
    assert_eq!(h.decisions.recv().await.unwrap().verdict, Verdict::Allow);
}

#[tokio::test]
async fn a_user_mapped_by_upn_is_recognised_through_the_connector() {
    let mut h = harness(1).await;
    // The activity carries no UPN; the Connector reports it for the verified sender.
    h.bf.add_member(
        "29:aad-dave",
        json!({"id": "29:aad-dave", "aadObjectId": "aad-dave", "userPrincipalName": "Dave@Example.com"}),
    );
    // One whose object id the Connector contradicts is not trusted.
    h.bf.add_member(
        "29:aad-eve",
        json!({"id": "29:aad-eve", "aadObjectId": "aad-someone-else", "userPrincipalName": "dave@example.com"}),
    );
    let card = h.card_for(&h.press("aad-eve", "belay_approve")).await;
    assert!(texts(&card).contains("not mapped"), "{card}");
    h.assert_pending().await;

    let card = h.card_for(&h.press("aad-dave", "belay_approve")).await;
    assert!(texts(&card).contains("Approved by dave"), "{card}");
    assert_eq!(h.decisions.recv().await.unwrap().verdict, Verdict::Allow);
}

#[tokio::test]
async fn cards_are_posted_and_updated_through_the_connector_with_one_token() {
    let h = harness(1).await;
    let connector = &h.teams.connector;
    let open = card_of(&h).await;
    let posted = connector.post(CONVERSATION, &open).await.unwrap();
    let message: TeamsMessage = serde_json::from_str(&posted.0).unwrap();
    assert_eq!(message.conversation_id, CONVERSATION);
    assert_eq!(message.service_url, h.bf.service_url());
    assert_eq!(message.activity_id, "1:activity-1");

    h.card_for(&h.press("AAD-BOB", "belay_approve")).await;
    let decided = card_of(&h).await;
    connector.update(&posted, &decided).await.unwrap();

    let recorded = h.bf.recorded();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    let (post, put) = (&recorded[0], &recorded[1]);
    assert_eq!((post.method, put.method), ("POST", "PUT"));
    assert_eq!(post.conversation_id, CONVERSATION);
    assert_eq!(put.activity_id.as_deref(), Some("1:activity-1"));
    for call in [post, put] {
        let attachment = &call.body["attachments"][0];
        assert_eq!(call.body["type"], "message");
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(attachment["content"]["version"], "1.5");
    }
    assert!(texts(&post.body).contains("belay: approval needed"));
    assert_eq!(
        post.body["attachments"][0]["content"]["actions"][0]["verb"],
        "belay_approve"
    );
    assert!(texts(&put.body).contains("Approved by bob"), "{}", put.body);
    assert!(
        put.body["attachments"][0]["content"]
            .get("actions")
            .is_none()
    );

    // One token for both calls, asked for with the app's credentials.
    let tokens = h.bf.token_requests();
    assert_eq!(tokens.len(), 1, "the token was not cached: {tokens:?}");
    assert_eq!(post.bearer, "connector-token-1");
    assert_eq!(put.bearer, "connector-token-1");
}

#[tokio::test]
async fn connector_failures_map_to_what_the_outbox_does() {
    let h = harness(1).await;
    let connector = &h.teams.connector;
    let card = card_of(&h).await;

    h.bf.rate_limit(Some(7));
    match connector.post(CONVERSATION, &card).await {
        Err(SendError::RetryAfter(after)) => assert_eq!(after, Duration::from_secs(7)),
        other => panic!("expected RetryAfter(7s), got {other:?}"),
    }
    let message = PostedMessage(
        serde_json::to_string(&TeamsMessage {
            service_url: h.bf.service_url(),
            conversation_id: CONVERSATION.into(),
            activity_id: "1:activity-9".into(),
        })
        .unwrap(),
    );
    assert!(matches!(
        connector.update(&message, &card).await,
        Err(SendError::RetryAfter(_))
    ));
    h.bf.rate_limit(None);

    h.bf.fail_with(Some(503));
    assert!(matches!(
        connector.post(CONVERSATION, &card).await,
        Err(SendError::Transient(_))
    ));
    h.bf.fail_with(Some(404));
    assert!(matches!(
        connector.post(CONVERSATION, &card).await,
        Err(SendError::Permanent(_))
    ));
    h.bf.fail_with(None);
    connector.post(CONVERSATION, &card).await.unwrap();

    // Nothing listens there: unreachable is transient.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "x").unwrap();
    let config: teams::TeamsConfig = toml::from_str(
        r#"
        app_id = "a"
        app_password_file = "pw"
        token_url = "http://127.0.0.1:9/token"
        "#,
    )
    .unwrap();
    let unreachable = teams::load(config, dir.path()).unwrap();
    assert!(matches!(
        unreachable.connector.post(CONVERSATION, &card).await,
        Err(SendError::Transient(_))
    ));
    assert_eq!(h.bf.token_requests().len(), 1, "the token was not cached");

    // A token the Connector no longer takes: this try fails (and is retried), the next
    // one gets a new token.
    h.bf.revoke_tokens();
    assert!(matches!(
        connector.post(CONVERSATION, &card).await,
        Err(SendError::Transient(_))
    ));
    connector.post(CONVERSATION, &card).await.unwrap();
    assert_eq!(h.bf.token_requests().len(), 2);
    assert_eq!(h.bf.recorded().last().unwrap().bearer, "connector-token-2");
}

#[tokio::test]
async fn a_refused_app_password_is_permanent() {
    let h = harness(1).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "not-the-password\n").unwrap();
    let config: teams::TeamsConfig = toml::from_str(&format!(
        "app_id = \"{}\"\napp_password_file = \"pw\"\ntoken_url = \"{}\"\nservice_url = \"{}\"",
        fake_bot_framework::APP_ID,
        h.bf.token_url(),
        h.bf.service_url(),
    ))
    .unwrap();
    let wrong = teams::load(config, dir.path()).unwrap();
    let card = card_of(&h).await;
    let posted = tokio::time::timeout(support::PATIENCE, wrong.connector.post(CONVERSATION, &card))
        .await
        .expect("posting hung");
    assert!(matches!(posted, Err(SendError::Permanent(_))), "{posted:?}");
    assert!(h.bf.recorded().is_empty());
}

#[tokio::test]
async fn other_activities_and_oversized_bodies_decide_nothing() {
    let mut h = harness(1).await;
    // A chat message to the bot, properly signed: acknowledged, nothing else.
    let mut message = h.press("AAD-BOB", "belay_approve");
    message["type"] = json!("message");
    message["text"] = json!("approve web-1:r1");
    let (status, _) = h.send(Some(&h.token()), &message).await;
    assert_eq!(status, StatusCode::OK);
    h.assert_pending().await;

    let mut huge = h.press("AAD-BOB", "belay_approve");
    huge["padding"] = json!("x".repeat(teams::endpoint::MAX_BODY));
    let (status, _) = h.send(Some(&h.token()), &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    h.assert_pending().await;

    // Signed for another channel the key is endorsed for: not a Teams user to map.
    let mut skype = h.press("AAD-BOB", "belay_approve");
    skype["channelId"] = json!("skype");
    let card = h.card_for(&skype).await;
    assert!(texts(&card).contains("Microsoft Teams only"), "{card}");
    h.assert_pending().await;

    // An action naming no request, or an unknown verb.
    let mut no_id = h.press("AAD-BOB", "belay_approve");
    no_id["value"]["action"]["data"] = json!({});
    let card = h.card_for(&no_id).await;
    assert!(texts(&card).contains("not a belay action"), "{card}");
    let card = h.card_for(&h.press("AAD-BOB", "approve_everything")).await;
    assert!(texts(&card).contains("Unknown action"), "{card}");
    h.assert_pending().await;
}

#[tokio::test]
async fn an_action_from_a_tenant_not_allowed_decides_nothing() {
    let mut h = harness(1).await;
    // Bob's object id, properly signed by Bot Framework, but in another tenant where the
    // bot is installed too (or naming none).
    let mut elsewhere = h.press("AAD-BOB", "belay_approve");
    elsewhere["channelData"]["tenant"]["id"] = json!("00000000-0000-0000-0000-000000000001");
    let card = h.card_for(&elsewhere).await;
    assert!(texts(&card).contains("tenant may not decide"), "{card}");
    assert!(
        !texts(&card).contains(REQUEST),
        "shows nothing of the request: {card}"
    );
    h.assert_pending().await;
    let mut nameless = h.press("AAD-BOB", "belay_approve");
    nameless.as_object_mut().unwrap().remove("channelData");
    let card = h.card_for(&nameless).await;
    assert!(texts(&card).contains("tenant may not decide"), "{card}");
    h.assert_pending().await;

    // In the allowed tenant (configured in capitals, sent in lower case) it decides.
    let card = h.card_for(&h.press("AAD-BOB", "belay_approve")).await;
    assert!(texts(&card).contains("Approved by bob"), "{card}");
    assert_eq!(h.decisions.recv().await.unwrap().verdict, Verdict::Allow);
}

#[tokio::test]
async fn a_reason_typed_in_the_card_goes_with_the_decision() {
    let mut h = harness(1).await;
    let card = h.card_for(&h.press("AAD-BOB", "belay_refresh")).await;
    let input = card["body"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "Input.Text")
        .expect("a reason input while open");
    assert_eq!(input["id"], "reason");
    assert_eq!(input["maxLength"], 500);

    let mut long = h.press("AAD-BOB", "belay_deny");
    long["value"]["action"]["data"]["reason"] = json!("x".repeat(501));
    let card = h.card_for(&long).await;
    assert!(
        texts(&card).contains("The reason is refused (longer than 500 characters)"),
        "{card}"
    );
    h.assert_pending().await;

    let mut press = h.press("AAD-BOB", "belay_deny");
    press["value"]["action"]["data"]["reason"] = json!("not during the freeze");
    let card = h.card_for(&press).await;
    assert!(
        texts(&card).contains("not during the freeze (from chat, teams:aad-bob)"),
        "{card}"
    );
    assert!(
        !card.to_string().contains("Input.Text"),
        "no input once decided: {card}"
    );
    let decision = h.decisions.recv().await.unwrap();
    assert_eq!(decision.verdict, Verdict::Deny);
    assert_eq!(
        decision.reason.as_str(),
        "not during the freeze (from chat, teams:aad-bob)"
    );
}
