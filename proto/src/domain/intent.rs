//! What a watched process declared about why it acts: the AI agent's own words.
//!
//! Never verified, and nothing decides on it: it is context for the person reviewing,
//! always shown as declared by the agent. The limits keep it a sentence, not a document,
//! and printable, so that no view has to trust it.

use std::time::SystemTime;

use super::error::{Problem, ValidationError};
use super::limits::{MAX_INTENT_FIELD_LEN, MAX_INTENT_LEN};
use crate::v1;

/// A declared intent; build it with [`Intent::new`] or from the wire with `TryFrom`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Intent {
    text: String,
    model: Option<String>,
    session_id: Option<String>,
    tool_call_id: Option<String>,
    user_request_id: Option<String>,
    declared_by_pid: u32,
    declared_at: SystemTime,
}

/// The optional fields of an intent, as declared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntentDetails {
    pub model: Option<String>,
    pub session_id: Option<String>,
    pub tool_call_id: Option<String>,
    pub user_request_id: Option<String>,
}

fn check(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            Problem::TooLong {
                len: value.len(),
                max,
            },
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(ValidationError::new(field, Problem::ForbiddenChar(c)));
    }
    Ok(())
}

fn optional(field: &str, value: String) -> Result<Option<String>, ValidationError> {
    if value.is_empty() {
        return Ok(None);
    }
    check(field, &value, MAX_INTENT_FIELD_LEN)?;
    Ok(Some(value))
}

impl Intent {
    /// Checks every limit: text 1..=[`MAX_INTENT_LEN`] bytes, the other fields at most
    /// [`MAX_INTENT_FIELD_LEN`], no control characters anywhere, a declaring pid.
    pub fn new(
        text: String,
        details: IntentDetails,
        declared_by_pid: u32,
        declared_at: SystemTime,
    ) -> Result<Self, ValidationError> {
        if text.trim().is_empty() {
            return Err(ValidationError::new("text", Problem::Empty));
        }
        check("text", &text, MAX_INTENT_LEN)?;
        if declared_by_pid == 0 {
            return Err(ValidationError::new(
                "declared_by_pid",
                Problem::Inconsistent("must not be 0"),
            ));
        }
        let some = |field: &str, value: Option<String>| optional(field, value.unwrap_or_default());
        Ok(Self {
            text,
            model: some("model", details.model)?,
            session_id: some("session_id", details.session_id)?,
            tool_call_id: some("tool_call_id", details.tool_call_id)?,
            user_request_id: some("user_request_id", details.user_request_id)?,
            declared_by_pid,
            declared_at,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    pub fn tool_call_id(&self) -> Option<&str> {
        self.tool_call_id.as_deref()
    }

    pub fn user_request_id(&self) -> Option<&str> {
        self.user_request_id.as_deref()
    }

    pub fn declared_by_pid(&self) -> u32 {
        self.declared_by_pid
    }

    pub fn declared_at(&self) -> SystemTime {
        self.declared_at
    }

    /// Bytes of all strings together (for the context's total limit).
    pub(crate) fn total_len(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        self.text.len()
            + opt(&self.model)
            + opt(&self.session_id)
            + opt(&self.tool_call_id)
            + opt(&self.user_request_id)
    }

    /// Every string field, as (name, value), for code that rewrites them all (masking).
    pub fn map_strings(self, mut f: impl FnMut(&str, String) -> String) -> Self {
        let mut opt = |name: &str, value: Option<String>| value.map(|v| f(name, v));
        let model = opt("model", self.model);
        let session_id = opt("session_id", self.session_id);
        let tool_call_id = opt("tool_call_id", self.tool_call_id);
        let user_request_id = opt("user_request_id", self.user_request_id);
        Self {
            text: f("text", self.text),
            model,
            session_id,
            tool_call_id,
            user_request_id,
            ..self
        }
    }
}

impl TryFrom<v1::DeclaredIntent> for Intent {
    type Error = ValidationError;

    fn try_from(intent: v1::DeclaredIntent) -> Result<Self, Self::Error> {
        let declared_at = super::request::timestamp("declared_at", intent.declared_at)?;
        Self::new(
            intent.text,
            IntentDetails {
                model: Some(intent.model),
                session_id: Some(intent.session_id),
                tool_call_id: Some(intent.tool_call_id),
                user_request_id: Some(intent.user_request_id),
            },
            intent.declared_by_pid,
            declared_at,
        )
    }
}

impl From<Intent> for v1::DeclaredIntent {
    fn from(intent: Intent) -> Self {
        Self {
            text: intent.text,
            model: intent.model.unwrap_or_default(),
            session_id: intent.session_id.unwrap_or_default(),
            tool_call_id: intent.tool_call_id.unwrap_or_default(),
            user_request_id: intent.user_request_id.unwrap_or_default(),
            declared_by_pid: intent.declared_by_pid,
            declared_at: Some(intent.declared_at.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(text: &str) -> v1::DeclaredIntent {
        v1::DeclaredIntent {
            text: text.into(),
            model: "gpt-x".into(),
            session_id: String::new(),
            tool_call_id: "call_1".into(),
            user_request_id: String::new(),
            declared_by_pid: 42,
            declared_at: Some(SystemTime::UNIX_EPOCH.into()),
        }
    }

    #[test]
    fn an_intent_round_trips_and_empty_fields_are_absent() {
        let intent = Intent::try_from(wire("run the migration the user asked for")).unwrap();
        assert_eq!(intent.text(), "run the migration the user asked for");
        assert_eq!(intent.model(), Some("gpt-x"));
        assert_eq!(intent.session_id(), None);
        assert_eq!(intent.declared_by_pid(), 42);
        assert_eq!(
            v1::DeclaredIntent::from(intent),
            wire("run the migration the user asked for")
        );
    }

    #[test]
    fn oversized_empty_and_control_character_intents_are_refused() {
        let long = "x".repeat(MAX_INTENT_LEN + 1);
        for (bad, field) in [
            (wire(""), "text"),
            (wire("  "), "text"),
            (wire(&long), "text"),
            (wire("clear\u{1b}[2J"), "text"),
            (
                v1::DeclaredIntent {
                    model: "m".repeat(MAX_INTENT_FIELD_LEN + 1),
                    ..wire("ok")
                },
                "model",
            ),
            (
                v1::DeclaredIntent {
                    declared_by_pid: 0,
                    ..wire("ok")
                },
                "declared_by_pid",
            ),
            (
                v1::DeclaredIntent {
                    declared_at: None,
                    ..wire("ok")
                },
                "declared_at",
            ),
        ] {
            let err = Intent::try_from(bad).unwrap_err();
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
        assert!(Intent::try_from(wire(&"x".repeat(MAX_INTENT_LEN))).is_ok());
    }
}
