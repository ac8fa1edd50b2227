//! What each chat platform implements. The outbox worker only speaks this trait; the
//! platform modules own their wire formats (Block Kit, Adaptive Cards), their HTTP
//! clients and their inbound endpoints.

use std::future::Future;
use std::time::Duration;

use super::card::RequestCard;

/// Which platform; also the key of its rows in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    Slack,
    Teams,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Slack => "slack",
            Platform::Teams => "teams",
        }
    }
}

/// Where a message lives once posted: Slack's channel id and `ts`, or Teams' service
/// URL, conversation id and activity id — opaque text to the outbox, which stores it and
/// hands it back for updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedMessage(pub String);

/// Why a call to the platform failed, and what the outbox does about it.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Rate limited (HTTP 429): try again no sooner than this.
    #[error("rate limited; retry after {0:?}")]
    RetryAfter(Duration),
    /// Unreachable, 5xx, timeout: retried with backoff.
    #[error("temporarily failed: {0}")]
    Transient(String),
    /// The platform refused the message itself (bad channel, missing scope): retrying
    /// the same call cannot help; logged and counted, and the request is still decidable
    /// on every other surface.
    #[error("refused: {0}")]
    Permanent(String),
}

/// One chat platform, as the outbox uses it.
pub trait Surface: Send + Sync + 'static {
    fn platform(&self) -> Platform;

    /// Posts `card` to `target` (a Slack channel id, a Teams conversation).
    fn post(
        &self,
        target: &str,
        card: &RequestCard,
    ) -> impl Future<Output = Result<PostedMessage, SendError>> + Send;

    /// Replaces a posted message with `card` (the outcome, who decided and why, no
    /// buttons once the request is final).
    fn update(
        &self,
        message: &PostedMessage,
        card: &RequestCard,
    ) -> impl Future<Output = Result<(), SendError>> + Send;
}
