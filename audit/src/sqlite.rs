//! Reading the audit log of a belay-server SQLite database (tables `audit` and
//! `audit_checkpoints`), read-only: the server may keep running.

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use rusqlite::{Connection, OpenFlags};

use crate::{AuditError, Checkpoint, Record, Report, Verifier};

/// Verifies the log of the database at `path`, read-only.
pub(crate) fn verify(path: &Path, public_key: &VerifyingKey) -> Result<Report, AuditError> {
    let fail = |problem: String| AuditError::Read {
        path: path.display().to_string(),
        problem,
    };
    let sql = |err: rusqlite::Error| fail(err.to_string());
    if !path.exists() {
        return Err(fail("no such file".into()));
    }
    let db = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    let has_log: bool = db
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'audit')",
            [],
            |row| row.get(0),
        )
        .map_err(sql)?;
    if !has_log {
        return Err(fail(
            "it has no audit log (not a belay-server database, or one older than the log)".into(),
        ));
    }
    let seq = |value: i64| u64::try_from(value).unwrap_or(0);
    let checkpoints = db
        .prepare("SELECT seq, hash, signature, key_id FROM audit_checkpoints ORDER BY seq")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| {
                    Ok(Checkpoint {
                        seq: seq(row.get(0)?),
                        hash: row.get(1)?,
                        signature: row.get(2)?,
                        key_id: row.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql)?;
    let mut verifier = Verifier::new(public_key, checkpoints);
    let mut statement = db
        .prepare("SELECT seq, at, kind, request_id, body, prev_hash, hash FROM audit ORDER BY seq")
        .map_err(sql)?;
    let mut rows = statement.query([]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let record = Record {
            seq: seq(row.get(0).map_err(sql)?),
            at: row.get(1).map_err(sql)?,
            kind: row.get(2).map_err(sql)?,
            request_id: row.get(3).map_err(sql)?,
            body: row.get(4).map_err(sql)?,
            prev_hash: row.get(5).map_err(sql)?,
            hash: row.get(6).map_err(sql)?,
        };
        if !verifier.push(&record) {
            break;
        }
    }
    Ok(verifier.finish())
}
