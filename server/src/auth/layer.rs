//! The service wrapper that authenticates every call of the reviewer service before it
//! reaches a handler. A wrapper rather than a tonic interceptor: verification may fetch
//! the issuer's keys, and interceptors cannot wait.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

use super::{AuthError, Caller, ReviewerAuth, required_role};

/// `inner` (a generated `...Server`) behind reviewer authentication.
#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Arc<ReviewerAuth>,
}

impl<S> Authenticated<S> {
    pub fn new(inner: S, auth: ReviewerAuth) -> Self {
        Self {
            inner,
            auth: Arc::new(auth),
        }
    }
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Authenticated<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this call (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = Arc::clone(&self.auth);
        // Owned copies: the body is not Sync, so the request cannot be borrowed across
        // the wait for verification.
        let authorization = request.headers().get(http::header::AUTHORIZATION).cloned();
        let method = request.uri().path().to_owned();
        Box::pin(async move {
            match check(&auth, authorization.as_ref(), &method).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

async fn check(
    auth: &ReviewerAuth,
    authorization: Option<&http::HeaderValue>,
    method: &str,
) -> Result<Caller, tonic::Status> {
    let authenticator = match auth {
        ReviewerAuth::Insecure => return Ok(Caller::Insecure),
        ReviewerAuth::Unconfigured => return Err(AuthError::NotConfigured.into()),
        ReviewerAuth::Verified(authenticator) => authenticator,
    };
    let authorization = match authorization {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| AuthError::NotBearer)?),
    };
    let reviewer = authenticator
        .authenticate(authorization)
        .await
        .inspect_err(|err| {
            tracing::info!(method, error = %err, "reviewer call refused");
        })?;
    reviewer.require(required_role(method))?;
    tracing::debug!(method, identity = %reviewer.identity, role = ?reviewer.role, "reviewer authenticated");
    Ok(Caller::Authenticated(reviewer))
}
