//! The PostgreSQL side of the fleet policy (migration 4). A push is rare, so it runs in
//! a transaction of its own on a connection of its own rather than through the batched
//! writer: it takes the audit chain's advisory lock (which also serialises numbering
//! across replicas), inserts the next version and its audit record, and notifies the
//! other replicas, all before one COMMIT.

use tokio_postgres::Client;

use super::super::columns::nanos;
use super::super::{NewPolicy, PolicyVote, StoreError, StoredPolicy};
use super::audit_log;
use super::listen;
use crate::audit::AuditSigner;

pub(super) const MIGRATION: &str = r#"
CREATE TABLE policies (
    version BIGINT PRIMARY KEY CHECK (version > 0),
    text TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    pushed_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    pushed_at BIGINT NOT NULL
);
"#;

pub(super) const CURRENT_SQL: &str = "SELECT version, text, sha256, pushed_by, reason, \
     pushed_at FROM policies ORDER BY version DESC LIMIT 1";

pub(super) async fn push(
    client: &Client,
    signer: &AuditSigner,
    origin: &str,
    new: NewPolicy,
) -> Result<StoredPolicy, StoreError> {
    client.batch_execute("BEGIN").await?;
    let result = push_in_transaction(client, signer, origin, new).await;
    match &result {
        Ok(_) => client.batch_execute("COMMIT").await?,
        Err(_) => client.batch_execute("ROLLBACK").await?,
    }
    result
}

async fn push_in_transaction(
    client: &Client,
    signer: &AuditSigner,
    origin: &str,
    new: NewPolicy,
) -> Result<StoredPolicy, StoreError> {
    client
        .execute(audit_log::LOCK_CHAIN, &[&audit_log::CHAIN_LOCK])
        .await?;
    let version: i64 = client
        .query_one("SELECT COALESCE(MAX(version), 0) + 1 FROM policies", &[])
        .await?
        .try_get(0)?;
    let stored = StoredPolicy::numbered(u64::try_from(version).unwrap_or(1), new);
    client
        .execute(
            "INSERT INTO policies (version, text, sha256, pushed_by, reason, pushed_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &version,
                &stored.text.as_str(),
                &stored.sha256,
                &stored.pushed_by.as_str(),
                &stored.reason.as_str(),
                &nanos(stored.pushed_at),
            ],
        )
        .await?;
    audit_log::append_one(client, signer, super::super::policy::audit_event(&stored)).await?;
    client
        .execute(
            "DELETE FROM policy_votes WHERE sha256 = $1",
            &[&stored.sha256],
        )
        .await?;
    client
        .execute(
            "SELECT pg_notify($1, $2)",
            &[
                &listen::CHANNEL,
                &listen::policy_payload(origin, stored.version),
            ],
        )
        .await?;
    Ok(stored)
}

pub(super) fn from_row(row: &tokio_postgres::Row) -> Result<StoredPolicy, StoreError> {
    super::super::policy::decode(
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get::<_, String>(2)?.as_str(),
        row.try_get(3)?,
        row.try_get(4)?,
        row.try_get(5)?,
    )
}

/// Migration 6: admins' votes for policy texts while pushes need a quorum.
pub(super) const MIGRATION_VOTES: &str = r#"
CREATE TABLE policy_votes (
    sha256 TEXT COLLATE "C" NOT NULL,
    admin TEXT COLLATE "C" NOT NULL,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (sha256, admin)
);
"#;

/// Counts `vote` with its audit record in a transaction of its own (on the caller's own
/// connection), under the audit chain's lock like a push; the votes at or after `since`.
pub(super) async fn vote(
    client: &Client,
    signer: &AuditSigner,
    vote: &PolicyVote,
    since: std::time::SystemTime,
) -> Result<Vec<PolicyVote>, StoreError> {
    client.batch_execute("BEGIN").await?;
    let result = vote_in_transaction(client, signer, vote, since).await;
    match &result {
        Ok(_) => client.batch_execute("COMMIT").await?,
        Err(_) => client.batch_execute("ROLLBACK").await?,
    }
    result
}

async fn vote_in_transaction(
    client: &Client,
    signer: &AuditSigner,
    vote: &PolicyVote,
    since: std::time::SystemTime,
) -> Result<Vec<PolicyVote>, StoreError> {
    client
        .execute(audit_log::LOCK_CHAIN, &[&audit_log::CHAIN_LOCK])
        .await?;
    client
        .execute(
            "INSERT INTO policy_votes (sha256, admin, reason, at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sha256, admin) DO UPDATE SET reason = excluded.reason, at = excluded.at",
            &[
                &vote.sha256,
                &vote.admin.as_str(),
                &vote.reason.as_str(),
                &nanos(vote.at),
            ],
        )
        .await?;
    audit_log::append_one(client, signer, super::super::policy::vote_audit_event(vote)).await?;
    let rows = client
        .query(
            "SELECT sha256, admin, reason, at FROM policy_votes \
             WHERE sha256 = $1 AND at >= $2 ORDER BY at, admin",
            &[&vote.sha256, &nanos(since)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            super::super::policy::decode_vote(
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            )
        })
        .collect()
}
