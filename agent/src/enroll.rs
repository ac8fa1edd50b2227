//! `belay-agent enroll`: trades a one-time token for the client certificate this host's
//! agent authenticates to belay-server with, and the CA it trusts from then on.
//!
//! The server's CA is never trusted on first use: the operator names it, as a file or as
//! its SHA-256 fingerprint (`belay-server ca fingerprint`). With a fingerprint, the CA
//! certificate is taken from the chain the server presents and checked against it before
//! anything is sent.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use belay_proto::v1::{self, enroll_service_client::EnrollServiceClient};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Where `belay-agent enroll` writes and the daemon reads.
pub const DEFAULT_CERT_DIR: &str = "/var/lib/belay/agent";
const KEY_FILE: &str = "agent.key";
const CERT_FILE: &str = "agent.pem";
const CA_FILE: &str = "ca.pem";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the agent knows the server's CA is the right one.
#[derive(Debug, Clone)]
pub enum Trust {
    /// A CA certificate file (PEM).
    CaFile(PathBuf),
    /// The SHA-256 of the CA certificate (hex, colons and a `sha256:` prefix allowed).
    Fingerprint(String),
}

/// What an enrollment wrote.
#[derive(Debug)]
pub struct Enrolled {
    pub host: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub ca_fingerprint: String,
}

/// Enrolls `host` with the server at `url` (https) using `token`, and stores the key
/// (mode 0600), the certificate chain and the CA in `cert_dir` (mode 0700).
pub async fn enroll(
    url: &str,
    token: &str,
    host: &str,
    cert_dir: &Path,
    trust: &Trust,
) -> anyhow::Result<Enrolled> {
    let target = Target::parse(url)?;
    let ca_pem = match trust {
        Trust::CaFile(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
            first_cert(&pem).with_context(|| format!("{} holds no certificate", path.display()))?;
            pem
        }
        Trust::Fingerprint(fingerprint) => {
            let wanted = normalize_fingerprint(fingerprint)?;
            ca_by_fingerprint(&target, &wanted).await?
        }
    };
    let ca_fingerprint = fingerprint(&first_cert(&ca_pem)?);

    let key = rcgen::KeyPair::generate().context("cannot generate the agent's key")?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|params| params.serialize_request(&key))
        .context("cannot create the certificate signing request")?;
    let channel = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("bad server URL {url:?}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)))
        .context("cannot set up TLS")?
        .connect()
        .await
        .with_context(|| format!("cannot reach belay-server at {url}"))?;
    let response = EnrollServiceClient::new(channel)
        .enroll(v1::EnrollRequest {
            token: token.trim().to_owned(),
            host: host.to_owned(),
            csr: csr.der().to_vec(),
        })
        .await
        .map_err(|status| {
            anyhow::anyhow!("belay-server refused the enrollment: {}", status.message())
        })?
        .into_inner();

    let issued_ca =
        first_cert(&response.ca_certificate_pem).context("belay-server sent no CA certificate")?;
    if fingerprint(&issued_ca) != ca_fingerprint {
        bail!("belay-server answered with a CA other than the one trusted for this enrollment");
    }
    first_cert(&response.certificate_chain_pem).context("belay-server sent no certificate")?;

    let dir = CertDir::new(cert_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cert_dir)
        .with_context(|| format!("cannot create {}", cert_dir.display()))?;
    write_replacing(&dir.key(), key.serialize_pem().as_bytes(), 0o600)?;
    write_replacing(
        &dir.cert(),
        response.certificate_chain_pem.as_bytes(),
        0o644,
    )?;
    write_replacing(&dir.ca(), ca_pem.as_bytes(), 0o644)?;
    Ok(Enrolled {
        host: host.to_owned(),
        cert: dir.cert(),
        key: dir.key(),
        ca: dir.ca(),
        ca_fingerprint,
    })
}

/// The files of an enrolled agent.
#[derive(Debug, Clone)]
pub struct CertDir(PathBuf);

impl CertDir {
    pub fn new(dir: &Path) -> Self {
        Self(dir.to_owned())
    }

    pub fn key(&self) -> PathBuf {
        self.0.join(KEY_FILE)
    }

    pub fn cert(&self) -> PathBuf {
        self.0.join(CERT_FILE)
    }

    pub fn ca(&self) -> PathBuf {
        self.0.join(CA_FILE)
    }

    /// TLS towards belay-server: this agent's certificate, and trust in its CA only.
    pub fn client_tls(&self) -> anyhow::Result<ClientTlsConfig> {
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read {}: enroll this host first (belay-agent enroll)",
                    path.display()
                )
            })
        };
        let (cert, key, ca) = (read(self.cert())?, read(self.key())?, read(self.ca())?);
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key)))
    }
}

/// Host and port of an `https://` URL.
struct Target {
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: tonic::codegen::http::Uri = url
            .parse()
            .with_context(|| format!("bad server URL {url:?}"))?;
        if uri.scheme_str() != Some("https") {
            bail!("enrollment needs an https:// server URL, not {url:?}");
        }
        let host = uri
            .host()
            .with_context(|| format!("the server URL {url:?} names no host"))?;
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: uri.port_u16().unwrap_or(443),
        })
    }
}

/// SHA-256 of a certificate's DER, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn normalize_fingerprint(text: &str) -> anyhow::Result<String> {
    let lower = text.trim().to_ascii_lowercase();
    let hex: String = lower
        .strip_prefix("sha256:")
        .unwrap_or(&lower)
        .chars()
        .filter(|&c| c != ':')
        .collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "{text:?} is not a SHA-256 fingerprint (64 hex digits, as `belay-server ca fingerprint` prints)"
        );
    }
    Ok(hex)
}

fn first_cert(pem: &str) -> anyhow::Result<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .context("no CERTIFICATE block")?
        .context("a malformed CERTIFICATE block")
}

fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The CA certificate with fingerprint `wanted` from the chain the server presents. The
/// connection is only looked at, never used: the enrollment itself then runs over a
/// connection verified against this CA.
async fn ca_by_fingerprint(target: &Target, wanted: &str) -> anyhow::Result<String> {
    let seen = Arc::new(Capture::default());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&seen) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    let name = ServerName::try_from(target.host.clone())
        .with_context(|| format!("{:?} is not a server name", target.host))?;
    let address = format!("{}:{}", target.host, target.port);
    let probe = async {
        let tcp = tokio::net::TcpStream::connect(&address).await?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    };
    tokio::time::timeout(CONNECT_TIMEOUT, probe)
        .await
        .map_err(|_| anyhow::anyhow!("no TLS answer from {address} within {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("cannot reach belay-server at {address} over TLS"))?;
    let chain = std::mem::take(&mut *seen.certs.lock().unwrap_or_else(|e| e.into_inner()));
    match chain.iter().find(|cert| fingerprint(cert) == wanted) {
        Some(ca) => Ok(pem(ca)),
        None => bail!(
            "belay-server at {address} presented no CA certificate with fingerprint {wanted} \
             (it presented {}); check the fingerprint with `belay-server ca fingerprint`",
            chain
                .iter()
                .map(|cert| fingerprint(cert))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Records the certificates the server presents; trusts nothing (see
/// [`ca_by_fingerprint`]), but still checks the handshake signatures.
#[derive(Debug, Default)]
struct Capture {
    certs: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut certs = self.certs.lock().unwrap_or_else(|e| e.into_inner());
        certs.push(end_entity.clone().into_owned());
        certs.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Replaces `path` atomically, the new file having `mode` from the start.
fn write_replacing(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_accepted_in_the_usual_spellings() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(normalize_fingerprint(&hex).unwrap(), hex);
        assert_eq!(normalize_fingerprint(&colons).unwrap(), hex);
        assert_eq!(
            normalize_fingerprint(&format!("sha256:{hex}")).unwrap(),
            hex
        );
        assert!(normalize_fingerprint("abcd").is_err());
        assert!(normalize_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn only_https_urls_enroll() {
        assert!(Target::parse("http://127.0.0.1:1").is_err());
        let t = Target::parse("https://[::1]:7443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 7443));
        assert_eq!(Target::parse("https://belay.example").unwrap().port, 443);
    }

    #[test]
    fn der_to_pem_round_trips() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let back = first_cert(&pem(&der)).unwrap();
        assert_eq!(back.as_ref(), der.as_slice());
    }
}
