//! belay-server: the central approval service.
//!
//! Layers, each importing only those below it (`server/tests/module_graph.rs` fails on
//! a cycle or a lower layer naming a higher one):
//! - [`console`]: the reviewer console (HTTPS, OIDC sign-in, JSON API, the page),
//!   above the transports whose parts it shares;
//! - [`chat`]: approvals in Slack and Microsoft Teams (messages with buttons, signed
//!   inbound interactions, a durable outbox), beside the console;
//! - [`grpc`], [`pki`], [`http`], [`export`], [`expiry`], [`metrics`], [`policy_push`]:
//!   the transports and tasks around the rules: wire messages in, statuses out;
//! - [`approvals`]: the request lifecycle and its rules, over a store;
//! - [`store`]: where requests, grants, votes, tokens, policies and the audit log are
//!   kept, one trait per concern, with SQLite, PostgreSQL and memory backends;
//! - [`audit`]: what the audit records of a request say, and verifying a log;
//! - leaves: [`database_url`], and the time and action encodings shared by the store
//!   and the audit records (`epoch`, `canonical_action`).
//!
//! [`serve`] runs the services and the tasks on a listener.

pub mod approvals;
pub mod audit;
pub mod auth;
mod canonical_action;
pub mod chat;
pub mod console;
pub mod database_url;
mod epoch;
pub mod expiry;
pub mod export;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod pki;
pub mod policy_push;
pub mod store;
#[doc(hidden)]
pub mod testing;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use belay_proto::v1::agent_service_server::{self, AgentServiceServer};
use belay_proto::v1::enroll_service_server::{self, EnrollServiceServer};
use belay_proto::v1::reviewer_service_server::{self, ReviewerServiceServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::approvals::{Approvals, Store};
use crate::grpc::{AgentApi, ReviewerApi};

/// Agents sit idle on their streams for long stretches; pings find dead peers (and keep
/// middleboxes from dropping the connection) long before TCP would.
const HTTP2_KEEPALIVE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
    #[error(
        "the reviewer console needs verified reviewers: pass --auth-config (the console signs in with its OIDC issuers or API tokens)"
    )]
    ConsoleWithoutAuth,
    #[error(
        "chat approvals (--chat-config) need the reviewer console: pass --console-listen \
         (Slack posts its button presses to https://<console>/chat/slack/interactions)"
    )]
    ChatWithoutConsole,
    #[error(transparent)]
    Chat(#[from] chat::ChatError),
}

/// What [`serve`] needs besides the listener and the approval rules: transport security,
/// reviewer authentication, side endpoints. `Default` is plaintext without
/// authentication, for tests and local development only.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Where /healthz, /readyz and /metrics are served; `None`: nowhere.
    pub http: Option<TcpListener>,
    /// How reviewer calls are authenticated; the default trusts asserted reviewers.
    pub reviewer_auth: auth::ReviewerAuth,
    /// TLS with this server's CA, agents authenticated by their client certificates and
    /// EnrollService served; `None`: plaintext (`--insecure`).
    pub tls: Option<pki::ServerTls>,
    /// Audit log export to SIEMs (`--export-config`); `None`: none.
    pub export: Option<belay_export::ExportConfig>,
    /// The reviewer console (`--console-listen`); `None`: not served.
    pub console: Option<console::ConsoleOptions>,
    /// Chat approvals (`--chat-config`); `None`: none. Needs `console`, whose listener
    /// serves the platforms' inbound endpoints.
    pub chat: Option<chat::ChatConfig>,
}

/// Serves the agent and reviewer services on `listener` until `shutdown` completes, then
/// ends the open agent sessions (UNAVAILABLE, so agents reconnect elsewhere) and waits
/// for in-flight calls.
pub async fn serve<S: Store>(
    listener: TcpListener,
    approvals: Arc<Approvals<S>>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let ServeOptions {
        http,
        reviewer_auth,
        tls,
        export,
        console,
        chat,
    } = options;
    if chat.is_some() && console.is_none() {
        return Err(ServeError::ChatWithoutConsole);
    }
    let console_auth = match (&console, &reviewer_auth) {
        (None, _) => None,
        (Some(_), auth::ReviewerAuth::Verified(auth)) => Some(Arc::clone(auth)),
        (Some(_), _) => return Err(ServeError::ConsoleWithoutAuth),
    };
    let stop = CancellationToken::new();
    let expiry = tokio::spawn(expiry::run_expiry(Arc::clone(&approvals), stop.clone()));
    // Decisions taken on other replicas of a shared store, for the agents connected here.
    let replicas = tokio::spawn({
        let approvals = Arc::clone(&approvals);
        let stop = stop.clone();
        async move { approvals.follow_remote_changes(stop).await }
    });
    let export = export
        .map(|config| tokio::spawn(export::run(Arc::clone(&approvals), config, stop.clone())));
    // Always kept, also without HTTP endpoints to show them: counting costs little and
    // the same object serves every layer that counts.
    let metrics = Arc::new(metrics::Metrics::default());
    let side = http.map(|listener| spawn_http(listener, &approvals, &metrics, &stop));
    // The stored fleet policy, and other replicas' pushes, for the agents connected here.
    let policy = Arc::new(policy_push::FleetPolicy::default());
    let policies = tokio::spawn({
        let approvals = Arc::clone(&approvals);
        let policy = Arc::clone(&policy);
        let stop = stop.clone();
        async move { policy.follow(approvals.store(), stop).await }
    });
    let chat = chat
        .map(|config| chat::start(config, &approvals, &metrics, &stop))
        .transpose()?;
    let (chat_routes, chat_tasks) = match chat {
        Some(started) => (started.routes, started.tasks),
        None => (axum::Router::new(), Vec::new()),
    };
    let console = console.zip(console_auth).map(|(options, auth)| {
        let serving = console::serve(
            options,
            Arc::clone(&approvals),
            auth,
            Arc::clone(&policy),
            chat_routes,
            stop.clone(),
        );
        tokio::spawn(async move {
            if let Err(err) = serving.await {
                tracing::error!(error = %err, "reviewer console failed");
            }
        })
    });

    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE))
        .layer(metrics::MetricsLayer::new(
            Arc::clone(&metrics),
            &[
                agent_service_server::SERVICE_NAME,
                reviewer_service_server::SERVICE_NAME,
                enroll_service_server::SERVICE_NAME,
            ],
        ))
        .add_service(AgentServiceServer::new(
            AgentApi::new(Arc::clone(&approvals), stop.clone())
                .with_client_auth(tls.as_ref().map(pki::ServerTls::agents))
                .with_policy(Arc::clone(&policy)),
        ))
        .add_optional_service(tls.as_ref().map(|tls| {
            EnrollServiceServer::new(
                pki::EnrollApi::new(Arc::clone(&approvals), tls.ca(), tls.agent_cert_validity())
                    .with_metrics(Arc::clone(&metrics)),
            )
        }))
        .add_service(auth::Authenticated::new(
            ReviewerServiceServer::new(
                ReviewerApi::new(approvals)
                    .with_shutdown(stop.clone())
                    .with_policy(policy),
            ),
            reviewer_auth,
        ));
    let shutdown = {
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    };
    let result = match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(pki::incoming(listener, tls.config()), shutdown)
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(plain_incoming(listener), shutdown)
                .await
        }
    };

    stop.cancel();
    if let Err(err) = expiry.await {
        tracing::error!(error = %err, "expiry task panicked");
    }
    if let Err(err) = policies.await {
        tracing::error!(error = %err, "fleet policy task panicked");
    }
    if let Err(err) = replicas.await {
        tracing::error!(error = %err, "task following other replicas panicked");
    }
    if let Some(task) = export
        && let Err(err) = task.await
    {
        tracing::error!(error = %err, "audit export task panicked");
    }
    if let Some(task) = console
        && let Err(err) = task.await
    {
        tracing::error!(error = %err, "reviewer console task panicked");
    }
    for task in chat_tasks {
        if let Err(err) = task.await {
            tracing::error!(error = %err, "chat outbox task panicked");
        }
    }
    for task in side.into_iter().flatten() {
        if let Err(err) = task.await {
            tracing::error!(error = %err, "HTTP endpoints task panicked");
        }
    }
    Ok(result?)
}

/// Starts the HTTP endpoints and the metrics that feed them, both ending with `stop`.
fn spawn_http<S: Store>(
    listener: TcpListener,
    approvals: &Arc<Approvals<S>>,
    metrics: &Arc<metrics::Metrics>,
    stop: &CancellationToken,
) -> [tokio::task::JoinHandle<()>; 2] {
    let follow = tokio::spawn(metrics::follow(
        Arc::clone(approvals),
        Arc::clone(metrics),
        stop.clone(),
    ));
    let metrics = Arc::clone(metrics);
    let serve = tokio::spawn({
        let approvals = Arc::clone(approvals);
        let stop = stop.clone();
        async move {
            if let Err(err) = http::serve(listener, approvals, metrics, stop).await {
                tracing::error!(error = %err, "HTTP endpoints failed");
            }
        }
    });
    [follow, serve]
}

/// Accepted plaintext connections with Nagle's algorithm off. tonic only sets
/// TCP_NODELAY on listeners it binds itself; with ours, a small decision written while
/// an earlier segment is unacknowledged waits for the peer's delayed ACK (up to 40 ms
/// on Linux), which is most of a decision's latency. The TLS path does the same in
/// `pki::incoming`.
fn plain_incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt as _;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        Ok(stream)
    })
}
