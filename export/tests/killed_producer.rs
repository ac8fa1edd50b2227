//! The producer killed (SIGKILL) mid-delivery: a fresh process on the same spool delivers
//! every spooled event. The producer is this test binary run again as a child.

mod support;

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use belay_export::Exporter;
use support::{config, event, jsonl_ids, wait_until};

const COUNT: u64 = 20_000;
const CHILD_ENV: &str = "BELAY_EXPORT_TEST_PRODUCER_DIR";

fn sink(dir: &Path) -> String {
    format!(
        "[[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = {:?}\n",
        dir.join("out.jsonl").display().to_string()
    )
}

/// In the child: spool COUNT events, say so, then keep delivering until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only meaningful as the child of the test below
    };
    let dir = Path::new(&dir);
    let exporter = Exporter::start(config(dir, "", &sink(dir))).unwrap();
    exporter
        .append_durable((0..COUNT).map(event).collect())
        .await
        .unwrap();
    println!("spooled");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_killed_mid_delivery_resumes_from_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "producer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let spooled = stdout
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("spooled"));
    assert!(spooled, "the child spooled its events");
    // Let delivery start, then kill it in the middle.
    let out = dir.path().join("out.jsonl");
    let started = wait_until(Duration::from_secs(10), || !jsonl_ids(&out).is_empty()).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(started);
    let before = jsonl_ids(&out).len() as u64;
    assert!(
        before < COUNT,
        "killed mid-delivery ({before} of {COUNT} delivered)"
    );

    let exporter = Exporter::start(config(dir.path(), "", &sink(dir.path()))).unwrap();
    let expected: HashSet<String> = (0..COUNT).map(|n| event(n).id).collect();
    let all = wait_until(Duration::from_secs(60), || {
        jsonl_ids(&out).into_iter().collect::<HashSet<_>>() == expected
    })
    .await;
    assert!(all, "every event delivered after the restart");
    exporter.shutdown().await;
}
