//! The request operations, run on the database thread inside a batch transaction (or
//! on a reader). How a row becomes a request again is `store::columns`, shared with
//! PostgreSQL.

use std::time::SystemTime;

use belay_proto::domain::{Request, RequestId, Resolution};
use belay_proto::v1;
use prost::Message as _;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::super::columns::{RequestRow, damaged, join_time, request_id, split_time};
use super::super::{Inserted, Resolved, StoreError};
use crate::canonical_action::action_digest;

const SELECT_REQUEST: &str = "SELECT id, state, request, resolution FROM requests";

pub(super) fn insert_if_absent(db: &Connection, request: Request) -> Result<Inserted, StoreError> {
    let (submitted, resolution) = RequestRow::encode(&request);
    let (created_secs, created_nanos) = split_time(request.created_at);
    let (deadline_secs, deadline_nanos) = split_time(request.deadline);
    let inserted = db
        .prepare_cached(
            "INSERT INTO requests (id, state, created_secs, created_nanos, \
             deadline_secs, deadline_nanos, request, resolution, host, action) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
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
            request.host.as_str(),
            action_digest(&request.action),
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
        .query_row([id.as_str()], read_row)
        .optional()?
        .map(RequestRow::decode)
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
        .query_row(params![id.as_str(), state.as_str(), encoded], read_row)
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
    .query_map([], read_row)?
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
    .map(|id| request_id(id?))
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

pub(super) fn history(
    db: &Connection,
    request: &Request,
    limit: usize,
) -> Result<Vec<Request>, StoreError> {
    let (secs, nanos) = split_time(request.created_at);
    db.prepare_cached(&format!(
        "{SELECT_REQUEST} WHERE host = ?1 AND action = ?2 AND state <> 'pending' \
         AND id <> ?3 AND (created_secs, created_nanos) <= (?4, ?5) \
         ORDER BY created_secs DESC, created_nanos DESC, id DESC LIMIT ?6"
    ))?
    .query_map(
        params![
            request.host.as_str(),
            action_digest(&request.action),
            request.id.as_str(),
            secs,
            nanos,
            i64::try_from(limit).unwrap_or(i64::MAX),
        ],
        read_row,
    )?
    .map(|row| row?.decode())
    .collect()
}

/// Requests read per step of [`fill_actions`].
const FILL_STEP: i64 = 500;

/// Fills in the host and action columns of requests stored before migration 7 (NULL
/// there), so that [`history`] finds them; returns how many. A row that cannot be read
/// is left as it is (out of every history) and reported. Quick when there is nothing to
/// fill: `requests_by_action` starts with the host.
pub(super) fn fill_actions(db: &Connection) -> Result<usize, StoreError> {
    let mut after = String::new();
    let mut filled = 0;
    loop {
        let rows = db
            .prepare_cached(&format!(
                "{SELECT_REQUEST} WHERE host IS NULL AND id > ?1 ORDER BY id LIMIT ?2"
            ))?
            .query_map(params![after, FILL_STEP], read_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let Some(last) = rows.last() else {
            return Ok(filled);
        };
        after.clone_from(&last.id);
        for row in rows {
            let id = row.id.clone();
            match row.decode() {
                Ok(request) => {
                    db.prepare_cached("UPDATE requests SET host = ?2, action = ?3 WHERE id = ?1")?
                        .execute(params![
                            id,
                            request.host.as_str(),
                            action_digest(&request.action)
                        ])?;
                    filled += 1;
                }
                Err(err) => {
                    tracing::warn!(id, error = %err, "a stored request cannot be read; it is left out of the history of its action");
                }
            }
        }
    }
}

/// Reads the columns of [`SELECT_REQUEST`], in its order; `columns` decodes them.
fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RequestRow> {
    Ok(RequestRow {
        id: row.get(0)?,
        state: row.get(1)?,
        request: row.get(2)?,
        resolution: row.get(3)?,
    })
}
