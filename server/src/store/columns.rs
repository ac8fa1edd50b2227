//! How grants, votes, tokens and audit times are stored, the same in every backend:
//! times as nanoseconds since the epoch, scopes as a kind and whole seconds, verdicts
//! by name.

use std::time::{Duration, SystemTime};

use belay_proto::domain::{Scope, Verdict};

/// Nanoseconds since the epoch (saturating), exact for any `SystemTime` a request holds.
pub(crate) fn nanos(time: SystemTime) -> i64 {
    let timestamp = prost_types::Timestamp::from(time);
    timestamp
        .seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(timestamp.nanos))
}

/// The inverse of [`nanos`]; the epoch for a value no `SystemTime` can hold.
pub(crate) fn from_nanos(value: i64) -> SystemTime {
    let timestamp = prost_types::Timestamp {
        seconds: value.div_euclid(1_000_000_000),
        nanos: i32::try_from(value.rem_euclid(1_000_000_000)).unwrap_or(0),
    };
    SystemTime::try_from(timestamp).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A scope as stored: its kind and its duration in seconds (0 for once).
pub(crate) fn scope_parts(scope: Scope) -> (&'static str, i64) {
    let secs = scope
        .duration()
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    (scope.as_str(), secs)
}

/// The inverse of [`scope_parts`]; `None` for an unknown kind or a negative duration.
pub(crate) fn scope_from(kind: &str, secs: i64) -> Option<Scope> {
    let duration = Duration::from_secs(u64::try_from(secs).ok()?);
    match kind {
        "once" => Some(Scope::Once),
        "agent" => Some(Scope::Agent(duration)),
        "host" => Some(Scope::Host(duration)),
        _ => None,
    }
}

pub(crate) fn verdict_from(value: &str) -> Option<Verdict> {
    [Verdict::Allow, Verdict::Deny, Verdict::Kill]
        .into_iter()
        .find(|verdict| verdict.as_str() == value)
}
