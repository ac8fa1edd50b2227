//! The SQLite side of scoped grants and quorum votes. Like the request operations, these
//! run on the store's database thread inside a batch transaction (or on a reader); the
//! store appends their audit records in the same job.

use std::time::SystemTime;

use belay_proto::domain::{Name, RequestId};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::super::columns::{GRANT_COLUMNS, GrantRow, StoredGrantRow, VoteRow, nanos, scope_parts};
use super::super::{Grant, GrantKey, Revocation, Revoked, StoreError, Vote, Voted};

/// Migration 3: grants, votes, and the enrollment tokens (see `enrollment`), which
/// shipped in the same migration and so stay in one text.
pub(super) const MIGRATION: &str = "
CREATE TABLE grants (
    host TEXT NOT NULL,
    agent TEXT,
    action TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('allow', 'deny')),
    reviewer TEXT NOT NULL,
    reason TEXT NOT NULL,
    from_request TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('agent', 'host')),
    granted_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX grants_by_key ON grants (host, action, expires_at);
CREATE TABLE votes (
    request_id TEXT NOT NULL REFERENCES requests (id),
    reviewer TEXT NOT NULL,
    reason TEXT NOT NULL,
    scope TEXT NOT NULL,
    scope_secs INTEGER NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (request_id, reviewer)
) STRICT;
CREATE TABLE enroll_tokens (
    hash BLOB PRIMARY KEY NOT NULL,
    host TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
) STRICT;
";

pub(super) fn add_grant(db: &Connection, grant: &Grant) -> Result<(), StoreError> {
    let (scope, _) = scope_parts(grant.scope);
    db.prepare_cached(
        "INSERT INTO grants (host, agent, action, verdict, reviewer, reason, from_request, \
         scope, granted_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        grant.key.host.as_str(),
        grant.key.agent.as_ref().map(Name::as_str),
        grant.key.action,
        grant.verdict.as_str(),
        grant.reviewer.as_str(),
        grant.reason.as_str(),
        grant.from_request.as_str(),
        scope,
        nanos(grant.granted_at),
        nanos(grant.expires_at),
    ])?;
    Ok(())
}

pub(super) fn find_grants(
    db: &Connection,
    key: &GrantKey,
    now: SystemTime,
) -> Result<Vec<Grant>, StoreError> {
    let mut statement = db.prepare_cached(
        "SELECT verdict, reviewer, reason, from_request, scope, granted_at, expires_at \
         FROM grants WHERE host = ?1 AND action = ?2 AND agent IS ?3 AND expires_at > ?4 \
         AND revoked_at IS NULL ORDER BY granted_at DESC",
    )?;
    let rows = statement.query_map(
        params![
            key.host.as_str(),
            key.action,
            key.agent.as_ref().map(Name::as_str),
            nanos(now)
        ],
        |row| {
            Ok(GrantRow {
                verdict: row.get(0)?,
                reviewer: row.get(1)?,
                reason: row.get(2)?,
                from_request: row.get(3)?,
                scope: row.get(4)?,
                granted_at: row.get(5)?,
                expires_at: row.get(6)?,
            })
        },
    )?;
    rows.map(|row| row?.decode(key)).collect()
}

pub(super) fn grants_in_force(
    db: &Connection,
    now: SystemTime,
    limit: usize,
) -> Result<Vec<Grant>, StoreError> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {GRANT_COLUMNS} FROM grants WHERE expires_at > ?1 AND revoked_at IS NULL \
         ORDER BY granted_at DESC, from_request DESC LIMIT ?2"
    ))?;
    let rows = statement.query_map(
        params![nanos(now), i64::try_from(limit).unwrap_or(i64::MAX)],
        read_stored_grant,
    )?;
    rows.map(|row| Ok(row?.decode()?.0)).collect()
}

/// Revokes the grant of request `id` if it is in force at `revocation.at`.
pub(super) fn revoke_grant(
    db: &Connection,
    id: &RequestId,
    revocation: &Revocation,
) -> Result<Revoked, StoreError> {
    let stored = db
        .prepare_cached(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE from_request = ?1"
        ))?
        .query_row([id.as_str()], read_stored_grant)
        .optional()?
        .map(StoredGrantRow::decode)
        .transpose()?;
    let grant = match Revoked::would_be(stored, revocation.at) {
        Revoked::Now(grant) => grant,
        answer => return Ok(answer),
    };
    let changed = db
        .prepare_cached(
            "UPDATE grants SET revoked_at = ?2, revoked_by = ?3, revoke_reason = ?4 \
             WHERE from_request = ?1 AND revoked_at IS NULL",
        )?
        .execute(params![
            id.as_str(),
            nanos(revocation.at),
            revocation.reviewer.as_str(),
            revocation.reason.as_str(),
        ])?;
    if changed != 1 {
        return Err(StoreError::Backend(
            format!("the grant of request {id} changed while being revoked").into(),
        ));
    }
    Ok(Revoked::Now(grant))
}

/// Reads the columns of [`GRANT_COLUMNS`], in its order.
fn read_stored_grant(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredGrantRow> {
    Ok(StoredGrantRow {
        host: row.get(0)?,
        agent: row.get(1)?,
        action: row.get(2)?,
        grant: GrantRow {
            verdict: row.get(3)?,
            reviewer: row.get(4)?,
            reason: row.get(5)?,
            from_request: row.get(6)?,
            scope: row.get(7)?,
            granted_at: row.get(8)?,
            expires_at: row.get(9)?,
        },
        revoked_at: row.get(10)?,
        revoked_by: row.get(11)?,
        revoke_reason: row.get(12)?,
    })
}

pub(super) fn add_vote(db: &Connection, id: &RequestId, vote: &Vote) -> Result<Voted, StoreError> {
    let (scope, secs) = scope_parts(vote.scope);
    let added = db
        .prepare_cached(
            "INSERT INTO votes (request_id, reviewer, reason, scope, scope_secs, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (request_id, reviewer) DO NOTHING",
        )?
        .execute(params![
            id.as_str(),
            vote.reviewer.as_str(),
            vote.reason.as_str(),
            scope,
            secs,
            nanos(vote.at),
        ])?;
    let votes = votes(db, id)?;
    Ok(if added == 1 {
        Voted::Added(votes)
    } else {
        Voted::AlreadyVoted(votes)
    })
}

pub(super) fn votes(db: &Connection, id: &RequestId) -> Result<Vec<Vote>, StoreError> {
    let mut statement = db.prepare_cached(
        "SELECT reviewer, reason, scope, scope_secs, at FROM votes \
         WHERE request_id = ?1 ORDER BY at, reviewer",
    )?;
    statement
        .query_map([id.as_str()], |row| {
            Ok(VoteRow {
                reviewer: row.get(0)?,
                reason: row.get(1)?,
                scope: row.get(2)?,
                scope_secs: row.get(3)?,
                at: row.get(4)?,
            })
        })?
        .map(|row| row?.decode())
        .collect()
}
