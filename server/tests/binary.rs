//! Runs the `belay-server` binary: it serves on the address it is given, keeps requests
//! in the SQLite file it is given (creating its directory), and exits cleanly on SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use belay_proto::v1;
use belay_proto::v1::reviewer_service_client::ReviewerServiceClient;

const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn serves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state").join("belay").join("server.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_belay-server"))
        .env("BELAY_SERVER_LISTEN", "127.0.0.1:0")
        .env("BELAY_HTTP_LISTEN", "127.0.0.1:0")
        .env("BELAY_LOG", "info")
        .env("BELAY_DB", &db)
        // Plaintext, to speak to it without a CA; TLS is tests/mtls.rs's.
        .env("BELAY_SERVER_INSECURE", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The log line announcing the listener carries the port the kernel picked.
    let (lines_tx, lines) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr = loop {
        let line = lines
            .recv_timeout(PATIENCE)
            .expect("belay-server did not log its address");
        if let Some(addr) = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("local="))
        {
            break addr.to_owned();
        }
    };

    let mut reviewer = ReviewerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let pending = reviewer
        .list_pending(v1::ListPendingRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(pending.requests.is_empty());
    assert!(db.is_file(), "no database at {}", db.display());
    let mode = std::fs::metadata(db.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the database directory is private");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < PATIENCE, "belay-server ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
    let log: Vec<String> = lines.try_iter().collect();
    assert!(
        log.iter().any(|line| line.contains("SIGTERM")),
        "shutdown not logged: {log:?}"
    );
}

#[test]
fn a_database_it_cannot_use_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    std::fs::write(&db, "not a database, but someone's notes\n".repeat(100)).unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_belay-server"))
        .env("BELAY_SERVER_LISTEN", "127.0.0.1:0")
        .env("BELAY_HTTP_LISTEN", "127.0.0.1:0")
        .env("BELAY_LOG", "info")
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot open the database {}: file is not a database",
            db.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
}
