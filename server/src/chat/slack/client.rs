//! Slack's Web API as belay uses it: `chat.postMessage`, `chat.update`, `users.info` and
//! `apps.connections.open`
//! (Bearer bot token, JSON bodies, `{"ok": false, "error": ...}` on failure, HTTP 429
//! with `Retry-After` seconds), and posting ephemeral answers to a `response_url`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::chat::surface::SendError;

/// Slack answers in well under a second; a call that takes longer is retried later by
/// the outbox rather than holding up the messages behind it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// When a 429 carries no (readable) Retry-After.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Errors Slack reports that retrying the same call cannot fix differ from the few that
/// are temporary; these are the temporary ones.
const TRANSIENT_ERRORS: &[&str] = &[
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

#[derive(Clone)]
pub struct SlackClient {
    http: reqwest::Client,
    api_url: String,
    token: String,
}

impl std::fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackClient")
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

/// A Slack user's confirmed email address, when Slack shows one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEmail(pub Option<String>);

impl SlackClient {
    pub fn new(api_url: &str, token: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            api_url: api_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// `chat.postMessage`: the message's `ts`.
    pub async fn post_message(&self, channel: &str, message: &Value) -> Result<String, SendError> {
        let mut body = message.clone();
        body["channel"] = json!(channel);
        let answer = self.call("chat.postMessage", &body).await?;
        answer["ts"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| SendError::Permanent("chat.postMessage answered without a ts".into()))
    }

    /// `chat.update` of the message `ts` in `channel`.
    pub async fn update(&self, channel: &str, ts: &str, message: &Value) -> Result<(), SendError> {
        let mut body = message.clone();
        body["channel"] = json!(channel);
        body["ts"] = json!(ts);
        self.call("chat.update", &body).await.map(drop)
    }

    /// `users.info`: the user's email if Slack says it is confirmed (needs the
    /// `users:read.email` scope; without it the profile carries no email).
    pub async fn user_email(&self, user: &str) -> Result<UserEmail, SendError> {
        let url = format!("{}/users.info", self.api_url);
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .query(&[("user", user)])
            .send()
            .await
            .map_err(|err| SendError::Transient(err.without_url().to_string()))?;
        let answer = read_answer("users.info", response).await?;
        let user = &answer["user"];
        let confirmed = user["is_email_confirmed"].as_bool() == Some(true);
        let email = user["profile"]["email"].as_str().filter(|_| confirmed);
        Ok(UserEmail(email.map(str::to_owned)))
    }

    /// `apps.connections.open` with the app-level token: a fresh Socket Mode URL.
    pub async fn open_socket(&self, app_token: &str) -> Result<String, SendError> {
        let url = format!("{}/apps.connections.open", self.api_url);
        let response = self
            .http
            .post(url)
            .bearer_auth(app_token)
            .send()
            .await
            .map_err(|err| SendError::Transient(err.without_url().to_string()))?;
        let answer = read_answer("apps.connections.open", response).await?;
        answer["url"].as_str().map(str::to_owned).ok_or_else(|| {
            SendError::Permanent("apps.connections.open answered without a url".into())
        })
    }

    /// Posts an ephemeral answer (only the clicking user sees it) to a `response_url`.
    pub async fn respond(&self, response_url: &str, text: &str) -> Result<(), SendError> {
        let body = json!({
            "response_type": "ephemeral",
            "replace_original": false,
            "text": text,
        });
        let response = self
            .http
            .post(response_url)
            .json(&body)
            .send()
            .await
            .map_err(|err| SendError::Transient(err.without_url().to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(SendError::Transient(format!(
                "response_url answered {}",
                response.status()
            )))
        }
    }

    async fn call(&self, method: &str, body: &Value) -> Result<Value, SendError> {
        let url = format!("{}/{method}", self.api_url);
        let response = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|err| SendError::Transient(format!("{method}: {}", err.without_url())))?;
        read_answer(method, response).await
    }
}

async fn read_answer(method: &str, response: reqwest::Response) -> Result<Value, SendError> {
    let status = response.status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_RETRY_AFTER, Duration::from_secs);
        return Err(SendError::RetryAfter(after));
    }
    if status.is_server_error() {
        return Err(SendError::Transient(format!("{method}: HTTP {status}")));
    }
    if !status.is_success() {
        return Err(SendError::Permanent(format!("{method}: HTTP {status}")));
    }
    let answer: Value = response
        .json()
        .await
        .map_err(|err| SendError::Transient(format!("{method}: unreadable answer: {err}")))?;
    if answer["ok"].as_bool() == Some(true) {
        return Ok(answer);
    }
    let error = answer["error"].as_str().unwrap_or("no error given");
    let problem = format!("{method}: {error}");
    if TRANSIENT_ERRORS.contains(&error) {
        Err(SendError::Transient(problem))
    } else {
        Err(SendError::Permanent(problem))
    }
}
