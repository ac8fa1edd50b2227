//! A fake Bot Framework on loopback, for the Teams tests: the OpenID metadata and JWKS
//! that sign inbound activities (keys endorsed for "msteams"), the client credentials
//! token endpoint, and the Connector's conversation endpoints, which record what the bot
//! posted and updated. Plain HTTP: belay accepts `http` only for loopback hosts.
//!
//! Needs `issuer.rs` (its `TestKey` signs the tokens), included beside this file.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::issuer::TestKey;

pub const APP_ID: &str = "belay-bot-app-id";
pub const APP_PASSWORD: &str = "belay-bot-password";
pub const BOT_FRAMEWORK_ISSUER: &str = "https://api.botframework.com";

/// One call the bot made to the Connector.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: &'static str,
    pub conversation_id: String,
    pub activity_id: Option<String>,
    pub body: Value,
    pub bearer: String,
}

#[derive(Default)]
struct FakeState {
    keys: Vec<Value>,
    token_requests: Vec<Vec<(String, String)>>,
    recorded: Vec<Recorded>,
    /// Answer Connector calls with 429 and this `Retry-After`.
    rate_limit: Option<u64>,
    /// Answer Connector calls with this status.
    fail_with: Option<u16>,
    /// `members/{user id}` answers.
    members: Vec<(String, Value)>,
    next_activity: u32,
    /// Connector tokens issued up to this count are refused (revoked).
    revoked_up_to: usize,
}

pub struct FakeBotFramework {
    pub addr: SocketAddr,
    pub url: String,
    pub key: TestKey,
    state: Arc<Mutex<FakeState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeBotFramework {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBotFramework {
    /// Publishes one new RS256 key ("bf-1"), endorsed for Teams.
    pub async fn start() -> Self {
        Self::start_with(TestKey::rs256("bf-1")).await
    }

    /// Publishes `key`, endorsed for Teams (RSA keys take seconds to generate in debug
    /// builds: tests share them).
    pub async fn start_with(key: TestKey) -> Self {
        let mut jwk = serde_json::to_value(&key.jwk).unwrap();
        jwk["endorsements"] = json!(["msteams", "skype"]);
        let state = Arc::new(Mutex::new(FakeState {
            keys: vec![jwk],
            ..Default::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .route("/v1/.well-known/openidconfiguration", get(metadata))
            .route("/v1/.well-known/keys", get(keys))
            .route("/token", post(token))
            .route("/v3/conversations/{conversation}/activities", post(create))
            .route(
                "/v3/conversations/{conversation}/activities/{activity}",
                put(update),
            )
            .route(
                "/v3/conversations/{conversation}/members/{user}",
                get(member),
            )
            .with_state((Arc::clone(&state), addr));
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            addr,
            url: format!("http://{addr}"),
            key,
            state,
            task,
        }
    }

    pub fn metadata_url(&self) -> String {
        format!("{}/v1/.well-known/openidconfiguration", self.url)
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.url)
    }

    /// The Connector's service URL (as Teams gives it, with a trailing slash).
    pub fn service_url(&self) -> String {
        format!("{}/", self.url)
    }

    /// Also publishes `key`, endorsed for `endorsements` (`None`: no endorsements).
    pub fn publish(&self, key: &TestKey, endorsements: Option<&[&str]>) {
        let mut jwk = serde_json::to_value(&key.jwk).unwrap();
        if let Some(endorsements) = endorsements {
            jwk["endorsements"] = json!(endorsements);
        }
        self.state.lock().unwrap().keys.push(jwk);
    }

    pub fn token_requests(&self) -> Vec<Vec<(String, String)>> {
        self.state.lock().unwrap().token_requests.clone()
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().recorded.clone()
    }

    pub fn rate_limit(&self, retry_after: Option<u64>) {
        self.state.lock().unwrap().rate_limit = retry_after;
    }

    pub fn fail_with(&self, status: Option<u16>) {
        self.state.lock().unwrap().fail_with = status;
    }

    /// Refuses every Connector token issued so far, as when the app's secret rotates.
    pub fn revoke_tokens(&self) {
        let mut state = self.state.lock().unwrap();
        state.revoked_up_to = state.token_requests.len();
    }

    pub fn add_member(&self, user_id: &str, member: Value) {
        self.state
            .lock()
            .unwrap()
            .members
            .push((user_id.to_owned(), member));
    }
}

type Shared = State<(Arc<Mutex<FakeState>>, SocketAddr)>;

async fn metadata(State((_, addr)): Shared) -> Json<Value> {
    Json(json!({
        "issuer": BOT_FRAMEWORK_ISSUER,
        "jwks_uri": format!("http://{addr}/v1/.well-known/keys"),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn keys(State((state, _)): Shared) -> Json<Value> {
    Json(json!({ "keys": state.lock().unwrap().keys.clone() }))
}

async fn token(State((state, _)): Shared, body: Bytes) -> Response {
    let form = form_decode(&String::from_utf8_lossy(&body));
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let ok = get("grant_type") == "client_credentials"
        && get("client_id") == APP_ID
        && get("client_secret") == APP_PASSWORD
        && get("scope") == "https://api.botframework.com/.default";
    let mut state = state.lock().unwrap();
    state.token_requests.push(form.clone());
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let n = state.token_requests.len();
    Json(json!({
        "token_type": "Bearer",
        "expires_in": 3599,
        "ext_expires_in": 3599,
        "access_token": format!("connector-token-{n}"),
    }))
    .into_response()
}

/// The refusal the test asked for, or the bearer token of an authorized call.
fn gate(state: &FakeState, headers: &HeaderMap) -> Result<String, Box<Response>> {
    if let Some(after) = state.rate_limit {
        return Err(Box::new(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, after.to_string())],
                "slow down",
            )
                .into_response(),
        ));
    }
    if let Some(status) = state.fail_with {
        return Err(Box::new(
            StatusCode::from_u16(status).unwrap().into_response(),
        ));
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|token| {
            token
                .strip_prefix("connector-token-")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n > state.revoked_up_to)
        })
        .ok_or_else(|| Box::new(StatusCode::UNAUTHORIZED.into_response()))?;
    Ok(bearer.to_owned())
}

async fn create(
    State((state, _)): Shared,
    Path(conversation_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut state = state.lock().unwrap();
    let bearer = match gate(&state, &headers) {
        Ok(bearer) => bearer,
        Err(refusal) => return *refusal,
    };
    state.next_activity += 1;
    let id = format!("1:activity-{}", state.next_activity);
    state.recorded.push(Recorded {
        method: "POST",
        conversation_id,
        activity_id: None,
        body,
        bearer,
    });
    (StatusCode::CREATED, Json(json!({ "id": id }))).into_response()
}

async fn update(
    State((state, _)): Shared,
    Path((conversation_id, activity_id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut state = state.lock().unwrap();
    let bearer = match gate(&state, &headers) {
        Ok(bearer) => bearer,
        Err(refusal) => return *refusal,
    };
    state.recorded.push(Recorded {
        method: "PUT",
        conversation_id,
        activity_id: Some(activity_id.clone()),
        body,
        bearer,
    });
    Json(json!({ "id": activity_id })).into_response()
}

async fn member(
    State((state, _)): Shared,
    Path((_conversation, user)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let state = state.lock().unwrap();
    if let Err(refusal) = gate(&state, &headers) {
        return *refusal;
    }
    match state.members.iter().find(|(id, _)| *id == user) {
        Some((_, member)) => Json(member.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `application/x-www-form-urlencoded` pairs.
fn form_decode(body: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    };
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}
