//! The `syslog` sink's keys.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use belay_config_file::Source;
use toml::Spanned;

use super::{ConfigError, RawSink};

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

/// RFC 5424 syslog over UDP, TCP or TLS.
#[derive(Debug, Clone)]
pub struct SyslogConfig {
    pub transport: Transport,
    pub address: SocketAddr,
    pub server_name: String,
    pub tls: TlsFiles,
    /// RFC 5424 facility code (0..=23).
    pub facility: u8,
    /// TCP/TLS: how long the connection must stay up after a batch before the batch
    /// counts as delivered.
    pub confirm_after: Duration,
}

/// RFC 5424 facility names, by code.
const FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

pub(super) fn config(
    source: &Source<'_>,
    sink_span: Range<usize>,
    sink: RawSink,
) -> Result<SyslogConfig, ConfigError> {
    let at = |span: Range<usize>, key: &str, problem: String| {
        source.at(span, format!("{key}: {problem}"))
    };
    let required = |key: &str| at(sink_span.clone(), key, "missing".into());
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
        && let Some((key, span)) = [&sink.ca_file, &sink.client_cert_file, &sink.client_key_file]
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
    Ok(SyslogConfig {
        transport,
        address: resolved,
        server_name: sink.server_name.map_or(host, |s| s.into_inner()),
        tls: TlsFiles {
            ca_file: sink.ca_file.map(Spanned::into_inner),
            client_cert_file: sink.client_cert_file.map(Spanned::into_inner),
            client_key_file: sink.client_key_file.map(Spanned::into_inner),
        },
        facility,
        confirm_after: Duration::from_millis(
            sink.confirm_after_ms.map_or(2000, |v| v.into_inner()),
        ),
    })
}
