//! [`SqliteStore`]: requests in a SQLite file, embedded in the server process.
//!
//! One connection, owned by a dedicated thread: the async methods send that thread a job
//! over a channel and await its answer, so no SQLite call ever blocks a runtime thread.
//! The thread commits in groups: it takes every job waiting in the channel (up to
//! [`MAX_BATCH`]), runs them one after the other in one transaction, each inside its own
//! savepoint, and answers only once the transaction is committed. With
//! `synchronous=FULL`, one fsync then covers a whole burst of submissions and decisions.
//!
//! Layout (migration 1), table `requests`, one row per request:
//! - columns for what is queried: `id`, `state`, creation time and deadline (seconds
//!   and nanoseconds since the epoch, normalised as in protobuf's Timestamp, so exact for
//!   any `SystemTime` and ordered by `(secs, nanos)`);
//! - `request`: the request as submitted, the protobuf `belay.v1.Request` in its pending
//!   form (no resolution); never changes after the insert;
//! - `resolution`: the protobuf `belay.v1.Resolution`, NULL while pending; set once, by
//!   the conditional UPDATE of [`Store::resolve_pending`].
//!
//! Migration 2 adds the audit log (`audit`, `audit_checkpoints`; see [`crate::audit`]):
//! every insert of a new request and every resolution appends its record in the same
//! job, hence the same savepoint and transaction, as the change itself, so neither can
//! be committed without the other. When the store closes, the head of the log is
//! signed.
//!
//! Reading a row rebuilds the `belay.v1.Request` and converts it with the same validation
//! as a message from the wire, so a damaged row is an error, never a wrong request.

mod extra;
mod policy;
mod reader;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use belay_proto::domain::{Request, RequestId, RequestState, Resolution};
use belay_proto::v1;
use prost::Message as _;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::{
    EnrollToken, Grant, GrantKey, Inserted, NewPolicy, Resolved, Store, StoreError, StoredPolicy,
    Vote, Voted,
};
use crate::audit::{self, AuditKey, AuditSigner};

/// How long a statement waits for a lock held by another connection (another process
/// on the same file, an operator's `sqlite3`) before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Jobs queued towards the database thread before callers wait for room.
const QUEUE: usize = 1024;
/// Most jobs committed together; bounds how long the first of a burst waits.
const MAX_BATCH: usize = 256;

/// Schema migrations, in order: entry `i` brings the schema from version `i` to `i + 1`.
/// Never edit one that has shipped; add the next.
const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    audit::sqlite::MIGRATION,
    extra::MIGRATION,
    policy::MIGRATION,
];

const MIGRATION_1: &str = "
CREATE TABLE requests (
    id TEXT PRIMARY KEY NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'cancelled')),
    created_secs INTEGER NOT NULL,
    created_nanos INTEGER NOT NULL,
    deadline_secs INTEGER NOT NULL,
    deadline_nanos INTEGER NOT NULL,
    request BLOB NOT NULL,
    resolution BLOB,
    CHECK ((state = 'pending') = (resolution IS NULL))
) STRICT;
-- Only pending requests are listed, expired and waited for: partial indexes stay as
-- small as the pending set however many decided requests accumulate.
CREATE INDEX requests_pending_by_deadline
    ON requests (deadline_secs, deadline_nanos, id) WHERE state = 'pending';
CREATE INDEX requests_pending_by_creation
    ON requests (created_secs, created_nanos, id) WHERE state = 'pending';
";

/// Requests in a SQLite database file; survives restarts.
///
/// Dropping the store waits for its database thread to finish the jobs already sent and
/// close the file, so a store opened afterwards on the same file sees everything.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    /// `None` only while dropping.
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    /// `None` only while dropping.
    worker: Option<thread::JoinHandle<()>>,
    readers: reader::Readers,
    audit: Arc<AuditSigner>,
}

/// Where the audit log's checkpoint key is, and how often checkpoints are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// The signing key, created if missing; `None`: `<db>.audit-key`.
    pub key: Option<PathBuf>,
    pub checkpoint_every: u64,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            key: None,
            checkpoint_every: audit::DEFAULT_CHECKPOINT_EVERY,
        }
    }
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `path` and brings its schema up to
    /// date. Blocks while doing so: call it before serving, or on a blocking thread.
    ///
    /// Refuses a file that is not SQLite or is damaged, a SQLite database of another
    /// application, and one whose schema is newer than this code knows.
    ///
    /// Audit checkpoints are signed with the key `<db>.audit-key`, created if missing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, AuditOptions::default())
    }

    /// [`SqliteStore::open`] with the audit log's key and checkpoint interval.
    pub fn open_with(path: impl AsRef<Path>, options: AuditOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let connection = open_connection(&path)?;
        let readers = reader::Readers::open(&path)?;
        let key_path = options
            .key
            .unwrap_or_else(|| audit::default_key_path(&path));
        let key = AuditKey::load_or_create(&key_path).map_err(|err| StoreError::Open {
            path: path.clone(),
            problem: Box::new(err),
        })?;
        let signer = Arc::new(AuditSigner::new(key, options.checkpoint_every));
        let audit = Arc::clone(&signer);
        let (jobs, receiver) = mpsc::channel(QUEUE);
        let worker = thread::Builder::new()
            .name("belay-sqlite".into())
            .spawn(move || run_jobs(&connection, receiver, &signer))
            .map_err(|err| StoreError::Open {
                path: path.clone(),
                problem: format!("cannot start the database thread: {err}").into(),
            })?;
        Ok(Self {
            path,
            jobs: Some(jobs),
            worker: Some(worker),
            readers,
            audit,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public key that verifies the audit log's checkpoints.
    pub fn audit_public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.audit.public_key()
    }

    /// Runs `op` on the database thread, within the current batch's transaction, and
    /// returns its result once that transaction has committed.
    async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let stopped = || StoreError::Backend("the database thread has stopped".into());
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Task {
            op: Some(op),
            result: None,
            reply,
        });
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.readers.close();
        // Closing the channel ends the thread once it has answered what is queued.
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take()
            && worker.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the database thread panicked");
        }
    }
}

impl Store for SqliteStore {
    async fn insert_if_absent(&self, request: Request) -> Result<Inserted, StoreError> {
        let signer = Arc::clone(&self.audit);
        self.run(move |db| {
            let inserted = insert_if_absent(db, request)?;
            if let Inserted::New(request) = &inserted {
                audit::sqlite::append(db, &signer, audit::submitted(request))?;
                // Stored already final: its ending is part of the same change.
                if let Some(event) = audit::resolved(request) {
                    audit::sqlite::append(db, &signer, event)?;
                }
            }
            Ok(inserted)
        })
        .await
    }

    async fn get(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        let id = id.clone();
        self.readers.read(move |db| get(db, &id)).await
    }

    async fn resolve_pending(
        &self,
        id: &RequestId,
        resolution: Resolution,
    ) -> Result<Resolved, StoreError> {
        let id = id.clone();
        let signer = Arc::clone(&self.audit);
        self.run(move |db| {
            let resolved = resolve_pending(db, &id, &resolution)?;
            if let Resolved::Now(request) = &resolved {
                let event = audit::resolved(request).ok_or_else(|| {
                    StoreError::Backend(format!("resolved request {id} has no resolution").into())
                })?;
                audit::sqlite::append(db, &signer, event)?;
            }
            Ok(resolved)
        })
        .await
    }

    async fn pending(&self) -> Result<Vec<Request>, StoreError> {
        self.readers.read(pending).await
    }

    async fn pending_due(&self, now: SystemTime) -> Result<Vec<RequestId>, StoreError> {
        self.readers.read(move |db| pending_due(db, now)).await
    }

    async fn next_deadline(&self) -> Result<Option<SystemTime>, StoreError> {
        self.readers.read(next_deadline).await
    }

    async fn add_grant(&self, grant: Grant) -> Result<(), StoreError> {
        let signer = Arc::clone(&self.audit);
        self.run(move |db| {
            let request = get(db, &grant.from_request)?.ok_or_else(|| {
                StoreError::Backend(
                    format!("no request {} to grant from", grant.from_request).into(),
                )
            })?;
            extra::add_grant(db, &grant)?;
            audit::sqlite::append(db, &signer, audit::granted(&request, &grant))
        })
        .await
    }

    async fn find_grants(&self, key: &GrantKey, now: SystemTime) -> Result<Vec<Grant>, StoreError> {
        let key = key.clone();
        self.readers
            .read(move |db| extra::find_grants(db, &key, now))
            .await
    }

    async fn add_vote(&self, id: &RequestId, vote: Vote) -> Result<Voted, StoreError> {
        let id = id.clone();
        let signer = Arc::clone(&self.audit);
        self.run(move |db| {
            let request = get(db, &id)?
                .ok_or_else(|| StoreError::Backend(format!("no request {id} to vote on").into()))?;
            let voted = extra::add_vote(db, &id, &vote)?;
            if let Voted::Added(_) = &voted {
                audit::sqlite::append(db, &signer, audit::voted(&request, &vote))?;
            }
            Ok(voted)
        })
        .await
    }

    async fn votes(&self, id: &RequestId) -> Result<Vec<Vote>, StoreError> {
        let id = id.clone();
        self.readers.read(move |db| extra::votes(db, &id)).await
    }

    async fn add_enroll_token(&self, token: EnrollToken) -> Result<(), StoreError> {
        self.run(move |db| extra::add_enroll_token(db, &token))
            .await
    }

    async fn consume_enroll_token(
        &self,
        hash: &[u8; 32],
        now: SystemTime,
    ) -> Result<Option<EnrollToken>, StoreError> {
        let hash = *hash;
        self.run(move |db| extra::consume_enroll_token(db, &hash, now))
            .await
    }

    async fn audit_records(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<audit::Record>, StoreError> {
        self.readers
            .read(move |db| extra::audit_records(db, after_seq, limit))
            .await
    }
    async fn push_policy(&self, new: NewPolicy) -> Result<StoredPolicy, StoreError> {
        let signer = Arc::clone(&self.audit);
        self.run(move |db| {
            let stored = policy::push(db, new)?;
            audit::sqlite::append(db, &signer, super::policy::audit_event(&stored))?;
            Ok(stored)
        })
        .await
    }

    async fn current_policy(&self) -> Result<Option<StoredPolicy>, StoreError> {
        self.readers.read(policy::current).await
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Backend(Box::new(err))
    }
}

// ---------------------------------------------------------------------------------------
// Opening and migrating

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let open_error = |problem: rusqlite::Error| StoreError::Open {
        path: path.to_path_buf(),
        problem: Box::new(problem),
    };
    // No SQLITE_OPEN_URI: the path is a file name, whatever it looks like.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut connection = Connection::open_with_flags(path, flags).map_err(open_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    // The first statement that reads the file: a file that is not SQLite fails here.
    let mode: String = connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(open_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        // In-memory databases have no WAL; on a file the pragma does not fail silently.
        tracing::warn!(path = %path.display(), mode, "the database is not in WAL mode");
    }
    // FULL, not NORMAL: in WAL mode NORMAL does not sync the log at commit, so a power
    // loss or kernel crash could take back the last transactions. Here they are decisions
    // that have already been sent to agents and applied (a process allowed or killed):
    // the record of them must be on disk first. Group commit (see the module comment)
    // keeps the cost to one fsync per batch, not per decision.
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(open_error)?;
    stable_plans(&connection).map_err(open_error)?;
    // Each job runs in a savepoint, whose journal of pages changed earlier in the batch
    // would otherwise be a temporary file.
    connection
        .pragma_update(None, "temp_store", "MEMORY")
        .map_err(open_error)?;
    migrate(&mut connection, path)?;
    Ok(connection)
}

/// Brings the schema to the newest version this code knows, in one transaction.
fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let open_error = |problem: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
        path: path.to_path_buf(),
        problem,
    };
    let sql_error = |err: rusqlite::Error| open_error(Box::new(err));
    let known = i64::try_from(MIGRATIONS.len()).expect("a handful of migrations");

    let tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    let versioned: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema \
             WHERE type = 'table' AND name = 'schema_version')",
            [],
            |row| row.get(0),
        )
        .map_err(sql_error)?;
    if !versioned {
        let mut tables = tx
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| row.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(sql_error)?;
        tables.retain(|name| !name.starts_with("sqlite_"));
        if !tables.is_empty() {
            return Err(open_error(
                format!(
                    "it is not a belay-server database (it has no schema_version table \
                     but other tables: {})",
                    tables.join(", ")
                )
                .into(),
            ));
        }
        tx.execute_batch(
            "CREATE TABLE schema_version (
                 version INTEGER PRIMARY KEY NOT NULL,
                 applied_at INTEGER NOT NULL
             ) STRICT",
        )
        .map_err(sql_error)?;
    }

    let found: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |row| row.get(0),
        )
        .map_err(sql_error)?;
    if found > known {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    let applied = usize::try_from(found)
        .map_err(|_| open_error(format!("schema_version holds version {found}").into()))?;
    for (version, sql) in (1..=known).zip(MIGRATIONS).skip(applied) {
        tx.execute_batch(sql).map_err(sql_error)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, unixepoch())",
            [version],
        )
        .map_err(sql_error)?;
        tracing::info!(path = %path.display(), version, "database schema migrated");
    }
    tx.commit().map_err(sql_error)
}

// ---------------------------------------------------------------------------------------
// The database thread

/// A unit of work for the database thread, with the channel its answer goes back on.
trait Job: Send {
    /// Runs the work; returns whether it succeeded (a failure is rolled back alone).
    fn run(&mut self, connection: &Connection) -> bool;

    /// Answers the caller: with the work's own result once its batch has committed,
    /// else with why the batch failed.
    fn answer(self: Box<Self>, batch: Result<(), &str>);
}

struct Task<T, F> {
    op: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Task<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, connection: &Connection) -> bool {
        let Some(op) = self.op.take() else {
            return false;
        };
        let result = op(connection);
        let succeeded = result.is_ok();
        self.result = Some(result);
        succeeded
    }

    fn answer(self: Box<Self>, batch: Result<(), &str>) {
        let result = match (self.result, batch) {
            (Some(Err(err)), _) => Err(err),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)) | None, Err(problem)) => Err(StoreError::Backend(problem.into())),
            (None, Ok(())) => Err(StoreError::Backend("the job was not run".into())),
        };
        // The caller may have stopped waiting; the work is done all the same.
        let _ = self.reply.send(result);
    }
}

/// The database thread: runs jobs in batches until the store is dropped, then signs the
/// head of the audit log.
fn run_jobs(connection: &Connection, mut jobs: mpsc::Receiver<Box<dyn Job>>, signer: &AuditSigner) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = run_batch(connection, &mut batch);
        if let Err(problem) = &outcome {
            tracing::error!(problem, jobs = batch.len(), "database transaction failed");
        }
        for job in batch.drain(..) {
            job.answer(outcome.as_ref().copied().map_err(String::as_str));
        }
    }
    let signed = connection
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(StoreError::from)
        .and_then(|()| audit::sqlite::checkpoint_head(connection, signer))
        .and_then(|signed| {
            connection.execute_batch("COMMIT")?;
            Ok(signed)
        });
    match signed {
        Ok(Some(seq)) => tracing::info!(seq, "audit log checkpoint signed at shutdown"),
        Ok(None) => {}
        Err(err) => {
            if !connection.is_autocommit() {
                let _ = connection.execute_batch("ROLLBACK");
            }
            tracing::error!(error = %err, "cannot sign the audit log at shutdown");
        }
    }
}

/// Plans that do not depend on bound values. Without this, SQLite (built with STAT4)
/// re-plans a cached statement whenever a new value is bound to a parameter in a range
/// or `IS` comparison, e.g. every grant lookup and every deadline sweep: profiles
/// showed most of the readers' time in the parser. Our queries are index lookups whose
/// best plan does not change with the values.
pub(super) fn stable_plans(connection: &Connection) -> rusqlite::Result<()> {
    connection
        .set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map(drop)
}

fn statement(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(drop)
}

/// Runs `batch` in one transaction, each job in a savepoint of its own so that a failing
/// job leaves no trace while the others commit.
fn run_batch(connection: &Connection, batch: &mut [Box<dyn Job>]) -> Result<(), String> {
    let result = (|| {
        connection
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|err| format!("cannot begin a transaction: {err}"))?;
        for job in batch.iter_mut() {
            // Cached statements: parsing these three per job showed in profiles.
            statement(connection, "SAVEPOINT job")
                .map_err(|err| format!("cannot set a savepoint: {err}"))?;
            let ended = if job.run(connection) {
                statement(connection, "RELEASE job")
            } else {
                statement(connection, "ROLLBACK TO job")
                    .and_then(|()| statement(connection, "RELEASE job"))
            };
            // Some errors (disk full, I/O) make SQLite roll back the whole transaction
            // by itself, taking the jobs before this one with it.
            if connection.is_autocommit() {
                return Err("SQLite rolled the transaction back".to_owned());
            }
            ended.map_err(|err| format!("cannot end a savepoint: {err}"))?;
        }
        connection
            .execute_batch("COMMIT")
            .map_err(|err| format!("cannot commit: {err}"))
    })();
    if result.is_err() && !connection.is_autocommit() {
        // Best effort: on failure the transaction must not stay open for the next batch.
        if let Err(err) = connection.execute_batch("ROLLBACK") {
            tracing::error!(error = %err, "cannot roll back a failed transaction");
        }
    }
    result
}

// ---------------------------------------------------------------------------------------
// The operations, run on the database thread inside a batch transaction

const SELECT_REQUEST: &str = "SELECT id, state, request, resolution FROM requests";

fn insert_if_absent(db: &Connection, request: Request) -> Result<Inserted, StoreError> {
    let (submitted, resolution) = encode(&request);
    let (created_secs, created_nanos) = split_time(request.created_at);
    let (deadline_secs, deadline_nanos) = split_time(request.deadline);
    let inserted = db
        .prepare_cached(
            "INSERT INTO requests (id, state, created_secs, created_nanos, \
             deadline_secs, deadline_nanos, request, resolution) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            request.id.as_str(),
            request.state().as_str(),
            created_secs,
            created_nanos,
            deadline_secs,
            deadline_nanos,
            submitted,
            resolution,
        ])?;
    if inserted == 1 {
        return Ok(Inserted::New(request));
    }
    match get(db, &request.id)? {
        Some(existing) => Ok(Inserted::Existing(existing)),
        None => Err(StoreError::Backend(
            format!("request {} was neither inserted nor found", request.id).into(),
        )),
    }
}

fn get(db: &Connection, id: &RequestId) -> Result<Option<Request>, StoreError> {
    db.prepare_cached(&format!("{SELECT_REQUEST} WHERE id = ?1"))?
        .query_row([id.as_str()], StoredRow::read)
        .optional()?
        .map(StoredRow::decode)
        .transpose()
}

fn resolve_pending(
    db: &Connection,
    id: &RequestId,
    resolution: &Resolution,
) -> Result<Resolved, StoreError> {
    let state = resolution.outcome.state();
    let encoded = v1::Resolution::from(resolution.clone()).encode_to_vec();
    // The compare-and-set: the row changes only if it is still pending, in this one
    // statement, so of two deciders exactly one gets a row back, whichever connection
    // or process each runs on.
    let updated = db
        .prepare_cached(
            "UPDATE requests SET state = ?2, resolution = ?3 \
             WHERE id = ?1 AND state = 'pending' \
             RETURNING id, state, request, resolution",
        )?
        .query_row(
            params![id.as_str(), state.as_str(), encoded],
            StoredRow::read,
        )
        .optional()?;
    if let Some(row) = updated {
        return Ok(Resolved::Now(row.decode()?));
    }
    // No pending row: unknown, or ended already (states never go back to pending).
    Ok(match get(db, id)? {
        Some(request) => Resolved::Already(request),
        None => Resolved::NotFound,
    })
}

fn pending(db: &Connection) -> Result<Vec<Request>, StoreError> {
    db.prepare_cached(&format!(
        "{SELECT_REQUEST} WHERE state = 'pending' \
         ORDER BY created_secs, created_nanos, id"
    ))?
    .query_map([], StoredRow::read)?
    .map(|row| row?.decode())
    .collect()
}

fn pending_due(db: &Connection, now: SystemTime) -> Result<Vec<RequestId>, StoreError> {
    let (secs, nanos) = split_time(now);
    db.prepare_cached(
        "SELECT id FROM requests \
         WHERE state = 'pending' AND (deadline_secs, deadline_nanos) <= (?1, ?2) \
         ORDER BY deadline_secs, deadline_nanos, id",
    )?
    .query_map([secs, nanos], |row| row.get::<_, String>(0))?
    .map(|id| {
        let id = id?;
        RequestId::new(id.clone()).map_err(|err| damaged(&id, err))
    })
    .collect()
}

fn next_deadline(db: &Connection) -> Result<Option<SystemTime>, StoreError> {
    db.prepare_cached(
        "SELECT id, deadline_secs, deadline_nanos FROM requests WHERE state = 'pending' \
         ORDER BY deadline_secs, deadline_nanos LIMIT 1",
    )?
    .query_row([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })
    .optional()?
    .map(|(id, secs, nanos)| join_time(secs, nanos).ok_or_else(|| damaged(&id, "bad deadline")))
    .transpose()
}

// ---------------------------------------------------------------------------------------
// Rows

/// The columns a request is rebuilt from.
struct StoredRow {
    id: String,
    state: String,
    request: Vec<u8>,
    resolution: Option<Vec<u8>>,
}

impl StoredRow {
    /// Reads the columns of [`SELECT_REQUEST`], in its order.
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            state: row.get(1)?,
            request: row.get(2)?,
            resolution: row.get(3)?,
        })
    }

    fn decode(self) -> Result<Request, StoreError> {
        let bad = |problem: &dyn std::fmt::Display| damaged(&self.id, problem);
        let state = parse_state(&self.state)
            .ok_or_else(|| bad(&format_args!("unknown state {:?}", self.state)))?;
        let mut wire = v1::Request::decode(self.request.as_slice()).map_err(|err| bad(&err))?;
        wire.state = v1::RequestState::from(state).into();
        wire.resolution = self
            .resolution
            .as_deref()
            .map(v1::Resolution::decode)
            .transpose()
            .map_err(|err| bad(&err))?;
        let request = Request::try_from(wire).map_err(|err| bad(&err))?;
        if request.id.as_str() != self.id {
            return Err(bad(&format_args!("the row holds request {}", request.id)));
        }
        Ok(request)
    }
}

/// The request in its pending form, and its resolution, each protobuf-encoded.
fn encode(request: &Request) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut wire = v1::Request::from(request.clone());
    let resolution = wire
        .resolution
        .take()
        .map(|resolution| resolution.encode_to_vec());
    wire.state = v1::RequestState::Pending.into();
    (wire.encode_to_vec(), resolution)
}

fn parse_state(state: &str) -> Option<RequestState> {
    [
        RequestState::Pending,
        RequestState::Approved,
        RequestState::Denied,
        RequestState::Expired,
        RequestState::Cancelled,
    ]
    .into_iter()
    .find(|known| known.as_str() == state)
}

fn damaged(id: &str, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("stored request {id:?} is damaged: {problem}").into())
}

/// Seconds and nanoseconds since the epoch, nanoseconds in `0..1e9` (also before the
/// epoch), so that `(secs, nanos)` orders like the time itself.
fn split_time(time: SystemTime) -> (i64, i64) {
    let timestamp = prost_types::Timestamp::from(time);
    (timestamp.seconds, i64::from(timestamp.nanos))
}

fn join_time(seconds: i64, nanos: i64) -> Option<SystemTime> {
    let nanos = i32::try_from(nanos).ok()?;
    SystemTime::try_from(prost_types::Timestamp { seconds, nanos }).ok()
}
