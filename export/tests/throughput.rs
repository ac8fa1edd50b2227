//! Throughput of the spool and the JSON Lines sink (printed; asserts only a floor far
//! below what a laptop does, so it fails on a pathological regression, not on a slow CI).

mod support;

use std::time::{Duration, Instant};

use belay_export::Exporter;
use support::{config, event, jsonl_ids, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_and_jsonl_throughput() {
    const N: u64 = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("blocked");
    std::fs::create_dir_all(&blocked).unwrap();
    let sink = |path: &std::path::Path| {
        format!(
            "[[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = {:?}\n",
            path.display().to_string()
        )
    };
    let events: Vec<_> = (0..N).map(event).collect();
    let exporter = Exporter::start(config(dir.path(), "", &sink(&blocked))).unwrap();
    let start = Instant::now();
    for chunk in events.chunks(1000) {
        exporter.append_durable(chunk.to_vec()).await.unwrap();
    }
    let spool_rate = N as f64 / start.elapsed().as_secs_f64();
    exporter.shutdown().await;

    let out = dir.path().join("out.jsonl");
    let start = Instant::now();
    let exporter = Exporter::start(config(dir.path(), "", &sink(&out))).unwrap();
    assert!(
        wait_until(Duration::from_secs(120), || jsonl_ids(&out).len() as u64
            >= N)
        .await
    );
    let sink_rate = N as f64 / start.elapsed().as_secs_f64();
    exporter.shutdown().await;
    println!("export_spool_append_events_per_s {spool_rate:.0}");
    println!("export_jsonl_deliver_events_per_s {sink_rate:.0}");
    assert!(spool_rate > 1000.0 && sink_rate > 1000.0);
}
