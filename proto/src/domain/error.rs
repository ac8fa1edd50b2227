/// A value from the wire that the domain types refuse, with the path of the field
/// (proto field names, dot-separated, e.g. `action.connect.port`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {problem}")]
pub struct ValidationError {
    field: String,
    problem: Problem,
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("missing")]
    Missing,
    #[error("must not be empty")]
    Empty,
    #[error("is {len} bytes long, at most {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("has {count} entries, at most {max} allowed")]
    TooMany { count: usize, max: usize },
    #[error("must not be unspecified")]
    Unspecified,
    #[error("unknown enum value {0}")]
    UnknownEnumValue(i32),
    #[error("contains the forbidden character {0:?}")]
    ForbiddenChar(char),
    #[error("{0:?} is not an IP address")]
    NotAnIpAddress(String),
    #[error("must be in 1..=65535, got {0}")]
    PortOutOfRange(u32),
    #[error("is not a representable timestamp")]
    BadTimestamp,
    #[error("must be between 1 s and 24 h")]
    DurationOutOfRange,
    #[error("{0}")]
    Inconsistent(&'static str),
    #[error("is not UTF-8 (first bad byte at offset {at})")]
    NotUtf8 { at: usize },
}

impl ValidationError {
    pub fn new(field: impl Into<String>, problem: Problem) -> Self {
        Self {
            field: field.into(),
            problem,
        }
    }

    /// Dot-separated path of the offending field.
    pub fn field(&self) -> &str {
        &self.field
    }

    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    /// Prefixes the field path with the enclosing field, so that an error found deep in
    /// a message still names the full path.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

impl From<ValidationError> for tonic::Status {
    fn from(err: ValidationError) -> Self {
        tonic::Status::invalid_argument(err.to_string())
    }
}

/// Shorthand for conversions: adds the parent path to any error.
pub(crate) trait WithinField<T> {
    fn within(self, parent: &str) -> Result<T, ValidationError>;
}

impl<T> WithinField<T> for Result<T, ValidationError> {
    fn within(self, parent: &str) -> Result<T, ValidationError> {
        self.map_err(|err| err.within(parent))
    }
}

/// A required message field that prost represents as `Option`.
pub(crate) fn required<T>(field: &str, value: Option<T>) -> Result<T, ValidationError> {
    value.ok_or_else(|| ValidationError::new(field, Problem::Missing))
}
