//! `belay-server --export-config`: a bad file is a precise startup error; a server killed
//! (SIGKILL) mid-export resumes after a restart and every audit record arrives.

mod support;

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use belay_server::approvals::{Approvals, AuditLogStore as _, SqliteStore};

use support::{agent_identity, domain_request};

const RECORDS: u32 = 3000;

fn server(db: &Path, config: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_belay-server"))
        .env("BELAY_SERVER_LISTEN", "127.0.0.1:0")
        .env("BELAY_HTTP_LISTEN", "127.0.0.1:0")
        .env("BELAY_LOG", "info")
        .env("BELAY_DB", db)
        .env("BELAY_SERVER_INSECURE", "1")
        .env("BELAY_EXPORT_CONFIG", config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("belay-server logs that it exports");
        if line.contains("exporting the audit log") {
            break;
        }
    }
    child
}

fn exported_ids(path: &Path) -> HashSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_export_resumes_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    let out = dir.path().join("audit.jsonl");
    // The audit log to export, written before the server starts.
    let approvals = Approvals::new(SqliteStore::open(&db).unwrap());
    let agent = agent_identity("host-a");
    let now = SystemTime::now();
    for n in 0..RECORDS {
        let request = domain_request(&format!("host-a:req-{n}"), now + Duration::from_secs(3600));
        approvals.submit(&agent, request, now).await.unwrap();
    }
    let host = belay_export::event::local_hostname();
    let expected: HashSet<String> = approvals
        .store()
        .audit_records(0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|r| belay_server::export::event_of(r, &host).id)
        .collect();
    assert_eq!(expected.len(), RECORDS as usize);
    drop(approvals);

    let config = dir.path().join("export.toml");
    std::fs::write(
        &config,
        format!(
            "[spool]\ndir = {:?}\n[[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = {:?}\n",
            dir.path().join("spool").display().to_string(),
            out.display().to_string()
        ),
    )
    .unwrap();
    let mut child = server(&db, &config);
    let deadline = Instant::now() + Duration::from_secs(20);
    while exported_ids(&out).is_empty() {
        assert!(Instant::now() < deadline, "export started");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = exported_ids(&out).len();
    assert!(
        before < RECORDS as usize,
        "killed mid-export ({before} delivered)"
    );

    let mut child = server(&db, &config);
    let deadline = Instant::now() + Duration::from_secs(60);
    while exported_ids(&out) != expected {
        assert!(
            Instant::now() < deadline,
            "{} of {RECORDS} exported after the restart",
            exported_ids(&out).len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_bad_export_config_is_a_precise_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("export.toml");
    std::fs::write(
        &config,
        "[spool]\ndir = \"/tmp/x\"\n[[sink]]\ntype = \"jsonl\"\npath = \"/tmp/y\"\nurl = \"http://x\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_belay-server"))
        .env("BELAY_SERVER_LISTEN", "127.0.0.1:0")
        .env("BELAY_HTTP_LISTEN", "127.0.0.1:0")
        .env("BELAY_DB", ":memory:")
        .env("BELAY_SERVER_INSECURE", "1")
        .arg("--export-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:6:7: url: does not apply to a jsonl sink",
            config.display()
        )),
        "{stderr}"
    );
}
