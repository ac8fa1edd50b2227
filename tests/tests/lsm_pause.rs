//! The pause mechanism on a real kernel with BPF LSM (run in QEMU by `cargo xtask
//! vm-test`, on Debian's 6.1 and 6.12 kernels): watched processes' connect and exec are
//! stopped in the kernel, and continue, fail with EPERM, or die by the verdict.
#![cfg(feature = "vm")]

use std::{io::ErrorKind, net::TcpListener, os::unix::process::ExitStatusExt as _, time::Duration};

use belay_agent::{
    kernel::{Action, Enforcer, FailMode, Loaded, PauseEvent, Transport, Verdict},
    task,
};
use belay_tests::{Actor, PinDir, wait_until};
use tokio::sync::mpsc::UnboundedReceiver;

const LONG: Duration = Duration::from_secs(20);

/// The enforcer, its events, and the pin directory that lives as long as the test.
async fn start() -> (Enforcer, UnboundedReceiver<PauseEvent>, PinDir) {
    let pins = PinDir::new();
    let loaded = Loaded::load(&pins.0).expect("kernel programs load and attach");
    let (enforcer, events) =
        Enforcer::start(loaded, Duration::from_secs(30), FailMode::Deny).expect("enforcer starts");
    (enforcer, events, pins)
}

async fn next_event(events: &mut UnboundedReceiver<PauseEvent>) -> PauseEvent {
    tokio::time::timeout(LONG, events.recv())
        .await
        .expect("a pause event within 20 s")
        .expect("event channel open")
}

/// Starts `belay-actor ARGS` watched, lets it act, and returns it with the first event
/// its action causes.
async fn watched(
    enforcer: &Enforcer,
    events: &mut UnboundedReceiver<PauseEvent>,
    args: &[&str],
) -> (Actor, PauseEvent) {
    let mut actor = Actor::spawn(args).unwrap();
    enforcer.watch(actor.pid).await.unwrap();
    actor.go().unwrap();
    let ev = next_event(events).await;
    (actor, ev)
}

/// The task is stopped in the kernel and stays stopped: the action has not happened.
fn assert_held(actor: &mut Actor) {
    assert!(
        wait_until(LONG, || task::state(actor.pid) == Some('T')),
        "paused process shows state T, got {:?}",
        task::state(actor.pid)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        task::state(actor.pid),
        Some('T'),
        "still stopped 300 ms later"
    );
    assert!(!actor.exited(), "paused process has not exited");
}

fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

fn no_connection_yet(l: &TcpListener) -> bool {
    matches!(l.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_is_held_until_allowed_then_completes() {
    let (enforcer, mut events, _pins) = start().await;
    let (l, addr) = listener();
    let (mut actor, ev) = watched(&enforcer, &mut events, &["connect", &addr]).await;
    assert_eq!(ev.tgid, actor.pid);
    assert_eq!(
        ev.action,
        Action::Connect {
            addr: addr.parse().unwrap(),
            transport: Transport::Tcp,
        }
    );
    assert_held(&mut actor);
    assert!(
        no_connection_yet(&l),
        "the connection was not made while paused"
    );

    enforcer.resolve(ev.key, Verdict::Allow).await.unwrap();
    let (out, status) = actor.finish(LONG).unwrap();
    assert_eq!(out.trim(), "connect ok");
    assert!(status.success());
    l.set_nonblocking(false).unwrap();
    assert!(l.accept().is_ok(), "the listener got the connection");
    let c = enforcer.counters().await.unwrap();
    assert_eq!((c.paused, c.verdicts_applied, c.dropped_events), (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_denied_fails_with_eperm() {
    let (enforcer, mut events, _pins) = start().await;
    let (l, addr) = listener();
    let (mut actor, ev) = watched(&enforcer, &mut events, &["connect", &addr]).await;
    assert_held(&mut actor);
    enforcer.resolve(ev.key, Verdict::Deny).await.unwrap();
    let (out, status) = actor.finish(LONG).unwrap();
    assert_eq!(out.trim(), format!("connect err {}", libc::EPERM));
    assert_eq!(status.code(), Some(10));
    assert!(
        no_connection_yet(&l),
        "a denied connect never reaches the listener"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_verdict_ends_the_paused_process() {
    let (enforcer, mut events, _pins) = start().await;
    let (l, addr) = listener();
    let (mut actor, ev) = watched(&enforcer, &mut events, &["connect", &addr]).await;
    assert_held(&mut actor);
    enforcer.resolve(ev.key, Verdict::Kill).await.unwrap();
    let (out, status) = actor.finish(LONG).unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(out, "", "the process printed nothing after the pause");
    assert!(no_connection_yet(&l));
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_is_held_with_argv_intact_then_runs_when_allowed() {
    let (enforcer, mut events, _pins) = start().await;
    let (mut actor, ev) = watched(
        &enforcer,
        &mut events,
        &["exec", "/bin/echo", "hello belay", "two"],
    )
    .await;
    assert_eq!(ev.tgid, actor.pid);
    let Action::Exec { path, ino, .. } = &ev.action else {
        panic!("expected an exec event, got {ev:?}");
    };
    assert_eq!(path, "/bin/echo");
    let real = std::fs::metadata("/bin/echo").unwrap();
    assert_eq!(
        *ino,
        std::os::unix::fs::MetadataExt::ino(&real),
        "inode of the file run"
    );
    assert_held(&mut actor);
    assert_eq!(
        task::exec_argv(ev.tgid, ev.pid),
        Some(vec!["/bin/echo".into(), "hello belay".into(), "two".into()]),
        "argv readable from the stopped process"
    );

    enforcer.resolve(ev.key, Verdict::Allow).await.unwrap();
    let (out, status) = actor.finish(LONG).unwrap();
    assert_eq!(
        out.trim(),
        "hello belay two",
        "the restarted exec kept its argv"
    );
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_denied_fails_with_eperm() {
    let (enforcer, mut events, _pins) = start().await;
    let (mut actor, ev) = watched(
        &enforcer,
        &mut events,
        &["exec", "/bin/echo", "must not print"],
    )
    .await;
    assert_held(&mut actor);
    enforcer.resolve(ev.key, Verdict::Deny).await.unwrap();
    let (out, status) = actor.finish(LONG).unwrap();
    assert_eq!(out.trim(), format!("exec err {}", libc::EPERM));
    assert_eq!(status.code(), Some(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn unwatched_process_is_never_paused() {
    let (enforcer, mut events, _pins) = start().await;
    let (_l, addr) = listener();
    let mut actor = Actor::spawn(&["connect", &addr]).unwrap();
    actor.go().unwrap();
    let (out, status) = actor.finish(LONG).unwrap();
    assert_eq!(out.trim(), "connect ok");
    assert!(status.success());
    let mut exec = Actor::spawn(&["exec", "/bin/true"]).unwrap();
    exec.go().unwrap();
    assert!(exec.finish(LONG).unwrap().1.success());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.recv())
            .await
            .is_err(),
        "no pause event for unwatched processes"
    );
    assert_eq!(enforcer.counters().await.unwrap().paused, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn forked_child_inherits_the_watch() {
    let (enforcer, mut events, _pins) = start().await;
    let (_l, addr) = listener();
    let (mut actor, ev) = watched(&enforcer, &mut events, &["fork-connect", &addr]).await;
    assert_ne!(ev.tgid, actor.pid, "the connect came from the child");
    assert!(
        wait_until(LONG, || task::state(ev.tgid) == Some('T')),
        "the child is stopped"
    );
    enforcer.resolve(ev.key, Verdict::Deny).await.unwrap();
    let (out, status) = actor.finish(LONG).unwrap();
    assert_eq!(out.trim(), format!("connect err {}", libc::EPERM));
    assert_eq!(status.code(), Some(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn grandchildren_inherit_the_watch() {
    let (enforcer, mut events, _pins) = start().await;
    let (_l, addr) = listener();
    let (mut actor, ev) = watched(&enforcer, &mut events, &["grandchild-connect", &addr]).await;
    assert_ne!(ev.tgid, actor.pid);
    let parent = belay_agent::context::collect(ev.tgid, 0).ppid;
    assert_ne!(
        parent,
        Some(actor.pid),
        "the connect came from a grandchild"
    );
    assert_eq!(
        belay_agent::context::collect(parent.unwrap(), 0).ppid,
        Some(actor.pid)
    );
    assert!(wait_until(LONG, || task::state(ev.tgid) == Some('T')));
    enforcer.resolve(ev.key, Verdict::Allow).await.unwrap();
    let (out, status) = actor.finish(LONG).unwrap();
    assert_eq!(out.trim(), "connect ok");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verdict_is_one_shot_and_bound_to_the_action() {
    let (enforcer, mut events, _pins) = start().await;
    let (l, addr) = listener();
    let (mut actor, ev) = watched(&enforcer, &mut events, &["connect", &addr]).await;
    assert_held(&mut actor);
    // A verdict for another destination does not release this one: the task is resumed,
    // finds no verdict for its own action, and is paused again.
    let mut other = ev.key;
    other.action_hash ^= 1;
    enforcer.resolve(other, Verdict::Allow).await.unwrap();
    let again = next_event(&mut events).await;
    assert_eq!(again.key, ev.key, "same action, same key, new pause");
    assert_held(&mut actor);
    assert!(no_connection_yet(&l));
    assert_eq!(
        enforcer.pending_verdicts().await.unwrap(),
        1,
        "the wrong verdict is unused"
    );
    enforcer.resolve(ev.key, Verdict::Allow).await.unwrap();
    let (out, _) = actor.finish(LONG).unwrap();
    assert_eq!(out.trim(), "connect ok");
}

/// Starts `mode ADDR` watched, and expects the kernel to deny it without a pause, with
/// `flag` among the reasons.
async fn denied_without_pause(mode: &str, flag: u32, trace: bool) {
    let (enforcer, mut events, _pins) = start().await;
    let (l, addr) = listener();
    let mut actor = Actor::spawn(&[mode, &addr]).unwrap();
    if trace {
        nix::sys::ptrace::seize(
            nix::unistd::Pid::from_raw(actor.pid as i32),
            nix::sys::ptrace::Options::empty(),
        )
        .expect("PTRACE_SEIZE the actor");
    }
    enforcer.watch(actor.pid).await.unwrap();
    actor.go().unwrap();
    let ev = next_event(&mut events).await;
    assert!(!ev.is_pause(), "a report, not a pause: {ev:?}");
    assert_ne!(
        ev.flags & flag,
        0,
        "flags {:#x} name the reason {flag:#x}",
        ev.flags
    );
    let (out, status) = actor.finish(LONG).unwrap();
    assert_eq!(status.code(), Some(10), "denied with EPERM: {out}");
    assert!(!out.contains("513"), "-ERESTARTNOINTR never leaks: {out}");
    assert!(no_connection_yet(&l));
    let c = enforcer.counters().await.unwrap();
    assert_eq!((c.paused, c.unpausable_denied), (0, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn io_uring_inline_connect_is_denied_without_a_pause() {
    denied_without_pause("uring-connect", agent_common::flags::NOT_RESTARTABLE, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn io_uring_worker_connect_is_denied_without_a_pause() {
    denied_without_pause(
        "uring-connect-worker",
        agent_common::flags::IO_URING_WORKER,
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ptraced_process_is_denied_without_a_pause() {
    denied_without_pause("connect", agent_common::flags::PTRACED, true).await;
}

/// Runs `mode target` watched, checks the pause and its action, applies `verdict`, and
/// returns what the actor printed and its exit code.
async fn hold_and_decide(
    mode: &str,
    target: &str,
    expect: Action,
    verdict: Verdict,
) -> (String, Option<i32>) {
    let (enforcer, mut events, _pins) = start().await;
    let (mut actor, ev) = watched(&enforcer, &mut events, &[mode, target]).await;
    assert!(ev.is_pause());
    assert_eq!(ev.action, expect);
    assert_held(&mut actor);
    enforcer.resolve(ev.key, verdict).await.unwrap();
    let (out, status) = actor.finish(LONG).unwrap();
    (out.trim().to_owned(), status.code())
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_sendto_is_held_and_the_datagram_leaves_only_when_allowed() {
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_nonblocking(true).unwrap();
    let addr = server.local_addr().unwrap();
    let expect = Action::Send {
        addr,
        transport: Transport::Udp,
    };

    let (out, code) =
        hold_and_decide("udp-send", &addr.to_string(), expect.clone(), Verdict::Deny).await;
    assert_eq!(
        (out.as_str(), code),
        (format!("udp-send err {}", libc::EPERM).as_str(), Some(10))
    );
    let mut buf = [0u8; 16];
    assert!(
        server.recv_from(&mut buf).is_err(),
        "a denied datagram never arrives"
    );

    let (out, code) = hold_and_decide("udp-send", &addr.to_string(), expect, Verdict::Allow).await;
    assert_eq!((out.as_str(), code), ("udp-send ok", Some(0)));
    server.set_nonblocking(false).unwrap();
    server.set_read_timeout(Some(LONG)).unwrap();
    let (n, _) = server
        .recv_from(&mut buf)
        .expect("the allowed datagram arrives");
    assert_eq!(&buf[..n], b"belay");
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_fast_open_sendto_is_held() {
    let (l, addr) = listener();
    let expect = Action::Send {
        addr: addr.parse().unwrap(),
        transport: Transport::Tcp,
    };
    let (out, code) = hold_and_decide("tfo", &addr, expect, Verdict::Deny).await;
    assert_eq!(
        (out.as_str(), code),
        (format!("tfo err {}", libc::EPERM).as_str(), Some(10))
    );
    assert!(
        no_connection_yet(&l),
        "no SYN went out for a denied TFO send"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_connect_is_held_until_allowed() {
    let l = TcpListener::bind("[::1]:0").unwrap();
    let addr = l.local_addr().unwrap();
    let expect = Action::Connect {
        addr,
        transport: Transport::Tcp,
    };
    let (out, code) = hold_and_decide("connect", &addr.to_string(), expect, Verdict::Allow).await;
    assert_eq!((out.as_str(), code), ("connect ok", Some(0)));
    assert!(l.accept().is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv4_mapped_ipv6_connect_is_seen_as_the_ipv4_it_reaches() {
    let (l, addr) = listener();
    let v4: std::net::SocketAddr = addr.parse().unwrap();
    let mapped = format!("[::ffff:127.0.0.1]:{}", v4.port());
    let expect = Action::Connect {
        addr: v4,
        transport: Transport::Tcp,
    };
    let (out, code) = hold_and_decide("connect", &mapped, expect, Verdict::Deny).await;
    assert_eq!(
        (out.as_str(), code),
        (format!("connect err {}", libc::EPERM).as_str(), Some(10))
    );
    assert!(no_connection_yet(&l));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watched_process_cannot_fork_children_that_would_go_unwatched() {
    const CAPACITY: u32 = 12;
    let pins = PinDir::new();
    let loaded = Loaded::load_with(&pins.0, Some(CAPACITY)).expect("load with a small map");
    let (enforcer, _events) =
        Enforcer::start(loaded, Duration::from_secs(30), FailMode::Deny).unwrap();
    let mut actor = Actor::spawn(&["fork-many", "20"]).unwrap();
    enforcer.watch(actor.pid).await.unwrap();
    actor.go().unwrap();
    let mut children = Vec::new();
    let summary = loop {
        let line = actor.read_line().unwrap();
        match line.strip_prefix("child ") {
            Some(pid) => children.push(pid.parse::<u32>().unwrap()),
            None => break line,
        }
    };
    let refused = 20 - children.len() as u32;
    assert_eq!(
        summary,
        format!(
            "fork-many ok {} refused {refused} errno {}",
            children.len(),
            libc::EAGAIN
        )
    );
    assert!(refused > 0, "some forks were refused: {summary}");
    // The watched processes (actor and children) never outnumber the map.
    assert!(
        (children.len() as u32) < CAPACITY,
        "never more than the map holds"
    );
    for child in &children {
        assert!(
            enforcer.is_watched(*child).await.unwrap(),
            "child {child} is watched"
        );
    }
    assert_eq!(
        enforcer.counters().await.unwrap().fork_refused,
        u64::from(refused)
    );
    actor.go().unwrap();
    assert!(actor.finish(LONG).unwrap().1.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn verdicts_left_by_a_dead_process_are_swept() {
    let (enforcer, mut events, _pins) = start().await;
    let (_l, addr) = listener();
    let (mut actor, ev) = watched(&enforcer, &mut events, &["connect", &addr]).await;
    assert_held(&mut actor);
    // A verdict the process never consumes: it is for another action.
    let mut other = ev.key;
    other.action_hash ^= 1;
    enforcer.resolve(other, Verdict::Allow).await.unwrap();
    next_event(&mut events).await;
    assert_eq!(enforcer.pending_verdicts().await.unwrap(), 1);
    actor.child.kill().unwrap();
    actor.child.wait().unwrap();
    let mut left = 1;
    for _ in 0..100 {
        left = enforcer.pending_verdicts().await.unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "the dead process's verdict was removed");
}

/// Spawns `belay-actor ARGS` with exactly `pid` (via ns_last_pid), retrying while another
/// process takes it first.
fn spawn_with_pid(pid: u32, args: &[&str]) -> Actor {
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let actor = Actor::spawn(args).unwrap();
        if actor.pid == pid {
            return actor;
        }
        drop(actor);
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("could not get pid {pid} again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verdict_left_by_a_dead_process_does_not_serve_a_new_process_with_its_pid() {
    let (enforcer, mut events, _pins) = start().await;
    let (l, addr) = listener();
    let (mut a, ev) = watched(&enforcer, &mut events, &["connect", &addr]).await;
    assert_held(&mut a);
    let pid = a.pid;
    // A dies with an allow for its connect written and never consumed: a zombie still
    // takes the SIGCONT, so the verdict stays in the map.
    a.child.kill().unwrap();
    assert!(wait_until(LONG, || task::state(pid) == Some('Z')));
    enforcer.resolve(ev.key, Verdict::Allow).await.unwrap();
    assert_eq!(enforcer.pending_verdicts().await.unwrap(), 1);
    a.child.wait().unwrap();
    // B gets A's pid and makes the very same connect: it must be asked about, not let
    // through on A's verdict (the sweep keeps the verdict, as the pid is alive again).
    let mut b = spawn_with_pid(pid, &["connect", &addr]);
    enforcer.watch(b.pid).await.unwrap();
    b.go().unwrap();
    let ev_b = next_event(&mut events).await;
    assert_eq!(ev_b.tgid, pid);
    assert!(ev_b.is_pause(), "B is paused, not served by A's verdict");
    assert_ne!(
        ev_b.key, ev.key,
        "the key is bound to the process, not only its pid"
    );
    assert_held(&mut b);
    assert!(no_connection_yet(&l));
    enforcer.resolve(ev_b.key, Verdict::Deny).await.unwrap();
    let (out, _) = b.finish(LONG).unwrap();
    assert_eq!(out.trim(), format!("connect err {}", libc::EPERM));
}

#[tokio::test(flavor = "multi_thread")]
async fn unix_socket_connects_are_held_pathname_and_abstract() {
    use std::os::linux::net::SocketAddrExt as _;
    let (enforcer, mut events, _pins) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svc.sock");
    let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let path = path.display().to_string();
    let (mut actor, ev) = watched(&enforcer, &mut events, &["unix-connect", &path]).await;
    assert_eq!(
        ev.action,
        Action::ConnectUnix {
            path: path.clone(),
            transport: Transport::Tcp,
        }
    );
    assert_held(&mut actor);
    enforcer.resolve(ev.key, Verdict::Deny).await.unwrap();
    let (out, status) = actor.finish(LONG).unwrap();
    assert_eq!(out.trim(), format!("connect err {}", libc::EPERM));
    assert_eq!(status.code(), Some(10));

    let name = format!("belay-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _a = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let at = format!("@{name}");
    let (mut actor, ev) = watched(&enforcer, &mut events, &["unix-connect", &at]).await;
    assert_eq!(
        ev.action,
        Action::ConnectUnix {
            path: at.clone(),
            transport: Transport::Tcp,
        }
    );
    assert_held(&mut actor);
    enforcer.resolve(ev.key, Verdict::Allow).await.unwrap();
    let (out, _) = actor.finish(LONG).unwrap();
    assert_eq!(out.trim(), "connect ok");
}
