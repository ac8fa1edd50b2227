//! Who is calling the console's API, and whether a change may go ahead.
//!
//! A browser is known by its session cookie; a tool by `Authorization: Bearer`, checked
//! exactly as the gRPC reviewer service checks it. A change made with a cookie must
//! also prove it comes from the console's own page: the `Origin` header names the
//! console, `Sec-Fetch-Site` (when sent) says same-origin, the body is JSON (which
//! another site cannot send without a preflight the console never grants), and
//! `X-Belay-CSRF` carries the session's token, which only the page can read.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Console;
use super::session::{self, Session};
use crate::approvals::Store;
use crate::auth::{Reviewer, Role};

pub const CSRF_HEADER: &str = "x-belay-csrf";

/// An API error: a status and a message that says what is wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    fn signed_out(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = if self.status == StatusCode::UNAUTHORIZED {
            json!({"error": self.message, "login": "/login"})
        } else {
            json!({"error": self.message})
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// The approval rules answer in gRPC statuses (the same ones `belay` sees); the console
/// maps them to the HTTP status that means the same.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let http = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(http, status.message())
    }
}

impl From<crate::approvals::ApprovalError> for ApiError {
    fn from(err: crate::approvals::ApprovalError) -> Self {
        tonic::Status::from(err).into()
    }
}

/// The verified caller of an API route.
#[derive(Debug, Clone)]
pub struct Caller {
    pub reviewer: Reviewer,
    /// `None` for a bearer credential.
    pub session: Option<Session>,
}

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        self.reviewer
            .require(role)
            .map_err(|status| ApiError::forbidden(status.message()))
    }

    /// The caller as the approval rules and the gRPC service know callers.
    pub fn as_auth_caller(&self) -> crate::auth::Caller {
        crate::auth::Caller::Authenticated(self.reviewer.clone())
    }
}

impl<S: Store> FromRequestParts<Arc<Console<S>>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console<S>>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let value = value
                .to_str()
                .map_err(|_| ApiError::signed_out("the authorization header is not text"))?;
            let reviewer = console
                .auth
                .authenticate(Some(value))
                .await
                .map_err(|err| ApiError::from(tonic::Status::from(err)))?;
            return Ok(Self {
                reviewer,
                session: None,
            });
        }
        let session = session::cookie(&parts.headers, session::COOKIE)
            .and_then(|token| console.sessions.get(token))
            .ok_or_else(|| {
                ApiError::signed_out("not signed in, or the session has expired: sign in again")
            })?;
        Ok(Self {
            reviewer: session.reviewer.clone(),
            session: Some(session),
        })
    }
}

/// Refuses a change made with a cookie that the console's own page did not make.
pub fn check_change(
    headers: &HeaderMap,
    caller: &Caller,
    origin: &str,
    json_body: bool,
) -> Result<(), ApiError> {
    let Some(session) = &caller.session else {
        // A bearer credential is never sent by a browser on its own.
        return Ok(());
    };
    let sent_origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if sent_origin != Some(origin) {
        return Err(ApiError::forbidden(format!(
            "cross-origin request refused: Origin {} is not the console's ({origin})",
            sent_origin.unwrap_or("(none)")
        )));
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
    {
        return Err(ApiError::forbidden(format!(
            "cross-site request refused (Sec-Fetch-Site: {site})"
        )));
    }
    if json_body {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
    }
    let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match token {
        Some(token) if session::same_secret(token, &session.csrf) => Ok(()),
        Some(_) => Err(ApiError::forbidden(
            "the CSRF token does not match this session: reload the page",
        )),
        None => Err(ApiError::forbidden(
            "missing X-Belay-CSRF header: changes must come from the console's page",
        )),
    }
}
