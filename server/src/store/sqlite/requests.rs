//! The request operations, run on the database thread inside a batch transaction (or
//! on a reader), and how a row becomes a request again.

use std::time::SystemTime;

use belay_proto::domain::{Request, RequestId, RequestState, Resolution};
use belay_proto::v1;
use prost::Message as _;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::super::{Inserted, Resolved, StoreError};

const SELECT_REQUEST: &str = "SELECT id, state, request, resolution FROM requests";

pub(super) fn insert_if_absent(db: &Connection, request: Request) -> Result<Inserted, StoreError> {
    let (submitted, resolution) = encode(&request);
    let (created_secs, created_nanos) = split_time(request.created_at);
    let (deadline_secs, deadline_nanos) = split_time(request.deadline);
    let inserted = db
        .prepare_cached(
            "INSERT INTO requests (id, state, created_secs, created_nanos, \
             deadline_secs, deadline_nanos, request, resolution) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            request.id.as_str(),
            request.state().as_str(),
            created_secs,
            created_nanos,
            deadline_secs,
            deadline_nanos,
            submitted,
            resolution,
        ])?;
    if inserted == 1 {
        return Ok(Inserted::New(request));
    }
    match get(db, &request.id)? {
        Some(existing) => Ok(Inserted::Existing(existing)),
        None => Err(StoreError::Backend(
            format!("request {} was neither inserted nor found", request.id).into(),
        )),
    }
}

pub(super) fn get(db: &Connection, id: &RequestId) -> Result<Option<Request>, StoreError> {
    db.prepare_cached(&format!("{SELECT_REQUEST} WHERE id = ?1"))?
        .query_row([id.as_str()], StoredRow::read)
        .optional()?
        .map(StoredRow::decode)
        .transpose()
}

pub(super) fn resolve_pending(
    db: &Connection,
    id: &RequestId,
    resolution: &Resolution,
) -> Result<Resolved, StoreError> {
    let state = resolution.outcome.state();
    let encoded = v1::Resolution::from(resolution.clone()).encode_to_vec();
    // The compare-and-set: the row changes only if it is still pending, in this one
    // statement, so of two deciders exactly one gets a row back, whichever connection
    // or process each runs on.
    let updated = db
        .prepare_cached(
            "UPDATE requests SET state = ?2, resolution = ?3 \
             WHERE id = ?1 AND state = 'pending' \
             RETURNING id, state, request, resolution",
        )?
        .query_row(
            params![id.as_str(), state.as_str(), encoded],
            StoredRow::read,
        )
        .optional()?;
    if let Some(row) = updated {
        return Ok(Resolved::Now(row.decode()?));
    }
    // No pending row: unknown, or ended already (states never go back to pending).
    Ok(match get(db, id)? {
        Some(request) => Resolved::Already(request),
        None => Resolved::NotFound,
    })
}

pub(super) fn pending(db: &Connection) -> Result<Vec<Request>, StoreError> {
    db.prepare_cached(&format!(
        "{SELECT_REQUEST} WHERE state = 'pending' \
         ORDER BY created_secs, created_nanos, id"
    ))?
    .query_map([], StoredRow::read)?
    .map(|row| row?.decode())
    .collect()
}

pub(super) fn pending_due(db: &Connection, now: SystemTime) -> Result<Vec<RequestId>, StoreError> {
    let (secs, nanos) = split_time(now);
    db.prepare_cached(
        "SELECT id FROM requests \
         WHERE state = 'pending' AND (deadline_secs, deadline_nanos) <= (?1, ?2) \
         ORDER BY deadline_secs, deadline_nanos, id",
    )?
    .query_map([secs, nanos], |row| row.get::<_, String>(0))?
    .map(|id| {
        let id = id?;
        RequestId::new(id.clone()).map_err(|err| damaged(&id, err))
    })
    .collect()
}

pub(super) fn next_deadline(db: &Connection) -> Result<Option<SystemTime>, StoreError> {
    db.prepare_cached(
        "SELECT id, deadline_secs, deadline_nanos FROM requests WHERE state = 'pending' \
         ORDER BY deadline_secs, deadline_nanos LIMIT 1",
    )?
    .query_row([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })
    .optional()?
    .map(|(id, secs, nanos)| join_time(secs, nanos).ok_or_else(|| damaged(&id, "bad deadline")))
    .transpose()
}

// ---------------------------------------------------------------------------------------
// Rows

/// The columns a request is rebuilt from.
struct StoredRow {
    id: String,
    state: String,
    request: Vec<u8>,
    resolution: Option<Vec<u8>>,
}

impl StoredRow {
    /// Reads the columns of [`SELECT_REQUEST`], in its order.
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            state: row.get(1)?,
            request: row.get(2)?,
            resolution: row.get(3)?,
        })
    }

    fn decode(self) -> Result<Request, StoreError> {
        let bad = |problem: &dyn std::fmt::Display| damaged(&self.id, problem);
        let state = parse_state(&self.state)
            .ok_or_else(|| bad(&format_args!("unknown state {:?}", self.state)))?;
        let mut wire = v1::Request::decode(self.request.as_slice()).map_err(|err| bad(&err))?;
        wire.state = v1::RequestState::from(state).into();
        wire.resolution = self
            .resolution
            .as_deref()
            .map(v1::Resolution::decode)
            .transpose()
            .map_err(|err| bad(&err))?;
        let request = Request::try_from(wire).map_err(|err| bad(&err))?;
        if request.id.as_str() != self.id {
            return Err(bad(&format_args!("the row holds request {}", request.id)));
        }
        Ok(request)
    }
}

/// The request in its pending form, and its resolution, each protobuf-encoded.
fn encode(request: &Request) -> (Vec<u8>, Option<Vec<u8>>) {
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

fn damaged(id: &str, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("stored request {id:?} is damaged: {problem}").into())
}

/// Seconds and nanoseconds since the epoch, nanoseconds in `0..1e9` (also before the
/// epoch), so that `(secs, nanos)` orders like the time itself.
fn split_time(time: SystemTime) -> (i64, i64) {
    let timestamp = prost_types::Timestamp::from(time);
    (timestamp.seconds, i64::from(timestamp.nanos))
}

fn join_time(seconds: i64, nanos: i64) -> Option<SystemTime> {
    let nanos = i32::try_from(nanos).ok()?;
    SystemTime::try_from(prost_types::Timestamp { seconds, nanos }).ok()
}
