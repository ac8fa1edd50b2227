//! Runs the spool writer and one delivery task per sink.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{ExportConfig, SinkConfig};
use crate::event::Event;
use crate::format;
use crate::metrics::{self, Metrics};
use crate::sink::{Delivery, Sink, SinkError};
use crate::spool::{Spool, SpoolError};

/// Events waiting for the spool writer; beyond this, [`ExportHandle::offer`] drops (and
/// counts) rather than make the caller wait.
const QUEUE: usize = 8192;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Between attempts after a configuration error: someone has to fix it first.
const CONFIG_RETRY: Duration = Duration::from_secs(60);

/// The running export: spool, writer, sinks.
#[derive(Debug)]
pub struct Exporter {
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    handle: ExportHandle,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct ExportHandle {
    tx: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
}

impl ExportHandle {
    /// Queues `event` for the spool without waiting: enforcement paths call this. A full
    /// queue (the disk stalled) drops the event, counted as `queue_full`, logged.
    pub fn offer(&self, event: Event) {
        if let Err(err) = self.tx.try_send(event) {
            let reason = match err {
                mpsc::error::TrySendError::Full(_) => "queue_full",
                mpsc::error::TrySendError::Closed(_) => "stopped",
            };
            self.metrics.add(metrics::DROPPED, "*", reason, 1);
            // Every drop is counted; the log gets the first and then one in a thousand,
            // so a stalled disk does not also flood the journal.
            let dropped = self.metrics.counter(metrics::DROPPED, "*", Some(reason));
            if dropped % 1000 == 1 {
                tracing::warn!(reason, dropped, "export: events dropped before the spool");
            }
        }
    }
}

impl Exporter {
    /// Opens the spool and starts the writer and the sinks. Must run in a tokio runtime.
    pub fn start(config: ExportConfig) -> Result<Self, SpoolError> {
        Self::start_with(config, Arc::new(Metrics::default()))
    }

    pub fn start_with(config: ExportConfig, metrics: Arc<Metrics>) -> Result<Self, SpoolError> {
        metrics::register(&metrics);
        let names: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
        let spool = Spool::open(config.spool.clone(), &names, Arc::clone(&metrics))?;
        let stop = CancellationToken::new();
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut tasks = vec![tokio::spawn(write_loop(
            Arc::clone(&spool),
            rx,
            stop.clone(),
        ))];
        for sink in config.sinks {
            tasks.push(tokio::spawn(run_sink(
                Arc::clone(&spool),
                sink,
                Arc::clone(&metrics),
                stop.clone(),
            )));
        }
        Ok(Self {
            handle: ExportHandle {
                tx,
                metrics: Arc::clone(&metrics),
            },
            spool,
            metrics,
            stop,
            tasks,
        })
    }

    pub fn handle(&self) -> ExportHandle {
        self.handle.clone()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// Appends `events` to the spool and returns once they are on disk: for producers
    /// with a durable source of their own (the server's audit log), which advance their
    /// source cursor only after this.
    pub async fn append_durable(&self, events: Vec<Event>) -> Result<usize, SpoolError> {
        let spool = Arc::clone(&self.spool);
        tokio::task::spawn_blocking(move || {
            let payloads: Vec<Vec<u8>> = events
                .iter()
                .map(|e| serde_json::to_vec(e).expect("events serialize"))
                .collect();
            spool.append(&payloads)
        })
        .await
        .expect("spool append panicked")
    }

    /// Stops the sinks (undelivered events stay spooled) and the writer (after it has
    /// spooled what was offered).
    pub async fn shutdown(self) {
        self.stop.cancel();
        drop(self.handle);
        for task in self.tasks {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "export task panicked");
            }
        }
    }
}

/// Drains the queue into the spool, one fsync per batch, until `stop` (then spools what
/// is queued) or every handle is gone.
async fn write_loop(spool: Arc<Spool>, mut rx: mpsc::Receiver<Event>, stop: CancellationToken) {
    loop {
        let first = tokio::select! {
            first = rx.recv() => first,
            () = stop.cancelled() => {
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let payloads: Vec<Vec<u8>> = batch
            .iter()
            .map(|e| serde_json::to_vec(e).expect("events serialize"))
            .collect();
        let payloads = Arc::new(payloads);
        let mut delay = BACKOFF_MIN;
        loop {
            let spool = Arc::clone(&spool);
            let batch = Arc::clone(&payloads);
            match tokio::task::spawn_blocking(move || spool.append(&batch)).await {
                Ok(Ok(_)) => break,
                Ok(Err(err)) => {
                    // A full or failing disk: retrying keeps the events; the queue in
                    // front fills and then drops, counted.
                    tracing::error!(error = %err, "export spool write failed; retrying");
                }
                Err(err) => tracing::error!(error = %err, "export spool write panicked"),
            }
            if stop.is_cancelled() && delay >= BACKOFF_MAX {
                tracing::error!(
                    events = payloads.len(),
                    "export: stopping with events not spooled"
                );
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }
}

/// Batches written to a sink and not confirmed yet, kept until at most this many: then
/// the sink waits for confirmations before reading more.
const MAX_PENDING_BATCHES: usize = 1024;

/// A batch a sink holds pending: its first seq, the seq after it, and its events.
#[derive(Debug, Clone, Copy)]
struct Pending {
    first: u64,
    end: u64,
    events: u64,
}

async fn run_sink(
    spool: Arc<Spool>,
    config: SinkConfig,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let name = config.name.clone();
    let mut head = spool.head();
    let mut reader = spool.reader(&name);
    let mut sink: Option<Sink> = None;
    let batch_max = Sink::batch_max(&config);
    let mut delay = BACKOFF_MIN;
    // Oldest first. The cursor never passes the first: it only moves to a confirmed end.
    let mut pending: VecDeque<Pending> = VecDeque::new();
    while !stop.is_cancelled() {
        let failure = 'attempt: {
            if let Some(s) = &mut sink
                && !pending.is_empty()
            {
                match s.poll_confirmed() {
                    Ok(0) => {}
                    Ok(n) => {
                        confirm(&spool, &metrics, &name, &mut pending, n);
                        delay = BACKOFF_MIN;
                    }
                    Err(err) => break 'attempt Some((err, None)),
                }
            }
            let check = sink.as_ref().and_then(Sink::next_check);
            if pending.len() >= MAX_PENDING_BATCHES {
                tokio::select! {
                    () = sleep_until(check) => {}
                    () = stop.cancelled() => {}
                }
                break 'attempt None;
            }
            let batch = match reader.read(batch_max) {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::error!(sink = %name, error = %err, "export: cannot read the spool");
                    sleep_or_stop(&stop, BACKOFF_MAX).await;
                    break 'attempt None;
                }
            };
            let (Some(&(first, _)), Some(&(last, _))) = (batch.first(), batch.last()) else {
                tokio::select! {
                    _ = head.changed() => {}
                    () = sleep_until(check) => {}
                    () = stop.cancelled() => {}
                }
                break 'attempt None;
            };
            let mut events = Vec::with_capacity(batch.len());
            for (seq, payload) in &batch {
                match serde_json::from_slice::<Event>(payload) {
                    Ok(event) => events.push(event),
                    Err(err) => {
                        tracing::error!(sink = %name, seq, error = %err, "export: undecodable spool record dropped");
                        metrics.add(metrics::DROPPED, &name, "corrupt", 1);
                    }
                }
            }
            let rendered: Vec<_> = events
                .iter()
                .map(|e| format::render(e, config.format))
                .collect();
            if sink.is_none() {
                match Sink::new(&config) {
                    Ok(new) => sink = Some(new),
                    Err(err) => break 'attempt Some((err, Some(first))),
                }
            }
            let s = sink.as_mut().expect("created above");
            let delivery = tokio::select! {
                result = s.deliver(&events, &rendered) => result,
                () = stop.cancelled() => break 'attempt None,
            };
            let batch = Pending {
                first,
                end: last + 1,
                events: events.len() as u64,
            };
            match delivery {
                Ok(Delivery::Pending) => pending.push_back(batch),
                Ok(Delivery::Confirmed) => {
                    // Only stream sinks leave batches pending, and they confirm in order.
                    pending.push_back(batch);
                    confirm(&spool, &metrics, &name, &mut pending, usize::MAX);
                    delay = BACKOFF_MIN;
                }
                Ok(Delivery::Rejected(rejected)) => {
                    // Passed like a confirmed batch: the receiver asked not to get its
                    // rejected records again. Counted, and the sink logged its reason.
                    confirm(&spool, &metrics, &name, &mut pending, usize::MAX);
                    let rejected = rejected.min(batch.events);
                    metrics.add(metrics::DELIVERED, &name, "", batch.events - rejected);
                    metrics.add(metrics::DROPPED, &name, "rejected", rejected);
                    commit(&spool, &name, batch.end);
                    delay = BACKOFF_MIN;
                }
                Ok(Delivery::Unconfirmed) => {
                    // Best effort (UDP): passed, counted as sent, not as delivered.
                    metrics.add(crate::sink::SENT_UNCONFIRMED, &name, "", batch.events);
                    commit(&spool, &name, batch.end);
                    delay = BACKOFF_MIN;
                }
                Err(err) => break 'attempt Some((err, Some(first))),
            }
            // A write alone does not reset the backoff: a receiver that accepts and then
            // drops every connection would otherwise be hammered.
            None
        };
        let Some((err, batch_first)) = failure else {
            continue;
        };
        // Whatever was pending went with the connection: read it all again, from the
        // oldest unconfirmed record.
        let lost: u64 = pending.iter().map(|p| p.events).sum();
        if let Some(resume) = pending.front().map(|p| p.first).or(batch_first) {
            reader.rewind(resume);
        }
        pending.clear();
        metrics.add(metrics::RETRIED, &name, err.reason(), 1);
        let wait = match &err {
            SinkError::Config(_) => {
                tracing::error!(sink = %name, error = %err, "export sink refuses our events; fix its configuration (retrying, nothing is dropped)");
                CONFIG_RETRY
            }
            SinkError::Retry(_) => {
                tracing::warn!(sink = %name, error = %err, unconfirmed_events = lost, retry_in_ms = delay.as_millis() as u64, "export sink unavailable; retrying");
                let wait = delay;
                delay = (delay * 2).min(BACKOFF_MAX);
                wait
            }
        };
        sleep_or_stop(&stop, wait).await;
    }
    // Stopping: what is pending is confirmed only by a clean close; otherwise it stays
    // ahead of the cursor and is sent again after the next start.
    if let Some(mut s) = sink
        && !pending.is_empty()
    {
        if s.close().await {
            confirm(&spool, &metrics, &name, &mut pending, usize::MAX);
        } else {
            tracing::info!(
                sink = %name,
                unconfirmed_events = pending.iter().map(|p| p.events).sum::<u64>(),
                "export: stopping with unconfirmed events; they are sent again at the next start"
            );
        }
    }
}

/// Counts the `n` oldest pending batches (at most all) as delivered and moves the cursor
/// past them.
fn confirm(
    spool: &Spool,
    metrics: &Metrics,
    name: &str,
    pending: &mut VecDeque<Pending>,
    n: usize,
) {
    let confirmed: Vec<Pending> = pending.drain(..n.min(pending.len())).collect();
    let Some(last) = confirmed.last() else {
        return;
    };
    metrics.add(
        metrics::DELIVERED,
        name,
        "",
        confirmed.iter().map(|p| p.events).sum(),
    );
    commit(spool, name, last.end);
}

fn commit(spool: &Spool, name: &str, end: u64) {
    if let Err(err) = spool.commit(name, end) {
        // Delivered but not recorded: re-delivered after a restart (ids dedupe).
        tracing::error!(sink = %name, error = %err, "export: cannot persist the sink cursor");
    }
}

/// Sleeps until `at`; forever if `None`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sleeps `wait`, or less if `stop` comes first.
async fn sleep_or_stop(stop: &CancellationToken, wait: Duration) {
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = stop.cancelled() => {}
    }
}
