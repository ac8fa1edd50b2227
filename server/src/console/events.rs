//! `GET /api/events`: the live queue as server-sent events. The feed of the gRPC
//! `WatchRequests`, cut to what a page of pending requests needs: every pending request,
//! `synced`, then new pending requests and the end of those sent, gathered for 100 ms
//! (here or, with PostgreSQL, on another replica); a watcher that falls behind gets
//! `resync` and the pending list again rather than a silent gap.
//!
//! A stream opened with a session ends when the session does: the browser reconnects,
//! is refused, and the page says the session expired.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use belay_proto::domain::{Request, RequestId, RequestState};
use futures_util::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::Console;
use super::guard::{ApiError, Caller};
use super::views;
use crate::approvals::{Approvals, Store};
use crate::auth::Role;

/// Events queued towards one page before its task waits for it.
const BUFFER: usize = 64;
/// How long changes are gathered before they go to a page: well inside the second a
/// reviewer should wait to see a new request.
const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// A window ends early with this many requests in it.
const MAX_BATCH: usize = 4096;

/// The last state of each request changed in one window, in the order they first changed.
#[derive(Default)]
struct Batch {
    order: Vec<RequestId>,
    last: std::collections::HashMap<RequestId, Request>,
}

impl Batch {
    fn add(&mut self, request: Request) {
        if !self.last.contains_key(&request.id) {
            self.order.push(request.id.clone());
        }
        self.last.insert(request.id.clone(), request);
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn into_requests(mut self) -> impl Iterator<Item = Request> {
        self.order
            .into_iter()
            .filter_map(move |id| self.last.remove(&id))
    }
}
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn events<S: Store>(
    State(console): State<Arc<Console<S>>>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Role::Viewer)?;
    let (tx, rx) = mpsc::channel(BUFFER);
    // Subscribed before the first listing, so nothing created in between is missed.
    let changes = console.approvals.changes();
    let approvals = Arc::clone(&console.approvals);
    let stop = console.stop.clone();
    let until = caller.session.as_ref().map(|session| {
        session
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    });
    tokio::spawn(async move {
        let session_end = async {
            match until {
                Some(left) => tokio::time::sleep(left).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = follow(&approvals, changes, &tx) => {}
            () = tx.closed() => {}
            () = stop.cancelled() => {}
            () = session_end => {}
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

type Sink = mpsc::Sender<Result<Event, Infallible>>;

fn request_event(request: &Request) -> Event {
    Event::default()
        .event("request")
        .data(views::request(request).to_string())
}

fn marker(name: &'static str) -> Event {
    Event::default().event(name).data("{}")
}

async fn follow<S: Store>(
    approvals: &Approvals<S>,
    mut changes: broadcast::Receiver<Request>,
    tx: &Sink,
) {
    let mut first = true;
    loop {
        if !first && tx.send(Ok(marker("resync"))).await.is_err() {
            return;
        }
        first = false;
        // The pending requests this page has been sent (and not yet told they ended).
        let mut listed: HashSet<RequestId> = HashSet::new();
        let pending = match approvals.list_pending().await {
            Ok(pending) => pending,
            Err(err) => {
                tracing::warn!(error = %err, "console events: cannot list pending requests");
                return;
            }
        };
        for request in &pending {
            listed.insert(request.id.clone());
            if tx.send(Ok(request_event(request))).await.is_err() {
                return;
            }
        }
        if tx.send(Ok(marker("synced"))).await.is_err() {
            return;
        }
        // Changes are gathered for a short window and sent once per request: under load,
        // most requests are created and decided within one window, and a page that shows
        // the pending ones has nothing to draw for them (nor the server to send).
        loop {
            let mut batch = Batch::default();
            match changes.recv().await {
                Ok(request) => batch.add(request),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(
                        missed,
                        "a console page fell behind; sending the pending set again"
                    );
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
            let window = tokio::time::sleep(BATCH_WINDOW);
            tokio::pin!(window);
            let mut lagged = false;
            while batch.len() < MAX_BATCH {
                tokio::select! {
                    () = &mut window => break,
                    change = changes.recv() => match change {
                        Ok(request) => batch.add(request),
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::info!(missed, "a console page fell behind; sending the pending set again");
                            lagged = true;
                            break;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
            if lagged {
                break;
            }
            for request in batch.into_requests() {
                let pending = request.state() == RequestState::Pending;
                // A pending request the page has: nothing new to draw. An ended one the
                // page never had: nothing to remove.
                let send = if pending {
                    listed.insert(request.id.clone())
                } else {
                    listed.remove(&request.id)
                };
                if send && tx.send(Ok(request_event(&request))).await.is_err() {
                    return;
                }
            }
        }
    }
}
