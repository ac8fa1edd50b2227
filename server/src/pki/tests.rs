use std::os::unix::fs::PermissionsExt as _;

use belay_proto::domain::HostName;
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use super::*;

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn csr(key: &KeyPair) -> rcgen::CertificateSigningRequest {
    CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(key)
        .unwrap()
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn authenticator(ca: &Ca) -> AgentAuthenticator {
    AgentAuthenticator::new(
        ca.cert_der(),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_ca_is_created_once_with_a_private_key_and_found_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let (first, created) = Ca::load_or_create(&dir).unwrap();
    assert!(created);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(CA_KEY_FILE)), 0o600);
    let (again, created) = Ca::load_or_create(&dir).unwrap();
    assert!(!created);
    assert_eq!(again.fingerprint(), first.fingerprint());
    assert_eq!(again.fingerprint().len(), 64);
    // The loaded CA signs certificates the first one's clients accept.
    let key = KeyPair::generate().unwrap();
    let host = HostName::new("web-1").unwrap();
    let chain = again
        .issue_agent(&Ca::parse_csr(csr(&key).der()).unwrap(), &host, YEAR)
        .unwrap()
        .chain_pem;
    assert_eq!(
        authenticator(&first).authenticate(Some(&certs(&chain))),
        Ok(host)
    );
}

#[test]
fn a_half_present_or_mismatched_ca_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _) = Ca::load_or_create(tmp.path()).unwrap();
    std::fs::remove_file(tmp.path().join(CA_KEY_FILE)).unwrap();
    let err = Ca::load_or_create(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("ca.pem exists but") && err.contains("ca.key does not"),
        "{err}"
    );

    let other = tempfile::tempdir().unwrap();
    Ca::load_or_create(other.path()).unwrap();
    let err = Ca::load(
        &tmp.path().join(CA_CERT_FILE),
        &other.path().join(CA_KEY_FILE),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("does not belong to the certificate"), "{err}");

    // A certificate that is not a CA's cannot be given as one.
    let ca = Ca::generate().unwrap();
    let serving = ca.issue_server(&["localhost".into()]).unwrap();
    let leaf = tmp.path().join("leaf.pem");
    std::fs::write(&leaf, &serving.chain_pem).unwrap();
    let err = Ca::load(&leaf, &other.path().join(CA_KEY_FILE))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a CA certificate"), "{err}");
}

#[test]
fn agent_certificates_name_their_host_and_only_this_ca_vouches_for_them() {
    let ca = Ca::generate().unwrap();
    let agents = authenticator(&ca);
    let key = KeyPair::generate().unwrap();
    let host = HostName::new("db-7.example").unwrap();
    // PEM and DER CSRs both work.
    let request = csr(&key);
    for encoded in [request.pem().unwrap().into_bytes(), request.der().to_vec()] {
        let parsed = Ca::parse_csr(&encoded).unwrap();
        let issued = ca.issue_agent(&parsed, &host, YEAR).unwrap();
        let chain = certs(&issued.chain_pem);
        assert_eq!(chain.len(), 2, "agent certificate, then the CA's");
        // What the audit log records names this very certificate.
        assert_eq!(issued.certificate.sha256, super::fingerprint(&chain[0]));
        let (_, parsed_cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        assert_eq!(
            issued.certificate.serial,
            parsed_cert.raw_serial_as_string()
        );
        assert_eq!(host_of(&chain[0]), Some(host.clone()));
        assert_eq!(agents.authenticate(Some(&chain)), Ok(host.clone()));
        assert_eq!(agents.authenticate(Some(&chain[..1])), Ok(host.clone()));
    }

    assert_eq!(agents.authenticate(None), Err(AuthError::NoCertificate));
    assert_eq!(
        agents.authenticate(Some(&[])),
        Err(AuthError::NoCertificate)
    );

    // The same kind of certificate from another CA.
    let other = Ca::generate().unwrap();
    let foreign = certs(
        &other
            .issue_agent(&Ca::parse_csr(request.der()).unwrap(), &host, YEAR)
            .unwrap()
            .chain_pem,
    );
    assert_eq!(
        agents.authenticate(Some(&foreign)),
        Err(AuthError::OtherIssuer)
    );

    // This CA's serving certificate is not a client certificate.
    let serving = ca.issue_server(&["localhost".into()]).unwrap();
    assert!(matches!(
        agents.authenticate(Some(&serving.chain)),
        Err(AuthError::Invalid(_))
    ));
}

#[test]
fn csrs_that_are_not_valid_are_refused() {
    assert!(Ca::parse_csr(b"hello").is_err());
    assert!(Ca::parse_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n").is_err());
    assert!(matches!(
        Ca::parse_csr(b"-----BEGIN \xff"),
        Err(CsrError::NotText)
    ));
    // A CSR whose signature does not match its content: a flipped bit in the key.
    let mut der = csr(&KeyPair::generate().unwrap()).der().to_vec();
    let last = der.len() - 80;
    der[last] ^= 1;
    assert!(Ca::parse_csr(&der).is_err());
}

#[test]
fn serving_certificates_take_dns_names_and_addresses() {
    let ca = Ca::generate().unwrap();
    let issued = ca
        .issue_server(&["belay.example".into(), "10.0.0.1".into(), "::1".into()])
        .unwrap();
    assert_eq!(issued.chain.len(), 2);
    assert!(issued.chain_pem.ends_with(ca.cert_pem()));
    let err = ca.issue_server(&["bad name\u{e9}".into()]).unwrap_err();
    assert!(
        err.to_string()
            .contains("neither a DNS name nor an IP address"),
        "{err}"
    );
}
