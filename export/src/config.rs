//! The export file (`--export-config`): TOML, unknown keys refused, every problem reported
//! as `FILE:LINE:COL: key: problem`.
//!
//! ```toml
//! [spool]
//! dir = "/var/lib/belay/export"
//! max_bytes = 268435456            # the spool never grows past this
//! drop_policy = "oldest"           # full spool: drop the oldest events ("newest": refuse new)
//!
//! [[sink]]
//! name = "archive"                 # names the sink's cursor; default: "<type>-<index>"
//! type = "jsonl"
//! format = "native"                # or "ocsf"
//! path = "/var/log/belay/events.jsonl"
//! max_file_bytes = 104857600
//! keep_files = 5
//!
//! [[sink]]
//! type = "syslog"
//! transport = "tls"                # "udp", "tcp" (octet counting) or "tls"
//! address = "siem.example.com:6514"
//! ca_file = "/etc/belay/siem-ca.pem"
//! # server_name = "siem.example.com"   # default: the host of `address`
//! # client_cert_file / client_key_file: PEM, for servers that want client certificates
//! facility = "authpriv"
//! # confirm_after_ms = 2000         # tcp/tls: a batch counts as delivered once the
//! #                                 # connection stayed up this long after it (see sink::syslog)
//! # transport = "udp" is best effort: no delivery guarantee, nothing is re-sent
//!
//! [[sink]]
//! type = "splunk_hec"
//! url = "https://splunk.example.com:8088"
//! token_file = "/etc/belay/hec-token"  # or token = "..."
//! acks = true
//! sourcetype = "belay"
//! # index = "security"
//!
//! [[sink]]
//! type = "otlp"                    # OpenTelemetry logs, OTLP/HTTP with JSON
//! url = "https://otel-collector.example.com:4318"   # logs go to <url>/v1/logs
//! # headers = { "Authorization" = "Bearer ..." }    # e.g. a vendor's API key
//! # ca_file = "/etc/belay/otel-ca.pem"
//! format = "ocsf"
//! ```

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

mod hec;
mod jsonl;
mod otlp;
mod syslog;

pub use hec::HecConfig;
pub use jsonl::JsonlConfig;
pub use otlp::OtlpConfig;
pub use syslog::{SyslogConfig, TlsFiles, Transport};

use belay_config_file::Source;
use serde::Deserialize;
use toml::Spanned;

pub use belay_config_file::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Full spool: delete the oldest segment, events no sink has delivered yet included.
    Oldest,
    /// Full spool: refuse the new events, keep what is spooled.
    Newest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Native,
    Ocsf,
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub drop_policy: DropPolicy,
}

#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub spool: SpoolConfig,
    pub sinks: Vec<SinkConfig>,
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Unique; names the sink's cursor file and its metrics.
    pub name: String,
    pub format: Format,
    pub kind: SinkKind,
}

/// A sink's settings, by its `type`.
#[derive(Debug, Clone)]
pub enum SinkKind {
    Jsonl(JsonlConfig),
    Syslog(SyslogConfig),
    SplunkHec(HecConfig),
    Otlp(OtlpConfig),
}

impl SinkKind {
    pub fn sink_type(&self) -> SinkType {
        match self {
            Self::Jsonl(_) => SinkType::Jsonl,
            Self::Syslog(_) => SinkType::Syslog,
            Self::SplunkHec(_) => SinkType::SplunkHec,
            Self::Otlp(_) => SinkType::Otlp,
        }
    }
}

/// A sink's `type` key: which settings apply, and which sink delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkType {
    Jsonl,
    Syslog,
    SplunkHec,
    Otlp,
}

impl SinkType {
    /// The `type` value that names this sink type in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Syslog => "syslog",
            Self::SplunkHec => "splunk_hec",
            Self::Otlp => "otlp",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [Self::Jsonl, Self::Syslog, Self::SplunkHec, Self::Otlp]
            .into_iter()
            .find(|t| t.as_str() == name)
    }

    /// The keys a sink of this type takes besides `name`, `type` and `format`.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Jsonl => JSONL_KEYS,
            Self::Syslog => SYSLOG_KEYS,
            Self::SplunkHec => HEC_KEYS,
            Self::Otlp => OTLP_KEYS,
        }
    }
}

impl fmt::Display for SinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const DEFAULT_MAX_BYTES: u64 = 256 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    spool: Spanned<RawSpool>,
    #[serde(default)]
    sink: Vec<Spanned<RawSink>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    dir: PathBuf,
    max_bytes: Option<Spanned<u64>>,
    segment_bytes: Option<Spanned<u64>>,
    #[serde(default = "default_policy")]
    drop_policy: DropPolicy,
}

fn default_policy() -> DropPolicy {
    DropPolicy::Oldest
}

/// Every key of every sink type: which apply to which type is checked after parsing, so
/// a key of another type gets a precise message rather than serde's "unknown field".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    name: Option<Spanned<String>>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    format: Option<Format>,
    path: Option<Spanned<PathBuf>>,
    max_file_bytes: Option<Spanned<u64>>,
    keep_files: Option<Spanned<u32>>,
    transport: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    server_name: Option<Spanned<String>>,
    ca_file: Option<Spanned<PathBuf>>,
    client_cert_file: Option<Spanned<PathBuf>>,
    client_key_file: Option<Spanned<PathBuf>>,
    facility: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
    acks: Option<Spanned<bool>>,
    sourcetype: Option<Spanned<String>>,
    index: Option<Spanned<String>>,
    batch_max: Option<Spanned<usize>>,
    ack_timeout_seconds: Option<Spanned<u64>>,
    confirm_after_ms: Option<Spanned<u64>>,
    headers: Option<Spanned<std::collections::BTreeMap<String, String>>>,
}

impl RawSink {
    /// The keys present, with their spans, for the "does not apply" check.
    fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        fn span<T>(
            key: &'static str,
            v: &Option<Spanned<T>>,
        ) -> Option<(&'static str, Range<usize>)> {
            v.as_ref().map(|v| (key, v.span()))
        }
        [
            span("path", &self.path),
            span("max_file_bytes", &self.max_file_bytes),
            span("keep_files", &self.keep_files),
            span("transport", &self.transport),
            span("address", &self.address),
            span("server_name", &self.server_name),
            span("ca_file", &self.ca_file),
            span("client_cert_file", &self.client_cert_file),
            span("client_key_file", &self.client_key_file),
            span("facility", &self.facility),
            span("url", &self.url),
            span("token", &self.token),
            span("token_file", &self.token_file),
            span("acks", &self.acks),
            span("sourcetype", &self.sourcetype),
            span("index", &self.index),
            span("batch_max", &self.batch_max),
            span("ack_timeout_seconds", &self.ack_timeout_seconds),
            span("confirm_after_ms", &self.confirm_after_ms),
            span("headers", &self.headers),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

const JSONL_KEYS: &[&str] = &["path", "max_file_bytes", "keep_files"];
const SYSLOG_KEYS: &[&str] = &[
    "transport",
    "address",
    "server_name",
    "ca_file",
    "client_cert_file",
    "client_key_file",
    "facility",
    "confirm_after_ms",
];
const HEC_KEYS: &[&str] = &[
    "url",
    "token",
    "token_file",
    "acks",
    "sourcetype",
    "index",
    "batch_max",
    "ca_file",
    "ack_timeout_seconds",
];

const OTLP_KEYS: &[&str] = &["url", "headers", "ca_file", "batch_max"];

impl ExportConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(path, &belay_config_file::read(path)?)
    }

    /// Validates `text`, naming `path` in errors. Relative file names (token_file) are
    /// read relative to the working directory.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let source = Source::new(path, text);
        let at = |span: Range<usize>, key: &str, problem: String| {
            source.at(span, format!("{key}: {problem}"))
        };
        let raw: RawConfig = source.parse()?;

        let spool_span = raw.spool.span();
        let spool = raw.spool.into_inner();
        let max_bytes = spool
            .max_bytes
            .map_or(DEFAULT_MAX_BYTES, |v| v.into_inner());
        if max_bytes < 64 * 1024 {
            return Err(at(spool_span, "max_bytes", "must be at least 65536".into()));
        }
        let segment_bytes = match spool.segment_bytes {
            Some(v) if *v.get_ref() < 4096 || *v.get_ref() > max_bytes / 2 => {
                return Err(at(
                    v.span(),
                    "segment_bytes",
                    "must be between 4096 and half of max_bytes".into(),
                ));
            }
            Some(v) => v.into_inner(),
            // Several segments fit: dropping the oldest one frees an eighth, not all.
            None => (max_bytes / 8).min(16 << 20),
        };

        let mut sinks = Vec::with_capacity(raw.sink.len());
        let mut names = HashSet::new();
        for (index, sink) in raw.sink.into_iter().enumerate() {
            let sink_span = sink.span();
            let sink = sink.into_inner();
            let Some(sink_type) = SinkType::parse(sink.kind.get_ref()) else {
                return Err(at(
                    sink.kind.span(),
                    "type",
                    format!(
                        "unknown sink type {:?}; expected \"jsonl\", \"syslog\", \
                         \"splunk_hec\" or \"otlp\"",
                        sink.kind.get_ref()
                    ),
                ));
            };
            let allowed = sink_type.keys();
            if let Some((key, span)) = sink
                .present()
                .into_iter()
                .find(|(k, _)| !allowed.contains(k))
            {
                return Err(at(
                    span,
                    key,
                    format!("does not apply to a {sink_type} sink"),
                ));
            }
            let name = match &sink.name {
                Some(name) => {
                    let valid = !name.get_ref().is_empty()
                        && name
                            .get_ref()
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
                    if !valid {
                        return Err(at(
                            name.span(),
                            "name",
                            "must be non-empty ASCII letters, digits, '-' or '_'".into(),
                        ));
                    }
                    name.get_ref().clone()
                }
                None => format!("{sink_type}-{index}"),
            };
            if !names.insert(name.clone()) {
                let span = sink.name.as_ref().map_or(sink_span.clone(), |n| n.span());
                return Err(at(span, "name", format!("sink {name:?} is declared twice")));
            }
            let format = sink.format.unwrap_or(Format::Native);
            let kind = match sink_type {
                SinkType::Jsonl => SinkKind::Jsonl(jsonl::config(&source, sink_span, sink)?),
                SinkType::Syslog => SinkKind::Syslog(syslog::config(&source, sink_span, sink)?),
                SinkType::SplunkHec => SinkKind::SplunkHec(hec::config(&source, sink_span, sink)?),
                SinkType::Otlp => SinkKind::Otlp(otlp::config(&source, sink_span, sink)?),
            };
            sinks.push(SinkConfig { name, format, kind });
        }
        if sinks.is_empty() {
            return Err(source.whole("no [[sink]]: nothing to export to"));
        }
        Ok(Self {
            spool: SpoolConfig {
                dir: spool.dir,
                max_bytes,
                segment_bytes,
                drop_policy: spool.drop_policy,
            },
            sinks,
        })
    }
}
