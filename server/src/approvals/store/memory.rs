//! [`MemoryStore`]: requests in process memory, for tests and development.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use belay_proto::domain::{Request, RequestId, Resolution};

use super::{Inserted, Resolved, Store, StoreError};

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
