//! `belay login` (device flow against a real OIDC issuer on loopback), then `belay
//! --server URL pending` and `approve` with the stored credential, `logout`, and
//! `login --token`: the real `belay` binary against the real server.

#[path = "../../server/tests/support/issuer.rs"]
mod issuer;
mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use belay_proto::v1;
use belay_server::ServeOptions;
use belay_server::auth::{AuthConfig, Authenticator, ReviewerAuth, hash_line};
use issuer::{AUDIENCE, PATIENCE, TestIssuer, TestKey};
use support::{agent_session, connect_request, drain, hello, message, start_with};
use tokio::sync::mpsc;

const API_TOKEN: &str = "belay_cli-test-token";

async fn start_server(issuer: &TestIssuer) -> String {
    let config = format!(
        "[[oidc]]\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\n\n[[api_token]]\nname = \"ci-bot\"\n{}\nroles = [\"viewer\"]\n\n[groups]\nsre = \"reviewer\"\n",
        issuer.url(),
        hash_line(API_TOKEN)
    );
    let config = AuthConfig::parse(Path::new("auth.toml"), &config).unwrap();
    let mut options = ServeOptions::default();
    options.reviewer_auth = ReviewerAuth::Verified(Arc::new(Authenticator::new(config).unwrap()));
    start_with(options).await.0
}

/// An agent of alice on host-a holding request `id` pending.
async fn submit(url: &str, id: &str) -> mpsc::Sender<v1::AgentMessage> {
    let (to_server, inbound) = agent_session(url, hello("host-a", "0.1.0-test")).await;
    drain(inbound);
    to_server
        .send(message(v1::agent_message::Kind::Request(connect_request(
            id, 4242,
        ))))
        .await
        .unwrap();
    to_server
}

fn belay(config_home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_belay"));
    command
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("BELAY_TOKEN")
        .env_remove("BELAY_SERVER")
        .env_remove("BELAY_REVIEWER")
        .env_remove("BELAY_OUTPUT");
    command
}

async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_flow_login_then_server_calls_with_the_stored_credential() {
    let issuer = TestIssuer::start(TestKey::es256("ec-1")).await;
    issuer.slow_down_once();
    let url = start_server(&issuer).await;
    let _agent = submit(&url, "host-a:req-1").await;
    let home = tempfile::tempdir().unwrap();

    // Not signed in: the server says what is missing.
    let mut pending = belay(home.path());
    pending.args(["--server", &url, "pending"]);
    let out = run(pending).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing credential"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut login = belay(home.path())
        .args(["login", "--issuer", &issuer.url(), "--client-id", AUDIENCE])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = login.stderr.take().unwrap();
    let (codes, code) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if let Some(user_code) = line.strip_prefix("and enter the code: ") {
                let _ = codes.send(user_code.to_owned());
            }
        }
    });
    let user_code = code
        .recv_timeout(PATIENCE)
        .expect("belay login printed no code");
    // The person signs in at the issuer while belay polls.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    issuer.approve(&user_code, issuer.claims("bob@example.com", &["sre"]));
    let status = tokio::task::spawn_blocking(move || login.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "belay login failed: {status}");

    // slow_down on the first poll: the next one waits 5 s longer than the interval (1 s).
    let polls = issuer.polls();
    assert!(polls.len() >= 2, "{} polls", polls.len());
    let gap = polls[1] - polls[0];
    assert!(gap >= Duration::from_secs(6), "polled again after {gap:?}");

    let stored = home.path().join("belay").join("credentials");
    let mode = std::fs::metadata(&stored).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        std::fs::read_to_string(&stored)
            .unwrap()
            .contains("\"id_token\"")
    );

    let mut pending = belay(home.path());
    pending.args(["--server", &url, "pending"]);
    let out = run(pending).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("host-a:req-1"));

    let mut approve = belay(home.path());
    approve.args([
        "--server",
        &url,
        "--output",
        "json",
        "approve",
        "host-a:req-1",
    ]);
    approve.env("USER", "someone-else");
    let out = run(approve).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decided: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        decided["resolution"]["reviewer"], "bob@example.com",
        "{decided}"
    );

    let out = run({
        let mut c = belay(home.path());
        c.arg("logout");
        c
    })
    .await;
    assert!(out.status.success());
    assert!(!stored.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_login_reads_stdin_and_is_sent() {
    let issuer = TestIssuer::start(TestKey::es256("ec-1")).await;
    let url = start_server(&issuer).await;
    let _agent = submit(&url, "host-a:req-2").await;
    let home = tempfile::tempdir().unwrap();

    let mut login = belay(home.path())
        .args(["login", "--token"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(login.stdin.take().unwrap(), "{API_TOKEN}").unwrap();
    assert!(login.wait().unwrap().success());

    let mut pending = belay(home.path());
    pending.args(["--server", &url, "pending"]);
    let out = run(pending).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("host-a:req-2"));

    // A viewer token cannot decide; BELAY_TOKEN overrides the stored one.
    let mut approve = belay(home.path());
    approve.args(["--server", &url, "approve", "host-a:req-2"]);
    let out = run(approve).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ci-bot has role viewer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut wrong = belay(home.path());
    wrong
        .args(["--server", &url, "pending"])
        .env("BELAY_TOKEN", "belay_wrong");
    let out = run(wrong).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown API token"));
}
