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
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::ops::Range;
use std::path::{Path, PathBuf};

mod otlp;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum SinkKind {
    Jsonl {
        path: PathBuf,
        max_file_bytes: u64,
        keep_files: u32,
    },
    Syslog {
        transport: Transport,
        address: SocketAddr,
        server_name: String,
        tls: TlsFiles,
        /// RFC 5424 facility code (0..=23).
        facility: u8,
        /// TCP/TLS: how long the connection must stay up after a batch before the batch
        /// counts as delivered.
        confirm_after: std::time::Duration,
    },
    SplunkHec {
        /// Base URL, without `/services/...`.
        url: String,
        token: String,
        acks: bool,
        sourcetype: String,
        index: Option<String>,
        batch_max: usize,
        ca_file: Option<PathBuf>,
        /// An unconfirmed batch is sent again after this.
        ack_timeout: std::time::Duration,
    },
    Otlp {
        /// The full logs URL (`.../v1/logs`).
        endpoint: String,
        /// Sent with every request; validated, and marked sensitive (they carry
        /// credentials), so debug output does not show them.
        headers: reqwest::header::HeaderMap,
        ca_file: Option<PathBuf>,
        batch_max: usize,
    },
}

const DEFAULT_MAX_BYTES: u64 = 256 << 20;
const DEFAULT_MAX_FILE_BYTES: u64 = 100 << 20;

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

/// RFC 5424 facility names, by code.
const FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

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
            let kind_name = sink.kind.get_ref().clone();
            let allowed: &[&str] = match kind_name.as_str() {
                "jsonl" => JSONL_KEYS,
                "syslog" => SYSLOG_KEYS,
                "splunk_hec" => HEC_KEYS,
                "otlp" => OTLP_KEYS,
                other => {
                    return Err(at(
                        sink.kind.span(),
                        "type",
                        format!(
                            "unknown sink type {other:?}; expected \"jsonl\", \"syslog\", \
                             \"splunk_hec\" or \"otlp\""
                        ),
                    ));
                }
            };
            if let Some((key, span)) = sink
                .present()
                .into_iter()
                .find(|(k, _)| !allowed.contains(k))
            {
                return Err(at(
                    span,
                    key,
                    format!("does not apply to a {kind_name} sink"),
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
                None => format!("{kind_name}-{index}"),
            };
            if !names.insert(name.clone()) {
                let span = sink.name.as_ref().map_or(sink_span.clone(), |n| n.span());
                return Err(at(span, "name", format!("sink {name:?} is declared twice")));
            }
            let required = |key: &str| at(sink_span.clone(), key, "missing".into());
            let format = sink.format.unwrap_or(Format::Native);
            let kind = match kind_name.as_str() {
                "jsonl" => {
                    let path = sink.path.ok_or_else(|| required("path"))?.into_inner();
                    let keep_files = sink.keep_files.map_or(5, |k| k.into_inner());
                    SinkKind::Jsonl {
                        path,
                        max_file_bytes: sink
                            .max_file_bytes
                            .map_or(DEFAULT_MAX_FILE_BYTES, |v| v.into_inner())
                            .max(1024),
                        keep_files,
                    }
                }
                "syslog" => {
                    let transport = sink.transport.ok_or_else(|| required("transport"))?;
                    let transport = match transport.get_ref().as_str() {
                        "udp" => Transport::Udp,
                        "tcp" => Transport::Tcp,
                        "tls" => Transport::Tls,
                        other => {
                            return Err(at(
                                transport.span(),
                                "transport",
                                format!("{other:?}: expected \"udp\", \"tcp\" or \"tls\""),
                            ));
                        }
                    };
                    let address = sink.address.ok_or_else(|| required("address"))?;
                    let resolved = address
                        .get_ref()
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut a| a.next())
                        .ok_or_else(|| {
                            at(
                                address.span(),
                                "address",
                                format!("{:?} is not a resolvable host:port", address.get_ref()),
                            )
                        })?;
                    let host = address
                        .get_ref()
                        .rsplit_once(':')
                        .map_or("", |(h, _)| h)
                        .trim_matches(['[', ']'])
                        .to_owned();
                    let facility = match &sink.facility {
                        None => 10, // authpriv: approvals are security/authorization messages
                        Some(f) => FACILITIES
                            .iter()
                            .position(|n| n == f.get_ref())
                            .ok_or_else(|| {
                                at(
                                    f.span(),
                                    "facility",
                                    format!("unknown facility {:?}", f.get_ref()),
                                )
                            })? as u8,
                    };
                    if transport != Transport::Tls
                        && let Some((key, span)) =
                            [&sink.ca_file, &sink.client_cert_file, &sink.client_key_file]
                                .into_iter()
                                .zip(["ca_file", "client_cert_file", "client_key_file"])
                                .find_map(|(v, k)| v.as_ref().map(|v| (k, v.span())))
                    {
                        return Err(at(span, key, "only applies to transport = \"tls\"".into()));
                    }
                    if transport == Transport::Udp
                        && let Some(v) = &sink.confirm_after_ms
                    {
                        return Err(at(
                            v.span(),
                            "confirm_after_ms",
                            "does not apply to transport = \"udp\" (no delivery guarantee)".into(),
                        ));
                    }
                    if sink.client_cert_file.is_some() != sink.client_key_file.is_some() {
                        return Err(at(
                            sink_span,
                            "client_cert_file",
                            "client_cert_file and client_key_file go together".into(),
                        ));
                    }
                    SinkKind::Syslog {
                        transport,
                        address: resolved,
                        server_name: sink.server_name.map_or(host, |s| s.into_inner()),
                        tls: TlsFiles {
                            ca_file: sink.ca_file.map(Spanned::into_inner),
                            client_cert_file: sink.client_cert_file.map(Spanned::into_inner),
                            client_key_file: sink.client_key_file.map(Spanned::into_inner),
                        },
                        facility,
                        confirm_after: std::time::Duration::from_millis(
                            sink.confirm_after_ms.map_or(2000, |v| v.into_inner()),
                        ),
                    }
                }
                "otlp" => otlp::kind(&source, sink_span.clone(), sink)?,
                _ => {
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
                    SinkKind::SplunkHec {
                        url: base,
                        token,
                        acks: sink.acks.is_some_and(|a| a.into_inner()),
                        sourcetype: sink
                            .sourcetype
                            .map_or_else(|| "belay".into(), |s| s.into_inner()),
                        index: sink.index.map(Spanned::into_inner),
                        batch_max: batch_max.clamp(1, 10_000),
                        ca_file: sink.ca_file.map(Spanned::into_inner),
                        ack_timeout: std::time::Duration::from_secs(
                            sink.ack_timeout_seconds
                                .map_or(60, |s| s.into_inner())
                                .max(1),
                        ),
                    }
                }
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
