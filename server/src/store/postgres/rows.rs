//! Rows to domain values and back. The encoding is SQLite's (see `store::sqlite`): the
//! request as submitted and its resolution as protobuf, times as seconds and nanoseconds
//! (requests) or nanoseconds since the epoch (grants, votes, tokens). A row is rebuilt
//! with the same validation as a message from the wire, so a damaged row is an error,
//! never a wrong value.

use std::time::SystemTime;

use belay_proto::domain::{HostName, Identity, Reason, Request, RequestId, RequestState};
use belay_proto::v1;
use prost::Message as _;
use tokio_postgres::Row;

use super::super::columns::{from_nanos, scope_from, verdict_from};
pub(super) use super::super::columns::{nanos, scope_parts};
use super::super::{EnrollToken, Grant, GrantKey, StoreError, Vote};

/// The columns a request is rebuilt from, in this order at the start of a row.
pub(super) const REQUEST_COLUMNS: &str = "id, state, request, resolution";

/// A request from the first four columns of `row` ([`REQUEST_COLUMNS`]); `None` when
/// they are NULL (the empty side of an outer join).
pub(super) fn request_from(row: &Row) -> Result<Option<Request>, StoreError> {
    let Some(id) = row.try_get::<_, Option<String>>(0)? else {
        return Ok(None);
    };
    let state: String = row.try_get(1)?;
    let submitted: Vec<u8> = row.try_get(2)?;
    let resolution: Option<Vec<u8>> = row.try_get(3)?;
    let bad = |problem: &dyn std::fmt::Display| damaged(&id, problem);
    let state = parse_state(&state).ok_or_else(|| bad(&format_args!("unknown state {state:?}")))?;
    let mut wire = v1::Request::decode(submitted.as_slice()).map_err(|err| bad(&err))?;
    wire.state = v1::RequestState::from(state).into();
    wire.resolution = resolution
        .as_deref()
        .map(v1::Resolution::decode)
        .transpose()
        .map_err(|err| bad(&err))?;
    let request = Request::try_from(wire).map_err(|err| bad(&err))?;
    if request.id.as_str() != id {
        return Err(bad(&format_args!("the row holds request {}", request.id)));
    }
    Ok(Some(request))
}

/// The request in its pending form, and its resolution, each protobuf-encoded.
pub(super) fn encode(request: &Request) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut wire = v1::Request::from(request.clone());
    let resolution = wire
        .resolution
        .take()
        .map(|resolution| resolution.encode_to_vec());
    wire.state = v1::RequestState::Pending.into();
    (wire.encode_to_vec(), resolution)
}

fn parse_state(state: &str) -> Option<RequestState> {
    [
        RequestState::Pending,
        RequestState::Approved,
        RequestState::Denied,
        RequestState::Expired,
        RequestState::Cancelled,
    ]
    .into_iter()
    .find(|known| known.as_str() == state)
}

pub(super) fn damaged(id: &str, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("stored request {id:?} is damaged: {problem}").into())
}

pub(super) fn damaged_row(table: &str, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("a stored row of {table} is damaged: {problem}").into())
}

/// Seconds and nanoseconds since the epoch, nanoseconds in `0..1e9` (also before the
/// epoch), so that `(secs, nanos)` orders like the time itself.
pub(super) fn split_time(time: SystemTime) -> (i64, i64) {
    let timestamp = prost_types::Timestamp::from(time);
    (timestamp.seconds, i64::from(timestamp.nanos))
}

pub(super) fn join_time(seconds: i64, nanos: i64) -> Option<SystemTime> {
    let nanos = i32::try_from(nanos).ok()?;
    SystemTime::try_from(prost_types::Timestamp { seconds, nanos }).ok()
}

/// Columns: reviewer, reason, scope, scope_secs, at.
pub(super) fn vote_from(row: &Row) -> Result<Vote, StoreError> {
    let bad = |what: &dyn std::fmt::Display| damaged_row("votes", what);
    let scope: String = row.try_get(2)?;
    Ok(Vote {
        reviewer: Identity::new(row.try_get::<_, String>(0)?).map_err(|err| bad(&err))?,
        reason: Reason::new(row.try_get::<_, String>(1)?).map_err(|err| bad(&err))?,
        scope: scope_from(&scope, row.try_get(3)?).ok_or_else(|| bad(&scope))?,
        at: from_nanos(row.try_get(4)?),
    })
}

/// Columns: verdict, reviewer, reason, from_request, scope, granted_at, expires_at.
pub(super) fn grant_from(key: &GrantKey, row: &Row) -> Result<Grant, StoreError> {
    let bad = |what: &dyn std::fmt::Display| damaged_row("grants", what);
    let verdict: String = row.try_get(0)?;
    let scope: String = row.try_get(4)?;
    let granted_at: i64 = row.try_get(5)?;
    let expires_at: i64 = row.try_get(6)?;
    // The scope's duration is what separates the two times, as SQLite computes it.
    let duration = (expires_at - granted_at) / 1_000_000_000;
    Ok(Grant {
        key: key.clone(),
        verdict: verdict_from(&verdict).ok_or_else(|| bad(&verdict))?,
        reviewer: Identity::new(row.try_get::<_, String>(1)?).map_err(|err| bad(&err))?,
        reason: Reason::new(row.try_get::<_, String>(2)?).map_err(|err| bad(&err))?,
        from_request: RequestId::new(row.try_get::<_, String>(3)?).map_err(|err| bad(&err))?,
        scope: scope_from(&scope, duration).ok_or_else(|| bad(&scope))?,
        granted_at: from_nanos(granted_at),
        expires_at: from_nanos(expires_at),
    })
}

/// Columns: host, created_at, expires_at.
pub(super) fn token_from(hash: &[u8; 32], row: &Row) -> Result<EnrollToken, StoreError> {
    Ok(EnrollToken {
        hash: *hash,
        host: row
            .try_get::<_, Option<String>>(0)?
            .map(HostName::new)
            .transpose()
            .map_err(|err| damaged_row("enroll_tokens", err))?,
        created_at: from_nanos(row.try_get(1)?),
        expires_at: from_nanos(row.try_get(2)?),
    })
}
