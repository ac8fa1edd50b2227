//! The writer: every change that is recorded in the audit log (new requests,
//! resolutions, grants, votes, revocations) goes through one task and one connection per store.
//!
//! The task commits in groups, as SQLite's database thread does: it takes every job
//! waiting (up to [`MAX_BATCH`]) and runs them in one transaction, in two round trips
//! whatever their number, pipelined:
//! 1. `BEGIN`, the chain lock (serialising writers across replicas, see
//!    [`audit_log`]), the chain's head, then one statement per job (two for a vote),
//!    each a single atomic insert-if-absent or compare-and-set;
//! 2. the batch's audit records and checkpoints (one statement each), the notifications
//!    for other replicas, `COMMIT`.
//!
//! A job that fails (a database error, a damaged row) rolls the whole transaction back;
//! the jobs of that batch are then run again one per transaction, so that only the
//! failing one fails and nothing of it is written.
//!
//! What each job sends and how its rows are read back: `jobs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use futures_util::future::{MaybeDone, maybe_done};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Row, Statement};

use super::super::StoreError;
use super::audit_log;
use super::jobs::{
    Done, Effects, INSERT_SQL, Job, Op, Param, VOTES_SQL, grant_sql, resolve_sql, revoke_sql,
    vote_sql,
};
use super::listen;
use super::pool::connect;
use crate::audit::AuditSigner;

/// Most jobs committed together; bounds how long the first of a burst waits.
pub(super) const MAX_BATCH: usize = 256;

/// The writer's connection and its prepared statements.
pub(super) struct Connection {
    pub(super) client: Client,
    pub(super) lock: Statement,
    pub(super) head: Statement,
    pub(super) insert: Statement,
    pub(super) resolve: Statement,
    pub(super) grant: Statement,
    pub(super) vote: Statement,
    pub(super) votes: Statement,
    pub(super) revoke: Statement,
    pub(super) records: Statement,
    pub(super) checkpoints: Statement,
    pub(super) notify: Statement,
}

impl Connection {
    async fn open(config: &Config) -> Result<Self, tokio_postgres::Error> {
        let client = connect(config).await?;
        Ok(Self {
            lock: client.prepare(audit_log::LOCK_CHAIN).await?,
            head: client.prepare(audit_log::HEAD).await?,
            insert: client.prepare(INSERT_SQL).await?,
            resolve: client.prepare(&resolve_sql()).await?,
            grant: client.prepare(&grant_sql()).await?,
            vote: client.prepare(&vote_sql()).await?,
            votes: client.prepare(VOTES_SQL).await?,
            revoke: client.prepare(&revoke_sql()).await?,
            records: client.prepare(audit_log::INSERT_RECORDS).await?,
            checkpoints: client.prepare(audit_log::INSERT_CHECKPOINTS).await?,
            notify: client
                .prepare(&format!("SELECT pg_notify('{}', $1)", listen::CHANNEL))
                .await?,
            client,
        })
    }
}

pub(super) struct Writer {
    config: Config,
    signer: Arc<AuditSigner>,
    origin: String,
    connection: Option<Connection>,
}

type Call<'a> = Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

/// Runs `calls` pipelined: each is sent when first polled, and they are first polled in
/// order, so the server runs them in this order, back to back.
async fn pipelined(calls: Vec<Call<'_>>) -> Vec<Result<Vec<Row>, tokio_postgres::Error>> {
    let mut calls: Vec<MaybeDone<Call<'_>>> = calls.into_iter().map(maybe_done).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for call in &mut calls {
            done &= Pin::new(call).poll(cx).is_ready();
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    calls
        .iter_mut()
        .map(|call| {
            Pin::new(call)
                .take_output()
                .expect("every call was polled to completion")
        })
        .collect()
}

fn simple<'a>(client: &'a Client, sql: &'a str) -> Call<'a> {
    Box::pin(async move { client.batch_execute(sql).await.map(|()| Vec::new()) })
}

fn query<'a>(client: &'a Client, statement: &'a Statement, params: &'a [Param]) -> Call<'a> {
    Box::pin(async move {
        let params: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|param| param.as_ref() as &(dyn ToSql + Sync))
            .collect();
        client.query(statement, &params).await
    })
}

impl Writer {
    pub fn new(config: Config, signer: Arc<AuditSigner>, origin: String) -> Self {
        Self {
            config,
            signer,
            origin,
            connection: None,
        }
    }

    /// Runs jobs in batches until every sender is gone, then signs the chain's head.
    pub async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.process(std::mem::take(&mut batch)).await;
        }
        let signed = match connection(&mut self.connection, &self.config).await {
            Ok(connection) => audit_log::checkpoint_head(&connection.client, &self.signer).await,
            Err(err) => Err(err),
        };
        match signed {
            Ok(Some(seq)) => tracing::info!(seq, "audit log checkpoint signed at shutdown"),
            Ok(None) => {}
            Err(err) => tracing::error!(error = %err, "cannot sign the audit log at shutdown"),
        }
    }

    async fn process(&mut self, batch: Vec<Job>) {
        let (ops, replies): (Vec<Op>, Vec<_>) =
            batch.into_iter().map(|job| (job.op, job.reply)).unzip();
        let outcome = match connection(&mut self.connection, &self.config).await {
            Ok(connection) => run_batch(connection, &self.signer, &self.origin, &ops).await,
            Err(err) => Err(err),
        };
        match outcome {
            Ok(done) => {
                for (reply, done) in replies.into_iter().zip(done) {
                    // The caller may have stopped waiting; the work is done all the same.
                    let _ = reply.send(Ok(done));
                }
            }
            Err(err) if ops.len() == 1 => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(err));
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, jobs = ops.len(), "batch failed; one by one");
                for (op, reply) in ops.into_iter().zip(replies) {
                    let outcome = match connection(&mut self.connection, &self.config).await {
                        Ok(connection) => {
                            let ops = [op];
                            run_batch(connection, &self.signer, &self.origin, &ops)
                                .await
                                .map(|mut done| done.remove(0))
                        }
                        Err(err) => Err(err),
                    };
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}

/// The writer's connection, (re)opened if there is none or it was lost.
async fn connection<'c>(
    slot: &'c mut Option<Connection>,
    config: &Config,
) -> Result<&'c Connection, StoreError> {
    if slot
        .as_ref()
        .is_some_and(|connection| connection.client.is_closed())
    {
        *slot = None;
    }
    if slot.is_none() {
        *slot = Some(Connection::open(config).await?);
    }
    Ok(slot.as_ref().expect("just opened"))
}

/// Runs `ops` in one transaction with their audit records; all or nothing.
async fn run_batch(
    connection: &Connection,
    signer: &AuditSigner,
    origin: &str,
    ops: &[Op],
) -> Result<Vec<Done>, StoreError> {
    let client = &connection.client;
    let outcome = run_batch_inner(connection, signer, origin, ops).await;
    if outcome.is_err() && !client.is_closed() {
        // Whatever state the transaction is in (open, aborted, or already ended by a
        // COMMIT that rolled back), this leaves the connection outside of one.
        if let Err(err) = client.batch_execute("ROLLBACK").await {
            tracing::error!(error = %err, "cannot roll back a failed transaction");
        }
    }
    outcome
}

async fn run_batch_inner(
    connection: &Connection,
    signer: &AuditSigner,
    origin: &str,
    ops: &[Op],
) -> Result<Vec<Done>, StoreError> {
    let client = &connection.client;
    let lock_params: Vec<Param> = vec![Box::new(audit_log::CHAIN_LOCK)];
    let job_calls: Vec<(usize, &Statement, Vec<Param>)> = ops
        .iter()
        .enumerate()
        .flat_map(|(index, op)| {
            op.calls(connection)
                .into_iter()
                .map(move |(statement, params)| (index, statement, params))
        })
        .collect();
    let mut calls = vec![
        simple(client, "BEGIN"),
        query(client, &connection.lock, &lock_params),
        query(client, &connection.head, &[]),
    ];
    calls.extend(
        job_calls
            .iter()
            .map(|(_, statement, params)| query(client, statement, params)),
    );
    let mut results = pipelined(calls).await.into_iter();
    let mut next = || results.next().expect("one result per call");
    next()?;
    next()?;
    let head = audit_log::head_from(next()?.first())?;

    let mut per_op: Vec<Vec<Vec<Row>>> = ops.iter().map(|_| Vec::new()).collect();
    for (index, _, _) in &job_calls {
        per_op[*index].push(next()?);
    }
    let mut effects = Effects::default();
    let done = ops
        .iter()
        .zip(&per_op)
        .map(|(op, results)| op.outcome(results, &mut effects))
        .collect::<Result<Vec<_>, _>>()?;

    let mut appends = audit_log::Appends::new(head);
    for event in effects.events {
        appends.push(signer, event)?;
    }
    let records = appends.record_columns();
    let record_params: Vec<Param> = vec![
        Box::new(records.seq),
        Box::new(records.at),
        Box::new(records.kind),
        Box::new(records.request_id),
        Box::new(records.body),
        Box::new(records.prev_hash),
        Box::new(records.hash),
    ];
    let checkpoint_params: Option<Vec<Param>> = appends.checkpoint_columns().map(|columns| {
        vec![
            Box::new(columns.seq) as Param,
            Box::new(columns.hash),
            Box::new(columns.signature),
            Box::new(columns.key_id),
        ]
    });
    let notify_params: Vec<Vec<Param>> = listen::payloads(origin, &effects.changes)
        .into_iter()
        .map(|payload| vec![Box::new(payload) as Param])
        .collect();
    let mut finish: Vec<Call<'_>> = Vec::new();
    if !appends.is_empty() {
        finish.push(query(client, &connection.records, &record_params));
    }
    if let Some(params) = &checkpoint_params {
        finish.push(query(client, &connection.checkpoints, params));
    }
    finish.extend(
        notify_params
            .iter()
            .map(|params| query(client, &connection.notify, params)),
    );
    finish.push(simple(client, "COMMIT"));
    // COMMIT after a failed statement rolls back without an error: every result counts.
    for result in pipelined(finish).await {
        result?;
    }
    Ok(done)
}
