//! The SQLite side of the fleet policy (migration 4): one row per pushed version, the
//! newest being the one in force. Pushes run on the database thread like every audited
//! change, so numbering and audit record are one step.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension as _, params};

use super::super::columns::nanos;
use super::super::policy;
use super::super::{NewPolicy, PolicyVote, StoreError, StoredPolicy};

pub(super) const MIGRATION: &str = "
CREATE TABLE policies (
    version INTEGER PRIMARY KEY NOT NULL CHECK (version > 0),
    text TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    pushed_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    pushed_at INTEGER NOT NULL
) STRICT;
";

/// Inserts the next version; the caller appends the audit record in the same job.
pub(super) fn push(db: &Connection, new: NewPolicy) -> Result<StoredPolicy, StoreError> {
    let version: i64 = db
        .prepare_cached("SELECT COALESCE(MAX(version), 0) + 1 FROM policies")?
        .query_row([], |row| row.get(0))?;
    let stored = StoredPolicy::numbered(u64::try_from(version).unwrap_or(1), new);
    db.prepare_cached(
        "INSERT INTO policies (version, text, sha256, pushed_by, reason, pushed_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        version,
        stored.text.as_str(),
        stored.sha256,
        stored.pushed_by.as_str(),
        stored.reason.as_str(),
        nanos(stored.pushed_at),
    ])?;
    db.prepare_cached("DELETE FROM policy_votes WHERE sha256 = ?1")?
        .execute([&stored.sha256])?;
    Ok(stored)
}

/// Migration 6: admins' votes for policy texts while pushes need a quorum.
pub(super) const MIGRATION_VOTES: &str = "
CREATE TABLE policy_votes (
    sha256 TEXT NOT NULL,
    admin TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (sha256, admin)
) STRICT;
";

/// Counts `vote`, replacing an earlier one of the same admin for the same text; the
/// caller appends the audit record in the same job. The votes at or after `since`.
pub(super) fn add_vote(
    db: &Connection,
    vote: &PolicyVote,
    since: SystemTime,
) -> Result<Vec<PolicyVote>, StoreError> {
    db.prepare_cached(
        "INSERT INTO policy_votes (sha256, admin, reason, at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (sha256, admin) DO UPDATE SET reason = excluded.reason, at = excluded.at",
    )?
    .execute(params![
        vote.sha256,
        vote.admin.as_str(),
        vote.reason.as_str(),
        nanos(vote.at),
    ])?;
    let mut statement = db.prepare_cached(
        "SELECT sha256, admin, reason, at FROM policy_votes \
         WHERE sha256 = ?1 AND at >= ?2 ORDER BY at, admin",
    )?;
    let rows = statement.query_map(params![vote.sha256, nanos(since)], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, i64>(3)?,
        ))
    })?;
    let mut votes = Vec::new();
    for row in rows {
        let (sha256, admin, reason, at) = row?;
        votes.push(policy::decode_vote(sha256, admin, reason, at)?);
    }
    Ok(votes)
}

pub(super) fn current(db: &Connection) -> Result<Option<StoredPolicy>, StoreError> {
    let row = db
        .prepare_cached(
            "SELECT version, text, sha256, pushed_by, reason, pushed_at FROM policies \
             ORDER BY version DESC LIMIT 1",
        )?
        .query_row([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, i64>(5)?,
            ))
        })
        .optional()?;
    row.map(|(version, text, sha256, pushed_by, reason, pushed_at)| {
        policy::decode(version, text, &sha256, pushed_by, reason, pushed_at)
    })
    .transpose()
}
