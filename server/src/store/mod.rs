//! Where requests live. The approval rules talk to storage only through [`Store`] (the
//! sum of one trait per concern: [`RequestStore`], [`GrantStore`], [`VoteStore`],
//! [`EnrollmentStore`], [`AuditLogStore`], [`PolicyStore`]), whose operations are atomic
//! on their own (insert-if-absent, resolve-if-pending) so that the
//! rules stay correct with several server replicas sharing a database.
//!
//! Backends:
//! - [`SqliteStore`]: the default, a SQLite file embedded in the server process;
//! - [`PostgresStore`]: a PostgreSQL database several server replicas share; each
//!   reports the others' changes through [`RequestStore::remote_changes`] (LISTEN/NOTIFY);
//! - [`MemoryStore`]: process memory, lost on restart; for tests and development.
//!
//! The methods are async and fallible because PostgreSQL's are, although the memory
//! store is neither.

mod chat_outbox;
pub(crate) mod columns;
mod enrollment;
mod memory;
mod policy;
mod postgres;
mod records;
mod sqlite;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_chat_outbox;
#[cfg(test)]
mod tests_enrollment;
#[cfg(test)]
mod tests_grants;
#[cfg(test)]
mod tests_policy;
#[cfg(test)]
mod tests_records;

use std::error::Error;
use std::future::Future;
use std::path::PathBuf;
use std::time::SystemTime;

use belay_proto::domain::{Request, RequestId, Resolution};
use tokio::sync::mpsc;

use crate::audit;

pub use chat_outbox::OutboxRow;
pub use enrollment::{EnrollOutcome, Enrollment, IssuedCertificate, token_id};
pub use memory::MemoryStore;
pub use policy::{NewPolicy, PolicyVote, StoredPolicy};
pub use postgres::{PostgresStore, is_postgres_url};
pub use records::{EnrollToken, Grant, GrantKey, RemoteChange, Revocation, Revoked, Vote, Voted};
pub use sqlite::{AuditOptions, SqliteStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be used at all: not a database, corrupt, unreadable, another
    /// application's. The problem is part of the message, which is the whole story.
    #[error("cannot open the database {}: {problem}", path.display())]
    Open {
        path: PathBuf,
        problem: Box<dyn Error + Send + Sync>,
    },
    /// The database was written by a newer belay-server; this one could misread it.
    #[error(
        "the database {} has schema version {found}, newer than the {known} this \
         belay-server knows: run a newer belay-server on it",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("storage backend failed: {0}")]
    Backend(#[source] Box<dyn Error + Send + Sync>),
}

/// Result of [`RequestStore::insert_if_absent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The request was new and is now stored.
    New(Request),
    /// A request with that id was already stored; this is it, unchanged.
    Existing(Request),
}

/// Result of [`RequestStore::resolve_pending`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The request was pending and now carries the resolution.
    Now(Request),
    /// The request had already ended; this is it, unchanged.
    Already(Request),
    NotFound,
}

/// Requests and their one change of state.
pub trait RequestStore: Send + Sync + 'static {
    fn insert_if_absent(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Inserted, StoreError>> + Send;

    fn get(
        &self,
        id: &RequestId,
    ) -> impl Future<Output = Result<Option<Request>, StoreError>> + Send;

    /// Sets the resolution of a request if, and only if, it is still pending: the single
    /// point where a request changes state, so two deciders cannot both win.
    fn resolve_pending(
        &self,
        id: &RequestId,
        resolution: Resolution,
    ) -> impl Future<Output = Result<Resolved, StoreError>> + Send;

    /// Pending requests, oldest first.
    fn pending(&self) -> impl Future<Output = Result<Vec<Request>, StoreError>> + Send;

    /// Ids of pending requests whose deadline is at or before `now`.
    fn pending_due(
        &self,
        now: SystemTime,
    ) -> impl Future<Output = Result<Vec<RequestId>, StoreError>> + Send;

    /// The earliest deadline among pending requests.
    fn next_deadline(&self) -> impl Future<Output = Result<Option<SystemTime>, StoreError>> + Send;

    /// The requests that ended before `request` was made, or at the same time, from the
    /// same host for the same action (the same [`action_digest`], which a grant
    /// compares), newest first, at most `limit`; never `request` itself nor a pending
    /// one. The agent does not matter.
    ///
    /// [`action_digest`]: crate::canonical_action::action_digest
    fn history(
        &self,
        request: &Request,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Request>, StoreError>> + Send;

    /// Changes that other server processes make to a shared database, for the one caller
    /// that follows them (`None` after the first call, and for stores no other process
    /// uses). A store shared by several replicas must report every request they insert
    /// or resolve, so that decisions reach agents connected to another replica.
    fn remote_changes(&self) -> Option<mpsc::UnboundedReceiver<RemoteChange>> {
        None
    }
}

/// Scoped grants: standing decisions on the same action.
pub trait GrantStore: Send + Sync + 'static {
    /// Records a scoped grant (and its audit record).
    fn add_grant(&self, grant: Grant) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Grants with exactly this key that have not expired at `now` and are not revoked,
    /// newest first.
    fn find_grants(
        &self,
        key: &GrantKey,
        now: SystemTime,
    ) -> impl Future<Output = Result<Vec<Grant>, StoreError>> + Send;

    /// Every grant in force at `now` (not expired, not revoked), whatever its key,
    /// newest first, at most `limit`.
    fn grants_in_force(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Grant>, StoreError>> + Send;

    /// Revokes the grant that the decision on request `id` created (a decision creates
    /// at most one), if it is in force at `revocation.at`, and appends its audit record,
    /// in one atomic step: of two concurrent revocations one wins, the other gets
    /// [`Revoked::Already`]. Unknown, expired and revoked grants change nothing.
    fn revoke_grant(
        &self,
        id: &RequestId,
        revocation: Revocation,
    ) -> impl Future<Output = Result<Revoked, StoreError>> + Send;
}

/// Approvals counted towards a request's quorum.
pub trait VoteStore: Send + Sync + 'static {
    /// Counts `vote` towards the quorum of request `id`, unless that reviewer's vote is
    /// counted already: one atomic step, so two replicas cannot count a reviewer twice.
    fn add_vote(
        &self,
        id: &RequestId,
        vote: Vote,
    ) -> impl Future<Output = Result<Voted, StoreError>> + Send;

    /// The approvals counted so far for request `id`, oldest first.
    fn votes(&self, id: &RequestId) -> impl Future<Output = Result<Vec<Vote>, StoreError>> + Send;
}

/// One-time enrollment tokens and their use.
pub trait EnrollmentStore: Send + Sync + 'static {
    /// Stores a new enrollment token. A hash already stored is an error.
    fn add_enroll_token(
        &self,
        token: EnrollToken,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Uses up the token of `enrollment` if it exists, is unused and has not expired at
    /// `enrollment.at`, whatever host it is presented for, and appends the audit record,
    /// in one atomic step: of concurrent enrollments with one token at most one changes
    /// it. Unbound or bound to `enrollment.host`, the enrollment is accepted; bound to
    /// another host, the token is spent ([`EnrollOutcome::OtherHost`]: it has leaked or
    /// been mixed up). Unknown, used or expired tokens change nothing.
    fn enroll(
        &self,
        enrollment: Enrollment,
    ) -> impl Future<Output = Result<EnrollOutcome, StoreError>> + Send;
}

/// Reading the audit log the other operations append to.
pub trait AuditLogStore: Send + Sync + 'static {
    /// Audit records with `seq > after_seq`, in order, at most `limit`.
    fn audit_records(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<audit::Record>, StoreError>> + Send;
}

/// The fleet policy: pushed versions and the votes that pushes need under a quorum.
pub trait PolicyStore: Send + Sync + 'static {
    /// Counts `vote` (an admin pushing a text while pushes need a quorum) with its audit
    /// record, in one atomic step; a later vote of the same admin for the same text
    /// replaces the earlier one. Returns the votes for that text cast at or after
    /// `since`, oldest first: one per admin.
    fn add_policy_vote(
        &self,
        vote: PolicyVote,
        since: SystemTime,
    ) -> impl Future<Output = Result<Vec<PolicyVote>, StoreError>> + Send;

    /// Stores `policy` as the next version of the fleet policy (the current version plus
    /// one, 1 for the first), with its audit record, in one atomic step: two replicas
    /// pushing at once get two different versions. The votes for its text are used up
    /// in the same step: pushing it again takes a quorum again.
    fn push_policy(
        &self,
        policy: NewPolicy,
    ) -> impl Future<Output = Result<StoredPolicy, StoreError>> + Send;

    /// The newest version of the fleet policy, if one was ever pushed.
    fn current_policy(
        &self,
    ) -> impl Future<Output = Result<Option<StoredPolicy>, StoreError>> + Send;

    /// Versions of the fleet policy that other server processes store in a shared
    /// database, for the one caller that follows them (`None` after the first call, and
    /// for stores no other process uses).
    fn remote_policy_changes(&self) -> Option<mpsc::UnboundedReceiver<u64>> {
        None
    }
}

/// The chat outbox: what each chat platform was told about each request (see
/// [`OutboxRow`]). Not audited: the decisions it shows are.
pub trait ChatOutboxStore: Send + Sync + 'static {
    /// Inserts or replaces the row of (`row.request_id`, `row.platform`).
    fn put_outbox_row(&self, row: OutboxRow)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the row of (`id`, `platform`), if any.
    fn remove_outbox_row(
        &self,
        id: &RequestId,
        platform: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every row of `platform`.
    fn outbox_rows(
        &self,
        platform: &str,
    ) -> impl Future<Output = Result<Vec<OutboxRow>, StoreError>> + Send;

    /// Takes or renews the lease on `platform`'s outbox for `holder` until `until`, if
    /// nobody else holds one in force at `now`; whether `holder` holds it now. One
    /// atomic step: of replicas sharing a database, one posts and updates at a time.
    fn lease_outbox(
        &self,
        platform: &str,
        holder: &str,
        now: SystemTime,
        until: SystemTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records that the inbound chat request `key` of `platform` (a signed payload's
    /// signature) was accepted, remembered until `until`; `false` if it already was and
    /// is still remembered at `now` (a replay). One atomic step, so that of replicas
    /// sharing a database only one accepts a payload. Entries forgotten at `now` are
    /// dropped on the way (schema version 9).
    fn accept_inbound_once(
        &self,
        platform: &str,
        key: &str,
        now: SystemTime,
        until: SystemTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Everything the server keeps, one concern per trait so that each user can say which
/// it needs; every backend implements them all, and gets this one for free.
pub trait Store:
    RequestStore
    + GrantStore
    + VoteStore
    + EnrollmentStore
    + AuditLogStore
    + PolicyStore
    + ChatOutboxStore
{
}

impl<S> Store for S where
    S: RequestStore
        + GrantStore
        + VoteStore
        + EnrollmentStore
        + AuditLogStore
        + PolicyStore
        + ChatOutboxStore
{
}
