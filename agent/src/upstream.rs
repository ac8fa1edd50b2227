//! The link to `belay-server`: requests that need a person go up the agent's one
//! long-lived stream, decisions come down. The link reconnects by itself and resubmits
//! what is still pending under the same ids (the server treats a repeated id as the
//! same request), so a server restart or a network blip loses nothing.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use belay_proto::{
    domain,
    v1::{self, agent_message, agent_service_client::AgentServiceClient, server_message},
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{info, warn};

use crate::{kernel::Verdict, sync::lock};

/// What the daemon sends up.
#[derive(Debug)]
pub enum Up {
    Submit(v1::NewRequest),
    /// The request no longer needs a decision (the process is gone).
    Withdraw {
        id: String,
        reason: String,
    },
}

/// What comes down for the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// Apply this verdict to the request.
    Decided {
        id: String,
        verdict: Verdict,
        reason: String,
        /// Nobody decided before the deadline; `verdict` is the default.
        expired: bool,
    },
    /// The server refused the request; the daemon decides it locally.
    Refused { id: String, message: String },
}

/// How the link stands, for `belay status` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    pub url: String,
    /// A session with belay-server is open now.
    pub connected: bool,
    /// Submitted and not yet decided (resubmitted on every reconnect).
    pub awaiting: usize,
    pub submitted: u64,
    pub decided: u64,
    /// Sessions opened, the first included.
    pub connects: u64,
    /// Why the last attempt or session failed.
    pub last_error: Option<String>,
}

/// Handle to the link task.
#[derive(Clone)]
pub struct Upstream {
    tx: mpsc::UnboundedSender<Up>,
    pub url: String,
    status: Arc<Mutex<LinkStatus>>,
}

impl Upstream {
    /// Starts the link to `url`; decisions arrive on `down`.
    pub fn start(url: String, hello: v1::Hello, down: mpsc::UnboundedSender<Down>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(LinkStatus {
            url: url.clone(),
            ..LinkStatus::default()
        }));
        tokio::spawn(run(url.clone(), hello, rx, down, status.clone()));
        Self { tx, url, status }
    }

    pub fn status(&self) -> LinkStatus {
        lock(&self.status).clone()
    }

    pub fn send(&self, up: Up) {
        // The link task only ends with the daemon.
        let _ = self.tx.send(up);
    }
}

fn verdict(v: domain::Verdict) -> Verdict {
    match v {
        domain::Verdict::Allow => Verdict::Allow,
        domain::Verdict::Deny => Verdict::Deny,
        domain::Verdict::Kill => Verdict::Kill,
    }
}

fn message(kind: agent_message::Kind) -> v1::AgentMessage {
    v1::AgentMessage { kind: Some(kind) }
}

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

async fn run(
    url: String,
    hello: v1::Hello,
    mut rx: mpsc::UnboundedReceiver<Up>,
    down: mpsc::UnboundedSender<Down>,
    status: Arc<Mutex<LinkStatus>>,
) {
    let failed = |why: String| {
        let mut st = lock(&status);
        st.connected = false;
        st.last_error = Some(why);
    };
    // Submitted and not yet decided: resubmitted on every new stream.
    let mut pending: BTreeMap<String, v1::NewRequest> = BTreeMap::new();
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut client = match AgentServiceClient::connect(url.clone()).await {
            Ok(c) => c,
            Err(e) => {
                failed(format!("cannot reach belay-server: {e}"));
                warn!(server = %url, error = %e, "cannot reach belay-server; retrying");
                if !wait_queueing(backoff, &mut rx, &mut pending, &status).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let (out, out_rx) = mpsc::channel(256);
        let _ = out
            .send(message(agent_message::Kind::Hello(hello.clone())))
            .await;
        for r in pending.values() {
            let _ = out
                .send(message(agent_message::Kind::Request(r.clone())))
                .await;
        }
        let mut inbound = match client.session(ReceiverStream::new(out_rx)).await {
            Ok(r) => r.into_inner(),
            Err(e) => {
                failed(format!("belay-server refused the session: {}", e.message()));
                warn!(server = %url, status = %e, "belay-server refused the session; retrying");
                if !wait_queueing(backoff, &mut rx, &mut pending, &status).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        info!(server = %url, resubmitted = pending.len(), "connected to belay-server");
        {
            let mut st = lock(&status);
            st.connected = true;
            st.connects += 1;
            st.awaiting = pending.len();
        }
        backoff = BACKOFF_MIN;
        loop {
            tokio::select! {
                up = rx.recv() => {
                    let Some(up) = up else { return };
                    track(&up, &mut pending, &status);
                    let msg = match up {
                        Up::Submit(r) => message(agent_message::Kind::Request(r)),
                        Up::Withdraw { id, reason } => {
                            message(agent_message::Kind::Withdraw(v1::Withdraw {
                                request_id: id,
                                reason,
                            }))
                        }
                    };
                    if out.send(msg).await.is_err() {
                        break;
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(v1::ServerMessage { kind: Some(server_message::Kind::Decision(d)) })) => {
                        match domain::Decision::try_from(d) {
                            Ok(d) => {
                                let id = d.request_id.to_string();
                                pending.remove(&id);
                                {
                                    let mut st = lock(&status);
                                    st.decided += 1;
                                    st.awaiting = pending.len();
                                }
                                let _ = down.send(Down::Decided {
                                    id,
                                    verdict: verdict(d.verdict),
                                    reason: d.reason.to_string(),
                                    expired: d.state == domain::RequestState::Expired,
                                });
                            }
                            Err(e) => warn!(error = %e, "belay-server sent an invalid decision; ignored"),
                        }
                    }
                    Ok(Some(v1::ServerMessage { kind: Some(server_message::Kind::Cancel(c)) })) => {
                        pending.remove(&c.request_id);
                        let _ = down.send(Down::Refused { id: c.request_id, message: c.message });
                    }
                    Ok(Some(_)) => warn!("belay-server sent an empty message; ignored"),
                    Ok(None) => {
                        failed("belay-server ended the stream".into());
                        warn!(server = %url, "belay-server ended the stream; reconnecting");
                        break;
                    }
                    Err(e) => {
                        failed(format!("the stream broke: {}", e.message()));
                        warn!(server = %url, status = %e, "the stream to belay-server broke; reconnecting");
                        break;
                    }
                },
            }
        }
        if !wait_queueing(backoff, &mut rx, &mut pending, &status).await {
            return;
        }
    }
}

/// Keeps `pending` (what goes up again on the next session) and the counters current
/// with what the daemon sent.
fn track(up: &Up, pending: &mut BTreeMap<String, v1::NewRequest>, status: &Mutex<LinkStatus>) {
    let mut st = lock(status);
    match up {
        Up::Submit(r) => {
            pending.insert(r.id.clone(), r.clone());
            st.submitted += 1;
        }
        Up::Withdraw { id, .. } => {
            pending.remove(id);
        }
    }
    st.awaiting = pending.len();
}

/// Waits `pause` before the next attempt, meanwhile keeping `pending` current with what
/// the daemon sends (it all goes up on the next session). False when the daemon is gone.
async fn wait_queueing(
    pause: Duration,
    rx: &mut mpsc::UnboundedReceiver<Up>,
    pending: &mut BTreeMap<String, v1::NewRequest>,
    status: &Mutex<LinkStatus>,
) -> bool {
    let until = tokio::time::Instant::now() + pause;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until) => return true,
            // A withdrawal here was never seen by the server: nothing to tell it.
            up = rx.recv() => match up {
                None => return false,
                Some(up) => track(&up, pending, status),
            },
        }
    }
}
