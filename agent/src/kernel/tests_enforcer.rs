//! The owner task through the fake backend: what reaches the daemon, in what order, and
//! what the backend is told.
use std::sync::{Arc, Mutex};

use agent_common::{ExecExpect, flags};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{Action, Enforcer, Expectation, FakeKernel, PauseEvent, Transport, Verdict};

fn connect(addr: &str) -> Action {
    Action::Connect {
        addr: addr.parse().unwrap(),
        transport: Transport::Tcp,
    }
}

fn start(kernel: &FakeKernel) -> (Enforcer, UnboundedReceiver<PauseEvent>) {
    Enforcer::start_backend(kernel.backend().unwrap(), Box::new(|_| {})).unwrap()
}

async fn next(events: &mut UnboundedReceiver<PauseEvent>) -> PauseEvent {
    tokio::time::timeout(std::time::Duration::from_secs(10), events.recv())
        .await
        .expect("an event")
        .expect("the enforcer runs")
}

#[tokio::test]
async fn pauses_an_earlier_daemon_left_come_first() {
    let kernel = FakeKernel::new();
    let (enforcer, mut events) = start(&kernel);
    enforcer.watch_as(100, 7).await.unwrap();
    let left = kernel.pause(100, 1000, connect("192.0.2.1:443"));
    assert_eq!(next(&mut events).await, left);
    // The daemon dies with the pause undecided (its task and handles gone at once).
    drop((enforcer, events));

    let (enforcer, mut events) = start(&kernel);
    let new = kernel.pause(100, 1000, connect("192.0.2.2:443"));
    assert_eq!(next(&mut events).await, left, "recovered first");
    assert_eq!(next(&mut events).await, new);
    assert_eq!(
        new.subject, 7,
        "watched as before: the map outlived the daemon"
    );
    enforcer.resolve(left.key, Verdict::Deny).await.unwrap();
    enforcer.resolve(new.key, Verdict::Allow).await.unwrap();
    assert_eq!(
        kernel.verdicts(),
        [(left.key, Verdict::Deny), (new.key, Verdict::Allow)]
    );
}

#[tokio::test]
async fn a_pause_nobody_hears_is_denied_and_a_report_is_left_alone() {
    let kernel = FakeKernel::new();
    let (enforcer, events) = start(&kernel);
    enforcer.watch(100).await.unwrap();
    drop(events);
    let report = kernel.report(100, 1000, connect("192.0.2.1:443"), flags::POLICY_DENY);
    let pause = kernel.pause(100, 1000, connect("192.0.2.2:443"));
    assert_eq!(kernel.verdict(pause.key).await, Verdict::Deny);
    // Round trip through the owner: it has handled everything before this.
    enforcer.counters().await.unwrap();
    assert!(kernel.verdicts_for(report.key).is_empty());
    assert_eq!(kernel.verdicts().len(), 1);
}

#[tokio::test]
async fn an_exec_allow_carries_what_the_new_image_must_be_and_a_deny_does_not() {
    let kernel = FakeKernel::new();
    let (enforcer, mut events) = start(&kernel);
    enforcer.watch(100).await.unwrap();
    enforcer.watch(200).await.unwrap();
    let exec = || Action::Exec {
        path: "/usr/bin/git".into(),
        ino: 1,
        dev: 1,
    };
    let expect = ExecExpect {
        args_hash: 1,
        env_hash: 2,
        args_len: 3,
        env_len: 4,
        bprm: 0,
    };
    let allowed = kernel.pause(100, 1000, exec());
    let denied = kernel.pause(200, 1000, exec());
    next(&mut events).await;
    next(&mut events).await;
    enforcer
        .resolve_expecting(allowed.key, Verdict::Allow, Expectation::Exec(expect))
        .await
        .unwrap();
    enforcer
        .resolve_expecting(denied.key, Verdict::Deny, Expectation::Exec(expect))
        .await
        .unwrap();
    assert_eq!(kernel.exec_expect(100), Some(expect));
    assert_eq!(kernel.exec_expect(200), None);
    assert_eq!(
        kernel.verdicts(),
        [(allowed.key, Verdict::Allow), (denied.key, Verdict::Deny)]
    );
}

#[tokio::test]
async fn dns_answers_reach_the_sink_before_the_action_after_them() {
    let kernel = FakeKernel::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let seen = seen.clone();
        Box::new(move |answer: &super::DnsMessage<'_>| {
            seen.lock()
                .unwrap()
                .push((answer.tgid, answer.message.to_vec()));
        })
    };
    let (enforcer, mut events) = Enforcer::start_backend(kernel.backend().unwrap(), sink).unwrap();
    enforcer.watch(100).await.unwrap();
    kernel.dns_answer(100, "127.0.0.53:53".parse().unwrap(), b"answer".to_vec());
    kernel.pause(100, 1000, connect("192.0.2.1:443"));
    next(&mut events).await;
    assert_eq!(*seen.lock().unwrap(), [(100, b"answer".to_vec())]);
}

#[tokio::test]
async fn watching_and_the_fail_mode_reach_the_backend() {
    let kernel = FakeKernel::new();
    let (enforcer, _events) = start(&kernel);
    enforcer.watch_as(100, 7).await.unwrap();
    enforcer.watch(200).await.unwrap();
    assert_eq!(enforcer.watched_subject(100).await.unwrap(), Some(7));
    assert!(enforcer.is_watched(200).await.unwrap());
    enforcer.unwatch(200).await.unwrap();
    assert_eq!(enforcer.watched().await.unwrap(), [(100, 7)]);
    enforcer
        .set_fail_mode(super::FailMode::Allow)
        .await
        .unwrap();
    assert_eq!(kernel.fail_mode(), Some(super::FailMode::Allow));
    enforcer.detach().await.unwrap();
    assert!(kernel.detached());
}
