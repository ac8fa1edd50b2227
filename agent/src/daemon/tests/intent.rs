//! Declared intents over the socket: attached, masked, to the declarer's and its
//! descendants' requests only.
use std::process::{Command, Stdio};

use super::harness::{AGENT_UID, Stopped, config, connect, request_to, start};
use crate::{
    api::{ApiRequest, ApiResponse, IntentDeclaration},
    kernel::FakeKernel,
};

/// A process that is not a descendant of the test: `sh` starts it in the background
/// and exits, so it is reparented away from us.
fn orphan() -> u32 {
    let out = Command::new("sh")
        .args(["-c", "sleep 600 </dev/null >/dev/null 2>&1 & echo $!"])
        .stdin(Stdio::null())
        .output()
        .expect("sh runs");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_declared_intent_rides_on_the_declarers_childrens_requests_masked_and_only_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let child = Stopped::new();
    let stranger = orphan();
    let kernel = FakeKernel::new();
    let mut config = config(dir.path());
    config.watch_pids = vec![child.pid(), stranger];
    let daemon = start(&kernel, config).await;

    // The test process declares; the socket's peer is this process, whatever it says.
    let answer = daemon
        .call(ApiRequest::Intent(IntentDeclaration {
            text: "rotate the db password, https://bob:hunter2x@db.example.com/x".into(),
            model: Some("gpt-x".into()),
            tool_call_id: Some("call_42".into()),
            ..Default::default()
        }))
        .await;
    let ApiResponse::IntentDeclared { tgid, .. } = answer else {
        panic!("declaring: {answer:?}");
    };
    assert_eq!(tgid, std::process::id());

    kernel.pause(child.pid(), AGENT_UID, connect("192.0.2.1:443"));
    kernel.pause(stranger, AGENT_UID, connect("192.0.2.2:443"));
    let pending = daemon.until_pending(2).await;

    let ours = request_to(&pending, "192.0.2.1");
    let intent = ours.intent.expect("the child's request carries the intent");
    assert!(
        intent.text.starts_with("rotate the db password"),
        "{}",
        intent.text
    );
    assert!(!intent.text.contains("hunter2x"), "masked: {}", intent.text);
    assert_eq!(intent.model.as_deref(), Some("gpt-x"));
    assert_eq!(intent.tool_call_id.as_deref(), Some("call_42"));
    assert_eq!(intent.declared_by_pid, std::process::id());

    let theirs = request_to(&pending, "192.0.2.2");
    assert_eq!(theirs.intent, None, "not a descendant of the declarer");

    // Refused declarations say why.
    let refused = daemon
        .call(ApiRequest::Intent(IntentDeclaration {
            text: "x".repeat(belay_proto::domain::limits::MAX_INTENT_LEN + 1),
            ..Default::default()
        }))
        .await;
    assert!(
        matches!(&refused, ApiResponse::Error { message } if message.contains("text")),
        "{refused:?}"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(stranger as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn an_intent_in_the_environment_rides_on_that_processs_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut declared = Command::new("sleep")
        .arg("600")
        .env(
            "BELAY_INTENT",
            r#"{"text":"sync the mirror the user named","session_id":"s-9"}"#,
        )
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let plain = Stopped::new();
    let kernel = FakeKernel::new();
    let mut config = config(dir.path());
    config.watch_pids = vec![declared.id(), plain.pid()];
    let daemon = start(&kernel, config).await;
    kernel.pause(declared.id(), AGENT_UID, connect("192.0.2.3:443"));
    kernel.pause(plain.pid(), AGENT_UID, connect("192.0.2.4:443"));
    let pending = daemon.until_pending(2).await;
    let intent = request_to(&pending, "192.0.2.3")
        .intent
        .expect("read from the environment");
    assert_eq!(intent.text, "sync the mirror the user named");
    assert_eq!(intent.session_id.as_deref(), Some("s-9"));
    assert_eq!(intent.declared_by_pid, declared.id());
    assert_eq!(request_to(&pending, "192.0.2.4").intent, None);
    let _ = declared.kill();
    let _ = declared.wait();
    daemon.stop().await.unwrap();
}
