//! Audit export: every audit record of a SQLite-backed server reaches the JSON Lines sink
//! with a stable id, and records made while the server (and so its exporter) was down
//! are delivered after the restart.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use belay_proto::domain::{Identity, Reason, RequestId, ReviewerDecision, Scope, Verdict};
use belay_server::approvals::{Approvals, AuditLogStore as _, SqliteStore};
use belay_server::{ServeError, serve};
use support::{agent_identity, domain_request};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PATIENCE: Duration = Duration::from_secs(20);

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
    approvals: Weak<Approvals<SqliteStore>>,
}

fn export_config(dir: &Path) -> belay_export::ExportConfig {
    let text = format!(
        "[spool]\ndir = {:?}\n[[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = {:?}\n",
        dir.join("spool").display().to_string(),
        dir.join("audit.jsonl").display().to_string()
    );
    belay_export::ExportConfig::parse(Path::new("export.toml"), &text).unwrap()
}

async fn start(dir: &Path) -> (Running, Arc<Approvals<SqliteStore>>) {
    let store = SqliteStore::open(dir.join("server.db")).unwrap();
    let approvals = Arc::new(Approvals::new(store));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut options = belay_server::ServeOptions::default();
    options.export = Some(export_config(dir));
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(serve(listener, Arc::clone(&approvals), options, async {
        let _ = stopped.await;
    }));
    let running = Running {
        stop,
        task,
        approvals: Arc::downgrade(&approvals),
    };
    (running, approvals)
}

async fn stop(running: Running, approvals: Arc<Approvals<SqliteStore>>) {
    drop(approvals);
    running.stop.send(()).unwrap();
    tokio::time::timeout(PATIENCE, async {
        running.task.await.unwrap().unwrap();
        while running.approvals.strong_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the server stops in time");
}

async fn submit_and_decide(approvals: &Approvals<SqliteStore>, from: u32, to: u32) {
    let now = SystemTime::now();
    for n in from..to {
        let id = format!("host-a:req-{n}");
        let request = domain_request(&id, now + Duration::from_secs(600));
        approvals
            .submit(&agent_identity("host-a"), request, now)
            .await
            .unwrap();
        if n.is_multiple_of(2) {
            let decision = ReviewerDecision {
                request_id: RequestId::new(&id).unwrap(),
                verdict: if n.is_multiple_of(4) {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                },
                reason: Reason::new("checked").unwrap(),
                reviewer: Identity::new("bob").unwrap(),
                scope: Scope::Once,
            };
            approvals.decide(decision, now).await.unwrap();
        }
    }
}

/// Event id -> (audit seq, kind) of every exported line.
fn exported(dir: &Path) -> Vec<(String, u64, String)> {
    let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                v["id"].as_str().unwrap().to_owned(),
                v["event"]["audit_seq"].as_u64().unwrap(),
                v["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn wait_for_all(dir: &Path, approvals: &Approvals<SqliteStore>) -> HashMap<String, u64> {
    let records = approvals.store().audit_records(0, 10_000).await.unwrap();
    let host = belay_export::event::local_hostname();
    let expected: HashMap<String, u64> = records
        .iter()
        .map(|r| (belay_server::export::event_of(r, &host).id, r.seq))
        .collect();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got: HashMap<String, u64> = exported(dir)
            .into_iter()
            .map(|(id, seq, _)| (id, seq))
            .collect();
        if got == expected || Instant::now() > deadline {
            assert_eq!(
                got, expected,
                "every audit record exported under its stable id"
            );
            return expected;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audit_record_is_exported_and_a_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (running, approvals) = start(dir.path()).await;
    submit_and_decide(&approvals, 0, 40).await;
    let first = wait_for_all(dir.path(), &approvals).await;
    assert_eq!(first.len(), 60, "40 submitted + 20 decided");
    let kinds: HashSet<String> = exported(dir.path())
        .into_iter()
        .map(|(_, _, k)| k)
        .collect();
    assert_eq!(
        kinds,
        HashSet::from(["submitted".to_owned(), "decided".to_owned()])
    );
    stop(running, approvals).await;

    // Decisions while the server and its exporter are down, straight on the database.
    let store = SqliteStore::open(dir.path().join("server.db")).unwrap();
    let offline = Approvals::new(store);
    submit_and_decide(&offline, 40, 50).await;
    drop(offline);

    let (running, approvals) = start(dir.path()).await;
    submit_and_decide(&approvals, 50, 60).await;
    let all = wait_for_all(dir.path(), &approvals).await;
    assert_eq!(all.len(), 90);
    for (id, seq) in &first {
        assert_eq!(all.get(id), Some(seq), "ids are stable across the restart");
    }
    stop(running, approvals).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_metrics_are_in_the_server_metrics_page() {
    let dir = tempfile::tempdir().unwrap();
    let (running, approvals) = start(dir.path()).await;
    submit_and_decide(&approvals, 0, 4).await;
    wait_for_all(dir.path(), &approvals).await;
    let page = belay_server::metrics::Metrics::default().render(belay_server::metrics::Gauges {
        pending: 0,
        connected_agents: 0,
    });
    assert!(
        page.contains("belay_export_delivered_total{sink=\"file\"}"),
        "{page}"
    );
    assert!(page.contains("belay_export_spool_bytes"), "{page}");
    stop(running, approvals).await;
}
