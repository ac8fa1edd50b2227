//! The reviewer console: a web page served by belay-server on a listener of its own
//! (HTTPS only), where reviewers see what every host is holding, live, and decide.
//!
//! - [`login`]: OIDC authorization code flow with PKCE against `--auth-config`'s
//!   issuers, then a session cookie ([`session`]);
//! - [`guard`]: who calls (cookie or bearer) and the CSRF checks on changes;
//! - [`api`], [`changes`], [`events`]: the JSON API of API.md (reads, decisions and
//!   revocations, the live queue), over the same [`Approvals`] as gRPC;
//! - [`assets`]: the page, embedded in the binary.
//!
//! Every response carries a strict Content Security Policy: the page runs only its own
//! script, loads nothing from elsewhere and cannot be framed, so text from an agent
//! that slipped past the page's escaping still could not run.

pub mod api;
mod args;
pub mod assets;
mod changes;
pub mod events;
pub mod guard;
pub mod login;
pub mod session;
pub mod tls;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use args::{ConsoleArgs, ConsoleSetupError, IssueCertificate};

use crate::approvals::{Approvals, Store};
use crate::auth::Authenticator;
use crate::policy_push::FleetPolicy;

/// How long a sign-in lasts unless `--console-session-minutes` says otherwise.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// The console's part of [`crate::ServeOptions`].
pub struct ConsoleOptions {
    pub listener: tokio::net::TcpListener,
    pub tls: Arc<rustls::ServerConfig>,
    /// `https://host[:port]` as browsers reach the console: the redirect URI is built on
    /// it, and changes must come from this origin.
    pub origin: String,
    pub session_ttl: Duration,
    pub audit: AuditCheck,
}

impl std::fmt::Debug for ConsoleOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleOptions")
            .field("origin", &self.origin)
            .field("session_ttl", &self.session_ttl)
            .finish_non_exhaustive()
    }
}

/// How the console checks the audit log's chain and signatures when asked.
#[derive(Debug, Clone, Default)]
pub enum AuditCheck {
    /// The store keeps no log a verifier can read (memory).
    #[default]
    Unavailable,
    Sqlite {
        path: std::path::PathBuf,
        public_key: ed25519_dalek::VerifyingKey,
    },
    Postgres {
        url: String,
        public_key: ed25519_dalek::VerifyingKey,
    },
}

impl AuditCheck {
    /// The verdict of `belay-server audit verify`, as JSON for the page.
    pub async fn verify(&self) -> Value {
        let report = match self {
            AuditCheck::Unavailable => {
                return json!({"ok": false, "problem": "this server keeps its audit log in memory: nothing to verify"});
            }
            AuditCheck::Sqlite { path, public_key } => {
                let (path, key) = (path.clone(), *public_key);
                tokio::task::spawn_blocking(move || crate::audit::verify(&path, &key))
                    .await
                    .unwrap_or_else(|err| {
                        Err(crate::audit::AuditError::Read {
                            path: String::new(),
                            problem: err.to_string(),
                        })
                    })
            }
            AuditCheck::Postgres { url, public_key } => {
                crate::audit::postgres::verify(url, public_key).await
            }
        };
        match report {
            Ok(report) => match &report.first_problem {
                None => json!({
                    "ok": true,
                    "records": report.records,
                    "checkpoints": report.checkpoints,
                    "unsigned_tail": report.unsigned_tail,
                    "key_id": report.key_id,
                }),
                Some(problem) => json!({
                    "ok": false,
                    "records": report.records,
                    "problem": problem.to_string(),
                }),
            },
            Err(err) => json!({"ok": false, "problem": err.to_string()}),
        }
    }
}

/// What every route shares.
pub struct Console<S> {
    approvals: Arc<Approvals<S>>,
    auth: Arc<Authenticator>,
    policy: Arc<FleetPolicy>,
    sessions: session::Sessions,
    logins: session::PendingLogins,
    origin: String,
    session_ttl: Duration,
    audit: AuditCheck,
    stop: CancellationToken,
}

impl<S> Console<S> {
    fn redirect_uri(&self) -> String {
        format!("{}/auth/callback", self.origin)
    }
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers on every response: what the page may load, and that it is never framed,
/// sniffed, cached by the way or leaks its address to other sites.
async fn security_headers(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(
        headers,
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000",
    );
    set(
        headers,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        headers,
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    if api {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// The console's routes, plus `extra` (chat's inbound endpoints, which authenticate by
/// signature and so take no cookie; every response still gets the security headers).
fn router<S: Store>(console: Arc<Console<S>>, extra: Router) -> Router {
    let page = get(assets::index);
    let own = Router::new()
        .route("/", page.clone())
        .route("/requests/{id}", page.clone())
        .route("/agents", page.clone())
        .route("/grants", page.clone())
        .route("/audit", page)
        .route("/app.js", get(assets::app_js))
        .route("/app.css", get(assets::app_css))
        .route("/favicon.svg", get(assets::favicon))
        .route("/login", get(login::login::<S>))
        .route("/auth/callback", get(login::callback::<S>))
        .route("/logout", post(login::logout::<S>))
        .route("/api/session", get(api::session::<S>))
        .route("/api/requests", get(api::pending::<S>))
        .route("/api/requests/{id}", get(api::request::<S>))
        .route("/api/requests/{id}/decision", post(changes::decide::<S>))
        .route("/api/events", get(events::events::<S>))
        .route("/api/agents", get(api::agents::<S>))
        .route("/api/grants", get(api::grants::<S>))
        .route("/api/grants/{id}/revoke", post(changes::revoke::<S>))
        .route("/api/audit", get(api::audit::<S>))
        .route("/api/audit/verify", get(api::audit_verify::<S>))
        .fallback(|| async {
            guard::ApiError::new(axum::http::StatusCode::NOT_FOUND, "no such page")
        })
        .with_state(console);
    own.merge(extra)
        .layer(middleware::from_fn(security_headers))
}

/// Serves the console until `stop`.
pub async fn serve<S: Store>(
    options: ConsoleOptions,
    approvals: Arc<Approvals<S>>,
    auth: Arc<Authenticator>,
    policy: Arc<FleetPolicy>,
    extra: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let ConsoleOptions {
        listener,
        tls,
        origin,
        session_ttl,
        audit,
    } = options;
    let listener = tls::TlsListener::new(listener, tls)?;
    tracing::info!(console_local = %axum::serve::Listener::local_addr(&listener)?, %origin, page_bytes = assets::page_weight(), "reviewer console listening");
    let console = Arc::new(Console {
        approvals,
        auth,
        policy,
        sessions: session::Sessions::default(),
        logins: session::PendingLogins::default(),
        origin,
        session_ttl,
        audit,
        stop: stop.clone(),
    });
    axum::serve(listener, router(console, extra))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}
