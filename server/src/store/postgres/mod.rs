//! [`PostgresStore`]: requests in a PostgreSQL database that several server replicas
//! share.
//!
//! - Layout: SQLite's (protobuf blobs plus the columns that are queried, partial indexes
//!   on pending requests), created by migrations at start (see [`schema`]).
//! - Changes that are audited go through one writer task per store, which commits them
//!   in groups with their audit records in the same transaction (see [`writer`]). The
//!   chain is serialised across replicas by an advisory lock held for the transaction.
//! - Reads, new enrollment tokens and audit reads use a small pool of connections;
//!   enrollments and policy pushes (rare, audited) a transaction on a connection of
//!   their own (see [`enroll`], [`policy`]).
//! - Each store listens for the changes of the others (see [`listen`]) and reports them
//!   through [`RequestStore::remote_changes`].
//!
//! Connections are plaintext (`NoTls`): the database is expected on loopback or a
//! trusted network.

mod audit_log;
mod chat_outbox;
mod enroll;
mod jobs;
mod listen;
mod policy;
mod pool;
mod rows;
mod schema;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_migration;
mod writer;

use std::hash::{BuildHasher as _, Hasher as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use belay_proto::domain::{Name, Request, RequestId, Resolution};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Config;
use tokio_util::sync::CancellationToken;

use super::{
    AuditLogStore, AuditOptions, EnrollOutcome, EnrollToken, Enrollment, EnrollmentStore, Grant,
    GrantKey, GrantStore, Inserted, NewPolicy, PolicyStore, PolicyVote, RemoteChange, RequestStore,
    Resolved, Revocation, Revoked, StoreError, StoredPolicy, Vote, VoteStore, Voted,
};
use crate::audit::{self, AuditKey, AuditSigner};
use crate::canonical_action::action_digest;
use jobs::{Done, Job, Op};
use pool::Pool;
use rows::REQUEST_COLUMNS;
use writer::Writer;

/// Connections for reads besides the writer's and the listener's.
const READERS: usize = 2;
/// Jobs queued towards the writer before callers wait for room.
const QUEUE: usize = 1024;

pub use crate::database_url::is_postgres_url;

/// Requests in a PostgreSQL database; survives restarts, shared by replicas.
///
/// Dropping the store stops listening and lets the writer finish the jobs already sent,
/// then sign the head of the audit log, on the runtime it was opened on.
pub struct PostgresStore {
    target: String,
    jobs: mpsc::Sender<Job>,
    pool: Pool,
    audit: Arc<AuditSigner>,
    subscriber: listen::Subscriber,
    followed: AtomicBool,
    policies: listen::PolicySubscriber,
    policies_followed: AtomicBool,
    /// Tags this store's notifications, so its own pushes are not reported back to it.
    origin: String,
    stop: CancellationToken,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`),
    /// brings its schema up to date, and starts the writer and the listener on the
    /// current runtime.
    ///
    /// The audit key must be given (`options.key`): there is no database file to put it
    /// next to, and every replica must sign with the same key.
    pub async fn connect(url: &str, options: AuditOptions) -> Result<Self, StoreError> {
        let target = crate::database_url::redact_url(url);
        let open_error = |problem: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: PathBuf::from(&target),
            problem,
        };
        let key_path = options.key.ok_or_else(|| {
            open_error(
                "a PostgreSQL database needs the audit key given (--audit-key), the same \
                 file for every replica"
                    .into(),
            )
        })?;
        let key = AuditKey::load_or_create(&key_path).map_err(|err| open_error(Box::new(err)))?;
        Self::connect_with_signer(url, AuditSigner::new(key, options.checkpoint_every)).await
    }

    /// [`PostgresStore::connect`] with the audit signer given.
    pub async fn connect_with_signer(url: &str, signer: AuditSigner) -> Result<Self, StoreError> {
        let target = crate::database_url::redact_url(url);
        let open_error = |problem: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: PathBuf::from(&target),
            problem,
        };
        let mut config: Config = url.parse().map_err(|err| open_error(Box::new(err)))?;
        if config.get_application_name().is_none() {
            // Shows in pg_stat_activity which connections are the server's.
            config.application_name("belay-server");
        }
        {
            let client = pool::connect(&config)
                .await
                .map_err(|err| open_error(Box::new(err)))?;
            schema::migrate(&client, &target).await?;
        }
        let pool = Pool::open(config.clone(), READERS)
            .await
            .map_err(|err| open_error(Box::new(err)))?;
        let listening = listen::listen(&config)
            .await
            .map_err(|err| open_error(Box::new(err)))?;
        let origin = origin_id();
        let signer = Arc::new(signer);
        let subscriber = listen::Subscriber::default();
        let policies = listen::PolicySubscriber::default();
        let stop = CancellationToken::new();
        tokio::spawn(listen::run(
            config.clone(),
            listening,
            origin.clone(),
            Arc::clone(&subscriber),
            Arc::clone(&policies),
            stop.clone(),
        ));
        let (jobs, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(Writer::new(config, Arc::clone(&signer), origin.clone()).run(receiver));
        Ok(Self {
            target,
            jobs,
            pool,
            audit: signer,
            subscriber,
            followed: AtomicBool::new(false),
            policies,
            policies_followed: AtomicBool::new(false),
            origin,
            stop,
        })
    }

    /// The database, without its password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The public key that verifies the audit log's checkpoints.
    pub fn audit_public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.audit.public_key()
    }

    async fn write(&self, op: Op) -> Result<Done, StoreError> {
        let stopped = || StoreError::Backend("the database writer has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { op, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Tells this store's notifications from the others': unique per store, also between
/// two stores of one process.
fn origin_id() -> String {
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    format!("{}-{:016x}", std::process::id(), hasher.finish())
}

fn unexpected(done: &Done) -> StoreError {
    StoreError::Backend(format!("the writer answered with {done:?}").into())
}

impl RequestStore for PostgresStore {
    async fn insert_if_absent(&self, request: Request) -> Result<Inserted, StoreError> {
        match self.write(Op::Insert(request)).await? {
            Done::Inserted(inserted) => Ok(inserted),
            other => Err(unexpected(&other)),
        }
    }

    async fn get(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        const SQL: &str = "SELECT id, state, request, resolution FROM requests WHERE id = $1";
        let row = self
            .pool
            .get()
            .await?
            .query_opt(SQL, &[&id.as_str()])
            .await?;
        Ok(row.as_ref().map(rows::request_from).transpose()?.flatten())
    }

    async fn resolve_pending(
        &self,
        id: &RequestId,
        resolution: Resolution,
    ) -> Result<Resolved, StoreError> {
        match self.write(Op::Resolve(id.clone(), resolution)).await? {
            Done::Resolved(resolved) => Ok(resolved),
            other => Err(unexpected(&other)),
        }
    }

    async fn pending(&self) -> Result<Vec<Request>, StoreError> {
        const SQL: &str = "SELECT id, state, request, resolution FROM requests \
             WHERE state = 'pending' ORDER BY created_secs, created_nanos, id";
        debug_assert!(SQL.contains(REQUEST_COLUMNS));
        let rows = self.pool.get().await?.query(SQL, &[]).await?;
        rows.iter()
            .map(|row| {
                rows::request_from(row)?
                    .ok_or_else(|| StoreError::Backend("a pending row has no id".into()))
            })
            .collect()
    }

    async fn pending_due(&self, now: SystemTime) -> Result<Vec<RequestId>, StoreError> {
        const SQL: &str = "SELECT id FROM requests \
             WHERE state = 'pending' AND (deadline_secs, deadline_nanos) <= ($1, $2) \
             ORDER BY deadline_secs, deadline_nanos, id";
        let (secs, nanos) = rows::split_time(now);
        let rows = self.pool.get().await?.query(SQL, &[&secs, &nanos]).await?;
        rows.iter()
            .map(|row| rows::request_id(row.try_get(0)?))
            .collect()
    }

    async fn next_deadline(&self) -> Result<Option<SystemTime>, StoreError> {
        const SQL: &str = "SELECT id, deadline_secs, deadline_nanos FROM requests \
             WHERE state = 'pending' ORDER BY deadline_secs, deadline_nanos LIMIT 1";
        let Some(row) = self.pool.get().await?.query_opt(SQL, &[]).await? else {
            return Ok(None);
        };
        let id: String = row.try_get(0)?;
        rows::join_time(row.try_get(1)?, row.try_get(2)?)
            .map(Some)
            .ok_or_else(|| rows::damaged(&id, "bad deadline"))
    }

    async fn history(&self, request: &Request, limit: usize) -> Result<Vec<Request>, StoreError> {
        const SQL: &str = "SELECT id, state, request, resolution FROM requests \
             WHERE host = $1 AND action = $2 AND state <> 'pending' AND id <> $3 \
             AND (created_secs, created_nanos) <= ($4, $5) \
             ORDER BY created_secs DESC, created_nanos DESC, id DESC LIMIT $6";
        let (secs, nanos) = rows::split_time(request.created_at);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .pool
            .get()
            .await?
            .query(
                SQL,
                &[
                    &request.host.as_str(),
                    &action_digest(&request.action),
                    &request.id.as_str(),
                    &secs,
                    &nanos,
                    &limit,
                ],
            )
            .await?;
        rows.iter()
            .map(|row| {
                rows::request_from(row)?
                    .ok_or_else(|| StoreError::Backend("a request row has no id".into()))
            })
            .collect()
    }

    fn remote_changes(&self) -> Option<mpsc::UnboundedReceiver<RemoteChange>> {
        if self.followed.swap(true, Ordering::SeqCst) {
            return None;
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        *self
            .subscriber
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(sender);
        Some(receiver)
    }
}

impl GrantStore for PostgresStore {
    async fn add_grant(&self, grant: Grant) -> Result<(), StoreError> {
        match self.write(Op::Grant(grant)).await? {
            Done::Granted => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn find_grants(&self, key: &GrantKey, now: SystemTime) -> Result<Vec<Grant>, StoreError> {
        const SQL: &str = "SELECT verdict, reviewer, reason, from_request, scope, granted_at, \
             expires_at FROM grants WHERE host = $1 AND action = $2 \
             AND agent IS NOT DISTINCT FROM $3 AND expires_at > $4 AND revoked_at IS NULL \
             ORDER BY granted_at DESC";
        let rows = self
            .pool
            .get()
            .await?
            .query(
                SQL,
                &[
                    &key.host.as_str(),
                    &key.action,
                    &key.agent.as_ref().map(Name::as_str),
                    &rows::nanos(now),
                ],
            )
            .await?;
        rows.iter().map(|row| rows::grant_from(key, row)).collect()
    }

    async fn grants_in_force(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<Grant>, StoreError> {
        const SQL: &str = "SELECT host, agent, action, verdict, reviewer, reason, \
             from_request, scope, granted_at, expires_at, revoked_at, revoked_by, revoke_reason \
             FROM grants WHERE expires_at > $1 AND revoked_at IS NULL \
             ORDER BY granted_at DESC, from_request DESC LIMIT $2";
        debug_assert!(SQL.contains(super::columns::GRANT_COLUMNS));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .pool
            .get()
            .await?
            .query(SQL, &[&rows::nanos(now), &limit])
            .await?;
        rows.iter()
            .map(|row| {
                rows::stored_grant_from(row, 0)?
                    .map(|(grant, _)| grant)
                    .ok_or_else(|| StoreError::Backend("a grant row has no host".into()))
            })
            .collect()
    }

    async fn revoke_grant(
        &self,
        id: &RequestId,
        revocation: Revocation,
    ) -> Result<Revoked, StoreError> {
        match self.write(Op::Revoke(id.clone(), revocation)).await? {
            Done::Revoked(revoked) => Ok(revoked),
            other => Err(unexpected(&other)),
        }
    }
}

impl VoteStore for PostgresStore {
    async fn add_vote(&self, id: &RequestId, vote: Vote) -> Result<Voted, StoreError> {
        match self.write(Op::Vote(id.clone(), vote)).await? {
            Done::Voted(voted) => Ok(voted),
            other => Err(unexpected(&other)),
        }
    }

    async fn votes(&self, id: &RequestId) -> Result<Vec<Vote>, StoreError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(jobs::VOTES_SQL, &[&id.as_str()])
            .await?;
        rows.iter().map(rows::vote_from).collect()
    }
}

impl EnrollmentStore for PostgresStore {
    async fn add_enroll_token(&self, token: EnrollToken) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO enroll_tokens (hash, host, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)";
        self.pool
            .get()
            .await?
            .execute(
                SQL,
                &[
                    &token.hash.as_slice(),
                    &token.host.as_ref().map(|host| host.as_str()),
                    &rows::nanos(token.created_at),
                    &rows::nanos(token.expires_at),
                ],
            )
            .await?;
        Ok(())
    }

    async fn enroll(&self, enrollment: Enrollment) -> Result<EnrollOutcome, StoreError> {
        let shared = self.pool.get().await?;
        if let Some(refused) = enroll::precheck(shared.client(), &enrollment).await? {
            return Ok(refused);
        }
        // Its own connection, as for a policy push: the pool's are shared by concurrent
        // callers, whose statements would land inside this transaction.
        let client = pool::connect(self.pool.config()).await?;
        enroll::take_or_refuse(&client, &self.audit, &enrollment).await
    }
}

impl AuditLogStore for PostgresStore {
    async fn audit_records(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<audit::Record>, StoreError> {
        let conn = self.pool.get().await?;
        audit_log::records(conn.client(), after_seq, limit).await
    }
}

impl PolicyStore for PostgresStore {
    async fn push_policy(&self, new: NewPolicy) -> Result<StoredPolicy, StoreError> {
        // Its own connection: the pool's are shared by concurrent callers, whose
        // statements would land inside this transaction.
        let client = pool::connect(self.pool.config()).await?;
        policy::push(&client, &self.audit, &self.origin, new).await
    }

    async fn add_policy_vote(
        &self,
        vote: PolicyVote,
        since: SystemTime,
    ) -> Result<Vec<PolicyVote>, StoreError> {
        // Its own connection, like a push: the statements form one transaction.
        let client = pool::connect(self.pool.config()).await?;
        policy::vote(&client, &self.audit, &vote, since).await
    }

    async fn current_policy(&self) -> Result<Option<StoredPolicy>, StoreError> {
        let row = self
            .pool
            .get()
            .await?
            .query_opt(policy::CURRENT_SQL, &[])
            .await?;
        row.as_ref().map(policy::from_row).transpose()
    }

    fn remote_policy_changes(&self) -> Option<mpsc::UnboundedReceiver<u64>> {
        if self.policies_followed.swap(true, Ordering::SeqCst) {
            return None;
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        *self.policies.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
        Some(receiver)
    }
}
