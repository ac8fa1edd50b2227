//! The SQLite side of the fleet policy (migration 4): one row per pushed version, the
//! newest being the one in force. Pushes run on the database thread like every audited
//! change, so numbering and audit record are one step.

use rusqlite::{Connection, OptionalExtension as _, params};

use super::super::columns::nanos;
use super::super::policy;
use super::super::{NewPolicy, StoreError, StoredPolicy};

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
    Ok(stored)
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
