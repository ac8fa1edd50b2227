//! Where events go. Each sink delivers a batch or fails; the exporter retries a failed
//! batch until it is delivered, and advances the sink's cursor only then.
//!
//! A stream without acknowledgements (syslog over TCP/TLS) answers a batch with
//! [`Delivery::Pending`]: the exporter keeps writing the next batches but holds the cursor
//! at the oldest pending one until [`Sink::poll_confirmed`] confirms it. When the sink
//! reports an error, every pending batch is lost with its connection, and the exporter
//! reads them again from the spool.

pub mod hec;
pub mod jsonl;
pub mod otlp;
pub mod syslog;

use serde_json::Value;

use crate::config::{HecConfig, OtlpConfig, SinkConfig, SinkKind};
use crate::event::Event;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Transient (connection refused, timeout, 5xx): retried with backoff.
    #[error("{0}")]
    Retry(String),
    /// The receiver refuses us (bad token, bad certificate, 4xx): someone must fix the
    /// configuration. Retried slowly, logged as an error; never dropped.
    #[error("configuration problem: {0}")]
    Config(String),
}

impl SinkError {
    pub fn reason(&self) -> &'static str {
        match self {
            SinkError::Retry(_) => "unavailable",
            SinkError::Config(_) => "config",
        }
    }
}

/// Events sent where nothing can tell whether they arrived (syslog over UDP), per sink:
/// counted here, not as delivered.
pub const SENT_UNCONFIRMED: &str = "belay_export_sent_unconfirmed_total";

/// An HTTPS client for a sink: `ca_file` (PEM) trusted besides the system roots,
/// `headers` (validated by the config) sent with every request.
fn http_client(
    ca_file: Option<&std::path::Path>,
    headers: reqwest::header::HeaderMap,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, SinkError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(headers);
    if let Some(ca_file) = ca_file {
        let problem = |err: &dyn std::fmt::Display| {
            SinkError::Config(format!("ca_file {}: {err}", ca_file.display()))
        };
        let pem = std::fs::read(ca_file).map_err(|err| problem(&err))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|err| problem(&err))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|err| SinkError::Config(format!("HTTP client: {err}")))
}

/// What became of a batch a sink accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver has it (acknowledged, or on disk): the cursor may pass it.
    Confirmed,
    /// Written to a stream with no acknowledgement; confirmed later, in order, by
    /// [`Sink::poll_confirmed`], or lost with its connection (then the sink errs).
    Pending,
    /// Sent best effort, with no delivery guarantee: the cursor passes it.
    Unconfirmed,
    /// The receiver took the batch but says it rejected this many events, which must not
    /// be sent again (OTLP partial success): the cursor passes it, the rejected events
    /// are counted as dropped.
    Rejected(u64),
}

#[derive(Debug)]
pub enum Sink {
    Jsonl(jsonl::JsonlSink),
    Syslog(syslog::SyslogSink),
    Hec(hec::HecSink),
    Otlp(otlp::OtlpSink),
}

impl Sink {
    pub fn new(config: &SinkConfig) -> Result<Self, SinkError> {
        Ok(match &config.kind {
            SinkKind::Jsonl(c) => Sink::Jsonl(jsonl::JsonlSink::new(c)?),
            SinkKind::Syslog(c) => Sink::Syslog(syslog::SyslogSink::new(&config.name, c)?),
            SinkKind::SplunkHec(c) => Sink::Hec(hec::HecSink::new(c)?),
            SinkKind::Otlp(c) => Sink::Otlp(otlp::OtlpSink::new(c)?),
        })
    }

    /// How many events one delivery to the sink `config` describes carries at most.
    /// Known before the sink exists, so the first batch obeys it too.
    pub fn batch_max(config: &SinkConfig) -> usize {
        match &config.kind {
            SinkKind::Jsonl(_) => 512,
            SinkKind::Syslog(_) => 256,
            SinkKind::SplunkHec(HecConfig { batch_max, .. })
            | SinkKind::Otlp(OtlpConfig { batch_max, .. }) => *batch_max,
        }
    }

    /// Delivers `events`, each already rendered in the sink's format as `rendered`.
    /// An error means the batch, and every pending one before it, must be sent again.
    pub async fn deliver(
        &mut self,
        events: &[Event],
        rendered: &[Value],
    ) -> Result<Delivery, SinkError> {
        match self {
            Sink::Jsonl(s) => s.deliver(rendered).map(|()| Delivery::Confirmed),
            Sink::Syslog(s) => s.deliver(events, rendered).await,
            Sink::Hec(s) => s
                .deliver(events, rendered)
                .await
                .map(|()| Delivery::Confirmed),
            Sink::Otlp(s) => s.deliver(events, rendered).await,
        }
    }

    /// Without waiting: how many of the oldest pending batches are now confirmed; an
    /// error when the pending batches were lost (send them again).
    pub fn poll_confirmed(&mut self) -> Result<usize, SinkError> {
        match self {
            Sink::Syslog(s) => s.poll_confirmed(),
            Sink::Jsonl(_) | Sink::Hec(_) | Sink::Otlp(_) => Ok(0),
        }
    }

    /// When [`Sink::poll_confirmed`] may have news, if anything is pending.
    pub fn next_check(&self) -> Option<tokio::time::Instant> {
        match self {
            Sink::Syslog(s) => s.next_check(),
            Sink::Jsonl(_) | Sink::Hec(_) | Sink::Otlp(_) => None,
        }
    }

    /// At stop: `true` if the receiver showed it read everything pending (all of it is
    /// confirmed); `false` leaves it to be sent again after the next start.
    pub async fn close(&mut self) -> bool {
        match self {
            Sink::Syslog(s) => s.close().await,
            Sink::Jsonl(_) | Sink::Hec(_) | Sink::Otlp(_) => false,
        }
    }
}
