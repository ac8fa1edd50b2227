//! The agent's declared intent on the local API: what a watched process (or the
//! framework running the AI agent) says it is about to do, and why.
//!
//! Declared, never verified: belay attaches it to the declaring process's next requests
//! (and its descendants'), masked, and every view labels it as the agent's own words.
use serde::{Deserialize, Serialize};

/// Default time an intent stays attached to the declaring process's requests.
pub const DEFAULT_INTENT_TTL_SECS: u64 = 600;
/// Longest time-to-live a declaration may ask for.
pub const MAX_INTENT_TTL_SECS: u64 = 24 * 3600;

/// What the `intent` operation carries (one JSON line on the socket):
/// `{"op":"intent","text":"run the migration the user asked for","model":"gpt-5"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentDeclaration {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_request_id: Option<String>,
    /// Seconds the intent stays attached; default [`DEFAULT_INTENT_TTL_SECS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// A declared intent as a request shows it (masked).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentView {
    pub text: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub user_request_id: Option<String>,
    /// The process that declared it: the requesting one or an ancestor.
    pub declared_by_pid: u32,
    pub declared_unix_ms: u64,
}
