//! The audit log in the SQLite database (tables `audit` and `audit_checkpoints`, created
//! by migration 2 of the store). Appends run on the store's database thread, inside the
//! transaction of the state change they record; `crate::audit` says what the records
//! hold, and `belay_audit` how they chain and how a log is verified.

use rusqlite::{Connection, OptionalExtension as _, params};

use super::super::StoreError;
use crate::audit::{AuditSigner, Event, GENESIS, Record, SELECT_RECORDS};

/// Migration 2 of the store: the audit tables. Triggers refuse UPDATE and DELETE, so that
/// no code path (or operator mistake) edits the log; tampering with the file itself is
/// what [`crate::audit::verify`] is for.
pub(crate) const MIGRATION: &str = "
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY NOT NULL CHECK (seq > 0),
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    request_id TEXT NOT NULL,
    body TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
) STRICT;
CREATE INDEX audit_by_request ON audit (request_id, seq);
CREATE TABLE audit_checkpoints (
    seq INTEGER PRIMARY KEY NOT NULL,
    hash BLOB NOT NULL,
    signature BLOB NOT NULL,
    key_id TEXT NOT NULL
) STRICT;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

fn seq_to_sql(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Backend("the audit log is full".into()))
}

/// The last record's seq and hash, `(0, GENESIS)` for an empty log.
fn head(db: &Connection) -> Result<(u64, Vec<u8>), StoreError> {
    let head = db
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
        })
        .optional()?;
    Ok(match head {
        Some((seq, hash)) => (
            u64::try_from(seq)
                .map_err(|_| StoreError::Backend(format!("audit record {seq}").into()))?,
            hash,
        ),
        None => (0, GENESIS.to_vec()),
    })
}

/// Appends `event` to the chain, and a checkpoint if one is due. Call it inside the
/// transaction of the change it records.
pub(crate) fn append(
    db: &Connection,
    signer: &AuditSigner,
    event: Event,
) -> Result<(), StoreError> {
    let (seq, hash) = head(db)?;
    let record = Record::chained(seq, &hash, event);
    db.prepare_cached(
        "INSERT INTO audit (seq, at, kind, request_id, body, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        seq_to_sql(record.seq)?,
        record.at,
        record.kind,
        record.request_id,
        record.body,
        record.prev_hash,
        record.hash,
    ])?;
    if signer.due(record.seq) {
        insert_checkpoint(db, signer, record.seq, &record.hash)?;
    }
    Ok(())
}

fn insert_checkpoint(
    db: &Connection,
    signer: &AuditSigner,
    seq: u64,
    hash: &[u8],
) -> Result<(), StoreError> {
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| StoreError::Backend(format!("audit record {seq} has a bad hash").into()))?;
    let checkpoint = signer.checkpoint(seq, hash);
    db.prepare_cached(
        "INSERT INTO audit_checkpoints (seq, hash, signature, key_id) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        seq_to_sql(seq)?,
        checkpoint.hash,
        checkpoint.signature,
        checkpoint.key_id,
    ])?;
    Ok(())
}

/// Signs the head of the chain unless it is signed already (at clean shutdown); returns
/// the seq signed.
pub(crate) fn checkpoint_head(
    db: &Connection,
    signer: &AuditSigner,
) -> Result<Option<u64>, StoreError> {
    let (seq, hash) = head(db)?;
    let signed: i64 = db.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints",
        [],
        |row| row.get(0),
    )?;
    if seq == 0 || u64::try_from(signed).is_ok_and(|signed| signed >= seq) {
        return Ok(None);
    }
    insert_checkpoint(db, signer, seq, &hash)?;
    Ok(Some(seq))
}

/// Records with `seq > after_seq`, in order, at most `limit`.
pub(super) fn records(
    db: &Connection,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<Record>, StoreError> {
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement = db.prepare_cached(&format!(
        "{} WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        SELECT_RECORDS
    ))?;
    let records = statement
        .query_map(params![after, limit], |row| {
            Ok(Record {
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
