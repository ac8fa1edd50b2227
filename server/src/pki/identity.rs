//! Who an agent is: the host name in its client certificate, trusted only when the
//! certificate chains to this server's CA.

use std::sync::Arc;

use belay_proto::domain::HostName;
use rcgen::SanType;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, RootCertStore};
use x509_parser::extensions::GeneralName;

use super::ca::CaError;

/// The host travels in a URI subject alternative name, so it cannot be mistaken for a DNS
/// name the certificate would be valid for as a server.
const HOST_URI_PREFIX: &str = "urn:belay:host:";

pub(super) fn host_san(host: &HostName) -> Result<SanType, CaError> {
    let uri = format!("{HOST_URI_PREFIX}{host}");
    let ia5 = uri
        .as_str()
        .try_into()
        .map_err(|_| CaError::BadName(host.to_string()))?;
    Ok(SanType::URI(ia5))
}

/// Why an agent's client certificate is refused: UNAUTHENTICATED.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error(
        "AgentService needs a client certificate issued by this belay-server's CA; enroll \
         the agent first (belay-agent enroll)"
    )]
    NoCertificate,
    #[error("the client certificate was not issued by this belay-server's CA")]
    OtherIssuer,
    #[error("the client certificate has expired; enroll the agent again")]
    Expired,
    #[error("the client certificate is refused: {0}")]
    Invalid(String),
    #[error("the client certificate names no belay host ({HOST_URI_PREFIX}NAME)")]
    NoHost,
}

impl From<AuthError> for tonic::Status {
    fn from(err: AuthError) -> Self {
        tonic::Status::unauthenticated(err.to_string())
    }
}

/// Checks agents' client certificates against the CA.
#[derive(Debug)]
pub struct AgentAuthenticator {
    verifier: Arc<dyn ClientCertVerifier>,
}

impl AgentAuthenticator {
    pub(super) fn new(
        ca: &CertificateDer<'static>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, rustls::Error> {
        Ok(Self {
            verifier: verifier(ca, provider)?,
        })
    }

    pub(super) fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.verifier)
    }

    /// The host of the agent that presented `certs` (end entity first), if they chain to
    /// this CA, are valid now and are meant for client authentication.
    pub fn authenticate(
        &self,
        certs: Option<&[CertificateDer<'_>]>,
    ) -> Result<HostName, AuthError> {
        let Some((end_entity, intermediates)) = certs.and_then(<[_]>::split_first) else {
            return Err(AuthError::NoCertificate);
        };
        self.verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .map_err(|err| match err {
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature,
                ) => AuthError::OtherIssuer,
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. },
                ) => AuthError::Expired,
                other => AuthError::Invalid(other.to_string()),
            })?;
        host_of(end_entity).ok_or(AuthError::NoHost)
    }
}

/// The host named in a certificate issued by [`super::Ca::issue_agent`].
pub fn host_of(der: &[u8]) -> Option<HostName> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::URI(uri) => uri
                .strip_prefix(HOST_URI_PREFIX)
                .and_then(|host| HostName::new(host).ok()),
            _ => None,
        })
}

fn verifier(
    ca: &CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        // Reviewers connect without certificates; AgentService asks for one itself.
        .allow_unauthenticated()
        .build()
        .map_err(|err| rustls::Error::General(err.to_string()))
}
