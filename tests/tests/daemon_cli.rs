//! `belay-agent` and `belay` together, as a user runs them on a standalone host with BPF
//! LSM (run in QEMU by `cargo xtask vm-test`).
#![cfg(feature = "vm")]

use std::{net::TcpListener, path::Path, process::Command, time::Duration};

mod common;

use belay_tests::{binary, wait_until};
use common::{AGENT_UID, Agent, LONG, actor_path, ok, scrape};
use serde_json::Value;

#[test]
fn belay_run_holds_exec_and_connect_until_decided_by_the_cli() {
    let agent = Agent::start(&[]);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let actor_bin = actor_path();
    let mut actor = agent.run(&[&actor_bin, "connect", &addr.to_string()]);

    // First the exec of the command itself.
    let req = agent.one_pending();
    assert_eq!(req["action"]["kind"], "exec");
    assert_eq!(req["action"]["path"], actor_bin.as_str());
    assert_eq!(
        req["action"]["file"],
        actor_bin.as_str(),
        "confirmed by inode"
    );
    assert_eq!(req["action"]["argv"][1], "connect");
    assert_eq!(req["tgid"], actor.pid);
    let id = req["id"].as_u64().unwrap().to_string();
    let shown = ok(&agent.belay(&["show", &id]));
    assert!(shown.contains(&format!("exec {actor_bin}")), "{shown}");
    assert!(!actor.exited());
    assert!(ok(&agent.belay(&["approve", &id, "--reason", "test"])).contains("allow"));
    actor.ready().unwrap();
    actor.go().unwrap();

    // Then its connection.
    let req = agent.one_pending();
    assert_eq!(req["action"]["kind"], "connect");
    assert_eq!(req["action"]["address"], "127.0.0.1");
    assert_eq!(req["action"]["port"], addr.port());
    assert_eq!(req["action"]["protocol"], "tcp");
    let id = req["id"].as_u64().unwrap().to_string();
    let table = ok(&agent.belay(&["pending"]));
    assert!(table.contains(&format!("connect tcp {addr}")), "{table}");
    ok(&agent.belay(&["deny", &id]));
    let (out, status) = actor.finish(LONG).unwrap();
    assert_eq!(out.trim(), format!("connect err {}", libc::EPERM));
    assert_eq!(status.code(), Some(10));

    // A request cannot be decided twice.
    let again = agent.belay(&["approve", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no pending request"));

    let status = ok(&agent.belay(&["status", "--output", "json"]));
    let v: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["status"]["decided"], 2);
    assert_eq!(v["status"]["kernel"]["dropped_events"], 0);

    // The same, as Prometheus sees it.
    let metrics = scrape(agent.metrics);
    for line in [
        "belay_requests_total{outcome=\"allowed\"} 1",
        "belay_requests_total{outcome=\"denied\"} 1",
        "belay_requests_pending 0",
        "belay_kernel_paused_total 2",
        "belay_kernel_dropped_events_total 0",
        "belay_pause_seconds_count 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line:?} in\n{metrics}");
    }
}

#[test]
fn a_watched_process_cannot_decide() {
    let agent = Agent::start(&[]);
    let socket = agent.socket.display().to_string();
    // B waits for a decision; A, another watched process, tries to approve it.
    let _b = agent.run(&[&actor_path(), "connect", "127.0.0.1:9"]);
    let b_id = agent.one_pending()["id"].as_u64().unwrap().to_string();
    let mut a = agent.run(&[&actor_path(), "decide", &socket, &b_id]);
    let mut a_id = None;
    assert!(wait_until(LONG, || {
        a_id = agent
            .pending()
            .iter()
            .find(|r| r["tgid"] == a.pid)
            .map(|r| r["id"].as_u64().unwrap().to_string());
        a_id.is_some()
    }));
    ok(&agent.belay(&["approve", &a_id.unwrap()]));
    a.ready().unwrap();
    a.go().unwrap();
    // Reaching the daemon's socket is itself held: Unix sockets are policy too.
    let mut conn = None;
    assert!(wait_until(LONG, || {
        conn = agent
            .pending()
            .into_iter()
            .find(|r| r["tgid"] == a.pid && r["action"]["kind"] == "connect_unix");
        conn.is_some()
    }));
    let conn = conn.unwrap();
    assert_eq!(conn["action"]["path"], agent.socket.display().to_string());
    ok(&agent.belay(&["approve", &conn["id"].to_string()]));
    let (out, _) = a.finish(LONG).unwrap();
    assert!(out.starts_with("decide "), "{out}");
    let answer: Value = serde_json::from_str(out.trim_start_matches("decide ").trim()).unwrap();
    assert_eq!(answer["result"], "error");
    assert!(
        answer["message"].as_str().unwrap().contains("watched"),
        "refused because it is watched: {answer}"
    );
    let pending = agent.pending();
    assert_eq!(pending.len(), 1, "B's request is still pending");
    assert_eq!(pending[0]["id"].as_u64().unwrap().to_string(), b_id);
}

#[test]
fn deadline_applies_the_default_verdict() {
    let agent = Agent::start(&["--decide-timeout", "1", "--default-verdict", "deny"]);
    let mut actor = agent.run(&[&actor_path(), "connect", "127.0.0.1:9"]);
    agent.one_pending();
    let (_, status) = actor.finish(LONG).unwrap();
    assert_eq!(status.code(), Some(1), "belay run failed");
    let err = actor.stderr();
    assert!(
        err.contains("Operation not permitted"),
        "exec denied by deadline: {err}"
    );
    assert!(agent.pending().is_empty());
}

#[test]
fn shutdown_ends_pending_requests_with_the_shutdown_verdict() {
    let mut agent = Agent::start(&[]);
    let mut actor = agent.run(&[&actor_path(), "connect", "127.0.0.1:9"]);
    agent.one_pending();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "belay-agent exits cleanly on SIGTERM");
    assert!(!Path::new(&agent.socket).exists(), "socket removed");
    let (_, status) = actor.finish(LONG).unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(actor.stderr().contains("Operation not permitted"));
}

#[test]
fn cli_explains_an_unreachable_agent() {
    let out = Command::new(binary("belay").unwrap())
        .args(["--socket", "/nonexistent/agent.sock", "pending"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach belay-agent at /nonexistent/agent.sock"),
        "{err}"
    );
}

#[test]
fn a_crashed_daemon_leaves_fail_mode_and_its_successor_resolves_the_paused() {
    let agent = Agent::start(&["--stale-after", "1"]);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let actor_bin = actor_path();

    // B: enrolled and running, about to connect.
    let mut b = agent.run(&[&actor_bin, "connect", &addr]);
    let req = agent.one_pending();
    ok(&agent.belay(&["approve", &req["id"].as_u64().unwrap().to_string()]));
    b.ready().unwrap();
    // A: paused at its exec when the daemon dies.
    let mut a = agent.run(&[&actor_bin, "connect", &addr]);
    let req = agent.one_pending();
    assert_eq!(req["tgid"], a.pid);

    let pins = agent.crash();
    assert_eq!(
        belay_agent::task::state(a.pid),
        Some('T'),
        "A stays stopped"
    );
    std::thread::sleep(Duration::from_millis(1500));

    // With no heartbeat the hook applies the fail mode (deny) instead of pausing B.
    b.go().unwrap();
    let (out, status) = b.finish(LONG).unwrap();
    assert_eq!(out.trim(), format!("connect err {}", libc::EPERM));
    assert_eq!(status.code(), Some(10));

    // The next daemon finds A still paused and asks again.
    let agent = Agent::start_with(pins, &[]);
    let req = agent.one_pending();
    assert_eq!(req["tgid"], a.pid);
    assert_eq!(req["action"]["kind"], "exec");
    ok(&agent.belay(&["approve", &req["id"].as_u64().unwrap().to_string()]));
    a.ready().unwrap();
    a.go().unwrap();
    let req = agent.one_pending();
    ok(&agent.belay(&["approve", &req["id"].as_u64().unwrap().to_string()]));
    let (out, status) = a.finish(LONG).unwrap();
    assert_eq!(out.trim(), "connect ok");
    assert!(status.success());

    let status = ok(&agent.belay(&["status", "--output", "json"]));
    let v: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        v["status"]["kernel"]["fail_mode"], 1,
        "one action decided by the fail mode"
    );
}

#[test]
fn only_root_or_the_decider_group_decides_and_never_the_agents_own_uid() {
    let agent = Agent::start(&["--decider-gid", "50"]);
    let mut actor = agent.run(&[&actor_path(), "connect", "127.0.0.1:9"]);
    let req = agent.one_pending();
    assert_eq!(req["uid"], AGENT_UID);
    let id = req["id"].as_u64().unwrap().to_string();

    let refused = |out: std::process::Output, why: &str| {
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "refused because {why:?}: {err}");
    };
    // The agent's own uid, even in the decider group.
    refused(
        agent.belay_as(AGENT_UID, 50, &["approve", &id]),
        "owns the paused process",
    );
    // Neither root nor in the group.
    refused(
        agent.belay_as(2000, 2000, &["approve", &id]),
        "only root or group 50",
    );
    assert_eq!(agent.pending().len(), 1, "refusals change nothing");
    // A member of the group who is not the agent's user.
    ok(&agent.belay_as(2001, 50, &["deny", &id]));
    let (_, status) = actor.finish(LONG).unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(actor.stderr().contains("Operation not permitted"));
}

#[test]
fn a_second_daemon_on_the_same_pin_directory_is_refused() {
    let agent = Agent::start(&[]);
    let out = Command::new(binary("belay-agent").unwrap())
        .arg("--pin-dir")
        .arg(&agent.pins.0)
        .args(["--socket", "/tmp/second.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "another belay-agent is using {}",
            agent.pins.0.display()
        )),
        "{err}"
    );
    assert!(!Path::new("/tmp/second.sock").exists());
    // The first one still works.
    let mut actor = agent.run(&[&actor_path(), "connect", "127.0.0.1:9"]);
    let req = agent.one_pending();
    ok(&agent.belay(&["deny", &req["id"].to_string()]));
    assert_eq!(actor.finish(LONG).unwrap().1.code(), Some(1));
}
