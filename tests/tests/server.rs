//! belay-agent sending the requests that need a person to belay-server, where a
//! reviewer decides with `belay --server` (run in QEMU by `cargo xtask vm-test`).
#![cfg(feature = "vm")]

mod common;

use std::{
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
};

use belay_tests::{binary, wait_until};
use common::{Agent, LONG, actor_path, ok};
use serde_json::Value;

struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        Self::start_on(addr)
    }

    /// A server with a fresh database on `addr`.
    fn start_on(addr: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(binary("belay-server").unwrap())
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--db")
            .arg(dir.path().join("server.db"))
            .stdin(Stdio::null())
            .spawn()
            .expect("belay-server starts");
        assert!(
            wait_until(LONG, || TcpStream::connect(addr).is_ok()),
            "belay-server listens on {addr}"
        );
        Self {
            child,
            url: format!("http://{addr}"),
            _dir: dir,
        }
    }

    /// `belay --server URL --reviewer REVIEWER ARGS`.
    fn belay(&self, reviewer: &str, args: &[&str]) -> std::process::Output {
        Command::new(binary("belay").unwrap())
            .args(["--server", &self.url, "--reviewer", reviewer])
            .args(args)
            .output()
            .expect("belay runs")
    }

    /// Waits for a pending request on the server whose action is `kind`.
    fn pending(&self, kind: &str) -> Value {
        let mut found = None;
        assert!(
            wait_until(LONG, || {
                let out = self.belay("bob", &["pending", "--output", "json"]);
                let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                found = v["requests"]
                    .as_array()
                    .and_then(|r| r.iter().find(|r| r["action"]["kind"] == kind).cloned());
                found.is_some()
            }),
            "a pending {kind} request on belay-server"
        );
        found.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_paused_connect_is_approved_through_the_server() {
    let server = Server::start();
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
    let server = Server::start();
    let url = server.url.clone();
    drop(server);
    // The built-in policy names no owner: the session's (alice) stands for it.
    let agent = Agent::start(&["--server", &url, "--server-owner", "alice"]);
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
    // The server comes up on the same address: the agent resubmits under the same id.
    let addr = url.trim_start_matches("http://").parse().unwrap();
    let up = Server::start_on(addr);
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
