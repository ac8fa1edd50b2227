//! Where requests live. The approval rules talk to storage only through [`Store`], whose
//! operations are atomic on their own (insert-if-absent, resolve-if-pending) so that the
//! rules stay correct with several server replicas sharing a database.
//!
//! Backends:
//! - [`SqliteStore`]: the default, a SQLite file embedded in the server process;
//! - [`MemoryStore`]: process memory, lost on restart; for tests and development.
//!
//! PostgreSQL (several replicas) comes next and implements this same trait, which is why
//! its methods are async and fallible although the memory store is neither.

mod memory;
mod sqlite;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::error::Error;
use std::future::Future;
use std::path::PathBuf;
use std::time::SystemTime;

use belay_proto::domain::{Request, RequestId, Resolution};

pub use memory::MemoryStore;
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

/// Result of [`Store::insert_if_absent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The request was new and is now stored.
    New(Request),
    /// A request with that id was already stored; this is it, unchanged.
    Existing(Request),
}

/// Result of [`Store::resolve_pending`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The request was pending and now carries the resolution.
    Now(Request),
    /// The request had already ended; this is it, unchanged.
    Already(Request),
    NotFound,
}

pub trait Store: Send + Sync + 'static {
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
}
