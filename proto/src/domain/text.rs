//! Validated text newtypes. Their constructors are the only way to build them, so a value
//! of one of these types has passed its checks.

use std::fmt;

use super::error::{Problem, ValidationError};
use super::limits;

/// Checks shared by all text fields: length in bytes, emptiness and characters.
fn check(
    field: &str,
    value: &str,
    max: usize,
    allow_empty: bool,
    allowed: impl Fn(char) -> bool,
) -> Result<(), ValidationError> {
    if value.is_empty() && !allow_empty {
        return Err(ValidationError::new(field, Problem::Empty));
    }
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            Problem::TooLong {
                len: value.len(),
                max,
            },
        ));
    }
    match value.chars().find(|&c| !allowed(c)) {
        Some(c) => Err(ValidationError::new(field, Problem::ForbiddenChar(c))),
        None => Ok(()),
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

/// Identities are compared byte for byte to enforce "no self-approval", so anything that
/// makes two spellings look alike to a person (padding, control characters) is refused.
fn is_token_char(c: char) -> bool {
    !c.is_whitespace() && !c.is_control()
}

fn is_name_char(c: char) -> bool {
    !c.is_control()
}

/// Reasons are shown to people and may span lines.
fn is_reason_char(c: char) -> bool {
    !c.is_control() || c == '\n' || c == '\t'
}

macro_rules! text_newtype {
    (
        $(#[$meta:meta])*
        $name:ident, field = $field:literal, max = $max:expr, allow_empty = $allow_empty:literal,
        chars = $allowed:expr
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
                Self::parse($field, value.into())
            }

            /// Validates `value`, naming `field` in the error.
            pub(crate) fn parse(field: &str, value: String) -> Result<Self, ValidationError> {
                check(field, &value, $max, $allow_empty, $allowed)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ValidationError;

            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
    };
}

text_newtype!(
    /// Id of a request, chosen by the agent: 1 to 128 characters of `[A-Za-z0-9._:-]`.
    RequestId, field = "request_id", max = limits::MAX_ID_LEN, allow_empty = false,
    chars = is_id_char
);

text_newtype!(
    /// Host name of an agent; for now also the agent's identity.
    HostName, field = "host", max = limits::MAX_HOST_LEN, allow_empty = false,
    chars = is_token_char
);

text_newtype!(
    /// Identity of a person or service: the owner of a watched agent, or a reviewer.
    Identity, field = "identity", max = limits::MAX_IDENTITY_LEN, allow_empty = false,
    chars = is_token_char
);

text_newtype!(
    /// A short non-empty label: agent name, rule name, version.
    Name, field = "name", max = limits::MAX_NAME_LEN, allow_empty = false,
    chars = is_name_char
);

text_newtype!(
    /// Free text explaining a decision; may be empty.
    Reason, field = "reason", max = limits::MAX_REASON_LEN, allow_empty = true,
    chars = is_reason_char
);

impl Identity {
    /// The form identities are compared in: lower case. Emails are case-insensitive in
    /// practice (`Alice@Example.com` reaches alice), and folding every identity errs on
    /// the safe side: two names that differ only in case are treated as one person, so
    /// at worst someone is kept from approving, never let through as someone else.
    /// Non-ASCII letters fold too unless folding would pass the length limit (a few
    /// characters grow); those then fold in their ASCII letters only.
    #[must_use]
    pub fn canonical(&self) -> Self {
        let folded = self.0.to_lowercase();
        if folded.len() <= limits::MAX_IDENTITY_LEN && folded.chars().all(is_token_char) {
            Self(folded)
        } else {
            Self(self.0.to_ascii_lowercase())
        }
    }

    /// Whether `self` and `other` name the same person (see [`Identity::canonical`]).
    pub fn same_as(&self, other: &Self) -> bool {
        self.canonical() == other.canonical()
    }
}

impl Reason {
    pub fn empty() -> Self {
        Self(String::new())
    }
}
