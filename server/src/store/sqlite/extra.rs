//! The SQLite side of grants, quorum votes, enrollment tokens and audit reading
//! (migration 3). Like the request operations, these run on the store's database thread
//! inside a batch transaction; grants and votes append their audit record in the same
//! job.

use std::time::SystemTime;

use belay_proto::domain::{HostName, Identity, Name, Reason, RequestId};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::super::columns::{from_nanos, nanos, scope_from, scope_parts, verdict_from};
use super::super::{
    EnrollOutcome, EnrollToken, Enrollment, Grant, GrantKey, StoreError, Vote, Voted,
};
use crate::audit;

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

fn damaged(table: &str, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("a stored row of {table} is damaged: {problem}").into())
}

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
         ORDER BY granted_at DESC",
    )?;
    let rows = statement.query_map(
        params![
            key.host.as_str(),
            key.action,
            key.agent.as_ref().map(Name::as_str),
            nanos(now)
        ],
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, i64>(6)?,
            ))
        },
    )?;
    let mut grants = Vec::new();
    for row in rows {
        let (verdict, reviewer, reason, from_request, scope, granted_at, expires_at) = row?;
        let bad = |what: &dyn std::fmt::Display| damaged("grants", what);
        let duration = (expires_at - granted_at) / 1_000_000_000;
        grants.push(Grant {
            key: key.clone(),
            verdict: verdict_from(&verdict).ok_or_else(|| bad(&verdict))?,
            reviewer: Identity::new(reviewer).map_err(|err| bad(&err))?,
            reason: Reason::new(reason).map_err(|err| bad(&err))?,
            from_request: RequestId::new(from_request).map_err(|err| bad(&err))?,
            scope: scope_from(&scope, duration).ok_or_else(|| bad(&scope))?,
            granted_at: from_nanos(granted_at),
            expires_at: from_nanos(expires_at),
        });
    }
    Ok(grants)
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
    let rows = statement.query_map([id.as_str()], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, i64>(3)?,
            row.get::<_, i64>(4)?,
        ))
    })?;
    let mut votes = Vec::new();
    for row in rows {
        let (reviewer, reason, scope, secs, at) = row?;
        let bad = |what: &dyn std::fmt::Display| damaged("votes", what);
        votes.push(Vote {
            reviewer: Identity::new(reviewer).map_err(|err| bad(&err))?,
            reason: Reason::new(reason).map_err(|err| bad(&err))?,
            scope: scope_from(&scope, secs).ok_or_else(|| bad(&scope))?,
            at: from_nanos(at),
        });
    }
    Ok(votes)
}

pub(super) fn add_enroll_token(db: &Connection, token: &EnrollToken) -> Result<(), StoreError> {
    db.prepare_cached(
        "INSERT INTO enroll_tokens (hash, host, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        token.hash.as_slice(),
        token.host.as_ref().map(HostName::as_str),
        nanos(token.created_at),
        nanos(token.expires_at),
    ])?;
    Ok(())
}

/// The compare-and-set of an enrollment: uses up the token if it exists, is unused and
/// has not expired, whatever host it is presented for (for the wrong one it is spent).
/// Run in one job on the database thread with the audit record the caller appends, so
/// nothing comes between them.
pub(super) fn take_enroll_token(
    db: &Connection,
    enrollment: &Enrollment,
) -> Result<Option<EnrollToken>, StoreError> {
    let row = db
        .prepare_cached(
            "UPDATE enroll_tokens SET used_at = ?2 \
             WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2 \
             RETURNING host, created_at, expires_at",
        )?
        .query_row(
            params![enrollment.hash.as_slice(), nanos(enrollment.at)],
            |row| {
                Ok((
                    row.get::<_, Option<String>>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()?;
    row.map(|(host, created_at, expires_at)| {
        Ok(EnrollToken {
            hash: enrollment.hash,
            host: token_host(host)?,
            created_at: from_nanos(created_at),
            expires_at: from_nanos(expires_at),
        })
    })
    .transpose()
}

/// Migration 5: every host that ever enrolled, so that a token bound to no host cannot
/// enroll an existing one. Filled from the audit log's accepted enrollments, which
/// every enrollment before this migration left.
pub(super) const MIGRATION_ENROLLED_HOSTS: &str = "
CREATE TABLE enrolled_hosts (
    host TEXT PRIMARY KEY NOT NULL,
    first_enrolled_at INTEGER NOT NULL
) STRICT;
INSERT OR IGNORE INTO enrolled_hosts (host, first_enrolled_at)
    SELECT json_extract(body, '$.host'), MIN(at) FROM audit
    WHERE kind = 'enrollment' AND json_extract(body, '$.result') = 'enrolled'
        AND json_extract(body, '$.host') IS NOT NULL
    GROUP BY 1;
";

/// Records the host of `enrollment` as enrolled; false if it was already.
pub(super) fn claim_host(db: &Connection, enrollment: &Enrollment) -> Result<bool, StoreError> {
    let inserted = db
        .prepare_cached(
            "INSERT INTO enrolled_hosts (host, first_enrolled_at) VALUES (?1, ?2)              ON CONFLICT (host) DO NOTHING",
        )?
        .execute(params![enrollment.host.as_str(), nanos(enrollment.at)])?;
    Ok(inserted == 1)
}

/// Why [`take_enroll_token`] took nothing: a read that changes nothing.
pub(super) fn enroll_refusal(
    db: &Connection,
    enrollment: &Enrollment,
) -> Result<EnrollOutcome, StoreError> {
    let stored = db
        .prepare_cached(
            "SELECT used_at IS NOT NULL, expires_at FROM enroll_tokens WHERE hash = ?1",
        )?
        .query_row(params![enrollment.hash.as_slice()], |row| {
            Ok((row.get::<_, bool>(0)?, row.get::<_, i64>(1)?))
        })
        .optional()?;
    Ok(EnrollOutcome::refused(
        stored.map(|(used, expires_at)| (used, from_nanos(expires_at))),
        enrollment.at,
    ))
}

fn token_host(host: Option<String>) -> Result<Option<HostName>, StoreError> {
    host.map(HostName::new)
        .transpose()
        .map_err(|err| damaged("enroll_tokens", err))
}

pub(super) fn audit_records(
    db: &Connection,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<audit::Record>, StoreError> {
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement = db.prepare_cached(
        "SELECT seq, at, kind, request_id, body, prev_hash, hash FROM audit \
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let records = statement
        .query_map(params![after, limit], |row| {
            Ok(audit::Record {
                seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                at: row.get(1)?,
                kind: row.get(2)?,
                request_id: row.get(3)?,
                body: row.get(4)?,
                prev_hash: row.get(5)?,
                hash: row.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(records)
}
