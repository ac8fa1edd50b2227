//! `belay-agent --policy`: subjects, rules decided in the kernel or by the daemon,
//! watching by uid, executable and cgroup, hostnames from the agent's own DNS answers,
//! and reloads (run in QEMU by `cargo xtask vm-test`).
#![cfg(feature = "vm")]

mod common;

use std::{net::TcpListener, os::unix::process::CommandExt as _, path::Path, process::Command};

use belay_tests::{Actor, binary, wait_until};
use common::{AGENT_UID, Agent, LONG, PolicyFile, actor_path, dns_server, ok, scrape};
use serde_json::Value;

fn agent_with(policy: &PolicyFile) -> Agent {
    Agent::start(&["--policy", &policy.arg()])
}

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn kernel(agent: &Agent) -> Value {
    agent.status()["kernel"].clone()
}

/// A subject "t" that may run belay-actor and connect to 127.0.0.1:`port`; anything
/// else gets `default`.
fn allow_actor_and_port(port: u16, default: &str) -> String {
    format!(
        "version: 1
subjects:
  - name: t
    owner: alice@example.com
    match: {{enrolled: true}}
    default: {default}
    exec:
      - {{name: actor, path: {actor}, action: allow}}
    egress:
      - {{name: local-port, to: [127.0.0.1], ports: [{port}], protocol: tcp, action: allow}}
",
        actor = actor_path()
    )
}

#[test]
fn rules_the_kernel_knows_are_decided_without_a_pause() {
    let (_l, port) = listener();
    let policy = PolicyFile::new(&allow_actor_and_port(port, "deny"));
    let agent = agent_with(&policy);

    // Allowed exec and connect: nothing pauses, nothing waits for a person.
    let mut a = agent.run_as(
        "t",
        &[&actor_path(), "connect", &format!("127.0.0.1:{port}")],
    );
    a.ready().unwrap();
    a.go().unwrap();
    let (out, status) = a.finish(LONG).unwrap();
    assert_eq!(out.trim(), "connect ok");
    assert!(status.success());

    // A port no rule names: the subject's default (deny), also in the kernel.
    let mut b = agent.run_as("t", &[&actor_path(), "connect", "127.0.0.1:9"]);
    b.ready().unwrap();
    b.go().unwrap();
    let (out, status) = b.finish(LONG).unwrap();
    assert_eq!(out.trim(), format!("connect err {}", libc::EPERM));
    assert_eq!(status.code(), Some(10));

    let k = kernel(&agent);
    assert_eq!(k["paused"], 0, "no pause at all: {k}");
    // Two execs and one connect allowed, one connect denied.
    assert_eq!(k["policy_decided"], 4, "{k}");
    assert!(agent.pending().is_empty());
    let metrics = scrape(agent.metrics);
    let line = "belay_policy_decisions_total{where=\"kernel\",action=\"deny\"} 1";
    assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
}

#[test]
fn an_ask_rule_becomes_a_request_naming_the_rule_subject_and_context() {
    let (_l, port) = listener();
    let policy = PolicyFile::new(&format!(
        "version: 1
subjects:
  - name: t
    owner: alice@example.com
    match: {{enrolled: true}}
    default: deny
    exec:
      - {{path: {actor}, action: allow}}
    egress:
      - name: needs-a-person
        to: [127.0.0.0/8]
        ports: [{port}]
        action: ask
        deadline: 3s
        on_timeout: allow
",
        actor = actor_path()
    ));
    let agent = agent_with(&policy);
    let mut a = agent.run_as(
        "t",
        &[&actor_path(), "connect", &format!("127.0.0.1:{port}")],
    );
    a.ready().unwrap();
    a.go().unwrap();
    let req = agent.one_pending();
    assert_eq!(req["subject"], "t");
    assert_eq!(req["owner"], "alice@example.com");
    assert_eq!(req["rule"], "needs-a-person");
    assert_eq!(req["action"]["kind"], "connect");
    assert_eq!(req["context"]["user"], "agent", "{req}");
    assert_eq!(
        req["context"]["host"],
        nix::unistd::gethostname().unwrap().to_str().unwrap()
    );
    assert_eq!(
        req["context"]["ancestry"][0]["pid"],
        std::process::id(),
        "the test spawned it: {req}"
    );
    assert_eq!(req["default_verdict"], "allow");
    let left = req["deadline_unix_ms"].as_u64().unwrap() - req["created_unix_ms"].as_u64().unwrap();
    assert!(
        (2_900..=3_100).contains(&left),
        "the rule's 3 s deadline: {left} ms"
    );
    let shown = ok(&agent.belay(&["show", &req["id"].to_string()]));
    assert!(shown.contains("rule      needs-a-person"), "{shown}");
    assert!(
        shown.contains("agent     t (owner alice@example.com)"),
        "{shown}"
    );
    // Nobody answers: the rule's own default verdict (allow) applies.
    let (out, status) = a.finish(LONG).unwrap();
    assert_eq!(out.trim(), "connect ok");
    assert!(status.success());
}

#[test]
fn the_daemon_decides_what_the_kernel_cannot_by_glob_and_argv() {
    let bin = Path::new(&actor_path())
        .parent()
        .unwrap()
        .display()
        .to_string();
    let policy = PolicyFile::new(&format!(
        "version: 1
subjects:
  - name: t
    owner: o
    match: {{enrolled: true}}
    default: ask
    exec:
      - {{name: no-exec-chains, path: \"{bin}/*\", argv: \"* exec *\", action: deny}}
      - {{name: belay-tools, path: \"{bin}/belay-*\", action: allow}}
"
    ));
    let agent = agent_with(&policy);
    // belay-actor is allowed by the glob (the daemon decides, no person is asked).
    let mut a = agent.run_as("t", &[&actor_path(), "connect", "127.0.0.1:9"]);
    a.ready().unwrap();
    assert!(agent.pending().is_empty());
    drop(a);
    // Its argv matches the deny rule: the exec fails and nobody is asked.
    let mut b = agent.run_as("t", &[&actor_path(), "exec", "/bin/true"]);
    let (_, status) = b.finish(LONG).unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(b.stderr().contains("Operation not permitted"));
    assert!(agent.pending().is_empty());
    let metrics = scrape(agent.metrics);
    for line in [
        "belay_policy_decisions_total{where=\"daemon\",action=\"allow\"} 1",
        "belay_policy_decisions_total{where=\"daemon\",action=\"deny\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[test]
fn kill_and_audit_rules_act_in_the_kernel() {
    let (_l, port) = listener();
    let policy = PolicyFile::new(&format!(
        "version: 1
subjects:
  - name: t
    owner: o
    match: {{enrolled: true}}
    default: ask
    exec:
      - {{path: {actor}, action: audit}}
    egress:
      - {{name: tripwire, to: [10.0.0.0/8], action: kill}}
      - {{to: [127.0.0.1], ports: [{port}], action: audit}}
",
        actor = actor_path()
    ));
    // What the kernel decided reaches the SIEM too.
    let export = tempfile::tempdir().unwrap();
    let events = export.path().join("events.jsonl");
    let config = export.path().join("export.toml");
    std::fs::write(
        &config,
        format!(
            "[spool]\ndir = \"{}\"\n[[sink]]\ntype = \"jsonl\"\npath = \"{}\"\n",
            export.path().join("spool").display(),
            events.display()
        ),
    )
    .unwrap();
    let agent = Agent::start(&[
        "--policy",
        &policy.arg(),
        "--export-config",
        config.to_str().unwrap(),
    ]);
    let mut a = agent.run_as(
        "t",
        &[&actor_path(), "connect", &format!("127.0.0.1:{port}")],
    );
    a.ready().unwrap();
    a.go().unwrap();
    assert_eq!(a.finish(LONG).unwrap().0.trim(), "connect ok");
    let mut b = agent.run_as("t", &[&actor_path(), "connect", "10.1.2.3:443"]);
    b.ready().unwrap();
    b.go().unwrap();
    let (_, status) = b.finish(LONG).unwrap();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "killed: {status:?}");
    let k = kernel(&agent);
    assert_eq!(k["paused"], 0, "{k}");
    let metrics = scrape(agent.metrics);
    assert!(
        wait_until(LONG, || {
            let m = scrape(agent.metrics);
            m.contains("belay_policy_decisions_total{where=\"kernel\",action=\"audit\"} 3")
                && m.contains("belay_policy_decisions_total{where=\"kernel\",action=\"kill\"} 1")
        }),
        "{metrics}"
    );
    let mut policy_events = Vec::new();
    assert!(
        wait_until(LONG, || {
            policy_events = std::fs::read_to_string(&events)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|e| e["kind"] == "policy")
                .collect();
            policy_events.len() >= 4
        }),
        "four policy events exported: {policy_events:?}"
    );
    let count = |action: &str| {
        policy_events
            .iter()
            .filter(|e| {
                let event = &e["event"];
                event["policy_action"] == action && event["decided_in"] == "kernel"
            })
            .count()
    };
    assert_eq!((count("audit"), count("kill")), (3, 1), "{policy_events:?}");
    let killed = policy_events
        .iter()
        .find(|e| e["event"]["policy_action"] == "kill")
        .unwrap();
    assert_eq!(killed["event"]["action"]["address"], "10.1.2.3", "{killed}");
}

#[test]
fn hostname_rules_use_the_names_the_agent_itself_resolved() {
    let (_l, port) = listener();
    let policy = PolicyFile::new(&format!(
        "version: 1
subjects:
  - name: t
    owner: o
    match: {{enrolled: true}}
    default: ask
    exec:
      - {{path: {actor}, action: allow}}
    egress:
      - {{name: dns, to: [127.0.0.1], ports: [53], protocol: udp, action: allow}}
      - {{name: api, to: [\"*.allowed.test\"], ports: [{port}], action: allow}}
",
        actor = actor_path()
    ));
    // The test's resolver is the one the host trusts.
    let agent = Agent::start(&["--policy", &policy.arg(), "--dns-resolver", "127.0.0.1"]);
    let server = dns_server("127.0.0.1:53", [127, 0, 0, 1], 2);
    let dst = port.to_string();

    let mut a = agent.run_as(
        "t",
        &[
            &actor_path(),
            "resolve-connect",
            "127.0.0.1:53",
            "api.allowed.test",
            &dst,
        ],
    );
    a.ready().unwrap();
    a.go().unwrap();
    let (out, status) = a.finish(LONG).unwrap();
    assert_eq!(
        out, "resolve 127.0.0.1\nconnect ok\n",
        "allowed by its name"
    );
    assert!(status.success());
    assert!(
        agent.pending().is_empty(),
        "decided by the daemon, nobody asked"
    );

    // The same address looked up under another name asks a person, and shows the name.
    // This lookup leaves a connected socket, as glibc's resolver's do.
    let mut b = agent.run_as(
        "t",
        &[
            &actor_path(),
            "resolve-connected",
            "127.0.0.1:53",
            "elsewhere.test",
            &dst,
        ],
    );
    b.ready().unwrap();
    b.go().unwrap();
    let req = agent.one_pending();
    assert_eq!(req["action"]["kind"], "connect");
    assert_eq!(
        req["action"]["hostnames"],
        serde_json::json!(["elsewhere.test"]),
        "{req}"
    );
    assert_eq!(req["rule"], Value::Null, "the subject's default asked");
    let table = ok(&agent.belay(&["pending"]));
    assert!(
        table.contains(&format!("connect tcp 127.0.0.1:{port} (elsewhere.test)")),
        "{table}"
    );
    ok(&agent.belay(&["deny", &req["id"].to_string()]));
    let (out, _) = b.finish(LONG).unwrap();
    assert!(
        out.ends_with(&format!("connect err {}\n", libc::EPERM)),
        "{out}"
    );
    server.join().unwrap();
    assert_eq!(kernel(&agent)["dns_dropped"], 0);
}

fn subject_by(matcher: &str) -> String {
    format!(
        "version: 1
subjects:
  - name: w
    owner: o
    match: {{{matcher}}}
    default: deny
"
    )
}

/// Runs belay-actor directly (not enrolled) as `uid`, then lets it connect.
fn unenrolled_actor(uid: u32) -> Actor {
    let mut c = Command::new(binary("belay-actor").unwrap());
    c.args(["connect", "127.0.0.1:9"]).uid(uid).gid(uid);
    Actor::spawn_with(&mut c).unwrap()
}

fn connect_is_denied(actor: &mut Actor) {
    actor.go().unwrap();
    let (out, status) = actor.finish(LONG).unwrap();
    assert_eq!(out.trim(), format!("connect err {}", libc::EPERM));
    assert_eq!(status.code(), Some(10));
}

#[test]
fn processes_of_a_watched_uid_are_watched_from_exec_and_at_start() {
    // Already running before the daemon: found by the start-up scan.
    let mut before = unenrolled_actor(1001);
    let policy = PolicyFile::new(&subject_by("uids: [1001]"));
    let agent = agent_with(&policy);
    // Started afterwards: watched by the kernel when it execs.
    let mut after = unenrolled_actor(1001);
    let mut other = unenrolled_actor(1002);
    connect_is_denied(&mut before);
    connect_is_denied(&mut after);
    other.go().unwrap();
    let (out, _) = other.finish(LONG).unwrap();
    assert_eq!(
        out.trim(),
        format!("connect err {}", libc::ECONNREFUSED),
        "uid 1002 is not watched"
    );
    assert_eq!(kernel(&agent)["policy_decided"], 2);
}

#[test]
fn running_a_watched_executable_makes_a_process_watched() {
    let policy = PolicyFile::new(&subject_by(&format!("executables: [{}]", actor_path())));
    let agent = agent_with(&policy);
    let mut a = unenrolled_actor(AGENT_UID);
    connect_is_denied(&mut a);
    assert_eq!(kernel(&agent)["policy_decided"], 1);
}

#[test]
fn processes_in_a_watched_cgroup_are_watched_even_without_exec() {
    let name = format!("belay-test-{}", std::process::id());
    let cg = Path::new("/sys/fs/cgroup").join(&name);
    std::fs::create_dir(&cg).unwrap();
    let policy = PolicyFile::new(&subject_by(&format!("cgroups: [/{name}]")));
    let agent = agent_with(&policy);
    let watched_before = agent.status()["watched"].as_u64().unwrap();
    // Started outside, then moved in without exec'ing: the daemon's cgroup scan finds it.
    let mut a = unenrolled_actor(AGENT_UID);
    std::fs::write(cg.join("cgroup.procs"), a.pid.to_string()).unwrap();
    assert!(
        wait_until(LONG, || agent.status()["watched"].as_u64().unwrap()
            > watched_before),
        "watched within a reconcile period"
    );
    connect_is_denied(&mut a);
    drop(a);
    let _ = std::fs::remove_dir(&cg);
}

#[test]
fn a_watched_process_cannot_enroll_itself_into_another_subject() {
    let policy = PolicyFile::new(
        "version: 1
subjects:
  - {name: strict, owner: o, match: {enrolled: true}, default: ask}
  - {name: lenient, owner: o, match: {enrolled: true}, default: allow}
",
    );
    let agent = agent_with(&policy);
    let socket = agent.socket.display().to_string();
    let belay = binary("belay").unwrap().display().to_string();
    let mut a = agent.run_as(
        "strict",
        &[
            &actor_path(),
            "exec",
            &belay,
            "--socket",
            &socket,
            "run",
            "--subject",
            "lenient",
            "--",
            "/bin/true",
        ],
    );
    // Its own exec, the exec of `belay run`, and its connect to the daemon's socket: each
    // asks a person.
    for _ in 0..3 {
        let req = agent.one_pending();
        assert_eq!(req["subject"], "strict");
        ok(&agent.belay(&["approve", &req["id"].to_string()]));
        if a.pid == req["tgid"] && req["action"]["path"] == actor_path().as_str() {
            a.ready().unwrap();
            a.go().unwrap();
        }
    }
    let (_, status) = a.finish(LONG).unwrap();
    assert_eq!(status.code(), Some(1));
    let err = a.stderr();
    assert!(err.contains("already watched as subject strict"), "{err}");

    // Without --subject and with two open subjects, the user is told to pick one.
    let out = Command::new(&belay)
        .args(["--socket", &socket, "run", "--", "/bin/true"])
        .uid(AGENT_UID)
        .gid(AGENT_UID)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("several subjects accept enrollment (strict, lenient)"),
        "{err}"
    );
}

#[test]
fn a_bad_edit_is_refused_and_a_good_one_applies_without_losing_requests() {
    let (_l, port) = listener();
    let policy = PolicyFile::new(&allow_actor_and_port(port, "ask"));
    let agent = agent_with(&policy);
    // A request waiting for a person while the policy changes.
    let mut waiting = agent.run_as("t", &[&actor_path(), "connect", "127.0.0.1:9"]);
    waiting.ready().unwrap();
    waiting.go().unwrap();
    let req = agent.one_pending();

    policy.replace("version: 1\nsubjects:\n  - name: t\n    owner: o\n    default: alow\n");
    let mut st = Value::Null;
    assert!(
        wait_until(LONG, || {
            st = agent.status();
            st["policy"]["failed_reloads"] == 1
        }),
        "the edit is noticed: {st}"
    );
    let err = st["policy"]["last_error"].as_str().unwrap();
    assert!(err.contains("policy.yaml:5:"), "file and line: {err}");
    assert!(err.contains("alow"), "{err}");
    assert_eq!(agent.pending().len(), 1, "the request survives");

    // The old policy is still in force: the allowed port still connects.
    let mut a = agent.run_as(
        "t",
        &[&actor_path(), "connect", &format!("127.0.0.1:{port}")],
    );
    a.ready().unwrap();
    a.go().unwrap();
    assert_eq!(a.finish(LONG).unwrap().0.trim(), "connect ok");

    // A good edit, picked up on SIGHUP: now port 9 is allowed in the kernel too.
    let text = allow_actor_and_port(port, "ask")
        .replace(&format!("ports: [{port}]"), &format!("ports: [{port}, 9]"));
    std::fs::write(&policy.path, text).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    assert!(wait_until(LONG, || agent.status()["policy"]["reloads"]
        .as_u64()
        >= Some(1)));
    let st = agent.status();
    assert_eq!(st["policy"]["last_error"], Value::Null);
    let pending = agent.pending();
    assert_eq!(pending.len(), 1, "still pending after the reload");
    assert_eq!(pending[0]["id"], req["id"]);
    let mut b = agent.run_as("t", &[&actor_path(), "connect", "127.0.0.1:9"]);
    b.ready().unwrap();
    b.go().unwrap();
    let (out, _) = b.finish(LONG).unwrap();
    assert_eq!(
        out.trim(),
        format!("connect err {}", libc::ECONNREFUSED),
        "allowed now, nothing listens"
    );
    ok(&agent.belay(&["deny", &req["id"].to_string()]));
    assert_eq!(waiting.finish(LONG).unwrap().1.code(), Some(10));
}

#[test]
fn an_invalid_policy_stops_the_daemon_from_starting_with_file_and_line() {
    let policy = PolicyFile::new(
        "version: 1\nsubjects:\n  - name: t\n    owner: o\n    egress:\n      - {to: [10.0.0.1/8], action: allow}\n",
    );
    let out = Command::new(binary("belay-agent").unwrap())
        .args(["--policy", &policy.arg(), "--socket", "/tmp/never.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("policy.yaml:6:"), "{err}");
    assert!(err.contains("outside the /8 prefix"), "{err}");
    assert!(!Path::new("/tmp/never.sock").exists());
}

#[test]
fn unix_socket_destinations_follow_the_policy_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let ok_path = dir.path().join("allowed-1.sock");
    let other = dir.path().join("other.sock");
    let _a = std::os::unix::net::UnixListener::bind(&ok_path).unwrap();
    let _b = std::os::unix::net::UnixListener::bind(&other).unwrap();
    // The agents run as AGENT_UID and must be able to reach the sockets.
    use std::os::unix::fs::PermissionsExt as _;
    for p in [dir.path(), &ok_path, &other] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let policy = PolicyFile::new(&format!(
        "version: 1
subjects:
  - name: t
    owner: o
    match: {{enrolled: true}}
    default: ask
    exec:
      - {{path: {actor}, action: allow}}
    egress:
      - {{name: sockets, to: [\"unix:{dir}/allowed-*.sock\"], action: allow}}
  - name: no-unix-rules
    owner: o
    match: {{enrolled: true}}
    default: {{exec: allow, egress: deny}}
",
        actor = actor_path(),
        dir = dir.path().display()
    ));
    let agent = agent_with(&policy);
    let connect = |subject: &str, path: &std::path::Path| {
        let mut a = agent.run_as(
            subject,
            &[&actor_path(), "unix-connect", &path.display().to_string()],
        );
        a.ready().unwrap();
        a.go().unwrap();
        a
    };
    // Named by a rule: the daemon allows it.
    let mut a = connect("t", &ok_path);
    assert_eq!(a.finish(LONG).unwrap().0.trim(), "connect ok");
    // Not named: the default asks a person, who sees the path.
    let mut b = connect("t", &other);
    let req = agent.one_pending();
    assert_eq!(req["action"]["kind"], "connect_unix");
    assert_eq!(req["action"]["path"], other.display().to_string());
    assert_eq!(req["action"]["protocol"], "unix-stream");
    let table = ok(&agent.belay(&["pending"]));
    assert!(
        table.contains(&format!("connect unix-stream {}", other.display())),
        "{table}"
    );
    ok(&agent.belay(&["deny", &req["id"].to_string()]));
    assert_eq!(b.finish(LONG).unwrap().1.code(), Some(10));
    // A subject without Unix rules gets its egress default in the kernel, no pause.
    let paused = kernel(&agent)["paused"].as_u64().unwrap();
    let mut c = connect("no-unix-rules", &ok_path);
    assert_eq!(c.finish(LONG).unwrap().1.code(), Some(10));
    assert_eq!(
        kernel(&agent)["paused"].as_u64().unwrap(),
        paused,
        "decided in the kernel"
    );
}
