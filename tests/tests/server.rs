//! belay-agent sending the requests that need a person to belay-server, where a
//! reviewer decides with `belay --server` (run in QEMU by `cargo xtask vm-test`).
#![cfg(feature = "vm")]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use belay_tests::wait_until;
use common::belay_server::Server;
use common::{Agent, LONG, actor_path, ok};
use serde_json::Value;

#[test]
fn a_paused_connect_is_approved_through_the_server() {
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(state.path());
    let certs = server.enroll();
    // This agent belongs to carol; the host's session names alice.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "version: 1\nsubjects:\n  - {name: t, owner: carol@example.com, match: {enrolled: true}, default: ask}\n",
    )
    .unwrap();
    let agent = Agent::start(&[
        "--policy",
        policy.to_str().unwrap(),
        "--server",
        &server.url,
        "--cert-dir",
        certs.path().to_str().unwrap(),
        "--server-owner",
        "alice@example.com",
    ]);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let dst = l.local_addr().unwrap();
    let mut actor = agent.run(&[&actor_path(), "connect", &dst.to_string()]);

    // The exec of the command itself is held, and shows up on the server.
    let req = server.pending("exec");
    assert_eq!(req["action"]["path"], actor_path().as_str());
    assert_eq!(req["agent"], "t");
    assert_eq!(req["owner"], "carol@example.com", "the subject's owner");
    assert_eq!(req["pid"], actor.pid);
    let id = req["id"].as_str().unwrap().to_owned();
    ok(&server.belay("bob", &["approve", &id, "--reason", "ok"]));
    actor.ready().unwrap();
    actor.go().unwrap();

    let req = server.pending("connect");
    assert_eq!(req["action"]["address"], "127.0.0.1");
    assert_eq!(req["action"]["port"], dst.port());
    let id = req["id"].as_str().unwrap().to_owned();
    let shown = ok(&server.belay("bob", &["show", &id]));
    assert!(shown.contains(&format!("connect tcp {dst}")), "{shown}");

    // The host's own socket does not decide what the server holds.
    let local = agent.one_pending();
    assert_eq!(local["server_id"], id.as_str());
    let refused = agent.belay(&["approve", &local["id"].to_string()]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("decided on belay-server"), "{err}");

    // Nor does the agent's owner, on the server.
    let own = server.belay("carol@example.com", &["approve", &id]);
    assert!(!own.status.success());
    let err = String::from_utf8_lossy(&own.stderr);
    assert!(err.contains("belay-server:"), "{err}");

    ok(&server.belay("bob", &["approve", &id, "--reason", "internal API"]));
    let (out, status) = actor.finish(LONG).unwrap();
    assert_eq!(out.trim(), "connect ok");
    assert!(status.success());
    let shown: Value =
        serde_json::from_str(&ok(&server.belay("bob", &["show", &id, "--output", "json"])))
            .unwrap();
    assert_eq!(shown["state"], "approved");
    assert_eq!(shown["resolution"]["reviewer"], "bob");
    assert!(agent.pending().is_empty());
}

#[test]
fn requests_wait_for_a_server_that_is_down_and_reach_it_when_it_comes_back() {
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(state.path());
    let certs = server.enroll();
    let url = server.url.clone();
    drop(server);
    // The built-in policy names no owner: the session's (alice) stands for it.
    let agent = Agent::start(&[
        "--server",
        &url,
        "--cert-dir",
        certs.path().to_str().unwrap(),
        "--server-owner",
        "alice",
    ]);
    let mut actor = agent.run(&[&actor_path(), "connect", "127.0.0.1:9"]);
    // Held on the host, with nowhere to go yet; `belay status` says why.
    let local = agent.one_pending();
    assert!(local["server_id"].is_string());
    assert!(wait_until(LONG, || {
        let link = &agent.status()["server"];
        link["connected"] == false && link["last_error"].is_string() && link["awaiting"] == 1
    }));
    let table = ok(&agent.belay(&["status"]));
    assert!(
        table.contains(&format!("belay-server       {url} (not connected")),
        "{table}"
    );
    // The server comes up on the same address, with the same CA: the agent's certificate
    // still counts, and it resubmits under the same id.
    let addr = url.trim_start_matches("https://").parse().unwrap();
    let up = Server::start_on(addr, state.path());
    let req = up.pending("exec");
    assert_eq!(req["id"], local["server_id"]);
    assert_eq!(req["owner"], "alice");
    let link = agent.status()["server"].clone();
    assert_eq!(link["connected"], true, "{link}");
    assert_eq!(link["awaiting"], 1, "{link}");
    ok(&up.belay("bob", &["deny", req["id"].as_str().unwrap()]));
    let (_, status) = actor.finish(LONG).unwrap();
    assert_eq!(status.code(), Some(1), "belay run's exec denied");
    assert!(actor.stderr().contains("Operation not permitted"));
    let link = agent.status()["server"].clone();
    assert_eq!(
        (link["decided"].as_u64(), link["awaiting"].as_u64()),
        (Some(1), Some(0)),
        "{link}"
    );
}

/// An export config with one JSON Lines sink, `DIR/events.jsonl`, spooled in `DIR`.
fn jsonl_export(dir: &Path) -> PathBuf {
    let config = dir.join("export.toml");
    std::fs::write(
        &config,
        format!(
            "[spool]\ndir = \"{}\"\n\n[[sink]]\ntype = \"jsonl\"\npath = \"{}\"\n",
            dir.join("spool").display(),
            dir.join("events.jsonl").display()
        ),
    )
    .unwrap();
    config
}

/// Every file under `dir`, read whole (databases, WAL files, spools, exports).
fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

fn assert_absent(secrets: &[&str], what: &str, bytes: &[u8]) {
    for secret in secrets {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{what} holds the raw secret {secret:?}"
        );
    }
}

#[test]
fn secrets_in_argv_and_env_reach_no_reviewer_database_audit_log_or_export() {
    // Shapes from the vendors' published formats; never real credentials.
    const GITHUB: &str = "ghp_Zq7RkV2mX9pL4tW8yB3nC6dF1gH5jK0sA2eQ";
    const AWS: &str = "AKIAZ7Q4RKW2MX3PL4TW";
    const PASSWORD: &str = "Planted-Pw-9f3k2";
    const URL_PASSWORD: &str = "Hunter2-url-7x";
    let secrets = [GITHUB, AWS, PASSWORD, URL_PASSWORD];

    let state = tempfile::tempdir().unwrap();
    let server_export = tempfile::tempdir().unwrap();
    let server_config = jsonl_export(server_export.path());
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Logs are one more way out (journald, then a log shipper): both daemons' logs go to
    // files this test reads.
    let logs = tempfile::tempdir().unwrap();
    let (server_log, agent_log) = (
        logs.path().join("server.log"),
        logs.path().join("agent.log"),
    );
    let server = Server::start_logging_to(
        addr,
        state.path(),
        &["--export-config", server_config.to_str().unwrap()],
        &server_log,
    );
    let certs = server.enroll();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "version: 1\nsubjects:\n  - {name: t, owner: carol@example.com, match: {enrolled: true}, default: ask}\n",
    )
    .unwrap();
    let agent_export = tempfile::tempdir().unwrap();
    let agent_config = jsonl_export(agent_export.path());
    let agent = Agent::start_logging_to(
        &agent_log,
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--server",
            &server.url,
            "--cert-dir",
            certs.path().to_str().unwrap(),
            "--export-config",
            agent_config.to_str().unwrap(),
            "--mask-key-file",
            dir.path().join("mask.key").to_str().unwrap(),
        ],
    );
    let password_flag = format!("--password={PASSWORD}");
    let url = format!("https://bob:{URL_PASSWORD}@db.example.com/prod");
    let mut actor = agent.run_env(
        &[("GITHUB_TOKEN", GITHUB), ("AWS_ACCESS_KEY_ID", AWS)],
        &[&actor_path(), "exec", "/bin/true", &password_flag, &url],
    );

    // What the reviewer on the server sees: the shape and kind, not the value.
    let req = server.pending("exec");
    let shown = req.to_string();
    assert_absent(
        &secrets,
        "the pending request on belay-server",
        shown.as_bytes(),
    );
    assert!(shown.contains("--password=…[password:"), "{shown}");
    assert!(shown.contains("https://bob:…[password:"), "{shown}");
    assert!(shown.contains("ghp_…[github-token:"), "{shown}");
    assert!(shown.contains("AKIA…[aws-access-key:"), "{shown}");
    // And on the host's own socket.
    let local = agent.one_pending().to_string();
    assert_absent(
        &secrets,
        "the pending request on the agent's socket",
        local.as_bytes(),
    );
    let id = req["id"].as_str().unwrap().to_owned();
    ok(&server.belay("bob", &["approve", &id, "--reason", "ok"]));
    actor.ready().unwrap();
    actor.go().unwrap();
    // The actor execs /bin/true with the same argv and environment: held again.
    let second = server.pending("exec");
    assert_eq!(second["action"]["path"], "/bin/true");
    let id = second["id"].as_str().unwrap().to_owned();
    ok(&server.belay("bob", &["deny", &id, "--reason", "not now"]));
    let (_, status) = actor.finish(LONG).unwrap();
    assert_eq!(status.code(), Some(10), "the denied exec fails with EPERM");

    // The audit log, as a reviewer reads it.
    let audit = ok(&server.belay("bob", &["audit", "log", "--output", "json"]));
    assert!(audit.contains(&id), "{audit}");
    assert_absent(&secrets, "the audit log", audit.as_bytes());
    // Both exports carry the requests and their ends, masked.
    let exported = |dir: &Path, want: &str| {
        let path = dir.join("events.jsonl");
        let mut text = String::new();
        assert!(
            wait_until(LONG, || {
                text = std::fs::read_to_string(&path).unwrap_or_default();
                text.contains(want)
            }),
            "{} never showed {want}: {text}",
            path.display()
        );
        text
    };
    let from_server = exported(server_export.path(), "not now");
    assert!(
        from_server.contains("--password=…[password:"),
        "{from_server}"
    );
    let from_agent = exported(agent_export.path(), "/bin/true");
    assert!(
        from_agent.contains("--password=…[password:"),
        "{from_agent}"
    );
    // Every byte the server and the agent's exporter keep on disk: databases with
    // their WAL, spools, exports.
    drop(agent);
    drop(server);
    for (log, shows) in [
        (&server_log, id.as_str()),
        (&agent_log, "paused; waiting for a decision"),
    ] {
        let text = std::fs::read_to_string(log).unwrap();
        // Shown with the test's output when it fails.
        eprint!("{text}");
        assert!(text.contains(shows), "{} logged {shows:?}", log.display());
        assert_absent(&secrets, &log.display().to_string(), text.as_bytes());
    }
    for dir in [state.path(), server_export.path(), agent_export.path()] {
        for (path, bytes) in all_bytes(dir) {
            assert_absent(&secrets, &path.display().to_string(), &bytes);
        }
    }
}
