//! The spool and the JSON Lines sink: durability across restarts, torn tails, full spools,
//! config errors.

mod support;

use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use belay_export::metrics::DROPPED;
use belay_export::{ExportConfig, Exporter};
use support::{config, event, jsonl_ids, wait_until};

fn jsonl(dir: &Path) -> String {
    format!(
        "[[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = {:?}\n",
        dir.join("out.jsonl").display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_the_file_once_and_the_spool_is_emptied() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(config(dir.path(), "", &jsonl(dir.path()))).unwrap();
    let handle = exporter.handle();
    for n in 0..2000 {
        handle.offer(event(n));
    }
    let out = dir.path().join("out.jsonl");
    assert!(wait_until(Duration::from_secs(20), || jsonl_ids(&out).len() >= 2000).await);
    let ids = jsonl_ids(&out);
    assert_eq!(ids.len(), 2000, "no duplicates without a crash");
    let expected: HashSet<_> = (0..2000).map(|n| event(n).id).collect();
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), expected);
    let spool = exporter.spool().clone();
    exporter.shutdown().await;
    assert_eq!(spool.cursor("file"), 2000);
}

#[tokio::test]
async fn undelivered_events_are_delivered_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A sink that cannot deliver: its path is a directory.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir_all(&blocked).unwrap();
    let sink = format!(
        "[[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = {:?}\n",
        blocked.display().to_string()
    );
    let exporter = Exporter::start(config(dir.path(), "", &sink)).unwrap();
    let written = exporter
        .append_durable((0..50).map(event).collect())
        .await
        .unwrap();
    assert_eq!(written, 50);
    exporter.shutdown().await;

    let exporter = Exporter::start(config(dir.path(), "", &jsonl(dir.path()))).unwrap();
    let out = dir.path().join("out.jsonl");
    assert!(wait_until(Duration::from_secs(10), || jsonl_ids(&out).len() >= 50).await);
    let ids: HashSet<_> = jsonl_ids(&out).into_iter().collect();
    assert_eq!(ids, (0..50).map(|n| event(n).id).collect::<HashSet<_>>());
    exporter.shutdown().await;
}

#[tokio::test]
async fn a_torn_tail_is_truncated_and_what_precedes_it_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("blocked");
    std::fs::create_dir_all(&blocked).unwrap();
    let sink = format!(
        "[[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = {:?}\n",
        blocked.display().to_string()
    );
    let exporter = Exporter::start(config(dir.path(), "", &sink)).unwrap();
    exporter
        .append_durable((0..10).map(event).collect())
        .await
        .unwrap();
    exporter.shutdown().await;
    // A crash in the middle of a frame: half a header and garbage.
    let segment = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .unwrap();
    let good_len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&[7, 0, 0, 0, 1, 2])
        .unwrap();

    let exporter = Exporter::start(config(dir.path(), "", &jsonl(dir.path()))).unwrap();
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        good_len,
        "tail truncated"
    );
    exporter.append_durable(vec![event(10)]).await.unwrap();
    let out = dir.path().join("out.jsonl");
    assert!(wait_until(Duration::from_secs(10), || jsonl_ids(&out).len() >= 11).await);
    assert_eq!(jsonl_ids(&out).len(), 11);
    exporter.shutdown().await;
}

#[tokio::test]
async fn a_full_spool_drops_per_policy_and_counts_it() {
    for (policy, kept_first) in [("oldest", false), ("newest", true)] {
        let dir = tempfile::tempdir().unwrap();
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(&blocked).unwrap();
        let sink = format!(
            "[[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = {:?}\n",
            blocked.display().to_string()
        );
        let extra = format!("max_bytes = 65536\nsegment_bytes = 8192\ndrop_policy = \"{policy}\"");
        let exporter = Exporter::start(config(dir.path(), &extra, &sink)).unwrap();
        for chunk in 0..10 {
            exporter
                .append_durable((chunk * 100..(chunk + 1) * 100).map(event).collect())
                .await
                .unwrap();
        }
        let dropped = exporter
            .metrics()
            .counter(DROPPED, "file", Some("spool_full"));
        assert!(dropped > 0, "{policy}: drops counted");
        let on_disk: u64 = std::fs::read_dir(dir.path().join("spool"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(
            on_disk <= 65536 + 64,
            "{policy}: spool bounded, {on_disk} bytes"
        );
        assert!(
            exporter
                .metrics()
                .render()
                .contains("belay_export_dropped_total{sink=\"file\",reason=\"spool_full\"}")
        );
        exporter.shutdown().await;

        let exporter = Exporter::start(config(dir.path(), &extra, &jsonl(dir.path()))).unwrap();
        let out = dir.path().join("out.jsonl");
        let expect = 1000 - dropped as usize;
        assert!(
            wait_until(Duration::from_secs(10), || jsonl_ids(&out).len() >= expect).await,
            "{policy}"
        );
        let ids = jsonl_ids(&out);
        assert_eq!(ids.len(), expect, "{policy}: what was kept is delivered");
        assert_eq!(
            ids.contains(&event(0).id),
            kept_first,
            "{policy}: which end was dropped"
        );
        exporter.shutdown().await;
    }
}

#[test]
fn config_errors_name_file_line_column_and_key() {
    let err = ExportConfig::parse(
        Path::new("x.toml"),
        "[spool]\ndir = \"/tmp/s\"\n\n[[sink]]\ntype = \"jsonl\"\npath = \"/tmp/x\"\nurl = \"http://x\"\n",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(err, "x.toml:7:7: url: does not apply to a jsonl sink");
    let err = ExportConfig::parse(
        Path::new("x.toml"),
        "[spool]\ndir = \"/tmp/s\"\nbogus = 1\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("x.toml:3:1: "), "{err}");
    let err = ExportConfig::parse(
        Path::new("x.toml"),
        "[spool]\ndir = \"/tmp/s\"\n[[sink]]\ntype = \"syslog\"\ntransport = \"quic\"\naddress = \"127.0.0.1:514\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("x.toml:5:13: transport: "), "{err}");
}

#[test]
fn jsonl_files_rotate_and_keep_n() {
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "[[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = {:?}\nmax_file_bytes = 4096\nkeep_files = 2\n",
        dir.path().join("out.jsonl").display().to_string()
    );
    let cfg = config(dir.path(), "", &sink);
    let mut sink = belay_export::sink::Sink::new(&cfg.sinks[0]).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for n in 0..100 {
        let e = event(n);
        let r = belay_export::format::native(&e);
        runtime.block_on(sink.deliver(&[e], &[r])).unwrap();
    }
    let base = dir.path().join("out.jsonl");
    assert!(std::fs::metadata(&base).unwrap().len() <= 4096);
    assert!(dir.path().join("out.jsonl.1").exists());
    assert!(dir.path().join("out.jsonl.2").exists());
    assert!(!dir.path().join("out.jsonl.3").exists());
    let last = jsonl_ids(&base);
    assert_eq!(last.last().unwrap(), &event(99).id);
}
