//! Ways around the hold, tried by a watched unprivileged process (`belay-evade`), each
//! asserting that the kernel refused and that the forbidden effect did not happen (run
//! in QEMU by `cargo xtask vm-test`). Each case names the class of issue 13 it closes.
#![cfg(feature = "vm")]

mod common;

use std::{
    io::{ErrorKind, Read as _},
    net::{TcpListener, TcpStream, UdpSocket},
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use agent_common::SubjectConf;
use belay_agent::{
    kernel::{Enforcer, FailMode, Loaded, LsmBackend, Verdict},
    policy::KernelTables,
};
use belay_tests::{Actor, PinDir, binary};
use common::{AGENT_UID, Agent, Forge, LONG, PolicyFile, dns_server, dns_server_forging};

fn evade_path() -> String {
    binary("belay-evade").unwrap().display().to_string()
}

/// Subject `t`: may run anything and reach anywhere but this host's loopback.
const NO_LOOPBACK: &str = "version: 1
subjects:
  - name: t
    owner: alice@example.com
    match: {enrolled: true}
    default: {exec: allow, egress: allow}
    egress:
      - {name: no-loopback, to: [127.0.0.0/8, \"::1\"], action: deny}
";

fn agent_no_loopback() -> (Agent, PolicyFile) {
    let policy = PolicyFile::new(NO_LOOPBACK);
    let agent = Agent::start(&["--policy", &policy.arg()]);
    (agent, policy)
}

/// Runs `belay-evade ARGS` watched as subject `t` (as the agents' uid) and returns its
/// result line.
fn evade(agent: &Agent, args: &[&str]) -> String {
    let evade = evade_path();
    let mut cmd = vec![evade.as_str()];
    cmd.extend_from_slice(args);
    let mut a = agent.run_as("t", &cmd);
    a.ready().unwrap();
    a.go().unwrap();
    let (out, _) = a.finish(LONG).unwrap();
    out.trim().to_owned()
}

fn nothing_arrives(sock: &UdpSocket) {
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    match sock.recv(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a datagram arrived: {other:?}"),
    }
}

fn no_connection(l: &TcpListener) {
    l.set_nonblocking(true).unwrap();
    assert!(
        matches!(l.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock),
        "a connection arrived"
    );
}

// Class 1: an address on an IP socket is judged as the kernel will use it.

#[test]
fn class1_an_unspec_family_datagram_is_judged_as_the_ipv4_it_reaches() {
    let (agent, _policy) = agent_no_loopback();
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = rx.local_addr().unwrap().to_string();
    assert_eq!(
        evade(&agent, &["udp-unspec", &addr]),
        format!("udp-unspec err {}", libc::EPERM)
    );
    nothing_arrives(&rx);

    // A family belay cannot classify on an IPv4 socket: denied and counted, not passed
    // to the protocol.
    let appletalk = libc::AF_APPLETALK.to_string();
    assert_eq!(
        evade(&agent, &["udp-family", &appletalk, &addr]),
        format!("udp-family err {}", libc::EPERM)
    );
    nothing_arrives(&rx);
    let k = agent.status()["kernel"].clone();
    assert_eq!(k["unclassified_denied"], 1, "{k}");
}

#[test]
fn class1_the_unspecified_address_is_judged_as_the_loopback_it_reaches() {
    let (agent, _policy) = agent_no_loopback();
    let l4 = TcpListener::bind("0.0.0.0:0").unwrap();
    let port4 = l4.local_addr().unwrap().port();
    assert_eq!(
        evade(&agent, &["connect", &format!("0.0.0.0:{port4}")]),
        format!("connect err {}", libc::EPERM)
    );
    no_connection(&l4);
    let l6 = TcpListener::bind("[::1]:0").unwrap();
    let port6 = l6.local_addr().unwrap().port();
    assert_eq!(
        evade(&agent, &["connect", &format!("[::]:{port6}")]),
        format!("connect err {}", libc::EPERM)
    );
    no_connection(&l6);
}

/// A one-to-many SCTP socket of this (root, unwatched) process listening on every
/// address, nonblocking: (socket, port).
fn sctp_listener() -> (std::os::fd::OwnedFd, u16) {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    // SAFETY: plain syscalls on a fresh fd we own.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK,
            132,
        );
        assert!(
            fd >= 0,
            "no SCTP in the VM (the sctp module should be loaded by /init): {}",
            std::io::Error::last_os_error()
        );
        let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        let len = size_of::<libc::sockaddr_in>() as u32;
        assert_eq!(libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len), 0);
        assert_eq!(libc::listen(fd.as_raw_fd(), 16), 0);
        let mut len = len;
        libc::getsockname(fd.as_raw_fd(), (&raw mut sa).cast(), &raw mut len);
        (fd, u16::from_be(sa.sin_port))
    }
}

/// The next message on `listener`, if one came within half a second.
fn sctp_message(listener: &std::os::fd::OwnedFd) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd as _;
    for _ in 0..10 {
        let mut buf = [0u8; 64];
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(listener.as_raw_fd(), buf.as_mut_ptr().cast(), 64, 0) };
        if n >= 0 {
            return Some(buf[..n as usize].to_vec());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn class1_sctp_and_mptcp_destinations_are_held() {
    let (agent, _policy) = agent_no_loopback();
    // An address of this host outside the denied 127.0.0.0/8.
    let _ = Command::new("ip")
        .args(["addr", "add", "10.9.9.9/32", "dev", "lo"])
        .status();
    let (listener, port) = sctp_listener();
    let denied = format!("127.0.0.1:{port}");
    let allowed = format!("10.9.9.9:{port}");
    let eperm = libc::EPERM;

    // MPTCP is TCP by another protocol number: the same connect hook holds it.
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap().to_string();
    assert_eq!(
        evade(&agent, &["mptcp-connect", &tcp_addr]),
        format!("mptcp-connect err {eperm}")
    );
    no_connection(&tcp);

    // Each SCTP door, tried in turn; all are compared at the end, so a failure shows
    // every door that was open.
    let both = format!("{allowed},{denied}");
    let doors = [
        // By connect.
        vec!["sctp-connect", &denied],
        // By connectx, which names addresses in a setsockopt.
        vec!["sctp-connectx", &denied],
        // Several addresses at once cannot be held one by one: denied and counted, even
        // when the first is allowed.
        vec!["sctp-connectx", &both],
        // A message to an allowed address that adds a denied one as a second peer.
        vec!["sctp-send", &allowed, "127.0.0.1"],
    ];
    let results: Vec<String> = doors.iter().map(|d| evade(&agent, d)).collect();
    let held: Vec<String> = doors
        .iter()
        .map(|d| format!("{} err {eperm}", d[0]))
        .collect();
    assert_eq!(results, held, "{doors:?}");
    assert_eq!(
        sctp_message(&listener),
        None,
        "a denied SCTP message arrived"
    );
    let k = agent.status()["kernel"].clone();
    assert_eq!(k["unclassified_denied"], 2, "{k}");

    // What is allowed still works: the denials above were the hooks' doing.
    assert_eq!(
        evade(&agent, &["sctp-connectx", &allowed]),
        "sctp-connectx ok"
    );
    assert_eq!(evade(&agent, &["sctp-send", &allowed, "-"]), "sctp-send ok");
    assert_eq!(sctp_message(&listener).as_deref(), Some(&b"hello"[..]));
}

// Class 2: names are learned only from resolvers the host trusts.

/// An agent whose subject `t` may query DNS servers at `dns_to` and reach
/// `*.allowed.test` on the returned listener's port, and nothing else; the host trusts
/// the resolver at 127.0.0.1.
fn agent_with_hostname_rule(dns_to: &str) -> (Agent, PolicyFile, TcpListener) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let policy = PolicyFile::new(&format!(
        "version: 1
subjects:
  - name: t
    owner: alice@example.com
    match: {{enrolled: true}}
    default: {{exec: allow, egress: deny}}
    egress:
      - {{name: dns, to: [{dns_to}], ports: [53], protocol: udp, action: allow}}
      - {{name: api, to: [\"*.allowed.test\"], ports: [{port}], action: allow}}
"
    ));
    let agent = Agent::start(&["--policy", &policy.arg(), "--dns-resolver", "127.0.0.1"]);
    (agent, policy, l)
}

/// Runs `belay-actor resolve-connect SERVER NAME PORT` as subject `t`: asks `server`
/// for `name`, then connects to the answer on `l`'s port. Asserts the connect was
/// refused (the answer taught no name the rule allows), that nothing reached `l`, and
/// that the answer was counted as ignored for `reason`.
fn assert_taught_nothing(agent: &Agent, l: &TcpListener, server: &str, name: &str, reason: &str) {
    let port = l.local_addr().unwrap().port().to_string();
    let actor = common::actor_path();
    let mut a = agent.run_as("t", &[&actor, "resolve-connect", server, name, &port]);
    a.ready().unwrap();
    a.go().unwrap();
    let (out, _) = a.finish(LONG).unwrap();
    assert_eq!(
        out,
        format!("resolve 127.0.0.1\nconnect err {}\n", libc::EPERM),
        "{reason}: the answer made 127.0.0.1 api.allowed.test"
    );
    no_connection(l);
    let metrics = common::scrape(agent.metrics);
    let line = format!("belay_dns_answers_ignored_total{{reason=\"{reason}\"}} 1");
    assert!(metrics.lines().any(|m| m == line), "{line} in\n{metrics}");
}

#[test]
fn class2_a_resolver_of_the_agents_choosing_teaches_no_hostname() {
    let (agent, _policy, l) = agent_with_hostname_rule("127.0.0.0/8");
    // The host trusts 127.0.0.1; the agent asks a server of its own at 127.0.0.2.
    let rogue = dns_server("127.0.0.2:53", [127, 0, 0, 1], 1);
    assert_taught_nothing(&agent, &l, "127.0.0.2:53", "api.allowed.test", "resolver");
    rogue.join().unwrap();
}

#[test]
fn class2_an_answer_to_no_query_the_process_sent_teaches_no_hostname() {
    let (agent, _policy, l) = agent_with_hostname_rule("127.0.0.1");
    // The trusted resolver's address answers what the process did not ask: as an answer
    // injected from that address would.
    for (forge, reason) in [
        (Forge::Question("api.allowed.test"), "other_question"),
        (Forge::Id, "unasked"),
    ] {
        let server = dns_server_forging("127.0.0.1:53", [127, 0, 0, 1], 1, forge);
        assert_taught_nothing(&agent, &l, "127.0.0.1:53", "harmless.test", reason);
        server.join().unwrap();
    }
}

// Class 3: what is executed is judged by the file, not by the string the caller passed.

/// A directory for the agents' uid: `tools/ok` (what a glob allows) and `evil/prog`
/// (anything else), both copies of `belay-evade`.
fn tool_tree() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    for sub in ["tools", "evil"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    std::fs::copy(evade_path(), dir.path().join("tools/ok")).unwrap();
    std::fs::copy(evade_path(), dir.path().join("evil/prog")).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn class3_an_exec_is_judged_by_the_file_it_runs_not_the_path_string() {
    let tree = tool_tree();
    let base = tree.path().display().to_string();
    let policy = PolicyFile::new(&format!(
        "version: 1
subjects:
  - name: t
    owner: alice@example.com
    match: {{enrolled: true}}
    default: {{exec: deny, egress: allow}}
    exec:
      - {{name: evade, path: {evade}, action: allow}}
      - {{name: tools, path: \"{base}/tools/**\", action: allow}}
",
        evade = evade_path()
    ));
    let agent = Agent::start(&["--policy", &policy.arg()]);
    // What the glob allows runs.
    let ok = format!("{base}/tools/ok");
    assert_eq!(evade(&agent, &["exec-hello", &ok]), "hello ok");
    // `..` makes the string match the glob; the file is elsewhere.
    let dotdot = format!("{base}/tools/../evil/prog");
    assert_eq!(
        evade(&agent, &["exec-hello", &dotdot]),
        format!("exec-hello err {}", libc::EPERM)
    );
    // In a user + mount namespace of its own, a bind mount puts any file at an allowed
    // path.
    let evil = format!("{base}/evil/prog");
    assert_eq!(
        evade(&agent, &["userns-bind-exec", &evil, &ok]),
        format!("userns-bind-exec err {}", libc::EPERM)
    );
}

// Class 4: a Unix socket is judged as the socket the kernel will reach.

#[test]
fn class4_other_spellings_of_a_denied_unix_socket_are_denied() {
    use std::os::unix::{fs::PermissionsExt as _, net::UnixListener};
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = dir.path().display().to_string();
    let real = format!("{base}/real.sock");
    let l = UnixListener::bind(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
    l.set_nonblocking(true).unwrap();
    std::os::unix::fs::symlink(&real, format!("{base}/link.sock")).unwrap();
    let policy = PolicyFile::new(&format!(
        "version: 1
subjects:
  - name: t
    owner: alice@example.com
    match: {{enrolled: true}}
    default: {{exec: allow, egress: allow}}
    egress:
      - {{name: no-real, to: [\"unix:{real}\"], action: deny}}
"
    ));
    let agent = Agent::start(&["--policy", &policy.arg()]);
    let slashes = format!("{}//real.sock", base);
    let dot = format!("{base}/./real.sock");
    let link = format!("{base}/link.sock");
    for path in [real.as_str(), &slashes, &dot, &link] {
        assert_eq!(
            evade(&agent, &["unix-connect", path]),
            format!("unix-connect err {}", libc::EPERM),
            "{path}"
        );
        assert!(
            matches!(l.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock),
            "a connection through {path} arrived"
        );
    }
}

#[test]
fn class4_a_socket_swapped_during_the_pause_is_not_reached() {
    use std::os::unix::{fs::PermissionsExt as _, net::UnixListener};
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = dir.path().display().to_string();
    let listen = |name: &str| {
        let path = format!("{base}/{name}");
        let l = UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        l.set_nonblocking(true).unwrap();
        (l, path)
    };
    let (ok, ok_path) = listen("ok.sock");
    let (secret, secret_path) = listen("secret.sock");
    let link = format!("{base}/link.sock");
    let point_link_at = |target: &str| {
        let tmp = format!("{base}/link.tmp");
        std::os::unix::fs::symlink(target, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
    };
    let policy = PolicyFile::new(
        "version: 1
subjects:
  - name: t
    owner: alice@example.com
    match: {enrolled: true}
    default: {exec: allow, egress: ask}
",
    );
    let agent = Agent::start(&["--policy", &policy.arg()]);
    let evade = evade_path();
    let nothing_at = |l: &UnixListener, what: &str| {
        assert!(
            matches!(l.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock),
            "a connection reached {what}"
        );
    };
    let connect_approving = |swap_to: Option<&str>| {
        point_link_at(&ok_path);
        let mut a = agent.run_as("t", &[&evade, "unix-connect", &link]);
        a.ready().unwrap();
        a.go().unwrap();
        let req = agent.one_pending();
        assert_eq!(req["action"]["kind"], "connect_unix", "{req}");
        if let Some(target) = swap_to {
            point_link_at(target);
        }
        common::ok(&agent.belay(&["approve", &req["id"].to_string()]));
        let (out, _) = a.finish(LONG).unwrap();
        out.trim().to_owned()
    };

    // Approved and unchanged: it connects to what was shown.
    assert_eq!(connect_approving(None), "unix-connect ok");
    assert!(ok.accept().is_ok(), "the approved connection arrived");

    // Approved, then the link is pointed elsewhere before the call restarts: the
    // kernel finds another socket than the one reviewed, and refuses it.
    assert_eq!(
        connect_approving(Some(&secret_path)),
        format!("unix-connect err {}", libc::EPERM)
    );
    nothing_at(&secret, "the socket swapped in");
    nothing_at(&ok, "the reviewed socket");
    let k = agent.status()["kernel"].clone();
    assert_eq!(k["unix_peer_denied"], 1, "{k}");
}

// Class 5: what was reviewed is what runs.

#[test]
fn class5_argv_rewritten_after_review_does_not_run() {
    let agent = Agent::start(&[]);
    let evade = evade_path();
    let approve_next = |what: &str| {
        let req = agent.one_pending();
        common::ok(&agent.belay(&["approve", &req["id"].to_string()]));
        assert_eq!(req["action"]["kind"], "exec", "{what}: {req}");
        req
    };

    // Unchanged, an approved exec runs: the check passes what was shown.
    let mut a = agent.run(&[&evade, "exec-hello", &evade]);
    approve_next("belay-evade itself");
    a.ready().unwrap();
    a.go().unwrap();
    let req = approve_next("exec-hello");
    assert_eq!(req["action"]["argv"][1], "hello", "{req}");
    let (out, status) = a.finish(LONG).unwrap();
    assert_eq!(out.trim(), "hello ok");
    assert!(status.success());

    // Shared memory rewritten by another process while a person looks at `hello`.
    let mut b = agent.run(&[&evade, "exec-swap", &evade]);
    approve_next("belay-evade itself");
    b.ready().unwrap();
    b.go().unwrap();
    let req = agent.one_pending();
    assert_eq!(
        req["action"]["argv"][1], "hello",
        "the reviewer sees hello: {req}"
    );
    // The rewrite happens half a second into the pause.
    std::thread::sleep(Duration::from_millis(1500));
    common::ok(&agent.belay(&["approve", &req["id"].to_string()]));
    let (out, status) = b.finish(LONG).unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "killed before it ran `evil!`: out {out:?}, err {}",
        b.stderr()
    );
    let k = agent.status()["kernel"].clone();
    assert_eq!(k["exec_mismatch_killed"], 1, "{k}");
}

#[test]
fn class5_a_stray_sigcont_makes_no_second_request() {
    let agent = Agent::start(&[]);
    let evade = evade_path();
    let mut a = agent.run(&[&evade, "hello"]);
    let req = agent.one_pending();
    // Someone resumes the paused task: it restarts the exec and pauses again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.pid as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let pending = agent.pending();
    assert_eq!(pending.len(), 1, "one request for one action: {pending:?}");
    assert_eq!(pending[0]["id"], req["id"]);
    common::ok(&agent.belay(&["approve", &req["id"].to_string()]));
    a.ready().unwrap();
    a.go().unwrap();
    let (out, _) = a.finish(LONG).unwrap();
    assert_eq!(out.trim(), "hello ok");
}

// Class 6: acting through another process of the same user.

/// An unwatched process of the agents' uid holding a connection to `l`, and the
/// server side of that connection.
struct Victim {
    actor: Actor,
    fd: String,
    conn: TcpStream,
}

fn victim(l: &TcpListener) -> Victim {
    let addr = l.local_addr().unwrap().to_string();
    let mut c = Command::new(evade_path());
    c.args(["hold-socket", &addr]).uid(AGENT_UID).gid(AGENT_UID);
    let mut actor = Actor::start(&mut c).unwrap();
    let line = actor.read_line().unwrap();
    let fd = line
        .strip_prefix("holding fd ")
        .unwrap_or_else(|| panic!("victim said {line:?}"))
        .to_owned();
    let (conn, _) = l.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    Victim { actor, fd, conn }
}

#[test]
fn class6_a_watched_process_cannot_reach_into_an_unwatched_process_of_its_user() {
    let (agent, _policy) = agent_no_loopback();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut v = victim(&l);
    let pid = v.actor.pid.to_string();

    // Its connected socket, taken with pidfd_getfd and written to.
    assert_eq!(
        evade(&agent, &["pidfd-getfd", &pid, &v.fd, "stolen"]),
        format!("pidfd-getfd err {}", libc::EPERM)
    );
    let mut buf = [0u8; 16];
    match v.conn.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the victim's connection carried the attacker's data: {other:?}"),
    }
    // Taking it over with ptrace, or writing its memory.
    assert_eq!(
        evade(&agent, &["ptrace-attach", &pid]),
        format!("ptrace-attach err {}", libc::EPERM)
    );
    // (mm_access answers a refusal with EACCES.)
    assert_eq!(
        evade(&agent, &["proc-mem", &pid]),
        format!("proc-mem err {}", libc::EACCES)
    );
    let k = agent.status()["kernel"].clone();
    assert_eq!(k["ptrace_denied"], 3, "each refusal was belay's: {k}");

    // The same calls from an unwatched process of that user are the kernel's business.
    for case in ["proc-mem", "ptrace-attach"] {
        let out = Command::new(evade_path())
            .args([case, &pid])
            .uid(AGENT_UID)
            .gid(AGENT_UID)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("{case} ok")),
            "{out:?}"
        );
    }
    drop(v.actor);
}

// Class 7: fail-open spots.

#[tokio::test(flavor = "multi_thread")]
async fn class7_a_process_that_matches_a_subject_when_the_watch_list_is_full_is_killed() {
    const CAPACITY: u32 = 4;
    let pins = PinDir::new();
    let loaded = Loaded::load_with(&pins.0, Some(CAPACITY)).expect("load with a small map");
    let (enforcer, _events) =
        Enforcer::start(loaded, Duration::from_secs(30), FailMode::Deny).unwrap();
    // Fill the list with processes that do not exist.
    for i in 0..CAPACITY {
        enforcer.watch(4_100_000 + i).await.unwrap();
    }
    let subject = 77;
    let tables = KernelTables {
        subjects: vec![(subject, SubjectConf::default())],
        watch_uid: vec![(AGENT_UID, subject)],
        ..KernelTables::default()
    };
    enforcer.apply_policy(tables).await.unwrap();

    let out = tokio::task::spawn_blocking(|| {
        Command::new(evade_path())
            .arg("hello")
            .uid(AGENT_UID)
            .gid(AGENT_UID)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "killed before it ran: {out:?}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hello ok"));
    let c = enforcer.counters().await.unwrap();
    assert_eq!(c.watch_killed, 1, "{c:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn class7_a_flood_of_dns_answers_crowds_out_neither_a_pause_nor_the_heartbeat() {
    let pins = PinDir::new();
    let loaded = Loaded::load(&pins.0).unwrap();
    // A short staleness, and a daemon slow to digest each answer: the flood below keeps
    // the answers' buffer full for far longer than `stale_after`.
    let backend = LsmBackend::new(loaded, Duration::from_secs(2), FailMode::Deny).unwrap();
    let (enforcer, mut events) = Enforcer::start_backend(
        backend,
        Box::new(|_| std::thread::sleep(Duration::from_millis(5))),
    )
    .unwrap();

    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = l.local_addr().unwrap().to_string();
    let mut c = Command::new(evade_path());
    c.args(["recv-then-connect", "3000", &target]);
    let mut actor = Actor::start(&mut c).unwrap();
    let line = actor.read_line().unwrap();
    let port: u16 = line
        .strip_prefix("udp ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("actor said {line:?}"));
    actor.ready().unwrap();
    enforcer.watch(actor.pid).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let dns = UdpSocket::bind("127.0.0.1:53").expect("port 53 (root)");
            // A DNS response header: id 1, QR set, nothing in it.
            let answer = [0u8, 1, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0];
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if dns.send_to(&answer, ("127.0.0.1", port)).is_ok() {
                    sent += 1;
                }
            }
            sent
        })
    };
    actor.go().unwrap();

    // The connect after the flood pauses: its event reaches the daemon.
    let ev = tokio::time::timeout(LONG, async {
        loop {
            let ev = events.recv().await.expect("events open");
            if ev.is_pause() {
                return ev;
            }
        }
    })
    .await
    .expect("the connect paused despite the flood");
    assert_eq!(ev.tgid, actor.pid);
    // The daemon digests the answers' backlog for longer than the heartbeat may be
    // stale.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = enforcer.counters().await.unwrap();
    assert_eq!(c.dropped_events, 0, "no pause was lost: {c:?}");
    assert_eq!(c.fail_mode, 0, "the heartbeat never went stale: {c:?}");
    assert!(
        c.dns_dropped > 0,
        "the flood did overflow the answers: {c:?}"
    );
    enforcer.resolve(ev.key, Verdict::Allow).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    let (out, _) = actor.finish(LONG).unwrap();
    assert_eq!(out.trim(), "recv-then-connect ok", "after {sent} answers");
    l.accept().expect("the allowed connection arrived");
}
