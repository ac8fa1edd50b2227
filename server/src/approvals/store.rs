//! Where requests live. The approval rules talk to storage only through [`Store`], whose
//! operations are atomic on their own (insert-if-absent, resolve-if-pending) so that the
//! rules stay correct with several server replicas sharing a database.
//!
//! Only [`MemoryStore`] exists so far. The SQLite (default, embedded) and PostgreSQL
//! (several replicas) backends come with the storage issue; they implement this same
//! trait, which is why its methods are async and fallible although the memory store is
//! neither.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use belay_proto::domain::{Request, RequestId, Resolution};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
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

/// Requests in process memory; lost on restart.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    requests: HashMap<RequestId, Request>,
    /// Pending requests ordered by deadline, so expiry does not scan everything.
    pending_deadlines: BTreeSet<(SystemTime, RequestId)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryInner> {
        // Every critical section leaves the maps consistent before anything can panic,
        // so a poisoned lock still guards valid data.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    async fn insert_if_absent(&self, request: Request) -> Result<Inserted, StoreError> {
        let mut inner = self.lock();
        if let Some(existing) = inner.requests.get(&request.id) {
            return Ok(Inserted::Existing(existing.clone()));
        }
        if request.resolution.is_none() {
            inner
                .pending_deadlines
                .insert((request.deadline, request.id.clone()));
        }
        inner.requests.insert(request.id.clone(), request.clone());
        Ok(Inserted::New(request))
    }

    async fn get(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        Ok(self.lock().requests.get(id).cloned())
    }

    async fn resolve_pending(
        &self,
        id: &RequestId,
        resolution: Resolution,
    ) -> Result<Resolved, StoreError> {
        let mut inner = self.lock();
        let Some(request) = inner.requests.get_mut(id) else {
            return Ok(Resolved::NotFound);
        };
        if request.resolution.is_some() {
            return Ok(Resolved::Already(request.clone()));
        }
        request.resolution = Some(resolution);
        let request = request.clone();
        inner
            .pending_deadlines
            .remove(&(request.deadline, request.id.clone()));
        Ok(Resolved::Now(request))
    }

    async fn pending(&self) -> Result<Vec<Request>, StoreError> {
        let inner = self.lock();
        let mut pending: Vec<Request> = inner
            .pending_deadlines
            .iter()
            .filter_map(|(_, id)| inner.requests.get(id).cloned())
            .collect();
        pending.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(pending)
    }

    async fn pending_due(&self, now: SystemTime) -> Result<Vec<RequestId>, StoreError> {
        Ok(self
            .lock()
            .pending_deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(_, id)| id.clone())
            .collect())
    }

    async fn next_deadline(&self) -> Result<Option<SystemTime>, StoreError> {
        Ok(self
            .lock()
            .pending_deadlines
            .first()
            .map(|(deadline, _)| *deadline))
    }
}
