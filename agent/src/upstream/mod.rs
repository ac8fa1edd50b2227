//! The link to `belay-server`: requests that need a person go up the agent's one
//! long-lived stream, decisions come down. The link reconnects by itself and resubmits
//! what is still pending under the same ids (the server treats a repeated id as the
//! same request), so a server restart or a network blip loses nothing.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use belay_proto::{
    domain,
    v1::{self, agent_message, agent_service_client::AgentServiceClient, server_message},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{ClientTlsConfig, Endpoint};
use tracing::{info, warn};

pub use belay_agent_api::LinkStatus;
pub use context::request_context;

mod context;

use crate::{kernel::Verdict, sync::lock};

/// What the daemon sends up.
#[derive(Debug)]
pub enum Up {
    /// Boxed: a request with its context is far larger than a withdrawal.
    Submit(Box<v1::NewRequest>),
    /// The request no longer needs a decision (the process is gone).
    Withdraw { id: String, reason: String },
    /// What the daemon did with a fleet policy. Not kept for the next session: the
    /// server sends its policy again after every hello, and the daemon answers anew.
    PolicyReport(domain::PolicyReport),
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
    /// The server refused the request, or it was never sent because the server would
    /// refuse it: the daemon ends it with `requests::refused_verdict`, never locally.
    Refused { id: String, message: String },
    /// The fleet policy, its digest already checked: install it (`--policy-from-server`)
    /// or answer that this agent keeps its own.
    Policy { version: u64, text: String },
}

/// Handle to the link task.
#[derive(Clone)]
pub struct Upstream {
    tx: mpsc::UnboundedSender<Up>,
    /// For requests that cannot go up: their refusal goes straight back down.
    down: mpsc::UnboundedSender<Down>,
    pub url: String,
    status: Arc<Mutex<LinkStatus>>,
}

impl Upstream {
    /// Starts the link to `url`; decisions arrive on `down`. `tls` (this agent's client
    /// certificate and the server's CA) is required for an `https://` URL.
    pub fn start(
        url: String,
        tls: Option<ClientTlsConfig>,
        hello: v1::Hello,
        down: mpsc::UnboundedSender<Down>,
    ) -> anyhow::Result<Self> {
        let endpoint = endpoint(&url, tls)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(LinkStatus {
            url: url.clone(),
            ..LinkStatus::default()
        }));
        tokio::spawn(run(
            url.clone(),
            endpoint,
            hello,
            rx,
            down.clone(),
            status.clone(),
        ));
        Ok(Self {
            tx,
            down,
            url,
            status,
        })
    }

    pub fn status(&self) -> LinkStatus {
        lock(&self.status).clone()
    }

    pub fn send(&self, up: Up) {
        let up = match up {
            Up::Submit(request) => {
                let request = leaving_host(*request);
                // Checked with the server's own validation (`domain::limits` and the
                // rest): what it would refuse is refused here, explicitly, instead of
                // being sent, refused and then held by no one.
                if let Err(e) = domain::NewRequest::try_from(request.clone()) {
                    warn!(server_id = %request.id, error = %e, "request not sendable to belay-server (over its limits or malformed)");
                    lock(&self.status).refused += 1;
                    let _ = self.down.send(Down::Refused {
                        id: request.id,
                        message: format!("not sent to belay-server, which would refuse it: {e}"),
                    });
                    return;
                }
                Up::Submit(Box::new(request))
            }
            other @ (Up::Withdraw { .. } | Up::PolicyReport(_)) => other,
        };
        // The link task only ends with the daemon.
        let _ = self.tx.send(up);
    }
}

/// Every request passes here, once, before it leaves the host (and before the link
/// keeps it for resubmission). The request book masked argv, env and hostnames already;
/// this second pass with the same masker (idempotent: masked values pass unchanged)
/// makes sure nothing unmasked is ever sent or resent, whatever built the request.
fn leaving_host(request: v1::NewRequest) -> v1::NewRequest {
    crate::mask::mask_request(&crate::mask::current(), request)
}

/// The channel settings for `url`: TLS with `tls` for https, plaintext for http (which
/// only a server started with `--insecure` accepts).
fn endpoint(url: &str, tls: Option<ClientTlsConfig>) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("bad belay-server URL {url:?}"))?
        .connect_timeout(CONNECT_TIMEOUT);
    match (url.starts_with("https://"), tls) {
        (true, Some(tls)) => endpoint.tls_config(tls).context("cannot set up TLS"),
        (true, None) => {
            anyhow::bail!("{url}: https needs this agent's certificate (belay-agent enroll)")
        }
        (false, _) if url.starts_with("http://") => Ok(endpoint),
        (false, _) => anyhow::bail!(
            "belay-server URL {url:?} must start with https:// (or http:// for a server run with --insecure)"
        ),
    }
}

/// tonic's transport errors say "transport error"; the why (refused, a certificate
/// problem) is in their sources.
fn with_sources(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

fn message(kind: agent_message::Kind) -> v1::AgentMessage {
    v1::AgentMessage { kind: Some(kind) }
}

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn run(
    url: String,
    endpoint: Endpoint,
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
        let mut client = match endpoint.connect().await {
            Ok(c) => AgentServiceClient::new(c),
            Err(e) => {
                let e = with_sources(&e);
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
                        Up::Submit(r) => message(agent_message::Kind::Request(*r)),
                        Up::Withdraw { id, reason } => {
                            message(agent_message::Kind::Withdraw(v1::Withdraw {
                                request_id: id,
                                reason,
                            }))
                        }
                        Up::PolicyReport(report) => {
                            message(agent_message::Kind::PolicyReport(report.into()))
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
                                    verdict: d.verdict,
                                    reason: d.reason.to_string(),
                                    expired: d.state == domain::RequestState::Expired,
                                });
                            }
                            Err(e) => warn!(error = %e, "belay-server sent an invalid decision; ignored"),
                        }
                    }
                    Ok(Some(v1::ServerMessage { kind: Some(server_message::Kind::Cancel(c)) })) => {
                        pending.remove(&c.request_id);
                        {
                            let mut st = lock(&status);
                            st.refused += 1;
                            st.awaiting = pending.len();
                        }
                        let _ = down.send(Down::Refused { id: c.request_id, message: c.message });
                    }
                    Ok(Some(v1::ServerMessage { kind: Some(server_message::Kind::Policy(p)) })) => {
                        let version = p.version;
                        match domain::PolicyUpdate::try_from(p) {
                            Ok(update) => {
                                info!(version, sha256 = %update.sha256(), "belay-server sent a fleet policy");
                                let _ = down.send(Down::Policy {
                                    version,
                                    text: update.text.into_string(),
                                });
                            }
                            Err(e) => {
                                warn!(version, error = %e, "belay-server sent an invalid policy; the policy in force stays");
                                let report = domain::PolicyReport::clipped(
                                    version,
                                    domain::PolicyOutcome::Failed,
                                    &format!("the policy arrived damaged: {e}"),
                                );
                                if out.send(message(agent_message::Kind::PolicyReport(report.into()))).await.is_err() {
                                    break;
                                }
                            }
                        }
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
            pending.insert(r.id.clone(), (**r).clone());
            st.submitted += 1;
        }
        Up::Withdraw { id, .. } => {
            pending.remove(id);
        }
        Up::PolicyReport(_) => {}
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

#[cfg(test)]
mod limit_tests {
    use super::*;

    fn exec_request(argv: Vec<String>) -> v1::NewRequest {
        v1::NewRequest {
            id: "build-7:1:1".into(),
            agent_name: "copilot".into(),
            pid: 10,
            uid: 1000,
            action: Some(v1::Action {
                kind: Some(v1::action::Kind::Exec(v1::Exec {
                    path: "/usr/bin/echo".into(),
                    argv,
                    cwd: "/tmp".into(),
                    env: vec![],
                })),
            }),
            deadline: Some(prost_types::Timestamp {
                seconds: 2_000_000_000,
                nanos: 0,
            }),
            default_verdict: v1::Verdict::Allow as i32,
            rule: "default".into(),
            owner: String::new(),
            context: None,
        }
    }

    /// A link to a server that is never reached: only what the daemon is told matters.
    fn link() -> (Upstream, mpsc::UnboundedReceiver<Down>) {
        let (down_tx, down) = mpsc::unbounded_channel();
        let hello = v1::Hello {
            host: "build-7".into(),
            version: "test".into(),
            owner: "alice@example.com".into(),
        };
        let up = Upstream::start("http://127.0.0.1:9".into(), None, hello, down_tx).unwrap();
        (up, down)
    }

    #[tokio::test]
    async fn a_request_over_the_servers_limits_is_refused_on_the_host_not_sent() {
        let (up, mut down) = link();
        // One more argument than belay-server takes: what the agent reads (256 entries
        // and the "…" that marks a cut) is exactly such a list.
        let mut argv: Vec<String> = (0..domain::limits::MAX_ARGV_ENTRIES)
            .map(|i| format!("a{i}"))
            .collect();
        argv.push("…".into());
        up.send(Up::Submit(Box::new(exec_request(argv))));
        let refused = tokio::time::timeout(Duration::from_secs(5), down.recv())
            .await
            .expect("the daemon is told at once")
            .expect("link alive");
        let Down::Refused { id, message } = refused else {
            panic!("expected a refusal, got {refused:?}");
        };
        assert_eq!(id, "build-7:1:1");
        assert!(message.contains("argv"), "{message}");
        let status = up.status();
        assert_eq!(
            (status.refused, status.awaiting, status.submitted),
            (1, 0, 0)
        );
    }

    #[tokio::test]
    async fn a_request_within_the_limits_goes_up() {
        let (up, mut down) = link();
        up.send(Up::Submit(Box::new(exec_request(vec![
            "echo".into(),
            "hi".into(),
        ]))));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(down.try_recv().is_err(), "nothing refused");
        let status = up.status();
        assert_eq!(
            (status.refused, status.awaiting, status.submitted),
            (0, 1, 1)
        );
    }
}
