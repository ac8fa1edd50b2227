//! The Teams tests' setup: a fake Bot Framework, a real `Approvals` with a pending
//! request of alice's agent (its session attached), and belay's Teams endpoint serving
//! on loopback.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use belay_proto::domain::{Decision, Hello, Identity, Name, RequestId};
use belay_server::approvals::{AgentSession, Approvals, MemoryStore};
use belay_server::auth::Role;
use belay_server::chat::card::RequestCard;
use belay_server::chat::teams::{self, Teams, TeamsEndpoint};
use belay_server::metrics::Metrics;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::fake_bot_framework::{APP_ID, APP_PASSWORD, BOT_FRAMEWORK_ISSUER, FakeBotFramework};
use crate::issuer::{TestKey, now};
use crate::support;

pub const REQUEST: &str = "web-1:r1";
pub const CONVERSATION: &str = "19:reviewers@thread.tacv2";
/// The tenant whose users may decide (`allowed_tenant_ids`).
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

pub struct Harness {
    pub bf: FakeBotFramework,
    /// Where the endpoint counts actions (`belay_chat_presses_total`).
    pub metrics: Arc<Metrics>,
    pub approvals: Arc<Approvals<MemoryStore>>,
    pub teams: Teams,
    pub endpoint: String,
    pub decisions: mpsc::UnboundedReceiver<Decision>,
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
pub fn key(kid: &str) -> TestKey {
    static KEYS: OnceLock<Mutex<HashMap<String, TestKey>>> = OnceLock::new();
    let mut keys = KEYS.get_or_init(Mutex::default).lock().unwrap();
    keys.entry(kid.to_owned())
        .or_insert_with(|| TestKey::rs256(kid))
        .clone()
}

/// alice owns the agent on web-1 and is a reviewer; bob and carol are reviewers, vic a
/// viewer; dave is mapped by UPN only.
pub async fn harness(quorum: u32) -> Harness {
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
        allowed_tenant_ids = ["{}"]
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
        TENANT.to_ascii_uppercase(),
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
    let metrics = Arc::new(Metrics::default());
    let router = teams::router(
        TeamsEndpoint::new(Arc::clone(&approvals), &teams, Arc::new(reviewers))
            .with_metrics(Arc::clone(&metrics)),
    );
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
        metrics,
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
    pub fn claims(&self) -> Value {
        json!({
            "iss": BOT_FRAMEWORK_ISSUER,
            "aud": APP_ID,
            "exp": now() + 300,
            "nbf": now() - 10,
            "serviceurl": self.bf.service_url(),
        })
    }

    pub fn token(&self) -> String {
        self.bf.key.sign(&self.claims())
    }

    /// An `adaptiveCard/action` invoke of `verb` on the request by the Teams user with
    /// object id `aad`.
    pub fn press(&self, aad: &str, verb: &str) -> Value {
        json!({
            "type": "invoke",
            "name": "adaptiveCard/action",
            "channelId": "msteams",
            "serviceUrl": self.bf.service_url(),
            "id": "f:1",
            "from": { "id": format!("29:{aad}"), "aadObjectId": aad, "name": "Someone" },
            "recipient": { "id": format!("28:{APP_ID}") },
            "conversation": { "id": CONVERSATION, "tenantId": TENANT },
            "channelData": { "tenant": { "id": TENANT } },
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

    pub async fn send(&self, token: Option<&str>, activity: &Value) -> (StatusCode, Value) {
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
    pub async fn card_for(&self, activity: &Value) -> Value {
        let (status, body) = self.send(Some(&self.token()), activity).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["statusCode"], 200);
        assert_eq!(body["type"], "application/vnd.microsoft.card.adaptive");
        body["value"].clone()
    }

    pub async fn assert_pending(&mut self) {
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

pub fn texts(card: &Value) -> String {
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

pub fn unsigned(alg: &str, claims: &Value) -> String {
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT", "kid": "bf-1"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

pub async fn card_of(h: &Harness) -> RequestCard {
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
