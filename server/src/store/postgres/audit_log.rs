//! The audit log in a PostgreSQL database (tables `audit` and `audit_checkpoints`,
//! created by migration 2 of the PostgreSQL store): appends inside the store's
//! transactions, and pages of records. `crate::audit` says what the records hold,
//! `crate::audit::postgres::verify` checks such a database.
//!
//! Several server processes append to one chain. Every transaction that appends first
//! takes the transaction-scoped advisory lock [`CHAIN_LOCK`], then reads the head: the
//! lock serialises appenders across processes, and under READ COMMITTED the head is read
//! by a statement that starts after the lock is held, so it sees the previous holder's
//! committed records. The lock is released by COMMIT or ROLLBACK, never forgotten.

use tokio_postgres::Client;

use super::super::StoreError;
use crate::audit::{AuditSigner, Checkpoint, Event, GENESIS, Record, SELECT_RECORDS};

/// Key of the advisory lock that serialises appends to the chain ("belay" + 1).
pub(crate) const CHAIN_LOCK: i64 = 0x6265_6c61_7901;

/// Migration 2 of the PostgreSQL store: the audit tables. Triggers refuse UPDATE, DELETE
/// and TRUNCATE, so that no code path (or operator mistake) edits the log; a superuser
/// disabling them is what `crate::audit::postgres::verify` is for.
pub(crate) const MIGRATION: &str = r#"
CREATE TABLE audit (
    seq BIGINT PRIMARY KEY CHECK (seq > 0),
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    request_id TEXT COLLATE "C" NOT NULL,
    body TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL
);
CREATE INDEX audit_by_request ON audit (request_id, seq);
CREATE TABLE audit_checkpoints (
    seq BIGINT PRIMARY KEY,
    hash BYTEA NOT NULL,
    signature BYTEA NOT NULL,
    key_id TEXT NOT NULL
);
CREATE FUNCTION belay_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION belay_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION belay_audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION belay_audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION belay_audit_append_only();
"#;

/// Takes [`CHAIN_LOCK`] for the current transaction.
pub(crate) const LOCK_CHAIN: &str = "SELECT pg_advisory_xact_lock($1)";
/// The head of the chain; run it after [`LOCK_CHAIN`] in the same transaction.
pub(crate) const HEAD: &str = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1";
/// Appends records given as parallel arrays, one statement for a whole batch.
pub(crate) const INSERT_RECORDS: &str = "INSERT INTO audit \
     (seq, at, kind, request_id, body, prev_hash, hash) \
     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
     $6::bytea[], $7::bytea[])";
/// Stores checkpoints given as parallel arrays. A checkpoint of the same seq signed by
/// another replica (with the same key: the same signature) is already there.
pub(crate) const INSERT_CHECKPOINTS: &str = "INSERT INTO audit_checkpoints \
     (seq, hash, signature, key_id) \
     SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::text[]) \
     ON CONFLICT (seq) DO NOTHING";

fn seq_to_sql(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Backend("the audit log is full".into()))
}

fn seq_from_sql(seq: i64) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| StoreError::Backend(format!("audit record {seq}").into()))
}

/// Reads the head from the row of [`HEAD`] (`None`: empty log).
pub(crate) fn head_from(row: Option<&tokio_postgres::Row>) -> Result<(u64, Vec<u8>), StoreError> {
    match row {
        Some(row) => Ok((seq_from_sql(row.try_get(0)?)?, row.try_get(1)?)),
        None => Ok((0, GENESIS.to_vec())),
    }
}

/// Records and checkpoints of one transaction, chained from the head read under the
/// lock, written with two statements at its end.
#[derive(Debug, Default)]
pub(crate) struct Appends {
    head_seq: u64,
    head_hash: Vec<u8>,
    records: Vec<Record>,
    checkpoints: Vec<Checkpoint>,
}

impl Appends {
    pub fn new((head_seq, head_hash): (u64, Vec<u8>)) -> Self {
        Self {
            head_seq,
            head_hash,
            records: Vec::new(),
            checkpoints: Vec::new(),
        }
    }

    pub fn push(&mut self, signer: &AuditSigner, event: Event) -> Result<(), StoreError> {
        let record = Record::chained(self.head_seq, &self.head_hash, event);
        seq_to_sql(record.seq)?;
        self.head_seq = record.seq;
        self.head_hash.clone_from(&record.hash);
        if signer.due(record.seq) {
            self.checkpoints
                .push(sign(signer, record.seq, &record.hash)?);
        }
        self.records.push(record);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Parameters of [`INSERT_RECORDS`].
    pub fn record_columns(&self) -> RecordColumns {
        let mut columns = RecordColumns::default();
        for record in &self.records {
            columns.seq.push(seq_to_sql(record.seq).unwrap_or(i64::MAX));
            columns.at.push(record.at);
            columns.kind.push(record.kind.clone());
            columns.request_id.push(record.request_id.clone());
            columns.body.push(record.body.clone());
            columns.prev_hash.push(record.prev_hash.clone());
            columns.hash.push(record.hash.clone());
        }
        columns
    }

    /// Parameters of [`INSERT_CHECKPOINTS`], `None` if no checkpoint is due.
    pub fn checkpoint_columns(&self) -> Option<CheckpointColumns> {
        checkpoint_columns(&self.checkpoints)
    }
}

fn sign(signer: &AuditSigner, seq: u64, hash: &[u8]) -> Result<Checkpoint, StoreError> {
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| StoreError::Backend(format!("audit record {seq} has a bad hash").into()))?;
    Ok(signer.checkpoint(seq, hash))
}

#[derive(Debug, Default)]
pub(crate) struct RecordColumns {
    pub seq: Vec<i64>,
    pub at: Vec<i64>,
    pub kind: Vec<String>,
    pub request_id: Vec<String>,
    pub body: Vec<String>,
    pub prev_hash: Vec<Vec<u8>>,
    pub hash: Vec<Vec<u8>>,
}

#[derive(Debug, Default)]
pub(crate) struct CheckpointColumns {
    pub seq: Vec<i64>,
    pub hash: Vec<Vec<u8>>,
    pub signature: Vec<Vec<u8>>,
    pub key_id: Vec<String>,
}

fn checkpoint_columns(checkpoints: &[Checkpoint]) -> Option<CheckpointColumns> {
    if checkpoints.is_empty() {
        return None;
    }
    let mut columns = CheckpointColumns::default();
    for checkpoint in checkpoints {
        columns
            .seq
            .push(i64::try_from(checkpoint.seq).unwrap_or(i64::MAX));
        columns.hash.push(checkpoint.hash.clone());
        columns.signature.push(checkpoint.signature.clone());
        columns.key_id.push(checkpoint.key_id.clone());
    }
    Some(columns)
}

/// Appends one event, with its checkpoint if one is due, inside the caller's open
/// transaction: takes [`CHAIN_LOCK`] (again, if the caller holds it already: the lock
/// stacks), reads the head and writes. For the rare audited changes that do not go
/// through the store's batched writer (fleet policy pushes, enrollments).
pub(crate) async fn append_one(
    client: &Client,
    signer: &AuditSigner,
    event: Event,
) -> Result<(), StoreError> {
    client.execute(LOCK_CHAIN, &[&CHAIN_LOCK]).await?;
    let head = head_from(client.query_opt(HEAD, &[]).await?.as_ref())?;
    let mut appends = Appends::new(head);
    appends.push(signer, event)?;
    let records = appends.record_columns();
    client
        .execute(
            INSERT_RECORDS,
            &[
                &records.seq,
                &records.at,
                &records.kind,
                &records.request_id,
                &records.body,
                &records.prev_hash,
                &records.hash,
            ],
        )
        .await?;
    if let Some(columns) = appends.checkpoint_columns() {
        client
            .execute(
                INSERT_CHECKPOINTS,
                &[
                    &columns.seq,
                    &columns.hash,
                    &columns.signature,
                    &columns.key_id,
                ],
            )
            .await?;
    }
    Ok(())
}

/// Signs the head of the chain unless it is signed already (at clean shutdown), in a
/// transaction of its own; returns the seq signed.
pub(crate) async fn checkpoint_head(
    client: &Client,
    signer: &AuditSigner,
) -> Result<Option<u64>, StoreError> {
    client.batch_execute("BEGIN").await?;
    let signed = async {
        client.execute(LOCK_CHAIN, &[&CHAIN_LOCK]).await?;
        let (seq, hash) = head_from(client.query_opt(HEAD, &[]).await?.as_ref())?;
        let last: i64 = client
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints", &[])
            .await?
            .try_get(0)?;
        if seq == 0 || u64::try_from(last).is_ok_and(|last| last >= seq) {
            return Ok(None);
        }
        let columns = checkpoint_columns(&[sign(signer, seq, &hash)?]).unwrap_or_default();
        client
            .execute(
                INSERT_CHECKPOINTS,
                &[
                    &columns.seq,
                    &columns.hash,
                    &columns.signature,
                    &columns.key_id,
                ],
            )
            .await?;
        Ok(Some(seq))
    }
    .await;
    let end = if signed.is_ok() { "COMMIT" } else { "ROLLBACK" };
    client.batch_execute(end).await?;
    signed
}

fn record_from(row: &tokio_postgres::Row) -> Result<Record, StoreError> {
    Ok(Record {
        seq: seq_from_sql(row.try_get(0)?)?,
        at: row.try_get(1)?,
        kind: row.try_get(2)?,
        request_id: row.try_get(3)?,
        body: row.try_get(4)?,
        prev_hash: row.try_get(5)?,
        hash: row.try_get(6)?,
    })
}

/// Records with `seq > after`, in order, at most `limit`.
pub(crate) async fn records(
    client: &Client,
    after: u64,
    limit: usize,
) -> Result<Vec<Record>, StoreError> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    client
        .query(
            &format!("{SELECT_RECORDS} WHERE seq > $1 ORDER BY seq LIMIT $2"),
            &[&after, &limit],
        )
        .await?
        .iter()
        .map(record_from)
        .collect()
}
