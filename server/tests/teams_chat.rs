//! Microsoft Teams approvals end to end on loopback: a fake Bot Framework signs real
//! RS256 tokens and records the Connector calls; belay's Teams endpoint decides real
//! requests in a real `Approvals`, whose agent session receives the decision.

#[path = "support/fake_bot_framework.rs"]
mod fake_bot_framework;
#[path = "support/issuer.rs"]
mod issuer;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use belay_proto::domain::{Decision, Hello, Identity, Name, RequestId, Verdict};
use belay_server::approvals::{AgentSession, Approvals, MemoryStore};
use belay_server::auth::Role;
use belay_server::chat::card::RequestCard;
use belay_server::chat::surface::{PostedMessage, SendError, Surface};
use belay_server::chat::teams::{self, Teams, TeamsEndpoint, TeamsMessage};
use fake_bot_framework::{APP_ID, APP_PASSWORD, BOT_FRAMEWORK_ISSUER, FakeBotFramework};
use issuer::{TestKey, now};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const REQUEST: &str = "web-1:r1";
const CONVERSATION: &str = "19:reviewers@thread.tacv2";

struct Harness {
    bf: FakeBotFramework,
    approvals: Arc<Approvals<MemoryStore>>,
    teams: Teams,
    endpoint: String,
    decisions: mpsc::UnboundedReceiver<Decision>,
    _session: AgentSession,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The RSA key `kid`, generated once for all tests (seconds each in a debug build).
fn key(kid: &str) -> TestKey {
    static KEYS: OnceLock<Mutex<HashMap<String, TestKey>>> = OnceLock::new();
    let mut keys = KEYS.get_or_init(Mutex::default).lock().unwrap();
    keys.entry(kid.to_owned())
        .or_insert_with(|| TestKey::rs256(kid))
        .clone()
}

/// alice owns the agent on web-1 and is a reviewer; bob and carol are reviewers, vic a
/// viewer; dave is mapped by UPN only.
async fn harness(quorum: u32) -> Harness {
    let bf = FakeBotFramework::start_with(key("bf-1")).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app-password"), format!("{APP_PASSWORD}\n")).unwrap();
    let config: teams::TeamsConfig = toml::from_str(&format!(
        r#"
        app_id = "{APP_ID}"
        app_password_file = "app-password"
        openid_metadata_url = "{}"
        token_url = "{}"
        service_url = "{}"
        [[user]]
        aad_object_id = "aad-alice"
        identity = "alice"
        user_id = "29:alice"
        [[user]]
        aad_object_id = "AAD-BOB"
        identity = "bob"
        [[user]]
        aad_object_id = "aad-carol"
        identity = "carol"
        [[user]]
        aad_object_id = "aad-vic"
        identity = "vic"
        [[user]]
        upn = "dave@example.com"
        identity = "dave"
        "#,
        bf.metadata_url(),
        bf.token_url(),
        bf.service_url(),
    ))
    .unwrap();
    let teams = teams::load(config, dir.path()).unwrap();
    let approvals =
        Arc::new(Approvals::new(MemoryStore::new()).with_quorum(NonZeroU32::new(quorum).unwrap()));
    let (session, decisions) = approvals.attach_agent(&Hello {
        host: "web-1".try_into().unwrap(),
        version: Name::new("0.1.0-test").unwrap(),
        owner: Identity::new("alice").unwrap(),
    });
    let deadline = SystemTime::now() + Duration::from_secs(300);
    approvals
        .submit(
            &support::agent_identity("web-1"),
            support::domain_request(REQUEST, deadline),
            SystemTime::now(),
        )
        .await
        .unwrap();
    let reviewers: BTreeMap<String, Role> = [
        ("alice", Role::Reviewer),
        ("bob", Role::Reviewer),
        ("carol", Role::Admin),
        ("vic", Role::Viewer),
        ("dave", Role::Reviewer),
    ]
    .into_iter()
    .map(|(name, role)| (name.to_owned(), role))
    .collect();
    let router = teams::router(TeamsEndpoint::new(
        Arc::clone(&approvals),
        &teams,
        Arc::new(reviewers),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!(
        "http://{}{}",
        listener.local_addr().unwrap(),
        teams::MESSAGES_PATH
    );
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Harness {
        bf,
        approvals,
        teams,
        endpoint,
        decisions,
        _session: session,
        _dir: dir,
        server,
    }
}

impl Harness {
    /// Valid claims of a token Bot Framework sends with an activity.
    fn claims(&self) -> Value {
        json!({
            "iss": BOT_FRAMEWORK_ISSUER,
            "aud": APP_ID,
            "exp": now() + 300,
            "nbf": now() - 10,
            "serviceurl": self.bf.service_url(),
        })
    }

    fn token(&self) -> String {
        self.bf.key.sign(&self.claims())
    }

    /// An `adaptiveCard/action` invoke of `verb` on the request by the Teams user with
    /// object id `aad`.
    fn press(&self, aad: &str, verb: &str) -> Value {
        json!({
            "type": "invoke",
            "name": "adaptiveCard/action",
            "channelId": "msteams",
            "serviceUrl": self.bf.service_url(),
            "id": "f:1",
            "from": { "id": format!("29:{aad}"), "aadObjectId": aad, "name": "Someone" },
            "recipient": { "id": format!("28:{APP_ID}") },
            "conversation": { "id": CONVERSATION },
            "value": {
                "action": {
                    "type": "Action.Execute",
                    "verb": verb,
                    "data": { "request_id": REQUEST },
                },
                "trigger": "manual",
            },
        })
    }

    async fn send(&self, token: Option<&str>, activity: &Value) -> (StatusCode, Value) {
        let mut request = reqwest::Client::new().post(&self.endpoint).json(activity);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The invoke response's card, after checking it is one.
    async fn card_for(&self, activity: &Value) -> Value {
        let (status, body) = self.send(Some(&self.token()), activity).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["statusCode"], 200);
        assert_eq!(body["type"], "application/vnd.microsoft.card.adaptive");
        body["value"].clone()
    }

    async fn assert_pending(&mut self) {
        let request = self
            .approvals
            .get(&RequestId::new(REQUEST).unwrap())
            .await
            .unwrap();
        assert!(
            request.resolution.is_none(),
            "decided: {:?}",
            request.resolution
        );
        assert!(
            self.decisions.try_recv().is_err(),
            "the agent got a decision"
        );
    }
}

fn texts(card: &Value) -> String {
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
    out.join("\n")
}

fn unsigned(alg: &str, claims: &Value) -> String {
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT", "kid": "bf-1"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

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
        decision.reason.as_str().contains("teams:AAD-BOB"),
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

async fn card_of(h: &Harness) -> RequestCard {
    RequestCard {
        request: h
            .approvals
            .get(&RequestId::new(REQUEST).unwrap())
            .await
            .unwrap(),
        approvals: 0,
        quorum: 1,
    }
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
}
