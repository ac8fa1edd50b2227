//! The `otlp` sink's keys.

use std::ops::Range;
use std::path::PathBuf;

use belay_config_file::Source;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use toml::Spanned;

use super::{ConfigError, RawSink};

/// OpenTelemetry logs over OTLP/HTTP with JSON.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The full logs URL (`.../v1/logs`).
    pub endpoint: String,
    /// Sent with every request; validated, and marked sensitive (they carry
    /// credentials), so debug output does not show them.
    pub headers: HeaderMap,
    pub ca_file: Option<PathBuf>,
    pub batch_max: usize,
}

/// OTLP/HTTP's path for logs, appended to a base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT`
/// is); a URL that already ends in it is used as it is.
const LOGS_PATH: &str = "/v1/logs";

pub(super) fn config(
    source: &Source<'_>,
    sink_span: Range<usize>,
    sink: RawSink,
) -> Result<OtlpConfig, ConfigError> {
    let url = sink
        .url
        .ok_or_else(|| source.at(sink_span.clone(), "url: missing"))?;
    let base = url.get_ref().trim_end_matches('/');
    if !(base.starts_with("https://") || base.starts_with("http://")) {
        return Err(source.at(url.span(), "url: must be an http(s):// URL"));
    }
    let endpoint = if base.ends_with(LOGS_PATH) {
        base.to_owned()
    } else {
        format!("{base}{LOGS_PATH}")
    };
    let mut headers = HeaderMap::new();
    if let Some(given) = sink.headers {
        let span = given.span();
        for (name, value) in given.into_inner() {
            let header = match HeaderName::from_bytes(name.as_bytes()) {
                Ok(header) => header,
                Err(err) => return Err(source.at(span, format!("headers: {name:?}: {err}"))),
            };
            if header == reqwest::header::CONTENT_TYPE {
                return Err(source.at(
                    span,
                    "headers: content-type is set by belay (application/json)",
                ));
            }
            let Ok(mut value) = HeaderValue::from_str(&value) else {
                // The value is likely a credential: name the header, never show it.
                return Err(source.at(
                    span,
                    format!("headers: the value of {name:?} is not a valid HTTP header value"),
                ));
            };
            value.set_sensitive(true);
            headers.insert(header, value);
        }
    }
    Ok(OtlpConfig {
        endpoint,
        headers,
        ca_file: sink.ca_file.map(Spanned::into_inner),
        batch_max: sink
            .batch_max
            .map_or(100, |b| b.into_inner())
            .clamp(1, 10_000),
    })
}
