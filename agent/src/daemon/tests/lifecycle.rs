//! A pause becomes a request; a decision, its deadline or the daemon's shutdown ends it
//! with exactly one verdict, written for exactly that pause.
use std::time::Duration;

use tokio::time::Instant;

use super::harness::{AGENT_UID, Stopped, config, connect, request_to, start};
use crate::{
    api::ApiResponse,
    kernel::{FakeKernel, Verdict},
};

#[tokio::test(start_paused = true)]
async fn each_decision_reaches_the_kernel_as_its_verdict_for_exactly_its_pause() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Stopped::new();
    let kernel = FakeKernel::new();
    let mut config = config(dir.path());
    config.watch_pids = vec![agent.pid()];
    let daemon = start(&kernel, config).await;
    let allow = kernel.pause(agent.pid(), AGENT_UID, connect("192.0.2.1:443"));
    let deny = kernel.pause(agent.pid(), AGENT_UID, connect("192.0.2.2:443"));
    let kill = kernel.pause(agent.pid(), AGENT_UID, connect("192.0.2.3:443"));

    let pending = daemon.until_pending(3).await;
    assert!(kernel.verdicts().is_empty(), "nothing decided yet");
    for (address, verdict) in [
        ("192.0.2.1", Verdict::Allow),
        ("192.0.2.2", Verdict::Deny),
        ("192.0.2.3", Verdict::Kill),
    ] {
        let request = request_to(&pending, address);
        assert_eq!(request.tgid, agent.pid());
        assert_eq!(request.uid, AGENT_UID);
        assert_eq!(request.subject.as_deref(), Some("enrolled"));
        assert_eq!(
            daemon.decide(request.id, verdict).await,
            ApiResponse::Decided {
                id: request.id,
                verdict
            }
        );
    }

    assert_eq!(kernel.verdict(allow.key).await, Verdict::Allow);
    assert_eq!(kernel.verdict(deny.key).await, Verdict::Deny);
    assert_eq!(kernel.verdict(kill.key).await, Verdict::Kill);
    assert_eq!(kernel.verdicts().len(), 3, "one verdict per pause");
    assert!(kernel.held().is_empty());
    assert!(daemon.pending().await.is_empty());
    // Decided once: a second decision is refused and writes nothing.
    let again = daemon
        .decide(request_to(&pending, "192.0.2.1").id, Verdict::Deny)
        .await;
    assert!(matches!(again, ApiResponse::Error { .. }), "{again:?}");
    assert_eq!(kernel.verdicts().len(), 3);
    daemon.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_request_nobody_decides_gets_its_default_verdict_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Stopped::new();
    let kernel = FakeKernel::new();
    let mut config = config(dir.path());
    config.watch_pids = vec![agent.pid()];
    config.decide_timeout = Duration::from_secs(30);
    // Not the shutdown verdict (deny), so the one seen can only be the deadline's.
    config.default_verdict = Verdict::Allow;
    let daemon = start(&kernel, config).await;
    let ev = kernel.pause(agent.pid(), AGENT_UID, connect("192.0.2.1:443"));
    daemon.until_pending(1).await;
    let opened = Instant::now();

    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(kernel.verdicts().is_empty(), "nothing before the deadline");
    assert_eq!(daemon.pending().await.len(), 1);

    assert_eq!(kernel.verdict(ev.key).await, Verdict::Allow);
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "ended {waited:?} after it opened"
    );
    assert!(daemon.pending().await.is_empty());
    daemon.stop().await.unwrap();
    assert_eq!(kernel.verdicts_for(ev.key), [Verdict::Allow], "only once");
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_every_held_pause_with_the_shutdown_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let agents = [Stopped::new(), Stopped::new()];
    let kernel = FakeKernel::new();
    let mut config = config(dir.path());
    config.watch_pids = agents.iter().map(Stopped::pid).collect();
    config.default_verdict = Verdict::Deny;
    config.shutdown_verdict = Verdict::Allow;
    let socket = config.socket.clone();
    let daemon = start(&kernel, config).await;
    let held = [
        kernel.pause(agents[0].pid(), AGENT_UID, connect("192.0.2.1:443")),
        kernel.pause(agents[0].pid(), AGENT_UID, connect("192.0.2.2:443")),
        kernel.pause(agents[1].pid(), AGENT_UID, connect("192.0.2.3:443")),
    ];
    daemon.until_pending(3).await;
    assert!(!kernel.detached());

    daemon.stop().await.unwrap();
    for ev in &held {
        assert_eq!(kernel.verdicts_for(ev.key), [Verdict::Allow], "{ev:?}");
    }
    assert!(kernel.held().is_empty(), "nothing left paused");
    assert!(kernel.detached(), "a deliberate stop detaches the hooks");
    assert!(!socket.exists(), "the socket is removed");
}

#[tokio::test(start_paused = true)]
async fn shutdown_detaches_only_once_the_verdicts_are_consumed_or_after_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Stopped::new();
    let kernel = FakeKernel::new();
    let mut config = config(dir.path());
    config.watch_pids = vec![agent.pid()];
    let mut daemon = start(&kernel, config).await;
    kernel.pause(agent.pid(), AGENT_UID, connect("192.0.2.1:443"));
    daemon.until_pending(1).await;
    // The resumed task has not run its restarted syscall yet.
    kernel.set_pending_verdicts(1);

    let stopping = Instant::now();
    daemon.begin_stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !kernel.detached(),
        "detaching now would let the restarted syscall run unchecked"
    );
    kernel.set_pending_verdicts(0);
    kernel.until_detached().await;
    assert!(stopping.elapsed() < Duration::from_millis(1100));
    daemon.stop().await.unwrap();

    // A verdict never consumed (the task died first) holds the stop up for 2 s only.
    let agent = Stopped::new();
    let kernel = FakeKernel::new();
    let mut config = super::harness::config(dir.path());
    config.watch_pids = vec![agent.pid()];
    let daemon = start(&kernel, config).await;
    kernel.set_pending_verdicts(1);
    let stopping = Instant::now();
    daemon.stop().await.unwrap();
    assert!(kernel.detached());
    let took = stopping.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(2100),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_process_is_gone_ends_without_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Stopped::new();
    let other = Stopped::new();
    let kernel = FakeKernel::new();
    let mut config = config(dir.path());
    config.watch_pids = vec![agent.pid(), other.pid()];
    let daemon = start(&kernel, config).await;
    let gone = kernel.pause(agent.pid(), AGENT_UID, connect("192.0.2.1:443"));
    let stays = kernel.pause(other.pid(), AGENT_UID, connect("192.0.2.2:443"));
    daemon.until_pending(2).await;

    agent.end();
    kernel.exit(agent.pid());
    for _ in 0..100 {
        if daemon.pending().await.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pending = daemon.pending().await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].tgid, other.pid());
    assert!(kernel.verdicts_for(gone.key).is_empty());
    assert!(kernel.verdicts_for(stays.key).is_empty());
    daemon.stop().await.unwrap();
    assert_eq!(kernel.verdicts_for(stays.key), [Verdict::Deny]);
    assert!(kernel.verdicts_for(gone.key).is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_approved_exec_whose_image_was_not_read_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Stopped::new();
    let kernel = FakeKernel::new();
    let mut config = config(dir.path());
    config.watch_pids = vec![agent.pid()];
    let daemon = start(&kernel, config).await;
    // The task is stopped in nanosleep, not in an execve: there is no argv to read, so
    // nobody saw what the new image would run with, and the kernel could not check it.
    let ev = kernel.pause(
        agent.pid(),
        AGENT_UID,
        crate::kernel::Action::Exec {
            path: "/usr/bin/true".into(),
            ino: 1,
            dev: 1,
        },
    );
    let pending = daemon.until_pending(1).await;
    let decided = daemon.decide(pending[0].id, Verdict::Allow).await;
    assert!(
        matches!(decided, ApiResponse::Decided { .. }),
        "{decided:?}"
    );
    assert_eq!(kernel.verdict(ev.key).await, Verdict::Deny);
    assert_eq!(kernel.exec_expect(agent.pid()), None);
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_unix_connect_may_reach_only_the_socket_that_was_shown() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let sockets = tempfile::tempdir().unwrap();
    let real = sockets.path().join("real.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&real).unwrap();
    let link = sockets.path().join("link.sock");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let agent = Stopped::new();
    let kernel = FakeKernel::new();
    let mut config = config(dir.path());
    config.watch_pids = vec![agent.pid()];
    let daemon = start(&kernel, config).await;
    let unix = |path: &std::path::Path| crate::kernel::Action::ConnectUnix {
        path: path.display().to_string(),
        transport: crate::kernel::Transport::Tcp,
    };

    // Through a symlink: the allow binds the socket file the link led to when shown.
    let ev = kernel.pause(agent.pid(), AGENT_UID, unix(&link));
    let pending = daemon.until_pending(1).await;
    daemon.decide(pending[0].id, Verdict::Allow).await;
    assert_eq!(kernel.verdict(ev.key).await, Verdict::Allow);
    let md = std::fs::metadata(&real).unwrap();
    let peer = kernel
        .unix_peer(agent.pid())
        .expect("the allow names its socket");
    assert_eq!(peer.ino, md.ino());
    let (major, minor) = (libc::major(md.dev()), libc::minor(md.dev()));
    assert_eq!(
        peer.dev,
        (major << 20) | minor,
        "the kernel's encoding of st_dev"
    );
    assert_eq!(peer.armed, 0, "armed by the kernel, not the daemon");

    // A path that leads to no socket binds nothing (and no rule could vouch for it).
    let gone = kernel.pause(
        agent.pid(),
        AGENT_UID,
        unix(&sockets.path().join("none.sock")),
    );
    let pending = daemon.until_pending(1).await;
    daemon.decide(pending[0].id, Verdict::Deny).await;
    assert_eq!(kernel.verdict(gone.key).await, Verdict::Deny);
    daemon.stop().await.unwrap();
}
