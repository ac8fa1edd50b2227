//! The SQLite side of the chat outbox (migration 8) and of the inbound requests
//! already accepted (migration 9).

use rusqlite::{Connection, params};

use belay_proto::domain::RequestId;

use super::super::StoreError;
use super::super::chat_outbox::OutboxRow;
use super::super::columns::request_id;
use crate::epoch::{from_nanos, nanos};

pub(super) const MIGRATION: &str = "
CREATE TABLE chat_outbox (
    request_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    target TEXT NOT NULL,
    message TEXT,
    shown_state TEXT,
    shown_approvals INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt INTEGER NOT NULL,
    gave_up INTEGER NOT NULL,
    PRIMARY KEY (request_id, platform)
) STRICT;
CREATE TABLE chat_leases (
    platform TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    until INTEGER NOT NULL
) STRICT;
";

/// Inbound chat requests (Slack's signed payloads) already accepted, shared by the
/// replicas so that a payload replayed to another one is refused too.
pub(super) const MIGRATION_SEEN: &str = "
CREATE TABLE chat_seen (
    platform TEXT NOT NULL,
    key TEXT NOT NULL,
    until INTEGER NOT NULL,
    PRIMARY KEY (platform, key)
) STRICT;
CREATE INDEX chat_seen_by_until ON chat_seen (until);
";

/// Remembers `key` until `until`; whether it was new (or only remembered before `now`).
pub(super) fn accept_once(
    db: &Connection,
    platform: &str,
    key: &str,
    now: std::time::SystemTime,
    until: std::time::SystemTime,
) -> Result<bool, StoreError> {
    db.prepare_cached("DELETE FROM chat_seen WHERE until < ?1")?
        .execute([nanos(now)])?;
    let inserted = db
        .prepare_cached(
            "INSERT INTO chat_seen (platform, key, until) VALUES (?1, ?2, ?3) \
             ON CONFLICT (platform, key) DO NOTHING",
        )?
        .execute(params![platform, key, nanos(until)])?;
    Ok(inserted == 1)
}

/// Takes or renews the lease; whether `holder` holds it.
pub(super) fn lease(
    db: &Connection,
    platform: &str,
    holder: &str,
    now: std::time::SystemTime,
    until: std::time::SystemTime,
) -> Result<bool, StoreError> {
    let changed = db
        .prepare_cached(
            "INSERT INTO chat_leases (platform, holder, until) VALUES (?1, ?2, ?3) \
             ON CONFLICT (platform) DO UPDATE SET holder = excluded.holder, \
             until = excluded.until \
             WHERE chat_leases.holder = excluded.holder OR chat_leases.until < ?4",
        )?
        .execute(params![platform, holder, nanos(until), nanos(now)])?;
    Ok(changed == 1)
}

pub(super) fn put(db: &Connection, row: &OutboxRow) -> Result<(), StoreError> {
    db.prepare_cached(
        "INSERT INTO chat_outbox (request_id, platform, target, message, shown_state, \
         shown_approvals, attempts, next_attempt, gave_up) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (request_id, platform) DO UPDATE SET target = excluded.target, \
         message = excluded.message, shown_state = excluded.shown_state, \
         shown_approvals = excluded.shown_approvals, attempts = excluded.attempts, \
         next_attempt = excluded.next_attempt, gave_up = excluded.gave_up",
    )?
    .execute(params![
        row.request_id.as_str(),
        row.platform,
        row.target,
        row.message,
        row.shown_state,
        row.shown_approvals,
        row.attempts,
        nanos(row.next_attempt),
        row.gave_up,
    ])?;
    Ok(())
}

pub(super) fn remove(db: &Connection, id: &RequestId, platform: &str) -> Result<(), StoreError> {
    db.prepare_cached("DELETE FROM chat_outbox WHERE request_id = ?1 AND platform = ?2")?
        .execute(params![id.as_str(), platform])?;
    Ok(())
}

pub(super) fn rows(db: &Connection, platform: &str) -> Result<Vec<OutboxRow>, StoreError> {
    let mut statement = db.prepare_cached(
        "SELECT request_id, target, message, shown_state, shown_approvals, attempts, \
         next_attempt, gave_up FROM chat_outbox WHERE platform = ?1 ORDER BY request_id",
    )?;
    let rows = statement.query_map([platform], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, Option<String>>(2)?,
            row.get::<_, Option<String>>(3)?,
            row.get::<_, u32>(4)?,
            row.get::<_, u32>(5)?,
            row.get::<_, i64>(6)?,
            row.get::<_, bool>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, target, message, shown_state, shown_approvals, attempts, next, gave_up) = row?;
        out.push(OutboxRow {
            request_id: request_id(id)?,
            platform: platform.to_owned(),
            target,
            message,
            shown_state,
            shown_approvals,
            attempts,
            next_attempt: from_nanos(next),
            gave_up,
        });
    }
    Ok(out)
}
