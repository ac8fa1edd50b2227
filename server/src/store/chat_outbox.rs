//! The chat outbox's rows (schema version 8): per request and chat platform, where its
//! message went, what it last showed, and when to try again. The desired state is not
//! stored: it is the request itself; a row only remembers what the platform was told,
//! so that after a restart nothing pending is posted twice and messages of requests
//! decided meanwhile are still updated.

use std::time::SystemTime;

use belay_proto::domain::RequestId;

/// One (request, platform) row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub request_id: RequestId,
    /// `slack`, `teams`.
    pub platform: String,
    /// Channel or conversation it goes to.
    pub target: String,
    /// The posted message's reference; `None` until posted.
    pub message: Option<String>,
    /// The state the message shows (`pending`, `approved`...); `None` until posted.
    pub shown_state: Option<String>,
    /// The approvals count the message shows.
    pub shown_approvals: u32,
    /// Failed attempts since the last success.
    pub attempts: u32,
    pub next_attempt: SystemTime,
    /// The platform refused the message for good; nothing more is sent.
    pub gave_up: bool,
}
