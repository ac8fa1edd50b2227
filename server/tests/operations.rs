//! Operating the server: enrollment audited and counted, host-bound tokens refused for
//! other hosts and spent (audited too), per-method gRPC metrics, and /readyz following the
//! store. Real servers on loopback (TLS with the server's CA where agents enroll), real
//! SQLite files and a real PostgreSQL cluster.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use belay_proto::domain::HostName;
use belay_proto::v1;
use belay_proto::v1::enroll_service_client::EnrollServiceClient;
use belay_proto::v1::reviewer_service_client::ReviewerServiceClient;
use belay_server::approvals::{
    Approvals, AuditLogStore as _, AuditOptions, PostgresStore, SqliteStore, Store,
};
use belay_server::pki::{self, Ca, ServerTls};
use belay_server::{ServeError, ServeOptions, serve};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const PATIENCE: Duration = Duration::from_secs(10);
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
const HOUR: Duration = Duration::from_secs(3600);
const ENROLL: &str = "belay.v1.EnrollService/Enroll";

/// A running server: gRPC on `addr` (TLS if it has a CA), HTTP endpoints on `http`.
struct Running<S: Store> {
    addr: std::net::SocketAddr,
    http: std::net::SocketAddr,
    ca_pem: Option<String>,
    approvals: Arc<Approvals<S>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl<S: Store> Running<S> {
    async fn start(store: S, ca: Option<Ca>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        let approvals = Arc::new(Approvals::new(store));
        let mut options = ServeOptions::default();
        options.http = Some(http);
        let ca_pem = ca.as_ref().map(|ca| ca.cert_pem().to_owned());
        options.tls = ca.map(|ca| ServerTls::new(ca, &["127.0.0.1".into()], YEAR).unwrap());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, Arc::clone(&approvals), options, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            http: http_addr,
            ca_pem,
            approvals,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }

    async fn channel(&self) -> Channel {
        let endpoint = match &self.ca_pem {
            Some(pem) => Endpoint::from_shared(format!("https://{}", self.addr))
                .unwrap()
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .unwrap(),
            None => Endpoint::from_shared(format!("http://{}", self.addr)).unwrap(),
        };
        endpoint.connect().await.unwrap()
    }

    /// A token in the server's store, as `belay-server token create` makes it.
    async fn token(&self, host: Option<&str>) -> String {
        let host = host.map(|h| HostName::new(h).unwrap());
        let (secret, stored) = pki::token::generate(host, HOUR, SystemTime::now()).unwrap();
        self.approvals
            .store()
            .add_enroll_token(stored)
            .await
            .unwrap();
        secret.to_string()
    }

    async fn enroll(&self, token: &str, host: &str) -> Result<v1::EnrollResponse, tonic::Status> {
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
            .into_bytes();
        EnrollServiceClient::new(self.channel().await)
            .enroll(v1::EnrollRequest {
                token: token.into(),
                host: host.into(),
                csr,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path).await
    }

    async fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// A plain HTTP/1.1 GET: status and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("HTTP answer in time")
        .unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the series `name` (exactly, labels included) in a scrape; 0 if absent.
fn series(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |value| value.trim().parse().unwrap())
}

fn grpc_calls(method: &str, code: &str) -> String {
    format!("belay_grpc_requests_total{{method=\"{method}\",code=\"{code}\"}}")
}

async fn sqlite_server(dir: &Path) -> Running<SqliteStore> {
    let (ca, _) = Ca::load_or_create(dir).unwrap();
    let store = SqliteStore::open(dir.join("server.db")).unwrap();
    Running::start(store, Some(ca)).await
}

#[tokio::test]
async fn an_enrollment_is_audited_with_its_certificate_and_the_log_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let server = sqlite_server(dir.path()).await;
    let token = server.token(Some("web-1")).await;
    let response = server.enroll(&token, "web-1").await.unwrap();

    let records = server
        .approvals
        .store()
        .audit_records(0, 100)
        .await
        .unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record.kind, "enrollment");
    let body: serde_json::Value = serde_json::from_str(&record.body).unwrap();
    assert_eq!(body["host"], "web-1");
    assert_eq!(body["token_host"], "web-1");
    assert_eq!(body["result"], "enrolled");
    // The record names the very certificate the agent received.
    let pem = response.certificate_chain_pem;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(body["certificate_serial"], cert.raw_serial_as_string());
    assert_eq!(body["certificate_sha256"], pki::fingerprint(&der));
    // ...and the token by its id, never by its secret.
    assert_eq!(body["token_id"].as_str().unwrap().len(), 16);
    assert!(!record.body.contains(&token), "{}", record.body);

    server.stop().await;
    let db = dir.path().join("server.db");
    let key = belay_server::audit::resolve_public_key(&db, None, None).unwrap();
    let report = belay_server::audit::verify(&db, &key).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 1);
}

#[tokio::test]
async fn a_token_bound_to_a_host_is_refused_for_another_spent_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let server = sqlite_server(dir.path()).await;
    let token = server.token(Some("web-1")).await;

    let refused = server.enroll(&token, "web-2").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains(
            "this enrollment token is for host web-1, not web-2; it is now spent: create a new one"
        ),
        "{refused:?}"
    );
    let records = server.approvals.store().audit_records(0, 10).await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let body: serde_json::Value = serde_json::from_str(&records[0].body).unwrap();
    assert_eq!(records[0].kind, "enrollment");
    assert_eq!(body["result"], "wrong_host_token_spent");
    assert_eq!(body["host"], "web-2");
    assert_eq!(body["token_host"], "web-1");
    assert!(body["certificate_serial"].is_null(), "{body}");
    assert!(!records[0].body.contains(&token), "{}", records[0].body);

    // Spent: its own host is now refused as for a used token, and so is the wrong one.
    for host in ["web-1", "web-2"] {
        let again = server.enroll(&token, host).await.unwrap_err();
        assert_eq!(again.code(), Code::Unauthenticated, "{again:?}");
        assert!(again.message().contains("already used"), "{again:?}");
    }
    assert_eq!(
        server
            .approvals
            .store()
            .audit_records(0, 10)
            .await
            .unwrap()
            .len(),
        1,
        "refusals of a used token are counted, not audited"
    );

    let metrics = server.metrics().await;
    assert_eq!(
        series(&metrics, "belay_enrollments_total{result=\"wrong_host\"}"),
        1
    );
    assert_eq!(
        series(&metrics, "belay_enrollments_total{result=\"used_token\"}"),
        2
    );
    assert_eq!(
        series(&metrics, "belay_enrollments_total{result=\"enrolled\"}"),
        0
    );

    server.stop().await;
    let db = dir.path().join("server.db");
    let key = belay_server::audit::resolve_public_key(&db, None, None).unwrap();
    let report = belay_server::audit::verify(&db, &key).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 1);
}

#[tokio::test]
async fn grpc_calls_are_counted_by_method_and_status_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = sqlite_server(dir.path()).await;
    let before = server.metrics().await;
    assert_eq!(series(&before, &grpc_calls(ENROLL, "PERMISSION_DENIED")), 0);

    // PERMISSION_DENIED, answered at once (status in the headers).
    let token = server.token(Some("web-1")).await;
    server.enroll(&token, "web-2").await.unwrap_err();
    let metrics = server.metrics().await;
    assert_eq!(
        series(&metrics, &grpc_calls(ENROLL, "PERMISSION_DENIED")),
        1
    );
    assert_eq!(series(&metrics, &grpc_calls(ENROLL, "OK")), 0);
    assert_eq!(
        series(
            &metrics,
            "belay_grpc_request_duration_seconds_count{method=\"belay.v1.EnrollService/Enroll\"}"
        ),
        1
    );

    // OK, whose status comes in the trailers after the message (with a new token: the
    // wrong host spent the first).
    let token = server.token(Some("web-1")).await;
    server.enroll(&token, "web-1").await.unwrap();
    // INVALID_ARGUMENT, from the conversion of the message.
    let bad = server.enroll(&token, "").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let metrics = server.metrics().await;
    assert_eq!(series(&metrics, &grpc_calls(ENROLL, "OK")), 1);
    assert_eq!(series(&metrics, &grpc_calls(ENROLL, "INVALID_ARGUMENT")), 1);
    assert_eq!(
        series(&metrics, &grpc_calls(ENROLL, "PERMISSION_DENIED")),
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn reviewer_calls_and_unknown_methods_are_counted_with_bounded_labels() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("server.db")).unwrap();
    let server = Running::start(store, None).await;
    let mut reviewer = ReviewerServiceClient::new(server.channel().await);
    reviewer
        .list_pending(v1::ListPendingRequest::default())
        .await
        .unwrap();
    let missing = reviewer
        .get_request(v1::GetRequestRequest {
            request_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // A method no service here has: one "other" series, however many such paths.
    let mut raw = tonic::client::Grpc::new(server.channel().await);
    for path in [
        "/belay.v1.ReviewerService/Nope",
        "/evil.Service/x1",
        "/evil.Service/x2",
    ] {
        raw.ready().await.unwrap();
        let answer: Result<tonic::Response<v1::ListPendingResponse>, _> = raw
            .unary(
                tonic::Request::new(v1::ListPendingRequest::default()),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await;
        assert_eq!(answer.unwrap_err().code(), Code::Unimplemented);
    }

    let metrics = server.metrics().await;
    let list = "belay.v1.ReviewerService/ListPending";
    let get = "belay.v1.ReviewerService/GetRequest";
    assert_eq!(series(&metrics, &grpc_calls(list, "OK")), 1, "{metrics}");
    assert_eq!(series(&metrics, &grpc_calls(get, "NOT_FOUND")), 1);
    assert_eq!(series(&metrics, &grpc_calls("other", "UNIMPLEMENTED")), 3);
    assert!(!metrics.contains("evil"), "{metrics}");
    assert!(!metrics.contains("Nope"), "{metrics}");
    server.stop().await;
}

/// Polls `/readyz` until it answers `want`; the last answer.
async fn readyz_becomes(http: std::net::SocketAddr, want: u16) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = http_get(http, "/readyz").await;
        if answer.0 == want || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `sql` on the cluster's `postgres` database, as the superuser.
async fn admin(sql: &str) {
    let url = belay_server::testing::postgres::cluster().url("postgres");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap();
    drop(client);
    let _ = driver.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_database_refuses_connections_and_200_again_after() {
    let url = belay_server::testing::postgres::database().await;
    let name = url.rsplit('/').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        key: Some(dir.path().join("audit-key")),
        ..AuditOptions::default()
    };
    let store = PostgresStore::connect(&url, options).await.unwrap();
    let server = Running::start(store, None).await;
    assert_eq!(server.get("/readyz").await, (200, "ready\n".to_owned()));

    // The database goes away for this server: no new connections, the open ones cut.
    admin(&format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{name}' AND pid <> pg_backend_pid();"
    ))
    .await;
    let (status, body) = readyz_becomes(server.http, 503).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "store unavailable\n");
    // Still alive, though: only readiness follows the store.
    assert_eq!(server.get("/healthz").await.0, 200);

    admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await;
    let (status, body) = readyz_becomes(server.http, 200).await;
    assert_eq!(status, 200, "the store's pool reconnects: {body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_store_does_not_answer_in_time() {
    let url = belay_server::testing::postgres::database().await;
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        key: Some(dir.path().join("audit-key")),
        ..AuditOptions::default()
    };
    let store = PostgresStore::connect(&url, options).await.unwrap();
    let server = Running::start(store, None).await;
    assert_eq!(server.get("/readyz").await.0, 200);

    // Another session holds the requests table: the readiness query waits on it.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    client
        .batch_execute("BEGIN; LOCK TABLE requests IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let (status, body) = server.get("/readyz").await;
    assert_eq!((status, body.as_str()), (503, "store not answering\n"));

    client.batch_execute("COMMIT").await.unwrap();
    let (status, body) = readyz_becomes(server.http, 200).await;
    assert_eq!(status, 200, "{body}");
    drop(client);
    let _ = driver.await;
    server.stop().await;
}
