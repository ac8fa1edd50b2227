//! The reviewer console end to end, in QEMU with BPF LSM: a watched process's connect
//! is paused in the kernel, reaches belay-server through belay-agent, and a reviewer
//! signed in with the test OIDC issuer approves it through the console's HTTP endpoint
//! (as the page's button does: session cookie, CSRF token, Origin). No browser runs in
//! the guest; server/tests/console_browser.rs drives the same endpoint from Chromium.
#![cfg(feature = "vm")]

mod common;
#[path = "../../server/tests/support/console_client.rs"]
mod console_client;
#[path = "../../server/tests/support/issuer.rs"]
mod issuer;

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use belay_tests::wait_until;
use common::belay_server::Server;
use common::{Agent, LONG, actor_path, ok};
use serde_json::{Value, json};

fn free_addr() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn a_paused_connect_is_approved_through_the_console_with_a_session_from_the_test_issuer() {
    // The issuer's tasks run on this runtime's workers while the test goes on.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let issuer = runtime.block_on(issuer::TestIssuer::start(issuer::TestKey::es256("vm")));
    issuer.add_user(
        "dana",
        json!({"email": "dana@example.com", "email_verified": true, "groups": ["sre"]}),
    );
    let console = free_addr();
    let origin = format!("https://{console}");
    issuer.allow_redirect(&format!("{origin}/auth/callback"));

    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("auth-extra.toml"),
        format!(
            "[[oidc]]\nissuer = \"{}\"\naudience = \"{}\"\n\n[groups]\n\"sre\" = \"reviewer\"\n",
            issuer.url(),
            issuer::AUDIENCE
        ),
    )
    .unwrap();
    let server = Server::start_with(
        free_addr(),
        state.path(),
        &[
            "--console-listen",
            &console.to_string(),
            "--console-url",
            &origin,
        ],
    );
    assert!(
        wait_until(LONG, || TcpStream::connect(console).is_ok()),
        "the console listens on {console}"
    );
    let certs = server.enroll();
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
    ]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dst = listener.local_addr().unwrap();
    let mut actor = agent.run(&[&actor_path(), "connect", &dst.to_string()]);

    // The exec of the command is held first; the CLI lets it run.
    let exec = server.pending("exec");
    ok(&server.belay(
        "bob",
        &["approve", exec["id"].as_str().unwrap(), "--reason", "ok"],
    ));
    actor.ready().unwrap();
    actor.go().unwrap();
    let connect = server.pending("connect");
    let id = connect["id"].as_str().unwrap().to_owned();

    // Signed in through the console's own OIDC login, trusting the server's CA.
    let ca = std::fs::read(state.path().join("ca.pem")).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let dana = runtime.block_on(console_client::sign_in(&http, &origin, "dana"));
    let (status, page) =
        runtime.block_on(dana.get(&format!("/api/requests/{}", console_client::urlencode(&id))));
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["request"]["connect"]["port"], dst.port(), "{page}");
    let (status, answer) =
        runtime.block_on(dana.decide(&id, "allow", "the internal API, from the console"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["request"]["state"], "approved", "{answer}");

    let (out, exit) = actor.finish(LONG).unwrap();
    assert_eq!(out.trim(), "connect ok");
    assert!(exit.success());
    let shown: Value =
        serde_json::from_str(&ok(&server.belay("bob", &["show", &id, "--output", "json"])))
            .unwrap();
    assert_eq!(shown["resolution"]["reviewer"], "dana@example.com");
}
