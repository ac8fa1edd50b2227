//! The PostgreSQL side of the chat outbox (migration 8) and of the inbound requests
//! already accepted (migration 9). Plain statements on the pool:
//! a row is written by the one worker of its platform in this process.

use belay_proto::domain::RequestId;
use tokio_postgres::Row;

use std::time::SystemTime;

use super::super::chat_outbox::OutboxRow;
use super::super::columns::{from_nanos, nanos, request_id};
use super::super::{ChatOutboxStore, StoreError};
use super::PostgresStore;

pub(super) const MIGRATION: &str = r#"
CREATE TABLE chat_outbox (
    request_id TEXT COLLATE "C" NOT NULL,
    platform TEXT NOT NULL,
    target TEXT NOT NULL,
    message TEXT,
    shown_state TEXT,
    shown_approvals BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt BIGINT NOT NULL,
    gave_up BOOLEAN NOT NULL,
    PRIMARY KEY (request_id, platform)
);
CREATE TABLE chat_leases (
    platform TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until BIGINT NOT NULL
);
"#;

/// Inbound chat requests (Slack's signed payloads) already accepted, shared by the
/// replicas so that a payload replayed to another one is refused too.
pub(super) const MIGRATION_SEEN: &str = r#"
CREATE TABLE chat_seen (
    platform TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    until BIGINT NOT NULL,
    PRIMARY KEY (platform, key)
);
CREATE INDEX chat_seen_by_until ON chat_seen (until);
"#;

const FORGET_SEEN_SQL: &str = "DELETE FROM chat_seen WHERE until < $1";

/// One statement: of two replicas given the same key, one inserts it. A row already
/// forgotten at `now` (not yet deleted) is taken over, not counted as a replay.
const ACCEPT_SQL: &str = "INSERT INTO chat_seen (platform, key, until) VALUES ($1, $2, $3) \
     ON CONFLICT (platform, key) DO UPDATE SET until = excluded.until \
     WHERE chat_seen.until < $4 RETURNING 1";

/// Takes or renews the lease: one statement, so two replicas cannot both get it.
const LEASE_SQL: &str = "INSERT INTO chat_leases (platform, holder, until) \
     VALUES ($1, $2, $3) ON CONFLICT (platform) DO UPDATE SET holder = excluded.holder, \
     until = excluded.until \
     WHERE chat_leases.holder = excluded.holder OR chat_leases.until < $4 \
     RETURNING holder";

const PUT_SQL: &str = "INSERT INTO chat_outbox (request_id, platform, target, \
     message, shown_state, shown_approvals, attempts, next_attempt, gave_up) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (request_id, platform) DO UPDATE SET target = excluded.target, \
     message = excluded.message, shown_state = excluded.shown_state, \
     shown_approvals = excluded.shown_approvals, attempts = excluded.attempts, \
     next_attempt = excluded.next_attempt, gave_up = excluded.gave_up";

const REMOVE_SQL: &str = "DELETE FROM chat_outbox WHERE request_id = $1 AND platform = $2";

const ROWS_SQL: &str = "SELECT request_id, target, message, shown_state, \
     shown_approvals, attempts, next_attempt, gave_up FROM chat_outbox \
     WHERE platform = $1 ORDER BY request_id";

/// The parameters of [`PUT_SQL`].
fn put_params(row: &OutboxRow) -> (String, i64, i64, i64) {
    (
        row.request_id.as_str().to_owned(),
        i64::from(row.shown_approvals),
        i64::from(row.attempts),
        nanos(row.next_attempt),
    )
}

fn from_row(platform: &str, row: &Row) -> Result<OutboxRow, StoreError> {
    let count = |value: i64| u32::try_from(value).unwrap_or(u32::MAX);
    Ok(OutboxRow {
        request_id: request_id(row.try_get(0)?)?,
        platform: platform.to_owned(),
        target: row.try_get(1)?,
        message: row.try_get(2)?,
        shown_state: row.try_get(3)?,
        shown_approvals: count(row.try_get(4)?),
        attempts: count(row.try_get(5)?),
        next_attempt: from_nanos(row.try_get(6)?),
        gave_up: row.try_get(7)?,
    })
}

fn id_param(id: &RequestId) -> &str {
    id.as_str()
}

impl ChatOutboxStore for PostgresStore {
    async fn put_outbox_row(&self, row: OutboxRow) -> Result<(), StoreError> {
        let (id, approvals, attempts, next) = put_params(&row);
        self.pool
            .get()
            .await?
            .execute(
                PUT_SQL,
                &[
                    &id,
                    &row.platform,
                    &row.target,
                    &row.message,
                    &row.shown_state,
                    &approvals,
                    &attempts,
                    &next,
                    &row.gave_up,
                ],
            )
            .await?;
        Ok(())
    }

    async fn remove_outbox_row(&self, id: &RequestId, platform: &str) -> Result<(), StoreError> {
        self.pool
            .get()
            .await?
            .execute(REMOVE_SQL, &[&id_param(id), &platform])
            .await?;
        Ok(())
    }

    async fn outbox_rows(&self, platform: &str) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = self.pool.get().await?.query(ROWS_SQL, &[&platform]).await?;
        rows.iter().map(|row| from_row(platform, row)).collect()
    }

    async fn lease_outbox(
        &self,
        platform: &str,
        holder: &str,
        now: SystemTime,
        until: SystemTime,
    ) -> Result<bool, StoreError> {
        let (now, until) = (nanos(now), nanos(until));
        let taken = self
            .pool
            .get()
            .await?
            .query_opt(LEASE_SQL, &[&platform, &holder, &until, &now])
            .await?;
        Ok(taken.is_some())
    }

    async fn accept_inbound_once(
        &self,
        platform: &str,
        key: &str,
        now: SystemTime,
        until: SystemTime,
    ) -> Result<bool, StoreError> {
        let (now, until) = (nanos(now), nanos(until));
        let client = self.pool.get().await?;
        client.execute(FORGET_SEEN_SQL, &[&now]).await?;
        let accepted = client
            .query_opt(ACCEPT_SQL, &[&platform, &key, &until, &now])
            .await?;
        Ok(accepted.is_some())
    }
}
