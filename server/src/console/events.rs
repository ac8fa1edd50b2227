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

/// What of `batch` goes to a page that has been sent the pending requests in `listed`
/// (which it updates): new pending requests, and the last state of listed ones that
/// ended. A pending request the page has is nothing new to draw; an ended one it never
/// had is nothing to remove.
fn deliverable(batch: Batch, listed: &mut HashSet<RequestId>) -> Vec<Request> {
    batch
        .into_requests()
        .filter(|request| {
            if request.state() == RequestState::Pending {
                listed.insert(request.id.clone())
            } else {
                listed.remove(&request.id)
            }
        })
        .collect()
}

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
            for request in deliverable(batch, &mut listed) {
                if tx.send(Ok(request_event(&request))).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::IpAddr;
    use std::num::NonZeroU16;
    use std::time::{Duration, SystemTime};

    use belay_proto::domain::{
        Action, ConnectAction, HostName, Identity, Name, Outcome, Protocol, Reason, Request,
        RequestId, Resolution, Verdict,
    };

    use super::{Batch, deliverable};

    fn pending(id: &str) -> Request {
        let now = SystemTime::now();
        Request {
            id: RequestId::new(id).unwrap(),
            host: HostName::new("web-1").unwrap(),
            agent_name: Name::new("copilot").unwrap(),
            owner: Identity::new("alice@example.com").unwrap(),
            pid: 1,
            uid: 1000,
            action: Action::Connect(ConnectAction {
                address: IpAddr::V4([192, 0, 2, 1].into()),
                port: NonZeroU16::new(443).unwrap(),
                protocol: Protocol::Tcp,
            }),
            deadline: now + Duration::from_secs(60),
            default_verdict: Verdict::Deny,
            rule: Name::new("egress").unwrap(),
            created_at: now,
            resolution: None,
            context: Default::default(),
        }
    }

    fn approved(id: &str) -> Request {
        let mut request = pending(id);
        request.resolution = Some(Resolution {
            outcome: Outcome::Decided {
                verdict: Verdict::Allow,
                reviewer: Identity::new("bob@example.com").unwrap(),
            },
            reason: Reason::new("ok").unwrap(),
            resolved_at: SystemTime::now(),
        });
        request
    }

    fn ids(requests: &[Request]) -> Vec<(&str, &str)> {
        requests
            .iter()
            .map(|r| (r.id.as_str(), r.state().as_str()))
            .collect()
    }

    #[test]
    fn a_page_gets_new_pending_requests_and_the_end_of_those_it_has_only() {
        let mut listed: HashSet<RequestId> = [RequestId::new("web-1:old").unwrap()].into();
        let mut batch = Batch::default();
        // Created and decided within the window: the page never sees it.
        batch.add(pending("web-1:fast"));
        batch.add(approved("web-1:fast"));
        // New and still pending: drawn.
        batch.add(pending("web-1:new"));
        // Listed before, ended now: removed.
        batch.add(approved("web-1:old"));
        let sent = deliverable(batch, &mut listed);
        assert_eq!(
            ids(&sent),
            [("web-1:new", "pending"), ("web-1:old", "approved")]
        );
        assert_eq!(listed, [RequestId::new("web-1:new").unwrap()].into());

        // The same pending request again is nothing new; its end is.
        let mut batch = Batch::default();
        batch.add(pending("web-1:new"));
        assert!(deliverable(batch, &mut listed).is_empty());
        let mut batch = Batch::default();
        batch.add(approved("web-1:new"));
        assert_eq!(
            ids(&deliverable(batch, &mut listed)),
            [("web-1:new", "approved")]
        );
        assert!(listed.is_empty());
    }
}
