//! Slack Socket Mode: instead of Slack posting presses to `/chat/slack/interactions`,
//! belay-server opens a WebSocket to Slack (`apps.connections.open` with the app-level
//! token gives a fresh `wss://` URL) and presses arrive on it, so Slack needs no route
//! to belay-server.
//!
//! The protocol, as Slack documents it: a `hello` first; each payload in an envelope
//! (`{"type": "interactive", "envelope_id": ..., "payload": {...}}`) that must be
//! acknowledged with `{"envelope_id": ...}` within 3 seconds, or Slack sends it again;
//! `disconnect` (`refresh_requested`, `warning`, `link_disabled`) before Slack closes a
//! connection, after which a new URL is asked for. Every replica keeps one connection;
//! Slack hands each envelope to one of them.
//!
//! What authenticates a payload is the connection itself: TLS to the host Slack's API
//! named, opened with our app token. An envelope is acted on once across replicas and
//! redeliveries (its id goes through the store like a signed request's signature); the
//! rest (workspace check, user mapping, the rules) is [`super::interactions::dispatch`],
//! the same as over HTTP.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::interactions::{Interactions, dispatch};
use super::verify::REMEMBER;
use crate::approvals::Store;
use crate::chat::config::Secret;
use crate::chat::surface::SendError;

/// Envelopes are a few kilobytes; anything near this is not Slack.
const MAX_MESSAGE: usize = 1024 * 1024;
/// Slack pings every few seconds; this long without any frame means the connection is
/// dead (a silent network drop leaves no close frame).
const IDLE: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Slack asked for a new connection, or closed this one: reconnect at once.
    Reconnect,
    /// Socket Mode was turned off for the app: keep trying, slowly.
    LinkDisabled,
    /// `apps.connections.open` answered 429: ask again after its `Retry-After`.
    RateLimited(Duration),
    Stopped,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    envelope_id: Option<String>,
    payload: Option<Value>,
    reason: Option<String>,
}

/// Keeps a Socket Mode connection open until `stop`, reconnecting with backoff.
pub async fn run<S: Store>(
    interactions: Arc<Interactions<S>>,
    app_token: Secret,
    stop: CancellationToken,
) {
    let mut retry = FIRST_RETRY;
    loop {
        let wait = match connection(&interactions, &app_token, &stop).await {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Reconnect) => {
                retry = FIRST_RETRY;
                Duration::ZERO
            }
            Ok(Ended::RateLimited(after)) => {
                tracing::warn!(retry_in = ?after, "apps.connections.open is rate limited");
                after.max(retry)
            }
            Ok(Ended::LinkDisabled) => {
                tracing::error!(
                    "Slack disabled Socket Mode for this app (link_disabled); presses cannot \
                     arrive over it until it is turned back on"
                );
                LAST_RETRY
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?retry, "Slack Socket Mode connection failed");
                let wait = retry;
                retry = (retry * 2).min(LAST_RETRY);
                wait
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One connection: asks Slack for a URL, connects, serves it until it ends.
async fn connection<S: Store>(
    interactions: &Arc<Interactions<S>>,
    app_token: &Secret,
    stop: &CancellationToken,
) -> Result<Ended, String> {
    let url = match interactions.client.open_socket(app_token.expose()).await {
        Ok(url) => url,
        Err(SendError::RetryAfter(after)) => return Ok(Ended::RateLimited(after)),
        Err(err) => return Err(format!("apps.connections.open: {err}")),
    };
    let request = url
        .as_str()
        .into_client_request()
        .map_err(|err| format!("Slack's Socket Mode URL: {err}"))?;
    let uri = request.uri().clone();
    let host = uri
        .host()
        .ok_or("Slack's Socket Mode URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        // Plain WebSocket only to this machine (tests, a local proxy): never across a
        // network, where anyone on the path could press buttons.
        Some("ws") if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) => false,
        _ => return Err("Slack's Socket Mode URL is not wss://".into()),
    };
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| format!("connecting to {host}:{port} timed out"))?
    .map_err(|err| format!("connecting to {host}:{port}: {err}"))?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    if secure {
        let tls = tls_connector()
            .connect(
                rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|err| format!("{host}: {err}"))?,
                tcp,
            )
            .await
            .map_err(|err| format!("TLS with {host}: {err}"))?;
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, tls, Some(config))
            .await
            .map_err(|err| format!("WebSocket handshake with {host}: {err}"))?;
        serve(interactions, ws, stop).await
    } else {
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
            .await
            .map_err(|err| format!("WebSocket handshake with {host}: {err}"))?;
        serve(interactions, ws, stop).await
    }
}

/// The public roots reqwest trusts for the Web API, for the WebSocket too.
fn tls_connector() -> tokio_rustls::TlsConnector {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn serve<S: Store, T: AsyncRead + AsyncWrite + Unpin>(
    interactions: &Arc<Interactions<S>>,
    mut ws: WebSocketStream<T>,
    stop: &CancellationToken,
) -> Result<Ended, String> {
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => {
                let _ = ws.close(None).await;
                return Ok(Ended::Stopped);
            }
            frame = tokio::time::timeout(IDLE, ws.next()) => frame,
        };
        let message = match frame {
            Err(_) => return Err(format!("nothing from Slack for {IDLE:?}")),
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return Ok(Ended::Reconnect),
            Ok(Some(Err(err))) => return Err(format!("WebSocket: {err}")),
            Ok(Some(Ok(Message::Text(text)))) => text,
            // Pings are answered by the library as they are read.
            Ok(Some(Ok(_))) => continue,
        };
        let envelope: Envelope = match serde_json::from_str(message.as_str()) {
            Ok(envelope) => envelope,
            Err(err) => {
                tracing::warn!(error = %err, "unreadable Socket Mode message; ignored");
                continue;
            }
        };
        if let Some(id) = &envelope.envelope_id {
            // First the acknowledgement, which Slack wants within 3 seconds whatever
            // the payload; deciding runs on tasks of its own.
            let ack = json!({ "envelope_id": id }).to_string();
            ws.send(Message::Text(ack.into()))
                .await
                .map_err(|err| format!("acknowledging an envelope: {err}"))?;
        }
        match envelope.kind.as_str() {
            "hello" => tracing::info!("Slack Socket Mode connected"),
            "disconnect" => {
                let reason = envelope.reason.unwrap_or_default();
                tracing::info!(%reason, "Slack asks to reconnect");
                return Ok(if reason == "link_disabled" {
                    Ended::LinkDisabled
                } else {
                    Ended::Reconnect
                });
            }
            "interactive" => interactive(interactions, envelope).await,
            // Events API, slash commands: not subscribed to, acknowledged and dropped.
            _ => {}
        }
    }
}

async fn interactive<S: Store>(interactions: &Arc<Interactions<S>>, envelope: Envelope) {
    let (Some(id), Some(payload)) = (envelope.envelope_id, envelope.payload) else {
        tracing::warn!("Socket Mode interactive message without envelope_id or payload; ignored");
        return;
    };
    // Slack redelivers an envelope whose acknowledgement it missed, maybe to another
    // replica: the first one acts.
    let now = SystemTime::now();
    match interactions
        .approvals
        .store()
        .accept_inbound_once("slack-socket", &id, now, now + REMEMBER)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(envelope_id = %id, "Socket Mode envelope delivered again; acted on once");
            return;
        }
        Err(err) => {
            // Only Slack can send on this connection, so a second delivery is no attack:
            // acting twice at worst answers "already decided". Losing the press is worse.
            tracing::error!(error = %err, envelope_id = %id, "cannot record the Socket Mode envelope; acting on it anyway");
        }
    }
    match serde_json::from_value(payload) {
        Ok(payload) => {
            dispatch(interactions, payload);
        }
        Err(err) => tracing::warn!(error = %err, "unreadable Socket Mode payload; ignored"),
    }
}
