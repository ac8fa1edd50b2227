//! What a reviewer's decision covers besides the request it answers.

use std::time::Duration;

use super::error::{Problem, ValidationError};
use crate::v1;

/// The longest a scoped grant may last: a grant is a standing approval nobody watches,
/// so it always runs out, and within a working day.
pub const MAX_GRANT: Duration = Duration::from_secs(24 * 60 * 60);

/// What a decision settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// This request only.
    #[default]
    Once,
    /// The same action by the same watched agent on the same host, for this long.
    Agent(Duration),
    /// The same action by any watched agent on the same host, for this long.
    Host(Duration),
}

impl Scope {
    /// How long the grant lasts; `None` for [`Scope::Once`].
    pub fn duration(self) -> Option<Duration> {
        match self {
            Self::Once => None,
            Self::Agent(duration) | Self::Host(duration) => Some(duration),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Once => "once",
            Self::Agent(_) => "agent",
            Self::Host(_) => "host",
        }
    }

    /// The narrower of two scopes (used when several approvals make a quorum: the grant
    /// covers no more than every approver agreed to). Once < Agent < Host; between two
    /// of the same kind, the shorter.
    pub fn narrowest(self, other: Self) -> Self {
        let rank = |scope: Self| match scope {
            Self::Once => (0, Duration::ZERO),
            Self::Agent(duration) => (1, duration),
            Self::Host(duration) => (2, duration),
        };
        let (kind, _) = rank(self).min(rank(other));
        let duration = match (self.duration(), other.duration()) {
            (Some(a), Some(b)) => a.min(b),
            (Some(d), None) | (None, Some(d)) => d,
            (None, None) => Duration::ZERO,
        };
        match kind {
            0 => Self::Once,
            1 => Self::Agent(duration),
            _ => Self::Host(duration),
        }
    }
}

impl TryFrom<Option<v1::Scope>> for Scope {
    type Error = ValidationError;

    fn try_from(scope: Option<v1::Scope>) -> Result<Self, Self::Error> {
        let Some(scope) = scope else {
            return Ok(Self::Once);
        };
        let kind = v1::ScopeKind::try_from(scope.kind).map_err(|_| {
            ValidationError::new("scope.kind", Problem::UnknownEnumValue(scope.kind))
        })?;
        let duration = || -> Result<Duration, ValidationError> {
            let field = "scope.duration";
            let wire = scope
                .duration
                .ok_or_else(|| ValidationError::new(field, Problem::Missing))?;
            let duration = Duration::try_from(wire)
                .map_err(|_| ValidationError::new(field, Problem::DurationOutOfRange))?;
            if duration < Duration::from_secs(1) || duration > MAX_GRANT {
                return Err(ValidationError::new(field, Problem::DurationOutOfRange));
            }
            Ok(duration)
        };
        match kind {
            v1::ScopeKind::Unspecified => {
                Err(ValidationError::new("scope.kind", Problem::Unspecified))
            }
            v1::ScopeKind::Once => {
                if scope.duration.is_some() {
                    return Err(ValidationError::new(
                        "scope.duration",
                        Problem::Inconsistent("must be absent when the scope is ONCE"),
                    ));
                }
                Ok(Self::Once)
            }
            v1::ScopeKind::Agent => Ok(Self::Agent(duration()?)),
            v1::ScopeKind::Host => Ok(Self::Host(duration()?)),
        }
    }
}

impl From<Scope> for Option<v1::Scope> {
    fn from(scope: Scope) -> Self {
        let (kind, duration) = match scope {
            Scope::Once => return None,
            Scope::Agent(duration) => (v1::ScopeKind::Agent, duration),
            Scope::Host(duration) => (v1::ScopeKind::Host, duration),
        };
        Some(v1::Scope {
            kind: kind.into(),
            duration: prost_types::Duration::try_from(duration).ok(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(kind: v1::ScopeKind, secs: Option<i64>) -> Option<v1::Scope> {
        Some(v1::Scope {
            kind: kind.into(),
            duration: secs.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
        })
    }

    #[test]
    fn absent_scope_is_once() {
        assert_eq!(Scope::try_from(None), Ok(Scope::Once));
    }

    #[test]
    fn scoped_grants_need_a_bounded_duration() {
        assert_eq!(
            Scope::try_from(wire(v1::ScopeKind::Agent, Some(1800))),
            Ok(Scope::Agent(Duration::from_secs(1800)))
        );
        assert_eq!(
            Scope::try_from(wire(v1::ScopeKind::Host, Some(86_400))),
            Ok(Scope::Host(MAX_GRANT))
        );
        for (secs, field) in [
            (None, "invalid scope.duration: missing"),
            (
                Some(0),
                "invalid scope.duration: must be between 1 s and 24 h",
            ),
            (
                Some(86_401),
                "invalid scope.duration: must be between 1 s and 24 h",
            ),
            (
                Some(-5),
                "invalid scope.duration: must be between 1 s and 24 h",
            ),
        ] {
            let err = Scope::try_from(wire(v1::ScopeKind::Agent, secs)).unwrap_err();
            assert_eq!(err.to_string(), field, "{secs:?}");
        }
    }

    #[test]
    fn once_with_a_duration_and_unknown_kinds_are_refused() {
        assert!(Scope::try_from(wire(v1::ScopeKind::Once, Some(60))).is_err());
        assert!(Scope::try_from(wire(v1::ScopeKind::Unspecified, Some(60))).is_err());
        let unknown = Some(v1::Scope {
            kind: 42,
            duration: None,
        });
        assert_eq!(
            Scope::try_from(unknown).unwrap_err().to_string(),
            "invalid scope.kind: unknown enum value 42"
        );
    }

    #[test]
    fn narrowest_takes_the_smaller_kind_and_the_shorter_time() {
        let m = |n: u64| Duration::from_secs(60 * n);
        assert_eq!(
            Scope::Host(m(30)).narrowest(Scope::Agent(m(60))),
            Scope::Agent(m(30))
        );
        assert_eq!(Scope::Host(m(30)).narrowest(Scope::Once), Scope::Once);
        assert_eq!(
            Scope::Host(m(10)).narrowest(Scope::Host(m(5))),
            Scope::Host(m(5))
        );
    }

    #[test]
    fn scope_round_trips() {
        for scope in [
            Scope::Once,
            Scope::Agent(Duration::from_secs(90)),
            Scope::Host(MAX_GRANT),
        ] {
            assert_eq!(Scope::try_from(Option::<v1::Scope>::from(scope)), Ok(scope));
        }
    }
}
