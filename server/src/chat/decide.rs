//! A decision from a chat button, under the rules of every surface: the mapped
//! reviewer's role, the approval rules of [`Approvals::decide_counted`] (no
//! self-approval, the quorum, nothing decided twice). The decider is always the identity
//! the platform user maps to, never a name in the payload.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use belay_proto::domain::{Identity, Reason, RequestId, ReviewerDecision, Scope, Verdict};

use crate::approvals::{ApprovalError, Approvals, Decided, Store};
use crate::auth::Role;

/// The buttons on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    Approve,
    Deny,
    Kill,
    /// Approve, and let the same agent do the same for 30 minutes.
    ApproveFor30m,
}

pub const GRANT_MINUTES: u64 = 30;
/// The most a reason typed in a message may hold (the inputs say so too); with the
/// annotation it stays well inside a reason's limit.
pub const MAX_TYPED_REASON: usize = 500;

impl Button {
    /// The id the buttons carry on every platform (`action_id`, `verb`).
    pub fn id(self) -> &'static str {
        match self {
            Button::Approve => "belay_approve",
            Button::Deny => "belay_deny",
            Button::Kill => "belay_kill",
            Button::ApproveFor30m => "belay_approve_30m",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        [
            Button::Approve,
            Button::Deny,
            Button::Kill,
            Button::ApproveFor30m,
        ]
        .into_iter()
        .find(|b| b.id() == id)
    }

    fn verdict_and_scope(self) -> (Verdict, Scope) {
        match self {
            Button::Approve => (Verdict::Allow, Scope::Once),
            Button::Deny => (Verdict::Deny, Scope::Once),
            Button::Kill => (Verdict::Kill, Scope::Once),
            Button::ApproveFor30m => (
                Verdict::Allow,
                Scope::Agent(Duration::from_secs(GRANT_MINUTES * 60)),
            ),
        }
    }
}

/// A platform user, mapped to a belay reviewer by the platform's module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatReviewer {
    pub identity: Identity,
    /// `None`: known, but the chat config gives this identity no role.
    pub role: Option<Role>,
    /// How the platform named the user ("slack:U0123", "teams:<aad object id>"), for the
    /// reason and the audit log.
    pub via: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ChatDecisionError {
    #[error("{identity} has no belay reviewer role")]
    NotAReviewer { identity: Identity },
    #[error("the reason is refused: {0}")]
    BadReason(String),
    #[error(transparent)]
    Rule(#[from] ApprovalError),
    #[error("deciding failed: {0}")]
    Internal(String),
}

/// Decides `id` as `reviewer` pressed `button`, with the reason they typed in the
/// message, if any; on a task of its own, so that a platform connection that goes away
/// cannot cut a decision in half.
pub async fn decide<S: Store>(
    approvals: &Arc<Approvals<S>>,
    reviewer: &ChatReviewer,
    id: RequestId,
    button: Button,
    typed_reason: Option<&str>,
) -> Result<Decided, ChatDecisionError> {
    match reviewer.role {
        Some(role) if role >= Role::Reviewer => {}
        _ => {
            return Err(ChatDecisionError::NotAReviewer {
                identity: reviewer.identity.clone(),
            });
        }
    }
    let (verdict, scope) = button.verdict_and_scope();
    let reason = reason(typed_reason, &reviewer.via)?;
    let decision = ReviewerDecision {
        request_id: id,
        verdict,
        reviewer: reviewer.identity.clone(),
        reason,
        scope,
    };
    let approvals = Arc::clone(approvals);
    tokio::spawn(async move { approvals.decide_counted(decision, SystemTime::now()).await })
        .await
        .map_err(|err| ChatDecisionError::Internal(err.to_string()))?
        .map_err(ChatDecisionError::Rule)
}

/// What the decision records as its reason: the typed one, if any, with the platform
/// user it came from, so a reader can tell chat decisions apart.
fn reason(typed: Option<&str>, via: &str) -> Result<Reason, ChatDecisionError> {
    let text = match typed.map(str::trim).filter(|t| !t.is_empty()) {
        None => format!("from chat ({via})"),
        Some(typed) if typed.chars().count() > MAX_TYPED_REASON => {
            return Err(ChatDecisionError::BadReason(format!(
                "longer than {MAX_TYPED_REASON} characters"
            )));
        }
        Some(typed) => format!("{typed} (from chat, {via})"),
    };
    Reason::new(text).map_err(|err| ChatDecisionError::BadReason(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_reason_is_kept_with_where_it_came_from() {
        assert_eq!(
            reason(None, "slack:U1").unwrap().as_str(),
            "from chat (slack:U1)"
        );
        assert_eq!(
            reason(Some("  \n "), "slack:U1").unwrap().as_str(),
            "from chat (slack:U1)"
        );
        assert_eq!(
            reason(Some(" ticket OPS-7\nchecked "), "teams:abc")
                .unwrap()
                .as_str(),
            "ticket OPS-7\nchecked (from chat, teams:abc)"
        );
        let long = "é".repeat(MAX_TYPED_REASON + 1);
        assert!(matches!(
            reason(Some(&long), "slack:U1"),
            Err(ChatDecisionError::BadReason(_))
        ));
        assert!(reason(Some(&long[2..]), "slack:U1").is_ok());
        assert!(matches!(
            reason(Some("bell \u{7}"), "slack:U1"),
            Err(ChatDecisionError::BadReason(_))
        ));
    }
}
