//! belay-server: the central approval service.
//!
//! - [`approvals`]: the request lifecycle and its rules, with storage behind a trait;
//! - [`audit`]: the hash-chained, signed log of every state change, and its verifier;
//! - [`grpc`]: the `belay.v1` AgentService and ReviewerService over those rules;
//! - [`serve`]: runs both services and the expiry task on a listener.

pub mod approvals;
pub mod audit;
pub mod expiry;
pub mod grpc;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use belay_proto::v1::agent_service_server::AgentServiceServer;
use belay_proto::v1::reviewer_service_server::ReviewerServiceServer;
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
}

/// What [`serve`] needs besides the listener and the approval rules: transport security,
/// reviewer authentication, side endpoints. `Default` is plaintext without
/// authentication, for tests and local development only.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ServeOptions {}

/// Serves the agent and reviewer services on `listener` until `shutdown` completes, then
/// ends the open agent sessions (UNAVAILABLE, so agents reconnect elsewhere) and waits
/// for in-flight calls.
pub async fn serve<S: Store>(
    listener: TcpListener,
    approvals: Arc<Approvals<S>>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let ServeOptions {} = options;
    let stop = CancellationToken::new();
    let expiry = tokio::spawn(expiry::run_expiry(Arc::clone(&approvals), stop.clone()));

    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE))
        .add_service(AgentServiceServer::new(AgentApi::new(
            Arc::clone(&approvals),
            stop.clone(),
        )))
        .add_service(ReviewerServiceServer::new(ReviewerApi::new(approvals)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), {
            let stop = stop.clone();
            async move {
                shutdown.await;
                stop.cancel();
            }
        })
        .await;

    stop.cancel();
    if let Err(err) = expiry.await {
        tracing::error!(error = %err, "expiry task panicked");
    }
    Ok(result?)
}
