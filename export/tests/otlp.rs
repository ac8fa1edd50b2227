//! OTLP/HTTP logs delivery against a loopback receiver that decodes every request with
//! the OpenTelemetry project's own generated types (`opentelemetry-proto`, serde for the
//! protobuf JSON mapping) and checks the OTLP/HTTP contract: `POST /v1/logs`,
//! `Content-Type: application/json`, the configured headers. It can answer 503, refuse
//! with 400, report a partial success and go away, to test retries and outages.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use belay_export::metrics::{DELIVERED, DROPPED, RETRIED};
use belay_export::{Event, ExportConfig, Exporter, format};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::{Value, json};
use support::{config, event, test_pki, wait_until};

const KEY: &str = "Bearer otlp-test-key";

#[derive(Default)]
struct Receiver {
    /// Every log record received, by `log.record.uid`.
    records: Mutex<HashMap<String, Record>>,
    /// How many records the requests held in all.
    received: AtomicU64,
    /// The most records one request held.
    largest: AtomicU64,
    /// Answer this many requests with 503 first.
    busy: AtomicU64,
    /// Answer every request with 400 while set.
    refuse: AtomicU64,
    /// Report up to this many records of the next request as rejected (partial success).
    reject: AtomicU64,
    /// How many records were reported rejected.
    rejected: AtomicU64,
    problems: Mutex<Vec<String>>,
}

/// What one log record said, decoded.
#[derive(Debug, Clone)]
struct Record {
    time_ns: u64,
    severity: i32,
    event_name: String,
    service: String,
    host: String,
    body: Value,
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(to_json)
}

/// An OTLP AnyValue back to JSON: what the sink made of the event's JSON must come back
/// unchanged.
fn to_json(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(f)) => json!(f),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(to_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().map_or(Value::Null, to_json),
                    )
                })
                .collect(),
        ),
        Some(other) => json!(format!("unexpected {other:?}")),
    }
}

fn text(value: &Option<Value>) -> String {
    value
        .as_ref()
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl Receiver {
    fn problem(&self, p: String) {
        self.problems.lock().unwrap().push(p);
    }

    fn take(&self, request: &ExportLogsServiceRequest) -> Result<u64, String> {
        let mut count = 0;
        for resource_logs in &request.resource_logs {
            let resource = resource_logs.resource.as_ref().ok_or("no resource")?;
            let service = attribute(&resource.attributes, "service.name");
            let host = attribute(&resource.attributes, "host.name");
            for scope_logs in &resource_logs.scope_logs {
                if scope_logs.scope.as_ref().map(|s| s.name.as_str()) != Some("belay") {
                    return Err(format!("scope {:?}", scope_logs.scope));
                }
                for record in &scope_logs.log_records {
                    let uid = attribute(&record.attributes, "log.record.uid")
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .ok_or("a record without log.record.uid")?;
                    if record.observed_time_unix_nano < record.time_unix_nano {
                        return Err(format!("{uid}: observed before it happened"));
                    }
                    let decoded = Record {
                        time_ns: record.time_unix_nano,
                        severity: record.severity_number,
                        event_name: attribute(&record.attributes, "event.name")
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        service: text(&service),
                        host: text(&host),
                        body: record.body.as_ref().map_or(Value::Null, to_json),
                    };
                    self.records.lock().unwrap().insert(uid, decoded);
                    count += 1;
                }
            }
        }
        Ok(count)
    }
}

async fn logs_endpoint(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    const JSON: [(&str, &str); 1] = [("content-type", "application/json")];
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    let key = headers.get("authorization").and_then(|v| v.to_str().ok());
    if content_type != Some("application/json") || key != Some(KEY) {
        r.problem(format!(
            "content-type {content_type:?}, authorization {key:?}"
        ));
        return (StatusCode::BAD_REQUEST, JSON, "{}".into());
    }
    if r.refuse.load(Ordering::SeqCst) > 0 {
        return (
            StatusCode::BAD_REQUEST,
            JSON,
            r#"{"code":3,"message":"refused"}"#.into(),
        );
    }
    if r.busy.load(Ordering::SeqCst) > 0 {
        r.busy.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, JSON, "{}".into());
    }
    let request: ExportLogsServiceRequest = match serde_json::from_str(&body) {
        Ok(request) => request,
        Err(err) => {
            r.problem(format!("not an ExportLogsServiceRequest: {err}: {body}"));
            return (StatusCode::BAD_REQUEST, JSON, "{}".into());
        }
    };
    let count = match r.take(&request) {
        Ok(count) => count,
        Err(err) => {
            r.problem(err);
            return (StatusCode::BAD_REQUEST, JSON, "{}".into());
        }
    };
    r.received.fetch_add(count, Ordering::SeqCst);
    r.largest.fetch_max(count, Ordering::SeqCst);
    let rejected = r.reject.swap(0, Ordering::SeqCst).min(count);
    r.rejected.fetch_add(rejected, Ordering::SeqCst);
    let answer = if rejected > 0 {
        json!({"partialSuccess": {"rejectedLogRecords": rejected.to_string(), "errorMessage": "too old"}})
    } else {
        json!({})
    };
    (StatusCode::OK, JSON, answer.to_string())
}

async fn serve(
    receiver: Arc<Receiver>,
    listener: tokio::net::TcpListener,
) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new()
        .route("/v1/logs", post(logs_endpoint))
        .with_state(receiver);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

fn sink(port: u16, format: &str) -> String {
    format!(
        "[[sink]]\nname = \"otel\"\ntype = \"otlp\"\nurl = \"http://127.0.0.1:{port}/\"\n\
         headers = {{ \"Authorization\" = \"{KEY}\" }}\nbatch_max = 50\nformat = \"{format}\"\n"
    )
}

/// Serves HTTPS: axum on a TLS listener with the certificate and key in `cert`, `key`.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl TlsListener {
    async fn bind(cert: &std::path::Path, key: &std::path::Path) -> Self {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Self {
            tcp: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that does not trust us fails its handshake: wait for the next.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

struct Setup {
    receiver: Arc<Receiver>,
    port: u16,
    server: tokio::task::JoinHandle<()>,
    exporter: Exporter,
    _dir: tempfile::TempDir,
}

async fn start(format: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Arc::new(Receiver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = serve(Arc::clone(&receiver), listener).await;
    let exporter = Exporter::start(config(dir.path(), "", &sink(port, format))).unwrap();
    Setup {
        receiver,
        port,
        server,
        exporter,
        _dir: dir,
    }
}

async fn receives_all(receiver: &Arc<Receiver>, count: u64, timeout: Duration) -> bool {
    let expected: HashSet<String> = (0..count).map(|n| event(n).id).collect();
    let r = Arc::clone(receiver);
    wait_until(timeout, || {
        r.records
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect::<HashSet<_>>()
            == expected
    })
    .await
}

fn assert_no_problems(r: &Receiver) {
    let problems = r.problems.lock().unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_as_a_log_record_the_otlp_types_decode() {
    let s = start("native").await;
    let events: Vec<Event> = (0..200).map(event).collect();
    for e in &events {
        s.exporter.handle().offer(e.clone());
    }
    let all = receives_all(&s.receiver, 200, Duration::from_secs(30)).await;
    assert_no_problems(&s.receiver);
    assert!(all, "{} of 200", s.receiver.records.lock().unwrap().len());
    let records = s.receiver.records.lock().unwrap().clone();
    for e in &events {
        let r = &records[&e.id];
        assert_eq!(r.time_ns, e.time_ns as u64, "timeUnixNano");
        assert_eq!(r.event_name, format!("belay.{}", e.kind));
        assert_eq!(
            (r.service.as_str(), r.host.as_str()),
            ("belay-server", "host-a")
        );
        // The body is the native record, structured, every field intact.
        assert_eq!(r.body, format::native(e), "body of {}", e.id);
        let denied = e.body["verdict"] == "deny";
        assert_eq!(
            r.severity,
            if denied { 13 } else { 9 },
            "severity of {}",
            e.id
        );
    }
    // batch_max = 50 holds for every request, the first included.
    assert_eq!(s.receiver.largest.load(Ordering::SeqCst), 50);
    assert!(
        wait_until(Duration::from_secs(5), || s.exporter.spool().cursor("otel")
            == 200)
        .await
    );
    assert_eq!(s.exporter.metrics().counter(DELIVERED, "otel", None), 200);
    s.exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsf_bodies_keep_their_class_and_event_id() {
    let s = start("ocsf").await;
    for n in 0..20 {
        s.exporter.handle().offer(event(n));
    }
    assert!(receives_all(&s.receiver, 20, Duration::from_secs(30)).await);
    assert_no_problems(&s.receiver);
    let records = s.receiver.records.lock().unwrap().clone();
    for n in 0..20 {
        let e = event(n);
        assert_eq!(records[&e.id].body, format::ocsf(&e), "OCSF body of {n}");
    }
    s.exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_answers_and_a_receiver_down_for_a_while_lose_nothing() {
    let s = start("native").await;
    s.receiver.busy.store(2, Ordering::SeqCst);
    for n in 0..200 {
        s.exporter.handle().offer(event(n));
    }
    let r = Arc::clone(&s.receiver);
    assert!(
        wait_until(Duration::from_secs(15), || !r
            .records
            .lock()
            .unwrap()
            .is_empty())
        .await
    );
    s.server.abort();
    let _ = s.server.await;
    for n in 200..400 {
        s.exporter.handle().offer(event(n));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", s.port))
        .await
        .unwrap();
    let _server = serve(Arc::clone(&s.receiver), listener).await;
    let all = receives_all(&s.receiver, 400, Duration::from_secs(60)).await;
    assert_no_problems(&s.receiver);
    assert!(all, "{} of 400", s.receiver.records.lock().unwrap().len());
    let metrics = s.exporter.metrics();
    assert!(metrics.counter(RETRIED, "otel", Some("unavailable")) >= 2);
    assert_eq!(metrics.counter(DROPPED, "otel", None), 0);
    s.exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_receiver_is_a_configuration_error_and_nothing_is_dropped() {
    let s = start("native").await;
    s.receiver.refuse.store(1, Ordering::SeqCst);
    for n in 0..10 {
        s.exporter.handle().offer(event(n));
    }
    let metrics = s.exporter.metrics().clone();
    assert!(
        wait_until(Duration::from_secs(10), || metrics.counter(
            RETRIED,
            "otel",
            Some("config")
        ) == 1)
        .await
    );
    assert_eq!(
        s.exporter.spool().cursor("otel"),
        0,
        "the events stay spooled"
    );
    assert_eq!(metrics.counter(DROPPED, "otel", None), 0);
    s.exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_receiver_rejects_are_counted_as_dropped_and_not_sent_again() {
    let s = start("native").await;
    s.receiver.reject.store(3, Ordering::SeqCst);
    for n in 0..10 {
        s.exporter.handle().offer(event(n));
    }
    assert!(receives_all(&s.receiver, 10, Duration::from_secs(30)).await);
    let metrics = s.exporter.metrics().clone();
    assert!(
        wait_until(Duration::from_secs(5), || s.exporter.spool().cursor("otel")
            == 10)
        .await
    );
    // The first request may hold fewer than 3 records: the receiver rejects what it can.
    let rejected = s.receiver.rejected.load(Ordering::SeqCst);
    assert!(rejected >= 1);
    assert_eq!(metrics.counter(DROPPED, "otel", Some("rejected")), rejected);
    assert_eq!(metrics.counter(DELIVERED, "otel", None), 10 - rejected);
    // A partial success must not be retried: each record was sent exactly once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.receiver.received.load(Ordering::SeqCst), 10);
    s.exporter.shutdown().await;
}

#[test]
fn otlp_config_errors_name_file_line_column_and_key() {
    let parse = |sink: &str| {
        ExportConfig::parse(
            std::path::Path::new("x.toml"),
            &format!("[spool]\ndir = \"/tmp/s\"\n[[sink]]\ntype = \"otlp\"\n{sink}"),
        )
    };
    let err = |sink: &str| parse(sink).unwrap_err().to_string();
    assert_eq!(
        err("url = \"grpc://collector:4317\"\n"),
        "x.toml:5:7: url: must be an http(s):// URL"
    );
    assert!(err("").ends_with("url: missing"), "{}", err(""));
    assert_eq!(
        err("url = \"http://c:4318\"\nheaders = { \"bad header\" = \"x\" }\n"),
        "x.toml:6:11: headers: \"bad header\": invalid HTTP header name"
    );
    let secret = err("url = \"http://c:4318\"\nheaders = { \"api-key\" = \"s3cr\\net\" }\n");
    assert!(
        secret.contains("\"api-key\"") && !secret.contains("s3cr"),
        "names the header, never shows the value: {secret}"
    );
    assert!(
        err("url = \"http://c:4318\"\nheaders = { \"Content-Type\" = \"text/plain\" }\n")
            .contains("content-type is set by belay")
    );
    assert_eq!(
        err("url = \"http://c:4318\"\nacks = true\n"),
        "x.toml:6:8: acks: does not apply to a otlp sink"
    );
    // A base URL gets OTLP's logs path; a full logs URL is kept.
    for (url, endpoint) in [
        ("http://c:4318", "http://c:4318/v1/logs"),
        ("https://c/otlp/", "https://c/otlp/v1/logs"),
        ("http://c:4318/v1/logs", "http://c:4318/v1/logs"),
    ] {
        let config = parse(&format!("url = \"{url}\"\n")).unwrap();
        match &config.sinks[0].kind {
            belay_export::config::SinkKind::Otlp(c) => assert_eq!(c.endpoint, endpoint),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_configured_ca_delivers_and_without_it_nothing_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(dir.path());
    let receiver = Arc::new(Receiver::default());
    let listener = TlsListener::bind(&cert, &key).await;
    let port = axum::serve::Listener::local_addr(&listener).unwrap().port();
    let app = axum::Router::new()
        .route("/v1/logs", post(logs_endpoint))
        .with_state(Arc::clone(&receiver));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let sink = |name: &str, ca: Option<&std::path::Path>| {
        let ca = ca.map_or(String::new(), |ca| {
            format!("ca_file = {:?}\n", ca.display().to_string())
        });
        format!(
            "[[sink]]\nname = \"{name}\"\ntype = \"otlp\"\nurl = \"https://localhost:{port}\"\n\
             headers = {{ \"Authorization\" = \"{KEY}\" }}\n{ca}"
        )
    };

    // Without the CA the certificate is not trusted: retried, kept, never dropped.
    let untrusted_dir = tempfile::tempdir().unwrap();
    let untrusted =
        Exporter::start(config(untrusted_dir.path(), "", &sink("untrusted", None))).unwrap();
    untrusted.handle().offer(event(1000));
    let metrics = untrusted.metrics().clone();
    assert!(
        wait_until(Duration::from_secs(10), || metrics.counter(
            RETRIED,
            "untrusted",
            None
        ) >= 1)
        .await
    );
    assert_eq!(untrusted.spool().cursor("untrusted"), 0);
    assert_eq!(metrics.counter(DROPPED, "untrusted", None), 0);
    untrusted.shutdown().await;

    let spool = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(config(spool.path(), "", &sink("otel", Some(&ca)))).unwrap();
    for n in 0..50 {
        exporter.handle().offer(event(n));
    }
    let all = receives_all(&receiver, 50, Duration::from_secs(30)).await;
    assert_no_problems(&receiver);
    assert!(
        all,
        "{} of 50 over HTTPS",
        receiver.records.lock().unwrap().len()
    );
    exporter.shutdown().await;
}
