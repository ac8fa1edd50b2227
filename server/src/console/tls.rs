//! The console's HTTPS listener: the handshakes of [`crate::pki::incoming`] (each on its
//! own task, with a timeout) behind axum's [`Listener`].

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::serve::Listener;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the console certificate {path}: {problem}")]
    Cert { path: String, problem: String },
    #[error("cannot read the console key {path}: {problem}")]
    Key { path: String, problem: String },
    #[error("cannot set up the console's TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A server configuration for browsers: HTTP/1.1, no client certificates.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A certificate chain and its key from PEM files (`--console-cert`, `--console-key`).
pub fn load_pem(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|err| TlsError::Cert {
            path: cert.display().to_string(),
            problem: err.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert.display().to_string(),
            problem: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|err| TlsError::Key {
        path: key.display().to_string(),
        problem: err.to_string(),
    })?;
    server_config(chain, key)
}

/// Finished TLS handshakes, for `axum::serve`.
pub struct TlsListener {
    accepted: ReceiverStream<Result<TlsStream<TcpStream>, io::Error>>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: tokio::net::TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            accepted: crate::pki::incoming(listener, config),
            local,
        })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.accepted.next().await {
                Some(Ok(tls)) => {
                    let peer = tls
                        .get_ref()
                        .0
                        .peer_addr()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    return (tls, peer);
                }
                Some(Err(err)) => tracing::debug!(error = %err, "console: accept failed"),
                // The accepting task is gone (it never ends while this listener lives).
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
