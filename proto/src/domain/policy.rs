//! The fleet policy: a document an administrator pushes to the server, which sends it
//! down every agent stream, and what each agent reports back.
//!
//! The server does not parse the document (it has no policy parser): it checks size and
//! encoding, and agents report whether it parsed and applied.

use std::fmt;

use sha2::{Digest as _, Sha256};

use super::error::{Problem, ValidationError};
use super::text::Reason;
use crate::v1;

/// The agent refuses policy files larger than this (`belay_policy`); the server
/// refuses to store what no agent would load.
pub const MAX_POLICY_LEN: usize = 1 << 20;
/// An agent's report message: one parse error or a few warnings.
pub const MAX_POLICY_MESSAGE_LEN: usize = 4096;

/// A policy document: UTF-8, 1 byte ..= [`MAX_POLICY_LEN`].
#[derive(Clone, PartialEq, Eq)]
pub struct PolicyText(String);

impl PolicyText {
    /// Checks raw bytes from the wire; `field` names them in the error.
    pub fn from_bytes(field: &str, bytes: Vec<u8>) -> Result<Self, ValidationError> {
        if bytes.is_empty() {
            return Err(ValidationError::new(field, Problem::Empty));
        }
        if bytes.len() > MAX_POLICY_LEN {
            return Err(ValidationError::new(
                field,
                Problem::TooLong {
                    len: bytes.len(),
                    max: MAX_POLICY_LEN,
                },
            ));
        }
        let text = String::from_utf8(bytes).map_err(|err| {
            ValidationError::new(
                field,
                Problem::NotUtf8 {
                    at: err.utf8_error().valid_up_to(),
                },
            )
        })?;
        if text.contains('\0') {
            return Err(ValidationError::new(field, Problem::ForbiddenChar('\0')));
        }
        Ok(Self(text))
    }

    pub fn new(text: impl Into<String>) -> Result<Self, ValidationError> {
        Self::from_bytes("text", text.into().into_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: an empty document is refused.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Lower-case hex SHA-256 of the text: what identifies a version in audit records,
    /// reports and `belay policy show`.
    pub fn sha256(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }
}

/// A policy can be large; logs and panics show its size and digest, not the text.
impl fmt::Debug for PolicyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PolicyText({} bytes, sha256 {})",
            self.0.len(),
            self.sha256()
        )
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `PushPolicy`: a new fleet policy and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPush {
    pub text: PolicyText,
    pub reason: Reason,
}

impl TryFrom<v1::PushPolicyRequest> for PolicyPush {
    type Error = ValidationError;

    fn try_from(push: v1::PushPolicyRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            text: PolicyText::from_bytes("text", push.text)?,
            reason: Reason::new(push.reason)?,
        })
    }
}

/// A version of the fleet policy as it travels to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyUpdate {
    /// 1 and up.
    pub version: u64,
    pub text: PolicyText,
}

impl PolicyUpdate {
    pub fn sha256(&self) -> String {
        self.text.sha256()
    }
}

impl TryFrom<v1::PolicyUpdate> for PolicyUpdate {
    type Error = ValidationError;

    /// Also checks the digest: a text that does not match it is refused, whatever
    /// mangled it on the way.
    fn try_from(update: v1::PolicyUpdate) -> Result<Self, Self::Error> {
        if update.version == 0 {
            return Err(ValidationError::new(
                "version",
                Problem::Inconsistent("must be at least 1"),
            ));
        }
        let text = PolicyText::from_bytes("text", update.text.to_vec())?;
        if text.sha256() != update.sha256 {
            return Err(ValidationError::new(
                "sha256",
                Problem::Inconsistent("does not match the SHA-256 of the text"),
            ));
        }
        Ok(Self {
            version: update.version,
            text,
        })
    }
}

impl From<PolicyUpdate> for v1::PolicyUpdate {
    fn from(update: PolicyUpdate) -> Self {
        Self {
            version: update.version,
            sha256: update.text.sha256(),
            text: prost::bytes::Bytes::from(update.text.into_string().into_bytes()),
        }
    }
}

/// What an agent did with a version of the fleet policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyOutcome {
    Applied,
    Failed,
    NotAccepted,
}

impl PolicyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::NotAccepted => "not accepted",
        }
    }
}

impl fmt::Display for PolicyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<i32> for PolicyOutcome {
    type Error = ValidationError;

    fn try_from(value: i32) -> Result<Self, Self::Error> {
        match v1::PolicyOutcome::try_from(value) {
            Ok(v1::PolicyOutcome::Applied) => Ok(Self::Applied),
            Ok(v1::PolicyOutcome::Failed) => Ok(Self::Failed),
            Ok(v1::PolicyOutcome::NotAccepted) => Ok(Self::NotAccepted),
            Ok(v1::PolicyOutcome::Unspecified) => {
                Err(ValidationError::new("outcome", Problem::Unspecified))
            }
            Err(_) => Err(ValidationError::new(
                "outcome",
                Problem::UnknownEnumValue(value),
            )),
        }
    }
}

impl From<PolicyOutcome> for v1::PolicyOutcome {
    fn from(outcome: PolicyOutcome) -> Self {
        match outcome {
            PolicyOutcome::Applied => Self::Applied,
            PolicyOutcome::Failed => Self::Failed,
            PolicyOutcome::NotAccepted => Self::NotAccepted,
        }
    }
}

/// An agent's answer to a [`PolicyUpdate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyReport {
    pub version: u64,
    pub outcome: PolicyOutcome,
    /// Why it failed or was not accepted; warnings when applied. Control characters
    /// other than newlines and tabs are refused, as in reasons.
    pub message: String,
}

impl PolicyReport {
    /// A report whose message is cut to [`MAX_POLICY_MESSAGE_LEN`] (on a character
    /// boundary): an agent reporting a long parse error must not have it refused.
    pub fn clipped(version: u64, outcome: PolicyOutcome, message: &str) -> Self {
        let mut end = message.len().min(MAX_POLICY_MESSAGE_LEN);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = message[..end]
            .chars()
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        Self {
            version,
            outcome,
            message,
        }
    }
}

impl TryFrom<v1::PolicyReport> for PolicyReport {
    type Error = ValidationError;

    fn try_from(report: v1::PolicyReport) -> Result<Self, Self::Error> {
        if report.message.len() > MAX_POLICY_MESSAGE_LEN {
            return Err(ValidationError::new(
                "message",
                Problem::TooLong {
                    len: report.message.len(),
                    max: MAX_POLICY_MESSAGE_LEN,
                },
            ));
        }
        if let Some(c) = report
            .message
            .chars()
            .find(|c| c.is_control() && *c != '\n' && *c != '\t')
        {
            return Err(ValidationError::new("message", Problem::ForbiddenChar(c)));
        }
        Ok(Self {
            version: report.version,
            outcome: PolicyOutcome::try_from(report.outcome)?,
            message: report.message,
        })
    }
}

impl From<PolicyReport> for v1::PolicyReport {
    fn from(report: PolicyReport) -> Self {
        Self {
            version: report.version,
            outcome: v1::PolicyOutcome::from(report.outcome) as i32,
            message: report.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_oversized_and_non_utf8_texts_are_refused_with_the_field() {
        let err = PolicyText::from_bytes("text", Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "invalid text: must not be empty");
        let err = PolicyText::from_bytes("text", vec![b'a'; MAX_POLICY_LEN + 1]).unwrap_err();
        assert!(matches!(err.problem(), Problem::TooLong { .. }), "{err}");
        let err = PolicyText::from_bytes("text", b"version: 1\n\xff".to_vec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid text: is not UTF-8 (first bad byte at offset 11)"
        );
        assert!(PolicyText::from_bytes("text", vec![b'a'; MAX_POLICY_LEN]).is_ok());
    }

    #[test]
    fn an_update_whose_digest_does_not_match_is_refused() {
        let text = PolicyText::new("version: 1\n").unwrap();
        let mut wire = v1::PolicyUpdate::from(PolicyUpdate {
            version: 3,
            text: text.clone(),
        });
        assert_eq!(
            PolicyUpdate::try_from(wire.clone()).unwrap(),
            PolicyUpdate { version: 3, text }
        );
        wire.text = [wire.text.as_ref(), b"#"].concat().into();
        let err = PolicyUpdate::try_from(wire.clone()).unwrap_err();
        assert_eq!(err.field(), "sha256");
        wire.version = 0;
        assert_eq!(PolicyUpdate::try_from(wire).unwrap_err().field(), "version");
    }

    #[test]
    fn reports_need_an_outcome_and_clipping_keeps_them_valid() {
        let wire = v1::PolicyReport {
            version: 1,
            outcome: 0,
            message: String::new(),
        };
        assert_eq!(
            PolicyReport::try_from(wire).unwrap_err().to_string(),
            "invalid outcome: must not be unspecified"
        );
        let long = "é\u{7}".repeat(MAX_POLICY_MESSAGE_LEN);
        let report = PolicyReport::clipped(2, PolicyOutcome::Failed, &long);
        assert!(report.message.len() <= MAX_POLICY_MESSAGE_LEN);
        let back = PolicyReport::try_from(v1::PolicyReport::from(report.clone())).unwrap();
        assert_eq!(back, report);
    }
}
