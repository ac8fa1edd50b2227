//! The local API on belay-agent's Unix socket: one JSON request line, one JSON response
//! line. `belay` (standalone mode) and `belay run` use it; the daemon serves it.
//!
//! Only the messages and their views live here (and a blocking client), so the CLI
//! speaks the protocol without linking the daemon, aya or the kernel programs.
mod client;
mod intent;
mod request_view;
mod status_view;

use serde::{Deserialize, Serialize};

pub use belay_policy::Verdict;
pub use client::{ClientError, call};
pub use intent::{DEFAULT_INTENT_TTL_SECS, IntentDeclaration, IntentView, MAX_INTENT_TTL_SECS};
pub use request_view::{ActionView, Ancestor, MAX_ANCESTRY, ProcessContext, RequestView};
pub use status_view::{Counters, LinkStatus, PolicyStatus, StatusView};

pub const DEFAULT_SOCKET: &str = "/run/belay/agent.sock";
/// Longest request line the daemon reads; anything longer is refused.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiRequest {
    /// Watch the calling process (its tgid as the kernel reports it on the socket) as a
    /// policy subject: the one named, or the policy's only subject that accepts
    /// enrollment.
    Enroll {
        #[serde(default)]
        subject: Option<String>,
    },
    Pending,
    Show {
        id: u64,
    },
    Decide {
        id: u64,
        verdict: Verdict,
        #[serde(default)]
        reason: Option<String>,
    },
    Status,
    /// Declares why the calling process (its tgid as the kernel reports it on the
    /// socket) is about to act; attached, unverified, to its and its descendants' next
    /// requests until the time-to-live runs out or it declares again.
    Intent(IntentDeclaration),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ApiResponse {
    Enrolled {
        tgid: u32,
        #[serde(default)]
        subject: String,
    },
    Requests {
        requests: Vec<RequestView>,
    },
    Request {
        request: RequestView,
    },
    Decided {
        id: u64,
        verdict: Verdict,
    },
    Status {
        status: StatusView,
    },
    IntentDeclared {
        tgid: u32,
        expires_unix_ms: u64,
    },
    Error {
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let req = ApiRequest::Decide {
            id: 3,
            verdict: Verdict::Deny,
            reason: Some("no".into()),
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"op":"decide","id":3,"verdict":"deny","reason":"no"}"#
        );
        assert_eq!(serde_json::from_str::<ApiRequest>(&json).unwrap(), req);
    }

    #[test]
    fn an_intent_is_one_flat_json_line() {
        let line = r#"{"op":"intent","text":"run the migration","model":"gpt-5","ttl_seconds":60}"#;
        let req: ApiRequest = serde_json::from_str(line).unwrap();
        assert_eq!(
            req,
            ApiRequest::Intent(IntentDeclaration {
                text: "run the migration".into(),
                model: Some("gpt-5".into()),
                ttl_seconds: Some(60),
                ..Default::default()
            })
        );
        assert_eq!(serde_json::to_string(&req).unwrap(), line);
    }

    #[test]
    fn unknown_ops_fields_and_verdicts_are_refused() {
        for bad in [
            r#"{"op":"format_disk"}"#,
            r#"{"op":"show","id":1,"extra":true}"#,
            r#"{"op":"decide","id":1,"verdict":"maybe"}"#,
            r#"{"op":"show","id":-1}"#,
            r#"{"op":"intent","text":"x","pid":1}"#,
        ] {
            assert!(serde_json::from_str::<ApiRequest>(bad).is_err(), "{bad}");
        }
    }
}
