//! `POST /chat/slack/interactions`: Slack's interactivity requests (a form with one
//! `payload` field holding JSON of type `block_actions`).
//!
//! Order matters: the body's size is bounded by the route; the signature, timestamp and
//! replay checks (the last in the store, so that replicas share it) run on the raw bytes
//! before anything is parsed; then the request is
//! acknowledged at once (Slack wants an answer within 3 seconds) and the decision runs
//! on a task of its own. A refusal (unmapped user, no role, the owner approving, already
//! decided) goes back to the pressing user alone through the payload's `response_url`;
//! a decision shows in the message when the outbox updates it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use belay_proto::domain::RequestId;
use serde::Deserialize;

use super::blocks::{REASON_BLOCK, REASON_INPUT};
use super::client::SlackClient;
use super::users::UserMap;
use super::verify::{REMEMBER, Verifier};
use crate::approvals::{Approvals, Store};
use crate::chat::config::ChatConfig;
use crate::chat::decide::{self, Button, ChatReviewer};
use crate::metrics::Metrics;
use crate::metrics::chat::{
    PRESS_COUNTED, PRESS_DECIDED, PRESS_REFUSED, PRESS_UNAUTHENTICATED, PRESS_UNMAPPED,
};

/// Interactivity payloads are a few kilobytes; the message they quote can be larger.
pub const MAX_BODY: usize = 256 * 1024;
/// How long a press may take to decide before the user is told to look again.
const DECIDE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the interactions route needs.
pub struct Interactions<S> {
    pub approvals: Arc<Approvals<S>>,
    /// `None` without a signing secret (Socket Mode only): the HTTP route is not served.
    pub verifier: Option<Verifier>,
    pub client: SlackClient,
    pub users: UserMap,
    pub config: Arc<ChatConfig>,
    /// Counts presses (`belay_chat_presses_total`); `None` in tests that do not look.
    pub metrics: Option<Arc<Metrics>>,
}

/// An interaction payload (`block_actions` is the one belay acts on).
#[derive(Debug, Deserialize)]
pub(super) struct Payload {
    #[serde(rename = "type")]
    kind: String,
    team: Option<PayloadTeam>,
    user: PayloadUser,
    #[serde(default)]
    actions: Vec<PayloadAction>,
    response_url: Option<String>,
    /// The message's inputs as they were when the button was pressed.
    state: Option<PayloadState>,
}

#[derive(Debug, Deserialize)]
struct PayloadState {
    /// block_id -> action_id -> the input's state.
    #[serde(default)]
    values: HashMap<String, HashMap<String, InputState>>,
}

#[derive(Debug, Deserialize)]
struct InputState {
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PayloadUser {
    id: String,
    /// The user's own workspace: another one for a guest of a Slack Connect channel.
    team_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PayloadTeam {
    id: String,
}

#[derive(Debug, Deserialize)]
struct PayloadAction {
    action_id: String,
    value: Option<String>,
}

pub async fn handle<S: Store>(
    State(this): State<Arc<Interactions<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(verifier) = &this.verifier else {
        return StatusCode::NOT_FOUND;
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = SystemTime::now();
    let signed = match verifier.verify(
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        &body,
        now,
    ) {
        Ok(signed) => signed,
        Err(err) => {
            tracing::warn!(error = %err, "Slack interaction refused");
            this.count(PRESS_UNAUTHENTICATED);
            return StatusCode::UNAUTHORIZED;
        }
    };
    // Once across every replica sharing the database, before anything is read.
    match this
        .approvals
        .store()
        .accept_inbound_once("slack", &signed.0, now, now + REMEMBER)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("Slack interaction refused: this request was already accepted once");
            this.count(PRESS_UNAUTHENTICATED);
            return StatusCode::UNAUTHORIZED;
        }
        Err(err) => {
            // Unable to tell a replay from a first press: refuse; Slack shows the user
            // an error and the press can be repeated.
            tracing::error!(error = %err, "cannot record the Slack interaction; refused");
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    let Some(payload) = form_field(&body, "payload") else {
        return StatusCode::BAD_REQUEST;
    };
    match serde_json::from_str(&payload) {
        Ok(payload) => dispatch(&this, payload),
        Err(err) => {
            tracing::warn!(error = %err, "unreadable Slack interaction payload");
            StatusCode::BAD_REQUEST
        }
    }
}

/// Acts on an authenticated interaction payload (from the HTTP route, or from Slack's
/// own WebSocket in Socket Mode): button presses are decided on tasks of their own.
pub(super) fn dispatch<S: Store>(this: &Arc<Interactions<S>>, payload: Payload) -> StatusCode {
    if payload.kind != "block_actions" {
        // Other interactions (shortcuts, view submissions) are not ours to handle.
        return StatusCode::OK;
    }
    if let Some(team) = this
        .config
        .slack
        .as_ref()
        .and_then(|s| s.team_id.as_deref())
        && !payload.made_in(team)
    {
        tracing::warn!(
            slack_user = %payload.user.id,
            team = ?payload.team.as_ref().map(|t| &t.id),
            user_team = ?payload.user.team_id,
            "Slack press from outside the configured workspace refused; nothing decided"
        );
        this.count(PRESS_UNAUTHENTICATED);
        return StatusCode::FORBIDDEN;
    }
    let reason = payload.typed_reason();
    for action in payload.actions {
        let Some(button) = Button::from_id(&action.action_id) else {
            continue;
        };
        let this = Arc::clone(this);
        let user = payload.user.id.clone();
        let response_url = payload.response_url.clone();
        let reason = reason.clone();
        tokio::spawn(async move {
            let pressed = Pressed {
                user: &user,
                button,
                request: action.value.as_deref(),
                reason: reason.as_deref(),
            };
            let answer = press(&this, pressed).await;
            if let (Some(text), Some(url)) = (answer, response_url) {
                this.answer(&url, &text).await;
            }
        });
    }
    StatusCode::OK
}

impl Payload {
    /// What the user typed in the message's reason input, if anything.
    fn typed_reason(&self) -> Option<String> {
        self.state
            .as_ref()?
            .values
            .get(REASON_BLOCK)?
            .get(REASON_INPUT)?
            .value
            .clone()
    }

    /// Whether the press was made in workspace `team` by one of its own users.
    fn made_in(&self, team: &str) -> bool {
        self.team.as_ref().is_some_and(|t| t.id == team)
            && self.user.team_id.as_deref().is_none_or(|t| t == team)
    }
}

/// A button press, as the payload tells it.
struct Pressed<'a> {
    /// The Slack user id.
    user: &'a str,
    button: Button,
    /// The button's value: the request id.
    request: Option<&'a str>,
    reason: Option<&'a str>,
}

/// Decides as the user pressed; what to tell them, if anything (the updated message
/// says the rest).
async fn press<S: Store>(this: &Interactions<S>, pressed: Pressed<'_>) -> Option<String> {
    let Pressed {
        user,
        button,
        request,
        reason,
    } = pressed;
    let Some(id) = request.and_then(|v| RequestId::new(v).ok()) else {
        return Some("This button names no belay request; nothing was decided.".into());
    };
    let span =
        tracing::info_span!("slack press", id = %id, slack_user = %user, button = button.id());
    let identity = match this.users.identity(&this.client, user).await {
        Ok(Some(identity)) => identity,
        Ok(None) => {
            tracing::warn!(parent: &span, "Slack user not mapped to a belay identity; nothing decided");
            this.count(PRESS_UNMAPPED);
            return Some(
                "Your Slack account is not mapped to a belay reviewer, so nothing was \
                 decided. Ask a belay admin to add you to the chat config."
                    .into(),
            );
        }
        Err(err) => {
            tracing::warn!(parent: &span, error = %err, "cannot look up the Slack user");
            return Some(
                "belay could not look up your Slack account; nothing was decided. Try again."
                    .into(),
            );
        }
    };
    let reviewer = ChatReviewer {
        role: this.config.role_of(&identity),
        identity,
        via: format!("slack:{user}"),
    };
    let decided = tokio::time::timeout(
        DECIDE_TIMEOUT,
        decide::decide(&this.approvals, &reviewer, id.clone(), button, reason),
    )
    .await;
    match decided {
        Ok(Ok(decided)) if decided.request.resolution.is_none() => {
            this.count(PRESS_COUNTED);
            tracing::info!(parent: &span, reviewer = %reviewer.identity, approvals = decided.approvals, quorum = decided.quorum, "approval counted from Slack");
            Some(format!(
                "Your approval of {id} is counted: {} of {}.",
                decided.approvals, decided.quorum
            ))
        }
        Ok(Ok(_)) => {
            this.count(PRESS_DECIDED);
            tracing::info!(parent: &span, reviewer = %reviewer.identity, "decided from Slack");
            None
        }
        Ok(Err(err)) => {
            this.count(PRESS_REFUSED);
            tracing::info!(parent: &span, reviewer = %reviewer.identity, error = %err, "refused from Slack");
            Some(format!("Nothing was decided: {err}."))
        }
        Err(_) => Some(format!(
            "Deciding {id} is taking long; check the message or the console before pressing again."
        )),
    }
}

impl<S> Interactions<S> {
    fn count(&self, result: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.chat_presses().record("slack", result);
        }
    }

    /// Posts `text` to the user alone; only to Slack's own hooks (or the configured API's
    /// host), so that a payload cannot make the server post elsewhere.
    async fn answer(&self, response_url: &str, text: &str) {
        if !response_url_allowed(response_url, self.client.api_url()) {
            tracing::warn!("response_url outside Slack; not answered");
            return;
        }
        if let Err(err) = self.client.respond(response_url, text).await {
            tracing::warn!(error = %err, "cannot answer the Slack user");
        }
    }
}

fn response_url_allowed(url: &str, api_url: &str) -> bool {
    if url.starts_with("https://hooks.slack.com/") {
        return true;
    }
    // Origin of the API (scheme://host[:port]/): tests and proxies serve both.
    let origin_end = api_url
        .match_indices('/')
        .nth(2)
        .map_or(api_url.len(), |(i, _)| i);
    let origin = &api_url[..origin_end];
    url.strip_prefix(origin)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The value of `name` in an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_go_to_slack_only() {
        let api = "https://slack.com/api";
        assert!(response_url_allowed(
            "https://hooks.slack.com/actions/T1/2/x",
            api
        ));
        assert!(!response_url_allowed(
            "https://hooks.slack.com.evil/actions",
            api
        ));
        assert!(!response_url_allowed("https://evil.example/", api));
        assert!(response_url_allowed("https://slack.com/x", api));
        let local = "http://127.0.0.1:4000/api";
        assert!(response_url_allowed(
            "http://127.0.0.1:4000/respond/1",
            local
        ));
        assert!(!response_url_allowed(
            "http://127.0.0.1:40001/respond/1",
            local
        ));
    }

    #[test]
    fn the_payload_field_is_found_in_a_form() {
        let body = b"a=1&payload=%7B%22type%22%3A%22block_actions%22%7D";
        assert_eq!(
            form_field(body, "payload").as_deref(),
            Some(r#"{"type":"block_actions"}"#)
        );
        assert_eq!(form_field(body, "missing"), None);
    }
}
