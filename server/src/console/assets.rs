//! The page, embedded in the binary: no CDN, no build step, nothing fetched from
//! elsewhere (the Content Security Policy would refuse it anyway).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const FAVICON_SVG: &str = include_str!("assets/favicon.svg");

/// The bytes the page weighs, uncompressed: what a reviewer's browser downloads once.
pub fn page_weight() -> usize {
    INDEX_HTML.len() + APP_JS.len() + APP_CSS.len() + FAVICON_SVG.len()
}

fn asset(content_type: &'static str, body: &'static str, cache: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// The shell of every page of the console (`/`, `/requests/..`, `/agents`...): the
/// script routes by path.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML, "no-cache")
}

pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS, "no-cache")
}

pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS, "no-cache")
}

pub async fn favicon() -> Response {
    asset("image/svg+xml", FAVICON_SVG, "max-age=86400")
}
