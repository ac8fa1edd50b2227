//! The bot's side of the Bot Connector REST API: a token by client credentials (cached
//! until shortly before it expires), then `POST` and `PUT` of activities carrying the
//! Adaptive Card, and the [`Surface`] the outbox worker drives.
//!
//! Where messages go: the outbox hands [`Surface::post`] the route's
//! `teams_conversation`, which is a conversation id only (`19:...@thread.tacv2` for a
//! channel, `a:...` for a chat); the service URL comes from the `[teams]` config
//! (`service_url`, the global proactive endpoint by default). The [`PostedMessage`] is
//! JSON of the service URL, conversation id and activity id, so a later change of
//! `service_url` does not lose the messages already posted.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::card::{CARD_CONTENT_TYPE, render};
use crate::chat::card::RequestCard;
use crate::chat::surface::{Platform, PostedMessage, SendError, Surface};

/// The scope of tokens for the Bot Connector.
pub const CONNECTOR_SCOPE: &str = "https://api.botframework.com/.default";
/// A token is renewed this long before it expires, so none expires in flight.
const TOKEN_MARGIN: Duration = Duration::from_secs(5 * 60);
/// When a 429 comes without a usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The app password; never printed.
pub struct Secret(pub(super) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug)]
pub struct Credentials {
    pub app_id: String,
    pub password: Secret,
    pub token_url: String,
}

struct CachedToken {
    value: String,
    renew_at: Instant,
}

/// A handle on the Connector client: clones share the token cache and the HTTP client.
#[derive(Clone)]
pub struct TeamsConnector {
    inner: Arc<Inner>,
}

struct Inner {
    credentials: Credentials,
    service_url: String,
    refresh_ids: Vec<String>,
    http: reqwest::Client,
    /// Held while fetching, so concurrent posts wait for one token request.
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

impl fmt::Debug for TeamsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TeamsConnector")
            .field("app_id", &self.inner.credentials.app_id)
            .field("service_url", &self.inner.service_url)
            .finish_non_exhaustive()
    }
}

/// Where a posted card lives: the text of a Teams [`PostedMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamsMessage {
    pub service_url: String,
    pub conversation_id: String,
    pub activity_id: String,
}

/// A conversation member as the Connector describes them (`TeamsChannelAccount`).
#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    #[serde(rename = "aadObjectId", default)]
    pub aad_object_id: Option<String>,
    #[serde(rename = "userPrincipalName", default)]
    pub user_principal_name: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct ResourceResponse {
    id: String,
}

impl TeamsConnector {
    pub fn new(
        credentials: Credentials,
        service_url: String,
        refresh_ids: Vec<String>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                credentials,
                service_url,
                refresh_ids,
                http,
                token: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The Teams user ids the cards refresh by themselves for.
    pub fn refresh_ids(&self) -> &[String] {
        &self.inner.refresh_ids
    }

    /// The member `user_id` of `conversation_id`, as the Connector at `service_url` (a
    /// verified activity's) describes them: how a UPN is learnt from Microsoft rather
    /// than from anything a client sent.
    pub async fn member(
        &self,
        service_url: &str,
        conversation_id: &str,
        user_id: &str,
    ) -> Result<Member, SendError> {
        let url = format!(
            "{}/v3/conversations/{}/members/{}",
            service_url.trim_end_matches('/'),
            path_segment(conversation_id),
            path_segment(user_id)
        );
        let token = self.token().await?;
        let response = self.inner.http.get(&url).bearer_auth(token).send().await;
        let response = self.check("GET", &url, response).await?;
        response
            .json()
            .await
            .map_err(|err| SendError::Transient(format!("GET {url}: bad JSON: {err}")))
    }

    /// A token for the Connector, from the cache while it has minutes left.
    async fn token(&self) -> Result<String, SendError> {
        let mut cached = self.inner.token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.renew_at
        {
            return Ok(token.value.clone());
        }
        let url = &self.inner.credentials.token_url;
        let response = self
            .inner
            .http
            .post(url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.inner.credentials.app_id.as_str()),
                ("client_secret", self.inner.credentials.password.0.as_str()),
                ("scope", CONNECTOR_SCOPE),
            ])
            .send()
            .await;
        // Not `check`: it would take the token lock this function holds, and a refused
        // secret is a configuration problem, not a stale token.
        let response = self.check_status("POST", url, response).await?;
        let token: TokenResponse = response
            .json()
            .await
            .map_err(|err| SendError::Transient(format!("POST {url}: bad token JSON: {err}")))?;
        let lifetime = Duration::from_secs(token.expires_in);
        // Short-lived tokens (never seen from Microsoft) are renewed halfway.
        let margin = TOKEN_MARGIN.min(lifetime / 2);
        tracing::debug!(expires_in_s = token.expires_in, "got a Bot Connector token");
        *cached = Some(CachedToken {
            value: token.access_token.clone(),
            renew_at: Instant::now() + lifetime - margin,
        });
        Ok(token.access_token)
    }

    /// [`Self::check_status`] for a Connector call: a 401 also drops the cached token (one
    /// revoked or rotated early), and is worth retrying with a new one.
    async fn check(
        &self,
        method: &str,
        url: &str,
        response: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, SendError> {
        let unauthorized =
            matches!(&response, Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED);
        match self.check_status(method, url, response).await {
            Err(SendError::Permanent(problem)) if unauthorized => {
                *self.inner.token.lock().await = None;
                Err(SendError::Transient(problem))
            }
            other => other,
        }
    }

    /// The response if it succeeded; otherwise what the outbox should do about it.
    async fn check_status(
        &self,
        method: &str,
        url: &str,
        response: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, SendError> {
        let response =
            response.map_err(|err| SendError::Transient(format!("{method} {url}: {err}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(DEFAULT_RETRY_AFTER, Duration::from_secs);
            return Err(SendError::RetryAfter(after));
        }
        // The body says why (bad conversation id, bot not in the team): kept short.
        let body: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let problem = format!(
            "{method} {url}: HTTP {status}: {}",
            belay_proto::display::escape(&body)
        );
        if status.is_server_error() || status == reqwest::StatusCode::REQUEST_TIMEOUT {
            return Err(SendError::Transient(problem));
        }
        Err(SendError::Permanent(problem))
    }

    fn activity(&self, card: &RequestCard, id: Option<&str>) -> Value {
        let mut activity = json!({
            "type": "message",
            "attachments": [{
                "contentType": CARD_CONTENT_TYPE,
                "content": render(card, &self.inner.refresh_ids),
            }],
        });
        if let Some(id) = id {
            activity["id"] = json!(id);
        }
        activity
    }

    async fn post_card(
        &self,
        target: &str,
        card: &RequestCard,
    ) -> Result<PostedMessage, SendError> {
        let conversation_id = target.trim();
        if conversation_id.is_empty() {
            return Err(SendError::Permanent(
                "empty Teams conversation id in the route".into(),
            ));
        }
        let url = format!(
            "{}/v3/conversations/{}/activities",
            self.inner.service_url.trim_end_matches('/'),
            path_segment(conversation_id)
        );
        let token = self.token().await?;
        let response = self
            .inner
            .http
            .post(&url)
            .bearer_auth(token)
            .json(&self.activity(card, None))
            .send()
            .await;
        let response = self.check("POST", &url, response).await?;
        let created: ResourceResponse = response
            .json()
            .await
            .map_err(|err| SendError::Transient(format!("POST {url}: bad JSON: {err}")))?;
        let message = TeamsMessage {
            service_url: self.inner.service_url.clone(),
            conversation_id: conversation_id.to_owned(),
            activity_id: created.id,
        };
        let text = serde_json::to_string(&message)
            .map_err(|err| SendError::Permanent(format!("cannot encode the message: {err}")))?;
        tracing::info!(activity_id = %message.activity_id, "card posted to Teams");
        Ok(PostedMessage(text))
    }

    async fn update_card(
        &self,
        message: &PostedMessage,
        card: &RequestCard,
    ) -> Result<(), SendError> {
        let message: TeamsMessage = serde_json::from_str(&message.0).map_err(|err| {
            SendError::Permanent(format!(
                "not a posted Teams message ({err}): {:?}",
                message.0
            ))
        })?;
        let url = format!(
            "{}/v3/conversations/{}/activities/{}",
            message.service_url.trim_end_matches('/'),
            path_segment(&message.conversation_id),
            path_segment(&message.activity_id)
        );
        let token = self.token().await?;
        let response = self
            .inner
            .http
            .put(&url)
            .bearer_auth(token)
            .json(&self.activity(card, Some(&message.activity_id)))
            .send()
            .await;
        self.check("PUT", &url, response).await?;
        tracing::info!(activity_id = %message.activity_id, "Teams card updated");
        Ok(())
    }
}

impl Surface for TeamsConnector {
    fn platform(&self) -> Platform {
        Platform::Teams
    }

    async fn post(&self, target: &str, card: &RequestCard) -> Result<PostedMessage, SendError> {
        let span = tracing::info_span!("teams_post", request_id = %card.request.id);
        self.post_card(target, card).instrument(span).await
    }

    async fn update(&self, message: &PostedMessage, card: &RequestCard) -> Result<(), SendError> {
        let span = tracing::info_span!("teams_update", request_id = %card.request.id);
        self.update_card(message, card).instrument(span).await
    }
}

/// `value` as one URL path segment: ids like `19:abc@thread.tacv2;messageid=1` carry
/// characters that would otherwise end or split the path.
fn path_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(
            super::path_segment("19:a@thread.tacv2;messageid=1/x"),
            "19%3Aa%40thread.tacv2%3Bmessageid%3D1%2Fx"
        );
    }
}
