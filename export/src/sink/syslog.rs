//! Syslog, RFC 5424 messages over UDP (one per datagram), TCP with octet counting
//! (RFC 6587 3.4.1) or TLS (RFC 5425, same framing).
//!
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [belay@32473 id="…" kind="…"] MSG`
//! with MSG the event in the sink's format. 32473 is the example private enterprise
//! number of RFC 5612: replace it when belay has its own.
//!
//! TCP and TLS have no application-level acknowledgement, and a batch written to the
//! socket is not yet delivered: a receiver killed now loses what sits in its socket buffer
//! and queues, and the first write after it died still succeeds. So a written batch stays
//! pending, on its connection, until the receiver's TCP stack has acknowledged its last
//! byte (our send queue, `SIOCOUTQ`, has drained past it), the connection has stayed up
//! `confirm_after_ms` (default 2 s) after that, and a non-blocking check of that same
//! connection then finds it still open (no EOF, no error, no TLS close_notify). The
//! settle time is the receiver's to take the batch from its socket buffer through its
//! queues; a slow receiver does not eat into it, as the clock starts at the acknowledgement. When the connection fails, every
//! pending batch is sent again on the next one: the receiver may see an event twice, never
//! lose one it was sent before it died (the SIEM drops duplicates by the event id). This
//! covers a receiver killed, restarted or unreachable; not one that keeps its connection
//! open while losing what it accepted (RELP would be needed for that).
//!
//! At stop, pending batches are confirmed only by a clean close: our side shuts down
//! writing (after a close_notify for TLS) and the receiver, having read everything before
//! our end of stream, closes too; otherwise they are sent again after the next start.
//!
//! UDP is best effort, with no delivery guarantee: datagrams are counted as sent
//! ([`super::SENT_UNCONFIRMED`]), never as delivered, and never re-sent.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd as _, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use super::{Delivery, SinkError};
use crate::config::{SyslogConfig, TlsFiles, Transport};
use crate::event::{Event, rfc3339};

/// tokio-rustls's connector has no Debug.
struct Connector(tokio_rustls::TlsConnector);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConnector")
    }
}

pub const SD_ID: &str = "belay@32473";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop waits for the receiver to close after our end of stream.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + std::fmt::Debug> Stream for T {}

/// Between checks of a pending batch whose bytes the receiver has not acknowledged yet.
const ACK_POLL: Duration = Duration::from_millis(50);

/// The TCP socket, counting the bytes handed to it (TLS records included).
#[derive(Debug)]
struct Counted {
    tcp: TcpStream,
    written: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.tcp).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            this.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// A batch written and not confirmed yet.
#[derive(Debug)]
struct Written {
    /// The socket's byte count after it.
    end: u64,
    /// When a check first found all of it acknowledged by the receiver.
    acked_at: Option<Instant>,
}

/// One TCP or TLS connection and the batches written on it that are not confirmed yet.
#[derive(Debug)]
struct Connection {
    io: Box<dyn Stream>,
    /// The TCP socket under `io`, for the kernel's view of it.
    fd: RawFd,
    /// Bytes handed to the TCP socket.
    written: Arc<AtomicU64>,
    /// Oldest first.
    pending: VecDeque<Written>,
}

impl Connection {
    /// Bytes of this connection the receiver's TCP stack has acknowledged.
    fn acked(&self) -> std::io::Result<u64> {
        let mut queued: libc::c_int = 0;
        // SAFETY: `fd` is the socket `io` owns, open while `self` is; TIOCOUTQ (SIOCOUTQ)
        // writes one int, the bytes sent and not acknowledged plus those not sent yet.
        let rc = unsafe { libc::ioctl(self.fd, libc::TIOCOUTQ, &raw mut queued) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let written = self.written.load(Ordering::Relaxed);
        Ok(written.saturating_sub(u64::try_from(queued).unwrap_or(0)))
    }

    /// Without waiting: `Err` if the receiver has closed or reset the connection.
    fn check_open(&mut self) -> std::io::Result<()> {
        let mut byte = 0u8;
        // SAFETY: `fd` is the socket `io` owns, open while `self` is; `byte` is a valid
        // one-byte buffer. MSG_PEEK leaves the data to `io`; MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::recv(
                self.fd,
                (&raw mut byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let err = std::io::Error::last_os_error();
                match err.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(()),
                    _ => Err(err),
                }
            }
            // The receiver sent something: for TLS a session ticket or a close_notify,
            // which only the TLS layer can tell apart. Let it read (and drop) what it can.
            _ => self.drain(),
        }
    }

    /// Reads what has arrived, without waiting; `Err` on end of stream (a TLS
    /// close_notify included) or a failure.
    fn drain(&mut self) -> std::io::Result<()> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut buf = [0u8; 4096];
        // Bounded: a receiver that keeps talking is checked again next time.
        for _ in 0..16 {
            let mut read = ReadBuf::new(&mut buf);
            match Pin::new(&mut self.io).poll_read(&mut cx, &mut read) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => return Err(err),
            }
        }
        Ok(())
    }

    /// Ends our stream and waits for the receiver to end its own: it then has read
    /// everything we wrote (a receiver that had not would reset the connection).
    async fn close_cleanly(&mut self) -> std::io::Result<()> {
        // A receiver gone already would answer our end of stream with its own as well.
        self.check_open()?;
        // TLS: close_notify, then the TCP half-close; TCP: the half-close.
        self.io.shutdown().await?;
        let mut buf = [0u8; 4096];
        loop {
            match self.io.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                // The receiver closed the TCP connection without a close_notify of its
                // own, in order, after our close_notify: it read up to there.
                Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    }
}

#[derive(Debug)]
pub struct SyslogSink {
    transport: Transport,
    address: std::net::SocketAddr,
    server_name: ServerName<'static>,
    facility: u8,
    tls: Option<Connector>,
    confirm_after: Duration,
    udp: Option<UdpSocket>,
    stream: Option<Connection>,
}

/// Severity: 4 warning for denials and kills, 5 notice for new requests, 6 informational.
fn severity(event: &Event) -> u8 {
    match event.body.get("verdict").and_then(Value::as_str) {
        Some("deny" | "kill") => 4,
        _ if matches!(event.kind.as_str(), "submitted" | "opened") => 5,
        _ => 6,
    }
}

/// RFC 5424 PARAM-VALUE escaping: `"`, `\` and `]`.
fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// PRINTUSASCII, at most `max` characters, `-` if empty (the NILVALUE).
fn header_field(value: &str, max: usize) -> String {
    let field: String = value
        .chars()
        .filter(|c| ('!'..='~').contains(c))
        .take(max)
        .collect();
    if field.is_empty() { "-".into() } else { field }
}

/// One RFC 5424 message.
pub fn message(event: &Event, rendered: &Value, facility: u8) -> String {
    let pri = u16::from(facility) * 8 + u16::from(severity(event));
    format!(
        "<{pri}>1 {} {} {} {} {} [{SD_ID} id=\"{}\" kind=\"{}\"] {}",
        rfc3339(event.time_ns),
        header_field(&event.host, 255),
        header_field(&event.app, 48),
        std::process::id(),
        header_field(&event.kind, 32),
        sd_escape(&event.id),
        sd_escape(&event.kind),
        rendered
    )
}

fn tls_connector(files: &TlsFiles) -> Result<tokio_rustls::TlsConnector, SinkError> {
    let config_err = |what: &str, path: &std::path::Path, err: &dyn std::fmt::Display| {
        SinkError::Config(format!("{what} {}: {err}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    let Some(ca_file) = &files.ca_file else {
        return Err(SinkError::Config(
            "transport \"tls\" needs ca_file (the CA that signed the syslog server's certificate)"
                .into(),
        ));
    };
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|err| config_err("ca_file", ca_file, &err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| config_err("ca_file", ca_file, &err))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|err| config_err("ca_file", ca_file, &err))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| SinkError::Config(format!("TLS: {err}")))?
        .with_root_certificates(roots);
    let config = match (&files.client_cert_file, &files.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|err| config_err("client_cert_file", cert, &err))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| config_err("client_cert_file", cert, &err))?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|err| config_err("client_key_file", key, &err))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|err| SinkError::Config(format!("client certificate: {err}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl SyslogSink {
    /// `name` is the sink's, for its log lines.
    pub fn new(name: &str, config: &SyslogConfig) -> Result<Self, SinkError> {
        let SyslogConfig {
            transport,
            address,
            server_name,
            tls,
            facility,
            confirm_after,
        } = config;
        let tls = match transport {
            Transport::Tls => Some(Connector(tls_connector(tls)?)),
            _ => None,
        };
        let server_name = ServerName::try_from(server_name.clone())
            .map_err(|err| SinkError::Config(format!("server_name {server_name:?}: {err}")))?;
        match transport {
            Transport::Udp => tracing::info!(
                sink = %name,
                %address,
                "export sink: syslog over UDP is best effort, no delivery guarantee \
                 (datagrams are counted as sent, never re-sent)"
            ),
            Transport::Tcp | Transport::Tls => tracing::info!(
                sink = %name,
                %address,
                confirm_after_ms = confirm_after.as_millis() as u64,
                "export sink: syslog over a stream; a batch counts as delivered once the \
                 connection stayed up confirm_after_ms after it, else it is sent again"
            ),
        }
        Ok(Self {
            transport: *transport,
            address: *address,
            server_name,
            facility: *facility,
            tls,
            confirm_after: *confirm_after,
            udp: None,
            stream: None,
        })
    }

    async fn connect(&mut self) -> Result<(), SinkError> {
        let retry = |what: &str, err: &dyn std::fmt::Display| {
            SinkError::Retry(format!("syslog {} {what}: {err}", self.address))
        };
        match self.transport {
            Transport::Udp => {
                if self.udp.is_none() {
                    let bind = if self.address.is_ipv4() {
                        "0.0.0.0:0"
                    } else {
                        "[::]:0"
                    };
                    let socket = UdpSocket::bind(bind).await.map_err(|e| retry("bind", &e))?;
                    socket
                        .connect(self.address)
                        .await
                        .map_err(|e| retry("connect", &e))?;
                    self.udp = Some(socket);
                }
            }
            Transport::Tcp | Transport::Tls => {
                if self.stream.is_none() {
                    let tcp =
                        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.address))
                            .await
                            .map_err(|e| retry("connect", &e))?
                            .map_err(|e| retry("connect", &e))?;
                    let _ = tcp.set_nodelay(true);
                    let fd = tcp.as_raw_fd();
                    let written = Arc::new(AtomicU64::new(0));
                    let tcp = Counted {
                        tcp,
                        written: Arc::clone(&written),
                    };
                    let io: Box<dyn Stream> = match &self.tls {
                        Some(connector) => Box::new(
                            tokio::time::timeout(
                                CONNECT_TIMEOUT,
                                connector.0.connect(self.server_name.clone(), tcp),
                            )
                            .await
                            .map_err(|e| retry("TLS handshake", &e))?
                            .map_err(|e| retry("TLS handshake", &e))?,
                        ),
                        None => Box::new(tcp),
                    };
                    self.stream = Some(Connection {
                        io,
                        fd,
                        written,
                        pending: VecDeque::new(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sends `events`: over UDP best effort ([`Delivery::Unconfirmed`]), over a stream
    /// pending until [`SyslogSink::poll_confirmed`] confirms it.
    pub async fn deliver(
        &mut self,
        events: &[Event],
        rendered: &[Value],
    ) -> Result<Delivery, SinkError> {
        let address = self.address;
        // A connection the receiver closed still takes a write or two: find out before
        // adding to what it would lose.
        if let Some(conn) = &mut self.stream
            && let Err(err) = conn.check_open()
        {
            if !conn.pending.is_empty() {
                return Err(self.lost("closed", &err));
            }
            // Nothing lost with it (an idle timeout, a restart): just connect again.
            tracing::debug!(address = %address, error = %err, "syslog: idle connection closed by the receiver");
            self.stream = None;
        }
        self.connect().await?;
        if let Some(udp) = &self.udp {
            for (event, value) in events.iter().zip(rendered) {
                let msg = message(event, value, self.facility);
                if let Err(err) = udp.send(msg.as_bytes()).await {
                    self.udp = None;
                    return Err(SinkError::Retry(format!("syslog {address} send: {err}")));
                }
            }
            return Ok(Delivery::Unconfirmed);
        }
        let mut frames = Vec::new();
        for (event, value) in events.iter().zip(rendered) {
            let msg = message(event, value, self.facility);
            frames.extend_from_slice(format!("{} ", msg.len()).as_bytes());
            frames.extend_from_slice(msg.as_bytes());
        }
        let conn = self.stream.as_mut().expect("connected");
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            conn.io.write_all(&frames).await?;
            conn.io.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {
                let end = conn.written.load(Ordering::Relaxed);
                conn.pending.push_back(Written {
                    end,
                    acked_at: None,
                });
                Ok(Delivery::Pending)
            }
            Ok(Err(err)) => Err(self.lost("write", &err)),
            Err(_) => Err(self.lost("write", &"timed out")),
        }
    }

    /// Drops the connection, and with it what is pending on it.
    fn lost(&mut self, what: &str, err: &dyn std::fmt::Display) -> SinkError {
        let pending = self.stream.take().map_or(0, |c| c.pending.len());
        SinkError::Retry(format!(
            "syslog {} {what}: {err}; {pending} unconfirmed batches are sent again",
            self.address
        ))
    }

    /// Confirms, oldest first, the pending batches the receiver acknowledged at least
    /// `confirm_after` ago, if the connection is still open now; how many.
    pub fn poll_confirmed(&mut self) -> Result<usize, SinkError> {
        let Some(conn) = &mut self.stream else {
            return Ok(0);
        };
        let now = Instant::now();
        let acked = match conn.acked() {
            Ok(acked) => acked,
            Err(err) => return Err(self.lost("connection", &err)),
        };
        for batch in conn.pending.iter_mut().filter(|b| b.acked_at.is_none()) {
            if batch.end > acked {
                break;
            }
            batch.acked_at = Some(now);
        }
        let due = conn
            .pending
            .iter()
            .take_while(|b| {
                b.acked_at
                    .is_some_and(|at| now.duration_since(at) >= self.confirm_after)
            })
            .count();
        if due == 0 {
            return Ok(0);
        }
        if let Err(err) = conn.check_open() {
            return Err(self.lost("connection", &err));
        }
        conn.pending.drain(..due);
        Ok(due)
    }

    /// When the oldest pending batch is due for confirmation, or for another look at
    /// whether the receiver has acknowledged it.
    pub fn next_check(&self) -> Option<Instant> {
        let batch = self.stream.as_ref()?.pending.front()?;
        Some(match batch.acked_at {
            Some(at) => at + self.confirm_after,
            None => Instant::now() + ACK_POLL,
        })
    }

    /// At stop: `true` if a clean close confirmed everything pending.
    pub async fn close(&mut self) -> bool {
        let Some(mut conn) = self.stream.take() else {
            return false;
        };
        if conn.pending.is_empty() {
            return false;
        }
        match tokio::time::timeout(CLOSE_TIMEOUT, conn.close_cleanly()).await {
            Ok(Ok(())) => true,
            Ok(Err(err)) => {
                tracing::info!(address = %self.address, error = %err, pending = conn.pending.len(), "syslog: no clean close at stop; unconfirmed batches are sent again after the next start");
                false
            }
            Err(_) => {
                tracing::info!(address = %self.address, pending = conn.pending.len(), "syslog: the receiver did not close within {} s of our end of stream; unconfirmed batches are sent again after the next start", CLOSE_TIMEOUT.as_secs());
                false
            }
        }
    }
}
