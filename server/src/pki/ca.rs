//! The server's certificate authority: created on first start (or given), it signs the
//! server's own serving certificate and every enrolled agent's client certificate.

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use belay_proto::domain::HostName;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom as _, SystemRandom};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest as _, Sha256};

use super::identity;
use crate::approvals::IssuedCertificate;

/// File names inside the state directory.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The serving certificate is issued again at every start, so a year is plenty.
const SERVER_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Clocks of freshly installed hosts are often a little behind.
const BACKDATE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} exists but {} does not: restore the missing file or remove both to create a new \
         CA (every enrolled agent then has to enroll again)",
        present.display(), missing.display()
    )]
    HalfPresent { present: PathBuf, missing: PathBuf },
    #[error("{} is not a PEM certificate: {problem}", path.display())]
    BadCert { path: PathBuf, problem: String },
    #[error("{} is not a PEM private key: {problem}", path.display())]
    BadKey { path: PathBuf, problem: String },
    #[error("{} is not a CA certificate (its basic constraints do not say CA)", path.display())]
    NotCa { path: PathBuf },
    #[error("the key {} does not belong to the certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{0:?} is neither a DNS name nor an IP address")]
    BadName(String),
    #[error("cannot create a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Why a CSR is refused; the agent's fault, so INVALID_ARGUMENT.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("invalid csr: a PEM CSR must be UTF-8 text")]
    NotText,
    #[error("invalid csr: {0}")]
    Unusable(rcgen::Error),
}

/// A certificate authority this process can sign with.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// A certificate with its private key, PEM chain first to last.
pub struct Issued {
    pub chain_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("chain_pem", &self.chain_pem)
            .finish_non_exhaustive()
    }
}

/// An agent's client certificate: the PEM chain it is sent, and what the audit log
/// records of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedAgent {
    /// The agent's certificate, then this CA's.
    pub chain_pem: String,
    pub certificate: IssuedCertificate,
}

impl Ca {
    /// A new CA kept in memory only.
    pub fn generate() -> Result<Self, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "belay-server agent CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Self::from_parts(cert.pem(), cert.der().clone(), key)
    }

    /// The CA in `dir` (`ca.pem`, `ca.key`), created there if neither file exists. The
    /// key is written with mode 0600 and the directory created with mode 0700.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Ok((Self::load(&cert_path, &key_path)?, false)),
            (true, false) => Err(CaError::HalfPresent {
                present: cert_path,
                missing: key_path,
            }),
            (false, true) => Err(CaError::HalfPresent {
                present: key_path,
                missing: cert_path,
            }),
            (false, false) => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| CaError::Write {
                        path: dir.to_owned(),
                        source,
                    })?;
                let ca = Self::generate()?;
                // Key first: a crash in between leaves a key without a certificate, which
                // the next start reports instead of silently making a second CA.
                write_new(&key_path, ca.issuer.key().serialize_pem().as_bytes(), 0o600)?;
                write_new(&cert_path, ca.cert_pem.as_bytes(), 0o644)?;
                Ok((ca, true))
            }
        }
    }

    /// A CA from its certificate and key files (PEM).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let cert_der = first_pem_cert(&cert_pem).map_err(|problem| CaError::BadCert {
            path: cert_path.to_owned(),
            problem,
        })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|err| CaError::BadKey {
            path: key_path.to_owned(),
            problem: err.to_string(),
        })?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|err| CaError::BadCert {
                path: cert_path.to_owned(),
                problem: err.to_string(),
            })?;
        if !parsed.is_ca() {
            return Err(CaError::NotCa {
                path: cert_path.to_owned(),
            });
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
        // Re-encoded so the PEM handed to agents holds exactly this one certificate.
        let cert_pem = pem_cert(&cert_der);
        Self::from_parts(cert_pem, cert_der, key)
    }

    fn from_parts(
        cert_pem: String,
        cert_der: CertificateDer<'static>,
        key: KeyPair,
    ) -> Result<Self, CaError> {
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(Self {
            cert_pem,
            cert_der,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// SHA-256 of the CA certificate (DER), lowercase hex: what `belay-agent enroll
    /// --ca-fingerprint` checks.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// A serving certificate for `names` (DNS names or IP addresses) with a new key.
    pub fn issue_server(&self, names: &[String]) -> Result<Issued, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "belay-server");
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name
                    .as_str()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|_| CaError::BadName(name.clone())),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, SERVER_CERT_VALIDITY);
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// Checks a CSR (PEM or DER) and its signature, without signing anything.
    pub fn parse_csr(csr: &[u8]) -> Result<CertificateSigningRequestParams, CsrError> {
        let parsed = if csr.starts_with(b"-----BEGIN") {
            let text = std::str::from_utf8(csr).map_err(|_| CsrError::NotText)?;
            CertificateSigningRequestParams::from_pem(text)
        } else {
            CertificateSigningRequestParams::from_der(&csr.into())
        };
        parsed.map_err(CsrError::Unusable)
    }

    /// The client certificate of agent `host` for the key of `csr`, valid for `validity`;
    /// PEM, the agent's certificate then this CA's. Nothing but the public key is taken
    /// from the CSR: names and usages are this server's choice.
    pub fn issue_agent(
        &self,
        csr: &CertificateSigningRequestParams,
        host: &HostName,
        validity: Duration,
    ) -> Result<IssuedAgent, CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, host.as_str());
        params.subject_alt_names = vec![identity::host_san(host)?];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity);
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(IssuedAgent {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            certificate: IssuedCertificate {
                serial: serial.to_string(),
                sha256: fingerprint(cert.der()),
            },
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

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + validity).into();
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // The system RNG failing means the machine cannot do cryptography at all; a serial
    // derived from the key (rcgen's default) is still unique per key then.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        tracing::warn!("system random generator failed; certificate serial left to rcgen");
    }
    // Positive and without a leading zero byte.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes a file that must not exist yet, with `mode` from the start (no window in which
/// a key is readable by others).
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let error = |source| CaError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)
}

/// The first certificate of a PEM text.
pub fn first_pem_cert(text: &str) -> Result<CertificateDer<'static>, String> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(text.as_bytes())
        .next()
        .ok_or_else(|| "no CERTIFICATE block".to_owned())?
        .map_err(|err| err.to_string())
}

fn pem_cert(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
