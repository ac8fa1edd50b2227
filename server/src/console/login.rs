//! Browser sign-in: the OpenID Connect authorization code flow with PKCE (RFC 7636,
//! S256) against the issuers of `--auth-config`, with `state` (one use, bound to the
//! browser by a cookie, so nobody can sign a victim into the attacker's account) and
//! `nonce` (so an ID token issued for another sign-in is refused). The ID token is
//! verified exactly as a bearer token on the gRPC service is, then traded for a
//! session cookie; the token itself is not kept.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::Console;
use super::guard::{ApiError, Caller, check_change};
use super::session::{self, LOGIN_COOKIE, LOGIN_TIMEOUT, random_token};
use crate::approvals::Store;

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    issuer: Option<usize>,
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Where a sign-in may return to: a path on the console, never another site
/// (`//evil.example` and `/\evil.example` are other sites to a browser).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("//")
                && !next.contains('\\')
                && !next.chars().any(char::is_control)
                && next.len() <= 2048 =>
        {
            next.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// A plain-text page for what went wrong in a sign-in (text: nothing in it is markup).
fn failure(status: StatusCode, message: impl Into<String>) -> Response {
    let mut response = (
        status,
        format!(
            "Sign-in failed: {}\n\nStart again at /login\n",
            message.into()
        ),
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `GET /login`: off to the issuer.
pub async fn login<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Query(query): Query<LoginQuery>,
) -> Response {
    let issuers = console.auth.issuers();
    let next = safe_next(query.next.as_deref());
    let index = match (query.issuer, issuers.len()) {
        (_, 0) => {
            return failure(
                StatusCode::NOT_FOUND,
                "this server trusts no OIDC issuer ([[oidc]] in --auth-config); use the CLI with an API token",
            );
        }
        (Some(index), n) if index < n => index,
        (Some(index), n) => {
            return failure(
                StatusCode::BAD_REQUEST,
                format!("no issuer number {index}: there are {n}"),
            );
        }
        (None, 1) => 0,
        (None, _) => return choose_issuer(&console, &next),
    };
    let issuer = &issuers[index];
    let endpoints = match issuer.login_endpoints().await {
        Ok(endpoints) => endpoints,
        Err(err) => return failure(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    };
    let verifier = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let nonce = random_token();
    let browser = random_token();
    let state = console
        .logins
        .start(index, verifier, nonce.clone(), browser.clone(), next);
    let mut url = match reqwest::Url::parse(&endpoints.authorization) {
        Ok(url) => url,
        Err(err) => {
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the issuer's authorization endpoint is not a URL: {err}"),
            );
        }
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", issuer.client_id())
        .append_pair("redirect_uri", &console.redirect_uri())
        .append_pair("scope", "openid email profile")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let mut response = Redirect::to(url.as_str()).into_response();
    // Lax: the browser comes back from the issuer by a cross-site navigation, which
    // Strict would strip the cookie from.
    let cookie = session::set_cookie(LOGIN_COOKIE, &browser, "Lax", LOGIN_TIMEOUT);
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// With several issuers: a page of links, one per issuer (names escaped: they come from
/// the config, but a page is no place to trust text).
fn choose_issuer<S: Store>(console: &Console<S>, next: &str) -> Response {
    let mut items = String::new();
    for (index, issuer) in console.auth.issuers().iter().enumerate() {
        let href = format!("/login?issuer={index}&next={}", url_encode(next));
        items.push_str(&format!(
            "<li><a href=\"{}\">{}</a></li>",
            html_escape(&href),
            html_escape(issuer.issuer())
        ));
    }
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>Sign in - belay</title>\
         <link rel=stylesheet href=/app.css><main class=signin><h1>Sign in to belay</h1>\
         <p>Choose your identity provider:</p><ul>{items}</ul></main>"
    ))
    .into_response()
}

fn url_encode(text: &str) -> String {
    reqwest::Url::parse_with_params("x:", [("v", text)])
        .map(|url| {
            url.query()
                .unwrap_or("")
                .trim_start_matches("v=")
                .to_owned()
        })
        .unwrap_or_default()
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/callback`: the issuer sends the browser back with a code.
pub async fn callback<S: Store>(
    State(console): State<Arc<Console<S>>>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    if let Some(error) = query.error {
        let detail = query.error_description.unwrap_or_default();
        return failure(
            StatusCode::UNAUTHORIZED,
            format!("the issuer answered {error}: {detail}"),
        );
    }
    let (Some(code), Some(state)) = (query.code, query.state) else {
        return failure(StatusCode::BAD_REQUEST, "the callback needs code and state");
    };
    let Some(pending) = console.logins.take(&state) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "unknown or expired sign-in (state); each sign-in works once and within 10 minutes",
        );
    };
    let browser = session::cookie(&headers, LOGIN_COOKIE);
    if !browser.is_some_and(|b| session::same_secret(b, &pending.browser)) {
        return failure(
            StatusCode::BAD_REQUEST,
            "this sign-in was started in another browser",
        );
    }
    let Some(issuer) = console.auth.issuers().get(pending.issuer) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "the issuer of this sign-in is gone",
        );
    };
    let endpoints = match issuer.login_endpoints().await {
        Ok(endpoints) => endpoints,
        Err(err) => return failure(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    };
    let redirect_uri = console.redirect_uri();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("client_id", issuer.client_id()),
        ("code_verifier", pending.verifier.as_str()),
    ];
    let mut request = console.auth.http().post(&endpoints.token).form(&form);
    if let Some(secret) = issuer.client_secret() {
        request = request.basic_auth(issuer.client_id(), Some(secret));
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(err) => {
            return failure(
                StatusCode::BAD_GATEWAY,
                format!("cannot reach the issuer's token endpoint: {err}"),
            );
        }
    };
    let status = answer.status();
    let token: TokenResponse = match answer.json().await {
        Ok(token) => token,
        Err(err) => {
            return failure(
                StatusCode::BAD_GATEWAY,
                format!("the token endpoint answered HTTP {status} without a JSON body: {err}"),
            );
        }
    };
    let Some(id_token) = token.id_token.filter(|_| status.is_success()) else {
        return failure(
            StatusCode::UNAUTHORIZED,
            format!(
                "the token endpoint refused the code (HTTP {status}): {} {}",
                token.error.unwrap_or_default(),
                token.error_description.unwrap_or_default()
            ),
        );
    };
    let reviewer = match console
        .auth
        .sign_in(issuer, &id_token, &pending.nonce)
        .await
    {
        Ok(reviewer) => reviewer,
        Err(err) => return failure(StatusCode::UNAUTHORIZED, err.to_string()),
    };
    tracing::info!(identity = %reviewer.identity, role = ?reviewer.role, "console sign-in");
    let (token, _) = console.sessions.create(reviewer, console.session_ttl);
    let mut response = Redirect::to(&pending.next).into_response();
    let cookies = [
        session::set_cookie(session::COOKIE, &token, "Strict", console.session_ttl),
        session::clear_cookie(LOGIN_COOKIE),
    ];
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// `POST /logout`: the session ends here, whatever the browser keeps.
pub async fn logout<S: Store>(
    State(console): State<Arc<Console<S>>>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ApiError> {
    check_change(&headers, &caller, &console.origin, false)?;
    if let Some(token) = session::cookie(&headers, session::COOKIE) {
        console.sessions.remove(token);
    }
    tracing::info!(identity = %caller.reviewer.identity, "console sign-out");
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&session::clear_cookie(session::COOKIE)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn a_sign_in_returns_only_to_a_path_of_the_console() {
        assert_eq!(safe_next(Some("/requests/a%3Ab")), "/requests/a%3Ab");
        for other_site in [
            "//evil.example/",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "/\n",
        ] {
            assert_eq!(safe_next(Some(other_site)), "/", "{other_site:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
