//! A fake Slack Web API on a loopback port, speaking the documented contracts:
//! `chat.postMessage` and `chat.update` (Bearer token, JSON body, `{"ok": ...}`),
//! `users.info` (`user.profile.email`, `is_email_confirmed`), and `response_url`s for
//! ephemeral answers. It can be switched to fail: an outage (HTTP 503) or rate limiting
//! (HTTP 429 with `Retry-After`). Included with `#[path]` as `fake_slack`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const BOT_TOKEN: &str = "xoxb-test-token";
/// The app-level token `apps.connections.open` takes (Socket Mode).
pub const APP_TOKEN: &str = "xapp-1-A0001-test";
/// Posting to this channel answers `channel_not_found`, as Slack does for a channel the
/// bot is not in.
pub const MISSING_CHANNEL: &str = "CMISSING";

/// One call the fake answered (or refused).
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    pub at: Instant,
    pub status: u16,
}

#[derive(Default)]
struct State_ {
    calls: Vec<Call>,
    /// ts -> (channel, latest message body)
    messages: HashMap<String, (String, Value)>,
    /// Order of posts: ts.
    posted: Vec<String>,
    ephemerals: Vec<Value>,
    users: HashMap<String, (String, bool)>,
    outage: bool,
    /// The next N Web API calls answer 429 with this Retry-After.
    rate_limited: Option<(u32, u64)>,
    next_ts: u64,
    /// What `apps.connections.open` hands out (see `fake_slack_socket`), and how often
    /// it was asked.
    socket_url: Option<String>,
    socket_opens: u32,
    /// When `apps.connections.open` was called, answered or not.
    socket_asked: Vec<Instant>,
    /// The next N `apps.connections.open` calls answer 429 with this Retry-After.
    socket_rate_limited: Option<(u32, u64)>,
}

#[derive(Clone)]
pub struct FakeSlack {
    pub url: String,
    state: Arc<Mutex<State_>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl FakeSlack {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State_::default()));
        let app = axum::Router::new()
            .route("/api/chat.postMessage", post(post_message))
            .route("/api/chat.update", post(update))
            .route("/api/users.info", get(users_info))
            .route("/api/apps.connections.open", post(connections_open))
            .route("/respond/{n}", post(respond))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            state,
            task: Arc::new(task),
        }
    }

    /// What `api_url` in the chat config should be.
    pub fn api_url(&self) -> String {
        format!("{}/api", self.url)
    }

    pub fn response_url(&self, n: u32) -> String {
        format!("{}/respond/{n}", self.url)
    }

    /// A Slack user whose profile shows `email`, confirmed or not.
    pub fn add_user(&self, id: &str, email: &str, confirmed: bool) {
        self.lock()
            .users
            .insert(id.into(), (email.into(), confirmed));
    }

    /// The WebSocket URL `apps.connections.open` answers with.
    pub fn set_socket_url(&self, url: &str) {
        self.lock().socket_url = Some(url.into());
    }

    /// How many Socket Mode URLs were handed out.
    pub fn socket_opens(&self) -> u32 {
        self.lock().socket_opens
    }

    /// When `apps.connections.open` was called, answered or not.
    pub fn socket_asked(&self) -> Vec<Instant> {
        self.lock().socket_asked.clone()
    }

    /// The next `calls` `apps.connections.open` calls are refused with 429 and
    /// `Retry-After: secs`.
    pub fn rate_limit_socket(&self, calls: u32, secs: u64) {
        self.lock().socket_rate_limited = Some((calls, secs));
    }

    pub fn set_outage(&self, on: bool) {
        self.lock().outage = on;
    }

    /// The next `calls` Web API calls are refused with 429 and `Retry-After: secs`.
    pub fn rate_limit(&self, calls: u32, secs: u64) {
        self.lock().rate_limited = Some((calls, secs));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Bodies of the successful posts, in order.
    pub fn posts(&self) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "chat.postMessage" && c.status == 200)
            .map(|c| c.body)
            .collect()
    }

    /// Bodies of the successful updates, in order.
    pub fn updates(&self) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "chat.update" && c.status == 200)
            .map(|c| c.body)
            .collect()
    }

    pub fn ephemerals(&self) -> Vec<Value> {
        self.lock().ephemerals.clone()
    }

    /// The message about `request_id` as it shows now (after its updates), with its ts.
    pub fn message_about(&self, request_id: &str) -> Option<(String, Value)> {
        let state = self.lock();
        state.posted.iter().rev().find_map(|ts| {
            let (_, body) = &state.messages[ts];
            mentions(body, request_id).then(|| (ts.clone(), body.clone()))
        })
    }

    /// Waits until `check` holds for the message about `request_id`; returns it.
    pub async fn wait_message(&self, request_id: &str, check: impl Fn(&Value) -> bool) -> Value {
        let patience = Duration::from_secs(10);
        tokio::time::timeout(patience, async {
            loop {
                if let Some((_, body)) = self.message_about(request_id)
                    && check(&body)
                {
                    return body;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no message about {request_id} as expected; now: {:?}",
                self.message_about(request_id)
            )
        })
    }

    /// Waits for `n` ephemeral answers in all; returns them.
    pub async fn wait_ephemerals(&self, n: usize) -> Vec<Value> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let got = self.ephemerals();
                if got.len() >= n {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} ephemeral answers: {:?}", self.ephemerals()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State_> {
        self.state.lock().unwrap()
    }
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

/// Whether a message's buttons or text name `request_id`.
pub fn mentions(body: &Value, request_id: &str) -> bool {
    body.to_string().contains(&format!("`{request_id}`"))
}

type Shared = State<Arc<Mutex<State_>>>;

/// The failure the current mode dictates, recording the call either way.
fn refuse(state: &mut State_, method: &str, body: &Value, headers: &HeaderMap) -> Option<Response> {
    let mut record = |status: u16| {
        state.calls.push(Call {
            method: method.into(),
            body: body.clone(),
            at: Instant::now(),
            status,
        });
    };
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {BOT_TOKEN}")) {
        record(200);
        return Some(Json(json!({"ok": false, "error": "invalid_auth"})).into_response());
    }
    if state.outage {
        record(503);
        return Some(StatusCode::SERVICE_UNAVAILABLE.into_response());
    }
    if let Some((left, secs)) = state.rate_limited {
        state.rate_limited = (left > 1).then_some((left - 1, secs));
        record(429);
        return Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                "",
            )
                .into_response(),
        );
    }
    record(200);
    None
}

/// `apps.connections.open`: only with the app-level token, as Slack (a bot token gets
/// `not_allowed_token_type`).
async fn connections_open(State(state): Shared, headers: HeaderMap) -> Response {
    let mut state = state.lock().unwrap();
    state.socket_asked.push(Instant::now());
    if let Some((left, secs)) = state.socket_rate_limited {
        state.socket_rate_limited = (left > 1).then_some((left - 1, secs));
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "",
        )
            .into_response();
    }
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth == Some(&format!("Bearer {BOT_TOKEN}")) {
        return Json(json!({"ok": false, "error": "not_allowed_token_type"})).into_response();
    }
    if auth != Some(&format!("Bearer {APP_TOKEN}")) {
        return Json(json!({"ok": false, "error": "invalid_auth"})).into_response();
    }
    let Some(url) = state.socket_url.clone() else {
        return Json(json!({"ok": false, "error": "socket_mode_not_enabled"})).into_response();
    };
    state.socket_opens += 1;
    let ticket = state.socket_opens;
    Json(json!({"ok": true, "url": format!("{url}?ticket={ticket}")})).into_response()
}

async fn post_message(
    State(state): Shared,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut state = state.lock().unwrap();
    if let Some(refused) = refuse(&mut state, "chat.postMessage", &body, &headers) {
        return refused;
    }
    let Some(channel) = body["channel"]
        .as_str()
        .filter(|c| *c != MISSING_CHANNEL)
        .map(str::to_owned)
    else {
        return Json(json!({"ok": false, "error": "channel_not_found"})).into_response();
    };
    if !body["blocks"].is_array() {
        return Json(json!({"ok": false, "error": "invalid_blocks"})).into_response();
    }
    state.next_ts += 1;
    let ts = format!("1700000000.{:06}", state.next_ts);
    state.messages.insert(ts.clone(), (channel.clone(), body));
    state.posted.push(ts.clone());
    Json(json!({"ok": true, "channel": channel, "ts": ts})).into_response()
}

async fn update(State(state): Shared, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut state = state.lock().unwrap();
    if let Some(refused) = refuse(&mut state, "chat.update", &body, &headers) {
        return refused;
    }
    let (Some(channel), Some(ts)) = (body["channel"].as_str(), body["ts"].as_str()) else {
        return Json(json!({"ok": false, "error": "invalid_arguments"})).into_response();
    };
    match state.messages.get_mut(ts) {
        Some((posted_in, message)) if posted_in == channel => {
            *message = body.clone();
            let channel = channel.to_owned();
            let ts = ts.to_owned();
            Json(json!({"ok": true, "channel": channel, "ts": ts})).into_response()
        }
        _ => Json(json!({"ok": false, "error": "message_not_found"})).into_response(),
    }
}

async fn users_info(
    State(state): Shared,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut state = state.lock().unwrap();
    let user = query.get("user").cloned().unwrap_or_default();
    if let Some(refused) = refuse(&mut state, "users.info", &json!({"user": user}), &headers) {
        return refused;
    }
    match state.users.get(&user) {
        Some((email, confirmed)) => Json(json!({
            "ok": true,
            "user": {
                "id": user,
                "is_email_confirmed": confirmed,
                "profile": {"email": email, "real_name": "Test User"},
            },
        }))
        .into_response(),
        None => Json(json!({"ok": false, "error": "user_not_found"})).into_response(),
    }
}

async fn respond(State(state): Shared, Json(body): Json<Value>) -> StatusCode {
    state.lock().unwrap().ephemerals.push(body);
    StatusCode::OK
}
