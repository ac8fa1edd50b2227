//! The outbox: what each platform should show about each request, and the worker that
//! makes it so. The desired state comes from the requests themselves (pending with N
//! approvals, or final); a row per (request, platform) records where the message went
//! and what it last showed, so a message is posted once and updated after every
//! change, whoever made it (chat, console, CLI, a grant, the deadline).
//!
//! The worker reacts to [`Approvals::changes`] and [`Approvals::votes_counted`], and
//! re-reads the pending requests every [`RESCAN`] so that a lagged receiver, or a change
//! made on another replica, is caught up. It never sits on a decision's path: a slow or
//! absent platform delays messages only.
//!
//! Delivery is at least once: if Slack accepts a post and the answer is lost (timeout,
//! crash before the row is written), the post is retried and the channel shows the
//! request twice; the later message is the one kept up to date.
//!
//! The rows are kept in the store ([`ChatOutboxStore`], schema version 8), written after
//! each post, update or giving up, and read back when the worker starts: after a
//! restart nothing pending is posted again and messages of requests decided meanwhile
//! are updated. The worker keeps them in memory too.
//!
//! Replicas sharing PostgreSQL each run a worker, but only the one holding the
//! platform's lease ([`ChatOutboxStore::lease_outbox`], renewed every third of
//! [`LEASE`]) posts and updates; it stops sending once its lease may have run out. When
//! it dies, another takes the lease after it expires, reads the rows and carries on,
//! so a message is posted once and still updated.
//!
//! [`ChatOutboxStore::lease_outbox`]: crate::store::ChatOutboxStore::lease_outbox

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use belay_proto::domain::RequestId;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::card::RequestCard;
use super::routing::{self, Route};
use super::surface::{Platform, PostedMessage, SendError, Surface};
use crate::approvals::{ApprovalError, Approvals, Store};
use crate::metrics::Metrics;
use crate::store::OutboxRow;

/// How often the pending requests are read again regardless of notifications.
pub const RESCAN: Duration = Duration::from_secs(10);
/// How long a worker holds its platform's outbox without renewing.
pub const LEASE: Duration = Duration::from_secs(30);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What a message showed (or should show).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    state: String,
    approvals: u32,
}

#[derive(Debug)]
struct Row {
    target: String,
    message: Option<PostedMessage>,
    shown: Option<Shown>,
    attempts: u32,
    next_attempt: Instant,
    /// The platform refused the post for good: do not try again.
    gave_up: bool,
}

/// The outbox rows of one platform, by request.
type Rows = HashMap<RequestId, Row>;

/// Keeps one platform's messages in line with the requests.
pub struct Worker<S, P> {
    approvals: Arc<Approvals<S>>,
    surface: Arc<P>,
    routes: Arc<Vec<Route>>,
    rows: Rows,
    /// Requests to look at, whenever their row is due.
    dirty: BTreeSet<RequestId>,
    /// The platform asked us to wait (HTTP 429) until then.
    blocked_until: Option<Instant>,
    next_rescan: Instant,
    rescan_every: Duration,
    lease: Duration,
    /// This worker's name in the lease.
    holder: String,
    /// While we hold the lease: until when it surely holds (taken before asking).
    leased_until: Option<Instant>,
    next_lease: Instant,
    metrics: Option<Arc<Metrics>>,
}

impl<S: Store, P: Surface> Worker<S, P> {
    pub fn new(approvals: Arc<Approvals<S>>, surface: Arc<P>, routes: Arc<Vec<Route>>) -> Self {
        Self {
            approvals,
            surface,
            routes,
            rows: Rows::new(),
            dirty: BTreeSet::new(),
            blocked_until: None,
            next_rescan: Instant::now(),
            rescan_every: RESCAN,
            lease: LEASE,
            holder: holder_name(),
            leased_until: None,
            next_lease: Instant::now(),
            metrics: None,
        }
    }

    /// Counts messages in `metrics` (`belay_chat_messages_total`).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, result: &'static str) {
        record(self.metrics.as_deref(), self.platform().as_str(), result);
    }

    /// Other rescan and lease periods (tests).
    #[must_use]
    pub fn with_timing(mut self, rescan: Duration, lease: Duration) -> Self {
        self.rescan_every = rescan;
        self.lease = lease;
        self
    }

    /// Gives the lease up on shutdown, so the next process (or another replica) takes
    /// over at once rather than after [`LEASE`] (as it must after a crash).
    async fn release(&mut self) {
        if self.leased_until.take().is_none() {
            return;
        }
        let now = std::time::SystemTime::now();
        let platform = self.platform().as_str();
        if let Err(err) = self
            .approvals
            .store()
            .lease_outbox(platform, &self.holder, now, now)
            .await
        {
            tracing::warn!(platform, error = %err, "cannot release the chat outbox lease");
        }
    }

    /// Whether this worker may send now: takes or renews the lease when due. Gaining
    /// it reads the rows another holder may have written.
    async fn leading(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next_lease {
            return self.leased_until.is_some_and(|until| now < until);
        }
        let platform = self.platform().as_str();
        let wall = std::time::SystemTime::now();
        let granted = self
            .approvals
            .store()
            .lease_outbox(platform, &self.holder, wall, wall + self.lease)
            .await;
        // A lease that ran out meanwhile may have had another holder: start afresh.
        let was_leading = self.leased_until.is_some_and(|until| now < until);
        self.next_lease = now + self.lease / 3;
        match granted {
            Ok(true) => {
                self.leased_until = Some(now + self.lease);
                if !was_leading {
                    tracing::info!(platform, holder = %self.holder, "chat outbox lease taken");
                    self.rows.clear();
                    self.load().await;
                    self.next_rescan = Instant::now();
                }
                true
            }
            Ok(false) => {
                if was_leading {
                    tracing::warn!(platform, "chat outbox lease lost to another replica");
                }
                self.leased_until = None;
                self.dirty.clear();
                false
            }
            Err(err) => {
                tracing::warn!(platform, error = %err, "cannot renew the chat outbox lease");
                // Still ours until it runs out; then nothing is sent until renewed.
                if self
                    .leased_until
                    .is_some_and(|until| Instant::now() >= until)
                {
                    self.leased_until = None;
                }
                self.leased_until.is_some()
            }
        }
    }

    fn platform(&self) -> Platform {
        self.surface.platform()
    }

    pub async fn run(mut self, stop: CancellationToken) {
        let mut changes = self.approvals.changes();
        let mut votes = self.approvals.votes_counted();
        loop {
            if self.leading().await {
                if Instant::now() >= self.next_rescan {
                    self.rescan().await;
                }
                self.flush().await;
            } else {
                // The holder posts; the pending requests are read again on taking over.
                self.dirty.clear();
            }
            let wake = self.next_wake().min(self.next_lease);
            tokio::select! {
                () = stop.cancelled() => {
                    self.release().await;
                    return;
                }
                change = changes.recv() => match change {
                    Ok(request) => { self.dirty.insert(request.id); }
                    Err(RecvError::Lagged(_)) => self.next_rescan = Instant::now(),
                    Err(RecvError::Closed) => return,
                },
                vote = votes.recv() => match vote {
                    Ok(id) => { self.dirty.insert(id); }
                    Err(RecvError::Lagged(_)) => self.next_rescan = Instant::now(),
                    Err(RecvError::Closed) => return,
                },
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// The earliest moment something can be done: a rescan, or a due row once the
    /// platform takes calls again.
    fn next_wake(&self) -> Instant {
        let due = self
            .dirty
            .iter()
            .map(|id| {
                self.rows
                    .get(id)
                    .map_or_else(Instant::now, |row| row.next_attempt)
            })
            .min();
        let due = match (due, self.blocked_until) {
            (Some(due), Some(blocked)) => Some(due.max(blocked)),
            (due, _) => due,
        };
        due.map_or(self.next_rescan, |due| due.min(self.next_rescan))
    }

    /// Every pending request, and every request with a row, is looked at again.
    async fn rescan(&mut self) {
        self.next_rescan = Instant::now() + self.rescan_every;
        match self.approvals.list_pending().await {
            Ok(pending) => self.dirty.extend(pending.into_iter().map(|r| r.id)),
            Err(err) => {
                tracing::warn!(platform = self.platform().as_str(), error = %err, "chat outbox cannot list pending requests")
            }
        }
        self.dirty.extend(self.rows.keys().cloned());
    }

    async fn flush(&mut self) {
        let ids: Vec<RequestId> = self.dirty.iter().cloned().collect();
        for id in ids {
            let now = Instant::now();
            if self.blocked_until.is_some_and(|until| now < until) {
                return;
            }
            // A lease that may have run out (a slow platform) is renewed first, or
            // another replica could be posting the same request.
            if now >= self.next_lease && !self.leading().await {
                return;
            }
            self.blocked_until = None;
            if self.rows.get(&id).is_some_and(|row| row.next_attempt > now) {
                continue;
            }
            match self.sync(&id).await {
                Ok(()) => {
                    self.dirty.remove(&id);
                }
                Err(err) => self.failed(&id, err).await,
            }
        }
    }

    /// Makes the platform show request `id` as it is now.
    async fn sync(&mut self, id: &RequestId) -> Result<(), SendError> {
        let span =
            tracing::debug_span!("chat outbox", platform = self.platform().as_str(), id = %id);
        let request = match self.approvals.get(id).await {
            Ok(request) => request,
            Err(ApprovalError::NotFound(_)) => {
                self.rows.remove(id);
                return Ok(());
            }
            Err(err) => {
                return Err(SendError::Transient(format!(
                    "cannot read the request: {err}"
                )));
            }
        };
        let quorum = self.approvals.quorum();
        let approvals = if request.resolution.is_none() && quorum > 1 {
            match self.approvals.votes(id).await {
                Ok(votes) => u32::try_from(votes.len()).unwrap_or(u32::MAX),
                Err(err) => {
                    return Err(SendError::Transient(format!(
                        "cannot read the votes: {err}"
                    )));
                }
            }
        } else {
            0
        };
        let desired = Shown {
            state: request.state().as_str().to_owned(),
            approvals,
        };
        let card = RequestCard {
            request,
            approvals,
            quorum,
        };
        let (metrics, platform) = (self.metrics.clone(), self.platform().as_str());
        let row = match self.rows.get_mut(id) {
            Some(row) => row,
            None => {
                if !card.is_open() {
                    // Ended before it was ever posted: nobody needs to be asked.
                    return Ok(());
                }
                let Some(target) = routing::target(&self.routes, &card.request, self.platform())
                else {
                    tracing::debug!(parent: &span, "no route: not posted");
                    record(metrics.as_deref(), platform, "unrouted");
                    return Ok(());
                };
                self.rows.entry(id.clone()).or_insert(Row {
                    target: target.to_owned(),
                    message: None,
                    shown: None,
                    attempts: 0,
                    next_attempt: Instant::now(),
                    gave_up: false,
                })
            }
        };
        if row.gave_up {
            if !card.is_open() {
                self.forget(id).await;
            }
            return Ok(());
        }
        match &row.message {
            None if !card.is_open() => {
                // Decided while the platform was unreachable: nothing left to ask.
                self.forget(id).await;
                return Ok(());
            }
            None => {
                let message = self.surface.post(&row.target, &card).await?;
                tracing::info!(parent: &span, target = %row.target, message = %message.0, "request posted");
                record(metrics.as_deref(), platform, "posted");
                row.message = Some(message);
                row.shown = Some(desired);
            }
            Some(message) if row.shown.as_ref() != Some(&desired) => {
                self.surface.update(message, &card).await?;
                tracing::info!(parent: &span, state = %desired.state, approvals = desired.approvals, "message updated");
                record(metrics.as_deref(), platform, "updated");
                row.shown = Some(desired);
            }
            Some(_) => {}
        }
        row.attempts = 0;
        if card.is_open() {
            self.persist(id).await;
        } else {
            // Final and shown: nothing will change any more.
            self.forget(id).await;
        }
        Ok(())
    }

    /// Writes the row of `id` to the store. A failure is logged only: the row is still
    /// in memory, and the worst case after a restart is a second post.
    async fn persist(&self, id: &RequestId) {
        let Some(row) = self.rows.get(id) else {
            return;
        };
        let stored = OutboxRow {
            request_id: id.clone(),
            platform: self.platform().as_str().to_owned(),
            target: row.target.clone(),
            message: row.message.as_ref().map(|m| m.0.clone()),
            shown_state: row.shown.as_ref().map(|s| s.state.clone()),
            shown_approvals: row.shown.as_ref().map_or(0, |s| s.approvals),
            attempts: row.attempts,
            next_attempt: std::time::SystemTime::now()
                + row.next_attempt.saturating_duration_since(Instant::now()),
            gave_up: row.gave_up,
        };
        if let Err(err) = self.approvals.store().put_outbox_row(stored).await {
            tracing::error!(platform = self.platform().as_str(), id = %id, error = %err, "cannot store the chat outbox row");
        }
    }

    /// Drops the row of `id`, here and in the store.
    async fn forget(&mut self, id: &RequestId) {
        if self.rows.remove(id).is_none() {
            return;
        }
        let platform = self.platform().as_str();
        if let Err(err) = self.approvals.store().remove_outbox_row(id, platform).await {
            tracing::error!(platform, id = %id, error = %err, "cannot remove the chat outbox row");
        }
    }

    /// The rows a previous run of the server left.
    async fn load(&mut self) {
        let platform = self.platform().as_str();
        match self.approvals.store().outbox_rows(platform).await {
            Ok(rows) => {
                for row in rows {
                    let shown = row.shown_state.map(|state| Shown {
                        state,
                        approvals: row.shown_approvals,
                    });
                    self.rows.insert(
                        row.request_id,
                        Row {
                            target: row.target,
                            message: row.message.map(PostedMessage),
                            shown,
                            attempts: row.attempts,
                            next_attempt: Instant::now(),
                            gave_up: row.gave_up,
                        },
                    );
                }
                tracing::info!(platform, rows = self.rows.len(), "chat outbox loaded");
            }
            Err(err) => {
                tracing::error!(platform, error = %err, "cannot read the chat outbox; pending requests may be posted again");
            }
        }
    }

    async fn failed(&mut self, id: &RequestId, err: SendError) {
        let platform = self.platform().as_str();
        match err {
            SendError::RetryAfter(after) => {
                self.count("rate_limited");
                tracing::warn!(platform, id = %id, retry_after_s = after.as_secs_f64(), "rate limited by the chat platform");
                self.blocked_until = Some(Instant::now() + after);
            }
            SendError::Transient(problem) => {
                self.count("failed_transient");
                let Some(row) = self.rows.get_mut(id) else {
                    // Failed before it had a row (reading the store): the next rescan
                    // brings it back, without spinning on it meanwhile.
                    tracing::warn!(platform, id = %id, %problem, "chat outbox failed; will rescan");
                    self.dirty.remove(id);
                    return;
                };
                row.attempts += 1;
                let backoff = BACKOFF_FIRST
                    .saturating_mul(1 << row.attempts.min(8).saturating_sub(1))
                    .min(BACKOFF_MAX);
                row.next_attempt = Instant::now() + backoff;
                tracing::warn!(platform, id = %id, attempts = row.attempts, retry_in_ms = backoff.as_millis() as u64, %problem, "chat message failed; will retry");
            }
            SendError::Permanent(problem) => {
                self.count("failed_permanent");
                tracing::error!(platform, id = %id, %problem, "the chat platform refused the message; giving up on it (the request is still decidable elsewhere)");
                self.dirty.remove(id);
                if let Some(row) = self.rows.get_mut(id) {
                    row.gave_up = true;
                    self.persist(id).await;
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;

fn record(metrics: Option<&Metrics>, platform: &'static str, result: &'static str) {
    if let Some(metrics) = metrics {
        metrics.chat().record(platform, result);
    }
}

/// A name no other worker has: the host, the process and a random part.
fn holder_name() -> String {
    let mut random = [0u8; 8];
    // Without randomness, process id and time still tell replicas apart in practice.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}/{}/{hex}", host.trim(), std::process::id())
}
