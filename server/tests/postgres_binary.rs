//! `belay-server --db postgres://...`: the binary serves from PostgreSQL, and refuses
//! to start without the audit key every replica must share.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use belay_server::testing::postgres::database;

fn server(db: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_belay-server"));
    command
        .args(["--db", db, "--insecure", "--log", "info"])
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("BELAY_DB")
        .env_remove("BELAY_AUDIT_KEY");
    command
}

#[tokio::test]
async fn the_server_runs_on_postgres_given_its_audit_key() {
    let url = database().await;
    let dir = tempfile::tempdir().unwrap();

    let refused = server(&url, &["--state-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--audit-key"), "{stderr}");

    let key = dir.path().join("audit-key");
    let mut child = server(
        &url,
        &[
            "--audit-key",
            key.to_str().unwrap(),
            "--state-dir",
            dir.path().to_str().unwrap(),
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (lines, received) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut log = Vec::new();
    let listening = loop {
        match received.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                let done = line.contains("belay-server listening");
                log.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    // The signal handlers are installed just after that line is logged.
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    let log = log.join("\n");
    assert!(listening, "{log}");
    assert!(log.contains("requests are stored in PostgreSQL"), "{log}");
    assert!(status.success(), "{status}");
    assert!(key.exists());
}
