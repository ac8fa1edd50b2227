//! Verifying the audit log of a PostgreSQL database (`belay-server audit verify` with a
//! URL); the store appends to it (see `store::postgres`).

use ed25519_dalek::VerifyingKey;
use tokio_postgres::NoTls;

use super::{AuditError, Checkpoint, Record, Report, SELECT_RECORDS, Verifier};
use crate::database_url::redact_url;

/// Verifies the log of the PostgreSQL database at `url` (read only, in one snapshot), as
/// [`super::verify`] does for SQLite.
pub async fn verify(url: &str, public_key: &VerifyingKey) -> Result<Report, AuditError> {
    let fail = |problem: String| AuditError::Read {
        path: redact_url(url),
        problem,
    };
    let sql = |err: tokio_postgres::Error| fail(err.to_string());
    let config: tokio_postgres::Config = url.parse().map_err(sql)?;
    let (client, connection) = config.connect(NoTls).await.map_err(sql)?;
    let driver = tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "verify: connection ended");
        }
    });
    let report = async {
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(sql)?;
        let has_log: bool = client
            .query_one("SELECT to_regclass('audit') IS NOT NULL", &[])
            .await
            .map_err(sql)?
            .get(0);
        if !has_log {
            return Err(fail(
                "it has no audit log (not a belay-server database, or one older than the log)"
                    .into(),
            ));
        }
        let seq = |value: i64| u64::try_from(value).unwrap_or(0);
        let checkpoints = client
            .query(
                "SELECT seq, hash, signature, key_id FROM audit_checkpoints ORDER BY seq",
                &[],
            )
            .await
            .map_err(sql)?
            .iter()
            .map(|row| {
                Ok(Checkpoint {
                    seq: seq(row.try_get(0)?),
                    hash: row.try_get(1)?,
                    signature: row.try_get(2)?,
                    key_id: row.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(sql)?;
        let mut verifier = Verifier::new(public_key, checkpoints);
        // Pages by seq keep memory bounded however long the log is; the snapshot keeps
        // them consistent with each other and with the checkpoints.
        let mut after = i64::MIN;
        'pages: loop {
            let rows = client
                .query(
                    &format!("{SELECT_RECORDS} WHERE seq > $1 ORDER BY seq LIMIT 10000"),
                    &[&after],
                )
                .await
                .map_err(sql)?;
            let Some(last) = rows.last() else { break };
            after = last.try_get(0).map_err(sql)?;
            for row in &rows {
                let record = Record {
                    seq: seq(row.try_get(0).map_err(sql)?),
                    at: row.try_get(1).map_err(sql)?,
                    kind: row.try_get(2).map_err(sql)?,
                    request_id: row.try_get(3).map_err(sql)?,
                    body: row.try_get(4).map_err(sql)?,
                    prev_hash: row.try_get(5).map_err(sql)?,
                    hash: row.try_get(6).map_err(sql)?,
                };
                if !verifier.push(&record) {
                    break 'pages;
                }
            }
        }
        Ok(verifier.finish())
    }
    .await;
    drop(client);
    let _ = driver.await;
    report
}
