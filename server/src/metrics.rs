//! Prometheus metrics of the approval service, in the text exposition format.
//!
//! Counters follow [`Approvals::changes`], which carries every request created or
//! resolved on any replica sharing the database: each replica counts the whole
//! cluster's requests, so sum over replicas only the per-replica series
//! (`belay_connected_agents`). The pending gauge is read
//! from the store at scrape time, so it is right after a restart and across replicas.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use belay_proto::domain::{Request, RequestState};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::approvals::{ApprovalError, Approvals, EnrollOutcome, Store};

pub mod chat;
pub mod grpc;

pub use grpc::MetricsLayer;

/// Upper bounds (seconds) of the decision latency buckets: people take seconds to
/// minutes, deadlines are minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// The end states, in the order they are reported.
const ENDS: [RequestState; 4] = [
    RequestState::Approved,
    RequestState::Denied,
    RequestState::Expired,
    RequestState::Cancelled,
];

/// The `result` labels of `belay_enrollments_total`, as [`EnrollOutcome::label`] names
/// them.
const ENROLL_RESULTS: [&str; 6] = [
    "enrolled",
    "unknown_token",
    "used_token",
    "expired_token",
    "wrong_host",
    "existing_host",
];

#[derive(Debug)]
pub struct Metrics {
    created: AtomicU64,
    resolved: [AtomicU64; ENDS.len()],
    latency: Histogram,
    /// Changes missed because the follower fell behind the broadcast.
    missed: AtomicU64,
    /// Enrollment attempts that reached the token check, by result.
    enrollments: [AtomicU64; ENROLL_RESULTS.len()],
    grpc: grpc::Calls,
    chat: chat::ByPlatform,
    chat_presses: chat::ByPlatform,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            created: AtomicU64::default(),
            resolved: Default::default(),
            latency: Histogram::default(),
            missed: AtomicU64::default(),
            enrollments: Default::default(),
            grpc: grpc::Calls::default(),
            chat: chat::ByPlatform::messages(),
            chat_presses: chat::ByPlatform::presses(),
        }
    }
}

#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new(LATENCY_BUCKETS)
    }
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(self.bounds) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str) {
        self.render_labelled(out, name, "");
    }

    /// `labels`: `key="value",` pairs put before `le` (empty: none).
    fn render_labelled(&self, out: &mut String, name: &str, labels: &str) {
        for (bucket, bound) in self.buckets.iter().zip(self.bounds) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let plain = labels.trim_end_matches(',');
        let braces = if plain.is_empty() {
            String::new()
        } else {
            format!("{{{plain}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

fn end_index(state: RequestState) -> Option<usize> {
    ENDS.iter().position(|end| *end == state)
}

/// What only the caller of [`Metrics::render`] knows: read at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    pub pending: usize,
    pub connected_agents: usize,
}

impl Metrics {
    /// Counts one change of a request, as [`Approvals::changes`] reports it.
    pub fn record(&self, request: &Request) {
        let state = request.state();
        let Some(index) = end_index(state) else {
            self.created.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.resolved[index].fetch_add(1, Ordering::Relaxed);
        if matches!(state, RequestState::Approved | RequestState::Denied)
            && let Some(resolution) = &request.resolution
        {
            // A clock step between replicas can make this negative: count it as 0.
            let waited = resolution
                .resolved_at
                .duration_since(request.created_at)
                .unwrap_or_default();
            self.latency.observe(waited);
        }
    }

    /// Counts one enrollment attempt that reached the token check.
    pub fn record_enrollment(&self, outcome: &EnrollOutcome) {
        if let Some(index) = ENROLL_RESULTS.iter().position(|r| *r == outcome.label()) {
            self.enrollments[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Chat messages, counted by the chat outbox.
    pub fn chat(&self) -> &chat::ByPlatform {
        &self.chat
    }

    /// Presses from chat, counted by the platforms' endpoints.
    pub fn chat_presses(&self) -> &chat::ByPlatform {
        &self.chat_presses
    }

    /// The gRPC calls counted so far, for [`grpc::MetricsLayer`].
    pub(crate) fn grpc(&self) -> &grpc::Calls {
        &self.grpc
    }

    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::new();
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        header(
            &mut out,
            "belay_requests_pending",
            "gauge",
            "Requests waiting for a decision, in the store.",
        );
        let _ = writeln!(out, "belay_requests_pending {}", gauges.pending);
        header(
            &mut out,
            "belay_requests_created_total",
            "counter",
            "Requests created since this process started.",
        );
        let _ = writeln!(
            out,
            "belay_requests_created_total {}",
            self.created.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "belay_requests_resolved_total",
            "counter",
            "Requests that ended since this process started, by end state.",
        );
        for (state, count) in ENDS.iter().zip(&self.resolved) {
            let _ = writeln!(
                out,
                "belay_requests_resolved_total{{state=\"{state}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "belay_decision_latency_seconds",
            "histogram",
            "Time from a request's creation to a reviewer's approval or denial.",
        );
        self.latency
            .render(&mut out, "belay_decision_latency_seconds");
        header(
            &mut out,
            "belay_connected_agents",
            "gauge",
            "Agents with a session open on this server process.",
        );
        let _ = writeln!(out, "belay_connected_agents {}", gauges.connected_agents);
        header(
            &mut out,
            "belay_request_changes_missed_total",
            "counter",
            "Request changes the counters missed because they fell behind.",
        );
        let _ = writeln!(
            out,
            "belay_request_changes_missed_total {}",
            self.missed.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "belay_enrollments_total",
            "counter",
            "Agent enrollment attempts that reached the token check, by result (refusals \
             are counted and logged, not audited).",
        );
        for (result, count) in ENROLL_RESULTS.iter().zip(&self.enrollments) {
            let _ = writeln!(
                out,
                "belay_enrollments_total{{result=\"{result}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        self.grpc.render(&mut out, header);
        self.chat.render(&mut out, header);
        self.chat_presses.render(&mut out, header);
        out.push_str(&belay_export::metrics::render_running());
        out
    }

    /// Reads what the counters cannot know by themselves, and renders.
    pub async fn scrape<S: Store>(
        &self,
        approvals: &Approvals<S>,
    ) -> Result<String, ApprovalError> {
        let pending = approvals.list_pending().await?.len();
        Ok(self.render(Gauges {
            pending,
            connected_agents: approvals.agents().len(),
        }))
    }
}

/// Feeds `metrics` with every change until `stop`.
pub async fn follow<S: Store>(
    approvals: Arc<Approvals<S>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut changes = approvals.changes();
    loop {
        let change = tokio::select! {
            () = stop.cancelled() => return,
            change = changes.recv() => change,
        };
        match change {
            Ok(request) => metrics.record(&request),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "metrics fell behind the request changes");
                metrics.missed.fetch_add(missed, Ordering::Relaxed);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
