//! [`SqliteStore`]: requests in a SQLite file, embedded in the server process.
//!
//! One connection, owned by a dedicated thread: the async methods send that thread a job
//! over a channel and await its answer, so no SQLite call ever blocks a runtime thread.
//! The thread commits in groups: it takes every job waiting in the channel (up to
//! [`writer::MAX_BATCH`]), runs them one after the other in one transaction, each inside
//! its own savepoint, and answers only once the transaction is committed. With
//! `synchronous=FULL`, one fsync then covers a whole burst of submissions and decisions.
//!
//! Layout (migration 1), table `requests`, one row per request:
//! - columns for what is queried: `id`, `state`, creation time and deadline (seconds
//!   and nanoseconds since the epoch, normalised as in protobuf's Timestamp, so exact for
//!   any `SystemTime` and ordered by `(secs, nanos)`);
//! - `request`: the request as submitted, the protobuf `belay.v1.Request` in its pending
//!   form (no resolution); never changes after the insert;
//! - `resolution`: the protobuf `belay.v1.Resolution`, NULL while pending; set once, by
//!   the conditional UPDATE of [`RequestStore::resolve_pending`].
//!
//! Migration 2 adds the audit log (`audit`, `audit_checkpoints`; see [`crate::audit`]):
//! every insert of a new request and every resolution appends its record in the same
//! job, hence the same savepoint and transaction, as the change itself, so neither can
//! be committed without the other. When the store closes, the head of the log is
//! signed.
//!
//! Migration 7 makes grants revocable (`revoked_at`, `revoked_by`, `revoke_reason`,
//! NULL while in force; at most one grant per request, which is its id) and stores each
//! request's `host` and `action` (the digest grants compare), indexed, so that the
//! earlier requests for the same action are found without reading every row; rows from
//! before are filled in when the store opens (`requests::fill_actions`).
//!
//! Migration 8 adds the chat outbox (`chat_outbox`, see [`super::ChatOutboxStore`]);
//! migration 9 the inbound chat requests already accepted (`chat_seen`).
//!
//! Reading a row rebuilds the `belay.v1.Request` and converts it with the same validation
//! as a message from the wire, so a damaged row is an error, never a wrong request.
//!
//! Here: the store and its [`Store`] methods. Beside it: [`open`] (connection settings,
//! migrations), [`writer`] (the database thread and its batches), [`requests`] (the
//! request operations and rows), [`grants`] (grants and quorum votes), [`enroll`]
//! (enrollment tokens and enrolled hosts), [`audit_log`] (appends and reads of the log),
//! [`policy`] (fleet policy), [`reader`] (read-only connections).

mod audit_log;
mod chat_outbox;
mod enroll;
mod grants;
mod open;
mod policy;
mod reader;
mod requests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_migration;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::SystemTime;

use belay_proto::domain::{Request, RequestId, Resolution};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{
    AuditLogStore, EnrollOutcome, EnrollToken, Enrollment, EnrollmentStore, Grant, GrantKey,
    GrantStore, Inserted, NewPolicy, PolicyStore, PolicyVote, RequestStore, Resolved, Revocation,
    Revoked, StoreError, StoredPolicy, Vote, VoteStore, Voted,
};
use crate::audit::{self, AuditKey, AuditSigner};
use open::{open_connection, stable_plans};
use requests::{
    get, history, insert_if_absent, next_deadline, pending, pending_due, resolve_pending,
};
use writer::{Job, Task, run_jobs};

/// Jobs queued towards the database thread before callers wait for room.
const QUEUE: usize = 1024;
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

impl RequestStore for SqliteStore {
    async fn insert_if_absent(&self, request: Request) -> Result<Inserted, StoreError> {
        let signer = Arc::clone(&self.audit);
        self.run(move |db| {
            let inserted = insert_if_absent(db, request)?;
            if let Inserted::New(request) = &inserted {
                audit_log::append(db, &signer, audit::submitted(request))?;
                // Stored already final: its ending is part of the same change.
                if let Some(event) = audit::resolved(request) {
                    audit_log::append(db, &signer, event)?;
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
                audit_log::append(db, &signer, event)?;
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

    async fn history(&self, request: &Request, limit: usize) -> Result<Vec<Request>, StoreError> {
        let request = request.clone();
        self.readers
            .read(move |db| history(db, &request, limit))
            .await
    }
}

impl GrantStore for SqliteStore {
    async fn add_grant(&self, grant: Grant) -> Result<(), StoreError> {
        let signer = Arc::clone(&self.audit);
        self.run(move |db| {
            let request = get(db, &grant.from_request)?.ok_or_else(|| {
                StoreError::Backend(
                    format!("no request {} to grant from", grant.from_request).into(),
                )
            })?;
            grants::add_grant(db, &grant)?;
            audit_log::append(db, &signer, grant.audit_event(&request))
        })
        .await
    }

    async fn find_grants(&self, key: &GrantKey, now: SystemTime) -> Result<Vec<Grant>, StoreError> {
        let key = key.clone();
        self.readers
            .read(move |db| grants::find_grants(db, &key, now))
            .await
    }

    async fn grants_in_force(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<Grant>, StoreError> {
        self.readers
            .read(move |db| grants::grants_in_force(db, now, limit))
            .await
    }

    async fn revoke_grant(
        &self,
        id: &RequestId,
        revocation: Revocation,
    ) -> Result<Revoked, StoreError> {
        let id = id.clone();
        let signer = Arc::clone(&self.audit);
        // One job, hence one savepoint: the grant changes together with its record.
        self.run(move |db| {
            let revoked = grants::revoke_grant(db, &id, &revocation)?;
            if let Revoked::Now(grant) = &revoked {
                let request = get(db, &id)?.ok_or_else(|| {
                    StoreError::Backend(format!("no request {id} for its grant").into())
                })?;
                audit_log::append(db, &signer, revocation.audit_event(grant, &request))?;
            }
            Ok(revoked)
        })
        .await
    }
}

impl VoteStore for SqliteStore {
    async fn add_vote(&self, id: &RequestId, vote: Vote) -> Result<Voted, StoreError> {
        let id = id.clone();
        let signer = Arc::clone(&self.audit);
        self.run(move |db| {
            let request = get(db, &id)?
                .ok_or_else(|| StoreError::Backend(format!("no request {id} to vote on").into()))?;
            let voted = grants::add_vote(db, &id, &vote)?;
            if let Voted::Added(_) = &voted {
                audit_log::append(db, &signer, vote.audit_event(&request))?;
            }
            Ok(voted)
        })
        .await
    }

    async fn votes(&self, id: &RequestId) -> Result<Vec<Vote>, StoreError> {
        let id = id.clone();
        self.readers.read(move |db| grants::votes(db, &id)).await
    }
}

impl EnrollmentStore for SqliteStore {
    async fn add_enroll_token(&self, token: EnrollToken) -> Result<(), StoreError> {
        self.run(move |db| enroll::add_enroll_token(db, &token))
            .await
    }

    async fn enroll(&self, enrollment: Enrollment) -> Result<EnrollOutcome, StoreError> {
        let signer = Arc::clone(&self.audit);
        // One job, hence one savepoint: the token is taken together with its record.
        self.run(move |db| {
            let Some(token) = enroll::take_enroll_token(db, &enrollment)? else {
                return enroll::enroll_refusal(db, &enrollment);
            };
            let new_host = super::enrollment::may_claim_host(&enrollment, &token)
                && enroll::claim_host(db, &enrollment)?;
            let outcome = EnrollOutcome::taken(&enrollment, token.clone(), new_host);
            let event = super::enrollment::audit_event(&enrollment, &token, &outcome);
            audit_log::append(db, &signer, event)?;
            Ok(outcome)
        })
        .await
    }
}

impl AuditLogStore for SqliteStore {
    async fn audit_records(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<audit::Record>, StoreError> {
        self.readers
            .read(move |db| audit_log::records(db, after_seq, limit))
            .await
    }
}

impl PolicyStore for SqliteStore {
    async fn push_policy(&self, new: NewPolicy) -> Result<StoredPolicy, StoreError> {
        let signer = Arc::clone(&self.audit);
        self.run(move |db| {
            let stored = policy::push(db, new)?;
            audit_log::append(db, &signer, super::policy::audit_event(&stored))?;
            Ok(stored)
        })
        .await
    }

    async fn current_policy(&self) -> Result<Option<StoredPolicy>, StoreError> {
        self.readers.read(policy::current).await
    }

    async fn add_policy_vote(
        &self,
        vote: PolicyVote,
        since: SystemTime,
    ) -> Result<Vec<PolicyVote>, StoreError> {
        let signer = Arc::clone(&self.audit);
        self.run(move |db| {
            let votes = policy::add_vote(db, &vote, since)?;
            audit_log::append(db, &signer, super::policy::vote_audit_event(&vote))?;
            Ok(votes)
        })
        .await
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Backend(Box::new(err))
    }
}

impl super::ChatOutboxStore for SqliteStore {
    async fn put_outbox_row(&self, row: super::OutboxRow) -> Result<(), StoreError> {
        self.run(move |db| chat_outbox::put(db, &row)).await
    }

    async fn remove_outbox_row(&self, id: &RequestId, platform: &str) -> Result<(), StoreError> {
        let (id, platform) = (id.clone(), platform.to_owned());
        self.run(move |db| chat_outbox::remove(db, &id, &platform))
            .await
    }

    async fn outbox_rows(&self, platform: &str) -> Result<Vec<super::OutboxRow>, StoreError> {
        let platform = platform.to_owned();
        self.run(move |db| chat_outbox::rows(db, &platform)).await
    }

    async fn lease_outbox(
        &self,
        platform: &str,
        holder: &str,
        now: SystemTime,
        until: SystemTime,
    ) -> Result<bool, StoreError> {
        let (platform, holder) = (platform.to_owned(), holder.to_owned());
        self.run(move |db| chat_outbox::lease(db, &platform, &holder, now, until))
            .await
    }

    async fn accept_inbound_once(
        &self,
        platform: &str,
        key: &str,
        now: SystemTime,
        until: SystemTime,
    ) -> Result<bool, StoreError> {
        let (platform, key) = (platform.to_owned(), key.to_owned());
        self.run(move |db| chat_outbox::accept_once(db, &platform, &key, now, until))
            .await
    }
}
