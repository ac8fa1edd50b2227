//! belay-export: every request and decision, from the agent or the server, to the SIEMs a
//! security team already runs, with nothing lost.
//!
//! Producers hand [`Event`]s to an [`Exporter`]: they are appended to an on-disk
//! [`spool`] (fsync'd, CRC-framed) and each configured [`sink`] delivers them from its
//! own cursor, retrying until the receiver confirms. A slow or dead sink holds back only
//! itself; a full spool drops per the configured policy, counted and logged. Delivery is
//! at-least-once: every output format carries the event's stable id.
//!
//! Receivers without acknowledgements: syslog over TCP or TLS confirms a batch only once
//! its connection has stayed up `confirm_after_ms` after it and is still open; a
//! connection that fails takes every unconfirmed batch with it, and they are sent again
//! (see [`sink::syslog`]). Syslog over UDP is best effort, with no delivery guarantee:
//! counted as sent ([`sink::SENT_UNCONFIRMED`]), never as delivered. OTLP receivers may
//! accept a batch yet reject some of its records; those must not be sent again and are
//! counted as dropped (see [`sink::otlp`]).

pub mod config;
pub mod event;
mod exporter;
pub mod format;
pub mod metrics;
pub mod sink;
pub mod spool;

pub use config::{ConfigError, ExportConfig, Format};
pub use event::Event;
pub use exporter::{ExportHandle, Exporter};
pub use metrics::Metrics;
