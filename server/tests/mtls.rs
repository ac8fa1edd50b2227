//! Agents authenticate with mTLS: a real server on loopback with its CA in a state
//! directory and its tokens in a SQLite file, enrolled and driven by real tonic clients
//! over TLS.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use belay_proto::domain::{EnrollSecret, HostName};
use belay_proto::v1;
use belay_proto::v1::agent_service_client::AgentServiceClient;
use belay_proto::v1::enroll_service_client::EnrollServiceClient;
use belay_proto::v1::reviewer_service_client::ReviewerServiceClient;
use belay_server::approvals::{Approvals, EnrollmentStore as _, SqliteStore};
use belay_server::pki::{self, Ca, ServerTls};
use belay_server::{ServeError, ServeOptions, serve};
use rcgen::{CertificateParams, KeyPair};
use support::{PATIENCE, TestAgent, connect_request, hello, wait_pending};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

struct TestServer {
    addr: SocketAddr,
    ca_pem: String,
    approvals: Arc<Approvals<SqliteStore>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    /// A server whose CA lives in `dir` and whose database is `dir/server.db`.
    async fn start(dir: &Path) -> Self {
        Self::start_on(dir, "127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_on(dir: &Path, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ca, _) = Ca::load_or_create(dir).unwrap();
        let ca_pem = ca.cert_pem().to_owned();
        let tls = ServerTls::new(ca, &["127.0.0.1".into(), "localhost".into()], YEAR).unwrap();
        let store = SqliteStore::open(dir.join("server.db")).unwrap();
        let approvals = Arc::new(Approvals::new(store));
        let mut options = ServeOptions::default();
        options.tls = Some(tls);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, Arc::clone(&approvals), options, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            ca_pem,
            approvals,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = &mut self.task;
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A token in the server's database, as `belay-server token create` makes it.
    async fn token(&self, host: Option<&str>, ttl: Duration, created: SystemTime) -> String {
        let host = host.map(|h| HostName::new(h).unwrap());
        let (secret, stored) = pki::token::generate(host, ttl, created).unwrap();
        self.approvals
            .store()
            .add_enroll_token(stored)
            .await
            .unwrap();
        secret.to_string()
    }

    async fn channel(&self, identity: Option<&Enrolled>) -> Channel {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some(enrolled) = identity {
            tls = tls.identity(Identity::from_pem(&enrolled.chain_pem, &enrolled.key_pem));
        }
        Endpoint::from_shared(self.url())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn try_enroll(
        &self,
        token: &str,
        host: &str,
        csr: Vec<u8>,
    ) -> Result<v1::EnrollResponse, Status> {
        EnrollServiceClient::new(self.channel(None).await)
            .enroll(v1::EnrollRequest {
                token: token.into(),
                host: host.into(),
                csr,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Enrolls `host` as `belay-agent enroll` does: a new key, its CSR, the token.
    async fn enroll(&self, token: &str, host: &str) -> Result<Enrolled, Status> {
        let key = KeyPair::generate().unwrap();
        let response = self.try_enroll(token, host, csr_pem(&key)).await?;
        assert_eq!(response.ca_certificate_pem, self.ca_pem);
        assert!(response.certificate_chain_pem.ends_with(&self.ca_pem));
        Ok(Enrolled {
            chain_pem: response.certificate_chain_pem,
            key_pem: key.serialize_pem(),
        })
    }

    async fn session(&self, identity: Option<&Enrolled>, host: &str) -> Result<TestAgent, Status> {
        let client = AgentServiceClient::new(self.channel(identity).await);
        TestAgent::open(client, hello(host, "alice@example.com")).await
    }

    async fn reviewer(&self) -> ReviewerServiceClient<Channel> {
        ReviewerServiceClient::new(self.channel(None).await)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Enrolled {
    chain_pem: String,
    key_pem: String,
}

fn csr_pem(key: &KeyPair) -> Vec<u8> {
    CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(key)
        .unwrap()
        .pem()
        .unwrap()
        .into_bytes()
}

fn hour() -> Duration {
    Duration::from_secs(3600)
}

fn assert_status<T>(result: Result<T, Status>, code: Code, message: &str) {
    match result {
        Ok(_) => panic!("expected {code:?} ({message}), got a success"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(status.message().contains(message), "{status:?}");
        }
    }
}

#[tokio::test]
async fn an_enrolled_agent_streams_requests_and_decisions_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let token = server.token(Some("web-1"), hour(), SystemTime::now()).await;
    let agent_cert = server.enroll(&token, "web-1").await.unwrap();
    let leaf = {
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::CertificateDer::pem_slice_iter(agent_cert.chain_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
    };
    assert_eq!(pki::host_of(&leaf), Some(HostName::new("web-1").unwrap()));

    let mut agent = server.session(Some(&agent_cert), "web-1").await.unwrap();
    agent.submit(connect_request("web-1:1:1", 443)).await;
    // Reviewers connect over the same TLS port without a client certificate.
    let mut reviewer = server.reviewer().await;
    let pending = wait_pending(&mut reviewer, "web-1:1:1").await;
    assert_eq!(pending.host, "web-1", "the host the certificate names");
    reviewer
        .decide(v1::DecideRequest {
            request_id: "web-1:1:1".into(),
            verdict: v1::Verdict::Allow.into(),
            reason: "fine".into(),
            reviewer: "bob@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let decision = agent.next_decision().await;
    assert_eq!(decision.request_id, "web-1:1:1");
    assert_eq!(decision.verdict, v1::Verdict::Allow as i32);
}

#[tokio::test]
async fn a_token_enrolls_once_and_not_after_it_expired() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let refused = "the enrollment token is unknown, already used or expired";

    let token = server.token(None, hour(), SystemTime::now()).await;
    server.enroll(&token, "web-1").await.unwrap();
    assert_status(
        server.enroll(&token, "web-2").await,
        Code::Unauthenticated,
        refused,
    );

    // Created two hours ago for one hour.
    let old = server
        .token(None, hour(), SystemTime::now() - 2 * hour())
        .await;
    assert_status(
        server.enroll(&old, "web-3").await,
        Code::Unauthenticated,
        refused,
    );

    let never_issued = EnrollSecret::from_bytes([7; 32]).to_string();
    assert_status(
        server.enroll(&never_issued, "web-4").await,
        Code::Unauthenticated,
        refused,
    );

    assert_status(
        server.enroll("let-me-in", "web-5").await,
        Code::InvalidArgument,
        "invalid token: is not a belay enrollment token",
    );
}

#[tokio::test]
async fn bad_enrollment_requests_are_refused_before_the_token_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let token = server.token(None, hour(), SystemTime::now()).await;

    assert_status(
        server
            .try_enroll(&token, "web-1", b"not a CSR".to_vec())
            .await,
        Code::InvalidArgument,
        "invalid csr",
    );
    // A CSR whose signature does not match: one bit of the key flipped.
    let mut der = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&KeyPair::generate().unwrap())
        .unwrap()
        .der()
        .to_vec();
    let at = der.len() - 80;
    der[at] ^= 1;
    assert_status(
        server.try_enroll(&token, "web-1", der).await,
        Code::InvalidArgument,
        "invalid csr",
    );
    assert_status(
        server
            .try_enroll(&token, "", csr_pem(&KeyPair::generate().unwrap()))
            .await,
        Code::InvalidArgument,
        "invalid host: must not be empty",
    );
    // None of that used the token up.
    server.enroll(&token, "web-1").await.unwrap();
}

#[tokio::test]
async fn a_token_bound_to_a_host_enrolls_no_other_and_is_then_spent() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let token = server.token(Some("web-1"), hour(), SystemTime::now()).await;
    assert_status(
        server.enroll(&token, "web-2").await,
        Code::PermissionDenied,
        "this enrollment token is for host web-1, not web-2; it is now spent: create a new one",
    );
    // Presented for the wrong host, the token counts as leaked.
    assert_status(
        server.enroll(&token, "web-1").await,
        Code::Unauthenticated,
        "already used",
    );
}

#[tokio::test]
async fn a_token_for_no_host_cannot_take_over_an_enrolled_host() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let first = server.token(None, hour(), SystemTime::now()).await;
    server.enroll(&first, "web-1").await.unwrap();
    // Anyone holding another token created without --host tries to become web-1.
    let stolen = server.token(None, hour(), SystemTime::now()).await;
    assert_status(
        server.enroll(&stolen, "web-1").await,
        Code::PermissionDenied,
        "host web-1 is enrolled already, and this enrollment token was created for no \
         particular host; it is now spent",
    );
    assert_status(
        server.enroll(&stolen, "web-9").await,
        Code::Unauthenticated,
        "already used",
    );
    // Enrolling web-1 again takes a token created for it.
    let again = server.token(Some("web-1"), hour(), SystemTime::now()).await;
    server.enroll(&again, "web-1").await.unwrap();
}

#[tokio::test]
async fn agent_service_needs_a_certificate_from_this_ca_naming_the_hello_host() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;

    assert_status(
        server.session(None, "web-1").await,
        Code::Unauthenticated,
        "AgentService needs a client certificate issued by this belay-server's CA",
    );

    // The same kind of certificate, from a CA of another server.
    let other_dir = tempfile::tempdir().unwrap();
    let other = TestServer::start(other_dir.path()).await;
    let token = other.token(None, hour(), SystemTime::now()).await;
    let foreign = other.enroll(&token, "web-1").await.unwrap();
    assert_status(
        server.session(Some(&foreign), "web-1").await,
        Code::Unauthenticated,
        "the client certificate was not issued by this belay-server's CA",
    );

    let token = server.token(None, hour(), SystemTime::now()).await;
    let mine = server.enroll(&token, "web-1").await.unwrap();
    assert_status(
        server.session(Some(&mine), "db-9").await,
        Code::PermissionDenied,
        "the hello names host db-9, but the client certificate is for host web-1",
    );
    server.session(Some(&mine), "web-1").await.unwrap();
}

#[tokio::test]
async fn a_restarted_server_keeps_its_ca_and_its_agents() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let token = server.token(None, hour(), SystemTime::now()).await;
    let enrolled = server.enroll(&token, "web-1").await.unwrap();
    let ca_before = server.ca_pem.clone();
    let addr = server.addr;
    server.stop().await;

    let server = TestServer::start_on(dir.path(), addr).await;
    assert_eq!(server.ca_pem, ca_before);
    let agent = server.session(Some(&enrolled), "web-1").await.unwrap();
    agent.submit(connect_request("web-1:2:1", 443)).await;
    let mut reviewer = server.reviewer().await;
    wait_pending(&mut reviewer, "web-1:2:1").await;
    // Tokens survive too: used stays used.
    assert_status(
        server.enroll(&token, "web-1").await,
        Code::Unauthenticated,
        "already used",
    );
}
