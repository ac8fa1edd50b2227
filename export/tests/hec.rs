//! Splunk HEC delivery against a loopback receiver that checks the documented contract:
//! `Authorization: Splunk <token>`, a body of concatenated event objects (each with
//! `event`, `time` in epoch seconds, `host`, `source`, `sourcetype`), the channel header
//! when acks are on, ack ids answered and polled. It can also answer 503, withhold acks
//! and go away, to test retries and outages.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use belay_export::Exporter;
use belay_export::metrics::{DELIVERED, RETRIED};
use serde_json::{Value, json};
use support::{config, event, wait_until};

const TOKEN: &str = "00000000-1111-2222-3333-444444444444";

#[derive(Default)]
struct Receiver {
    /// Event ids indexed (acked, or accepted without acks).
    indexed: Mutex<Vec<String>>,
    /// ackId -> ids of its batch, until acked.
    pending: Mutex<Vec<(u64, Vec<String>)>>,
    next_ack: AtomicU64,
    /// Answer this many event posts with 503 first.
    busy: AtomicU64,
    /// Never confirm this many batches (their ack polls answer false).
    lose_acks: AtomicU64,
    problems: Mutex<Vec<String>>,
    acks: bool,
}

impl Receiver {
    fn problem(&self, p: String) {
        self.problems.lock().unwrap().push(p);
    }

    fn check_headers(&self, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Splunk {TOKEN}")) {
            return Err((
                StatusCode::UNAUTHORIZED,
                r#"{"text":"Invalid authorization","code":3}"#.into(),
            ));
        }
        let channel = headers
            .get("x-splunk-request-channel")
            .and_then(|v| v.to_str().ok());
        if self.acks && channel.is_none_or(|c| c.len() != 36) {
            self.problem(format!("acks on but channel header {channel:?}"));
            return Err((
                StatusCode::BAD_REQUEST,
                r#"{"text":"Data channel is missing","code":10}"#.into(),
            ));
        }
        Ok(())
    }
}

async fn event_endpoint(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    if let Err(e) = r.check_headers(&headers) {
        return e;
    }
    if r.busy.load(Ordering::SeqCst) > 0 {
        r.busy.fetch_sub(1, Ordering::SeqCst);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"text":"Server is busy","code":9}"#.into(),
        );
    }
    let mut ids = Vec::new();
    for object in serde_json::Deserializer::from_str(&body).into_iter::<Value>() {
        let Ok(object) = object else {
            r.problem(format!("batch is not concatenated JSON objects: {body:?}"));
            return (
                StatusCode::BAD_REQUEST,
                r#"{"text":"Invalid data format","code":6}"#.into(),
            );
        };
        let ok = object["event"].is_object()
            && object["time"]
                .as_f64()
                .is_some_and(|t| t > 1.7e9 && t < 2e9)
            && object["host"].is_string()
            && object["source"] == "belay-server"
            && object["sourcetype"] == "belay";
        if !ok {
            r.problem(format!("bad event object {object}"));
            return (
                StatusCode::BAD_REQUEST,
                r#"{"text":"Invalid data format","code":6}"#.into(),
            );
        }
        ids.push(
            object["event"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    if !r.acks {
        r.indexed.lock().unwrap().extend(ids);
        return (StatusCode::OK, r#"{"text":"Success","code":0}"#.into());
    }
    let ack = r.next_ack.fetch_add(1, Ordering::SeqCst);
    if r.lose_acks.load(Ordering::SeqCst) > 0 {
        r.lose_acks.fetch_sub(1, Ordering::SeqCst);
    } else {
        r.pending.lock().unwrap().push((ack, ids));
    }
    (
        StatusCode::OK,
        json!({"text": "Success", "code": 0, "ackId": ack}).to_string(),
    )
}

async fn ack_endpoint(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    if let Err(e) = r.check_headers(&headers) {
        return e;
    }
    let query: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let Some(asked) = query["acks"].as_array() else {
        r.problem(format!("bad ack query {body:?}"));
        return (StatusCode::BAD_REQUEST, "{}".into());
    };
    let mut answer = serde_json::Map::new();
    let mut pending = r.pending.lock().unwrap();
    for id in asked.iter().filter_map(Value::as_u64) {
        let found = pending.iter().position(|(a, _)| *a == id);
        if let Some(i) = found {
            let (_, ids) = pending.remove(i);
            r.indexed.lock().unwrap().extend(ids);
        }
        answer.insert(id.to_string(), found.is_some().into());
    }
    (StatusCode::OK, json!({ "acks": answer }).to_string())
}

async fn serve(
    receiver: Arc<Receiver>,
    listener: tokio::net::TcpListener,
) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new()
        .route("/services/collector/event", post(event_endpoint))
        .route("/services/collector/ack", post(ack_endpoint))
        .with_state(receiver);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

fn sink(port: u16, acks: bool, token: &str) -> String {
    format!(
        "[[sink]]\nname = \"hec\"\ntype = \"splunk_hec\"\nurl = \"http://127.0.0.1:{port}\"\n\
         token = \"{token}\"\nacks = {acks}\nbatch_max = 50\nack_timeout_seconds = 1\n"
    )
}

/// A loopback receiver and an exporter with one HEC sink delivering to it.
struct Setup {
    receiver: Arc<Receiver>,
    port: u16,
    server: tokio::task::JoinHandle<()>,
    exporter: Exporter,
    /// The spool; removed when the test ends.
    _dir: tempfile::TempDir,
}

/// Serves a receiver on a free loopback port and starts an exporter sending to it with
/// `token`, with or without acks.
async fn start(acks: bool, token: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Arc::new(Receiver {
        acks,
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = serve(Arc::clone(&receiver), listener).await;
    let sink = sink(port, acks, token);
    let exporter = Exporter::start(config(dir.path(), "", &sink)).unwrap();
    Setup {
        receiver,
        port,
        server,
        exporter,
        _dir: dir,
    }
}

/// Whether the receiver comes to have indexed exactly events `0..count` within `timeout`.
async fn indexes_all(receiver: &Arc<Receiver>, count: u64, timeout: Duration) -> bool {
    let expected: HashSet<String> = (0..count).map(|n| event(n).id).collect();
    let r = Arc::clone(receiver);
    wait_until(timeout, || {
        r.indexed
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<HashSet<_>>()
            == expected
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_acked_and_retried_through_busy_answers_and_lost_acks() {
    let s = start(true, TOKEN).await;
    // Set before any event is offered, so the first posts meet them.
    s.receiver.busy.store(2, Ordering::SeqCst);
    s.receiver.lose_acks.store(1, Ordering::SeqCst);
    for n in 0..500 {
        s.exporter.handle().offer(event(n));
    }
    let all = indexes_all(&s.receiver, 500, Duration::from_secs(30)).await;
    assert!(
        s.receiver.problems.lock().unwrap().is_empty(),
        "{:?}",
        s.receiver.problems.lock().unwrap()
    );
    assert!(
        all,
        "indexed {} of 500",
        s.receiver.indexed.lock().unwrap().len()
    );
    assert!(
        s.exporter
            .metrics()
            .counter(RETRIED, "hec", Some("unavailable"))
            >= 3,
        "2 busy + 1 lost ack"
    );
    assert!(
        wait_until(Duration::from_secs(5), || s.exporter.spool().cursor("hec")
            == 500)
        .await
    );
    assert_eq!(s.exporter.metrics().counter(DELIVERED, "hec", None), 500);
    s.exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_loses_nothing() {
    let s = start(true, TOKEN).await;
    for n in 0..200 {
        s.exporter.handle().offer(event(n));
    }
    let r = Arc::clone(&s.receiver);
    assert!(
        wait_until(Duration::from_secs(10), || !r
            .indexed
            .lock()
            .unwrap()
            .is_empty())
        .await
    );
    // Killed mid-stream: whatever was in flight is unacknowledged.
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
    let all = indexes_all(&s.receiver, 400, Duration::from_secs(60)).await;
    assert!(
        all,
        "every id arrives after the outage ({} indexed)",
        s.receiver.indexed.lock().unwrap().len()
    );
    s.exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_a_configuration_error_and_nothing_is_dropped() {
    let s = start(false, "wrong").await;
    s.exporter.handle().offer(event(0));
    let metrics = s.exporter.metrics().clone();
    assert!(
        wait_until(Duration::from_secs(10), || metrics.counter(
            RETRIED,
            "hec",
            Some("config")
        ) == 1)
        .await
    );
    assert_eq!(
        s.exporter.spool().cursor("hec"),
        0,
        "the event stays spooled"
    );
    assert_eq!(
        metrics.counter(belay_export::metrics::DROPPED, "hec", None),
        0
    );
    s.exporter.shutdown().await;
}
