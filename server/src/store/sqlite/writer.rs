//! The database thread: owns the one writing connection, takes jobs from the channel
//! and commits them in groups (see the module comment of `sqlite`).

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::super::StoreError;
use crate::audit::AuditSigner;

/// Most jobs committed together; bounds how long the first of a burst waits.
pub(super) const MAX_BATCH: usize = 256;

/// A unit of work for the database thread, with the channel its answer goes back on.
pub(super) trait Job: Send {
    /// Runs the work; returns whether it succeeded (a failure is rolled back alone).
    fn run(&mut self, connection: &Connection) -> bool;

    /// Answers the caller: with the work's own result once its batch has committed,
    /// else with why the batch failed.
    fn answer(self: Box<Self>, batch: Result<(), &str>);
}

pub(super) struct Task<T, F> {
    pub op: Option<F>,
    pub result: Option<Result<T, StoreError>>,
    pub reply: oneshot::Sender<Result<T, StoreError>>,
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
pub(super) fn run_jobs(
    connection: &Connection,
    mut jobs: mpsc::Receiver<Box<dyn Job>>,
    signer: &AuditSigner,
) {
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
        .and_then(|()| super::audit_log::checkpoint_head(connection, signer))
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
