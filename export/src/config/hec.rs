//! The `splunk_hec` sink's keys.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use belay_config_file::Source;
use toml::Spanned;

use super::{ConfigError, RawSink};

/// Splunk's HTTP Event Collector.
#[derive(Debug, Clone)]
pub struct HecConfig {
    /// Base URL, without `/services/...`.
    pub url: String,
    pub token: String,
    pub acks: bool,
    pub sourcetype: String,
    pub index: Option<String>,
    pub batch_max: usize,
    pub ca_file: Option<PathBuf>,
    /// An unconfirmed batch is sent again after this.
    pub ack_timeout: Duration,
}

pub(super) fn config(
    source: &Source<'_>,
    sink_span: Range<usize>,
    sink: RawSink,
) -> Result<HecConfig, ConfigError> {
    let at = |span: Range<usize>, key: &str, problem: String| {
        source.at(span, format!("{key}: {problem}"))
    };
    let required = |key: &str| at(sink_span.clone(), key, "missing".into());
    let url = sink.url.ok_or_else(|| required("url"))?;
    let base = url.get_ref().trim_end_matches('/').to_owned();
    if !(base.starts_with("https://") || base.starts_with("http://")) {
        return Err(at(url.span(), "url", "must be an http(s):// URL".into()));
    }
    let token = match (sink.token, sink.token_file) {
        (Some(token), None) => token.into_inner(),
        (None, Some(file)) => std::fs::read_to_string(file.get_ref())
            .map_err(|err| {
                at(
                    file.span(),
                    "token_file",
                    format!("{}: {err}", file.get_ref().display()),
                )
            })?
            .trim()
            .to_owned(),
        (Some(token), Some(_)) => {
            return Err(at(
                token.span(),
                "token",
                "give token or token_file, not both".into(),
            ));
        }
        (None, None) => return Err(required("token")),
    };
    if token.is_empty() {
        return Err(at(sink_span, "token", "is empty".into()));
    }
    let batch_max = sink.batch_max.map_or(100, |b| b.into_inner());
    Ok(HecConfig {
        url: base,
        token,
        acks: sink.acks.is_some_and(|a| a.into_inner()),
        sourcetype: sink
            .sourcetype
            .map_or_else(|| "belay".into(), |s| s.into_inner()),
        index: sink.index.map(Spanned::into_inner),
        batch_max: batch_max.clamp(1, 10_000),
        ca_file: sink.ca_file.map(Spanned::into_inner),
        ack_timeout: Duration::from_secs(
            sink.ack_timeout_seconds
                .map_or(60, |s| s.into_inner())
                .max(1),
        ),
    })
}
