//! Times as the database and the audit log write them: nanoseconds since the epoch
//! (audit records, grants, votes, tokens, policies), or seconds and nanoseconds apart
//! (the queried columns of requests, which order by the pair).
//!
//! A leaf: the store and the audit records both write times, and neither may depend on
//! the other for it.

use std::time::SystemTime;

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

/// Seconds and nanoseconds since the epoch, nanoseconds in `0..1e9` (also before the
/// epoch), so that `(secs, nanos)` orders like the time itself.
pub(crate) fn split_time(time: SystemTime) -> (i64, i64) {
    let timestamp = prost_types::Timestamp::from(time);
    (timestamp.seconds, i64::from(timestamp.nanos))
}

/// The inverse of [`split_time`]; `None` for a pair no `SystemTime` can hold.
pub(crate) fn join_time(seconds: i64, nanos: i64) -> Option<SystemTime> {
    let nanos = i32::try_from(nanos).ok()?;
    SystemTime::try_from(prost_types::Timestamp { seconds, nanos }).ok()
}
