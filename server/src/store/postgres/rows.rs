//! PostgreSQL rows to the shared row types of `store::columns`, which hold the encoding
//! (the same as SQLite's) and the decoding with its validation: here only which column
//! is which.

use belay_proto::domain::Request;
use tokio_postgres::Row;

use super::super::columns::{GrantRow, RequestRow, StoredGrantRow, TokenRow, VoteRow};
pub(super) use super::super::columns::{
    damaged, join_time, nanos, request_id, scope_parts, split_time,
};
use super::super::{EnrollToken, Grant, GrantKey, Revocation, StoreError, Vote};

/// The columns a request is rebuilt from, in this order at the start of a row.
pub(super) const REQUEST_COLUMNS: &str = "id, state, request, resolution";

/// The request in its pending form, and its resolution, each protobuf-encoded.
pub(super) fn encode(request: &Request) -> (Vec<u8>, Option<Vec<u8>>) {
    RequestRow::encode(request)
}

/// A request from the first four columns of `row` ([`REQUEST_COLUMNS`]); `None` when
/// they are NULL (the empty side of an outer join).
pub(super) fn request_from(row: &Row) -> Result<Option<Request>, StoreError> {
    let Some(id) = row.try_get::<_, Option<String>>(0)? else {
        return Ok(None);
    };
    RequestRow {
        id,
        state: row.try_get(1)?,
        request: row.try_get(2)?,
        resolution: row.try_get(3)?,
    }
    .decode()
    .map(Some)
}

/// Columns: reviewer, reason, scope, scope_secs, at.
pub(super) fn vote_from(row: &Row) -> Result<Vote, StoreError> {
    VoteRow {
        reviewer: row.try_get(0)?,
        reason: row.try_get(1)?,
        scope: row.try_get(2)?,
        scope_secs: row.try_get(3)?,
        at: row.try_get(4)?,
    }
    .decode()
}

/// Columns: verdict, reviewer, reason, from_request, scope, granted_at, expires_at.
pub(super) fn grant_from(key: &GrantKey, row: &Row) -> Result<Grant, StoreError> {
    GrantRow {
        verdict: row.try_get(0)?,
        reviewer: row.try_get(1)?,
        reason: row.try_get(2)?,
        from_request: row.try_get(3)?,
        scope: row.try_get(4)?,
        granted_at: row.try_get(5)?,
        expires_at: row.try_get(6)?,
    }
    .decode(key)
}

/// The columns of `columns::GRANT_COLUMNS` from `first` on; `None` when they are NULL
/// (the empty side of an outer join).
pub(super) fn stored_grant_from(
    row: &Row,
    first: usize,
) -> Result<Option<(Grant, Option<Revocation>)>, StoreError> {
    let Some(host) = row.try_get::<_, Option<String>>(first)? else {
        return Ok(None);
    };
    StoredGrantRow {
        host,
        agent: row.try_get(first + 1)?,
        action: row.try_get(first + 2)?,
        grant: GrantRow {
            verdict: row.try_get(first + 3)?,
            reviewer: row.try_get(first + 4)?,
            reason: row.try_get(first + 5)?,
            from_request: row.try_get(first + 6)?,
            scope: row.try_get(first + 7)?,
            granted_at: row.try_get(first + 8)?,
            expires_at: row.try_get(first + 9)?,
        },
        revoked_at: row.try_get(first + 10)?,
        revoked_by: row.try_get(first + 11)?,
        revoke_reason: row.try_get(first + 12)?,
    }
    .decode()
    .map(Some)
}

/// Columns: host, created_at, expires_at.
pub(super) fn token_from(hash: &[u8; 32], row: &Row) -> Result<EnrollToken, StoreError> {
    TokenRow {
        host: row.try_get(0)?,
        created_at: row.try_get(1)?,
        expires_at: row.try_get(2)?,
    }
    .decode(hash)
}
