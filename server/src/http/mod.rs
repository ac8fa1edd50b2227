//! The operational HTTP endpoints, on a listener of their own (plain HTTP/1, meant for
//! the host's or the cluster's monitoring, not for agents or reviewers):
//! - `/healthz`: the process is up and serving (200);
//! - `/readyz`: the store answers a cheap query within [`READY_TIMEOUT`] (200), else 503;
//! - `/metrics`: Prometheus text format, see [`crate::metrics`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::approvals::{Approvals, Store};
use crate::metrics::Metrics;

/// How long `/readyz` waits for the store; probes time out after a few seconds.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Command line of the HTTP endpoints, flattened into belay-server's.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Address for the HTTP endpoints /healthz, /readyz and /metrics (port 0: any free
    /// port, logged as `http_local`).
    #[arg(
        long = "http-listen",
        env = "BELAY_HTTP_LISTEN",
        default_value = "127.0.0.1:9090",
        value_name = "ADDR"
    )]
    pub http_listen: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for HTTP on {addr}")]
pub struct BindError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

impl HttpArgs {
    pub async fn bind(&self) -> Result<TcpListener, BindError> {
        TcpListener::bind(self.http_listen)
            .await
            .map_err(|source| BindError {
                addr: self.http_listen,
                source,
            })
    }
}

struct Endpoints<S> {
    approvals: Arc<Approvals<S>>,
    metrics: Arc<Metrics>,
}

/// The routes, for [`serve`] and for tests that drive them without a socket.
pub fn router<S: Store>(approvals: Arc<Approvals<S>>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<S>))
        .route("/metrics", get(metrics_text::<S>))
        .with_state(Arc::new(Endpoints { approvals, metrics }))
}

/// Serves the endpoints on `listener` until `stop` is cancelled.
pub async fn serve<S: Store>(
    listener: TcpListener,
    approvals: Arc<Approvals<S>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(local) = listener.local_addr() {
        tracing::info!(http_local = %local, "HTTP endpoints listening");
    }
    axum::serve(listener, router(approvals, metrics))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

async fn readyz<S: Store>(State(endpoints): State<Arc<Endpoints<S>>>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, endpoints.approvals.next_deadline()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "not ready: the store failed");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
        Err(_elapsed) => {
            tracing::warn!("not ready: the store did not answer in time");
            (StatusCode::SERVICE_UNAVAILABLE, "store not answering\n").into_response()
        }
    }
}

async fn metrics_text<S: Store>(State(endpoints): State<Arc<Endpoints<S>>>) -> Response {
    match endpoints.metrics.scrape(&endpoints.approvals).await {
        Ok(text) => ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "metrics: the store failed");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
    }
}
