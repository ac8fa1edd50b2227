//! Reviewer authentication end to end: a real OIDC issuer on loopback (discovery, JWKS,
//! JWTs signed with keys generated here), the real server, real tonic clients.

#[path = "support/issuer.rs"]
mod issuer;

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use belay_proto::v1;
use belay_server::ServeOptions;
use belay_server::approvals::MemoryStore;
use belay_server::auth::{AuthConfig, Authenticator, ReviewerAuth};
use issuer::{AUDIENCE, PATIENCE, TestIssuer, TestKey, now};
use support::{TestAgent, TestServer, connect_request, hex_sha256, with_bearer};
use tonic::{Code, Status};

/// The API token of `ci-bot` (its hash is in the config), and one of an expired token.
const CI_TOKEN: &str = "belay_ci-bot-secret";
const OLD_TOKEN: &str = "belay_expired-secret";
/// alice's own automation token: linked to her in the config (spelled differently).
const ALICE_TOKEN: &str = "belay_alice-ci-secret";

fn config_text(issuer: &TestIssuer) -> String {
    format!(
        r#"
[[oidc]]
issuer = "{url}"
audience = "{AUDIENCE}"
jwks_min_refetch_seconds = 1

[[api_token]]
name = "ci-bot"
sha256 = "{ci}"
roles = ["reviewer"]

[[api_token]]
name = "alice-ci"
sha256 = "{alice}"
roles = ["reviewer"]
owner = "Alice@Example.com"

[[api_token]]
name = "old-bot"
sha256 = "{old}"
roles = ["admin"]
expires = 2001-01-01T00:00:00Z

[groups]
"sre" = "reviewer"
"auditors" = "viewer"
"belay-admins" = "admin"
"#,
        url = issuer.url(),
        ci = hex_sha256(CI_TOKEN),
        old = hex_sha256(OLD_TOKEN),
        alice = hex_sha256(ALICE_TOKEN),
    )
}

async fn start(auth: ReviewerAuth) -> TestServer {
    let mut options = ServeOptions::default();
    options.reviewer_auth = auth;
    TestServer::start(MemoryStore::new(), options).await
}

impl TestServer {
    async fn with_issuer(issuer: &TestIssuer) -> Self {
        let config = AuthConfig::parse(Path::new("auth.toml"), &config_text(issuer)).unwrap();
        start(ReviewerAuth::Verified(Arc::new(
            Authenticator::new(config).unwrap(),
        )))
        .await
    }

    /// An agent of `owner` on `host` that submits request `id`; kept open so the
    /// request stays pending.
    async fn submit(
        &self,
        host: &str,
        owner: &str,
        id: &str,
    ) -> tokio::sync::mpsc::Sender<v1::AgentMessage> {
        let agent = self.agent(host, owner).await;
        agent.submit(connect_request(id, 443)).await;
        let TestAgent {
            to_server,
            mut from_server,
        } = agent;
        tokio::spawn(async move { while let Ok(Some(_)) = from_server.message().await {} });
        to_server
    }

    /// Waits until `id` is pending, looking as `bearer`.
    async fn wait_pending_as(&self, bearer: &str, id: &str) {
        let mut client = self.reviewer().await;
        tokio::time::timeout(PATIENCE, async {
            loop {
                let pending = client
                    .list_pending(with_bearer(bearer, v1::ListPendingRequest {}))
                    .await
                    .unwrap()
                    .into_inner()
                    .requests;
                if pending.iter().any(|r| r.id == id) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{id} never became pending"));
    }

    async fn list(&self, bearer: Option<&str>) -> Result<v1::ListPendingResponse, Status> {
        let request = match bearer {
            Some(bearer) => with_bearer(bearer, v1::ListPendingRequest {}),
            None => tonic::Request::new(v1::ListPendingRequest {}),
        };
        self.reviewer()
            .await
            .list_pending(request)
            .await
            .map(|r| r.into_inner())
    }

    async fn decide(&self, bearer: &str, id: &str, reviewer: &str) -> Result<v1::Request, Status> {
        let request = with_bearer(
            bearer,
            v1::DecideRequest {
                request_id: id.into(),
                verdict: v1::Verdict::Allow.into(),
                reason: "looked at it".into(),
                reviewer: reviewer.into(),
                ..Default::default()
            },
        );
        let response = self.reviewer().await.decide(request).await?.into_inner();
        Ok(response.request.unwrap())
    }
}

#[track_caller]
fn assert_status(result: Result<impl std::fmt::Debug, Status>, code: Code, message: &str) {
    let status = result.expect_err("the call should have been refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(message),
        "message {:?} lacks {message:?}",
        status.message()
    );
}

#[tokio::test]
async fn a_valid_id_token_decides_as_its_identity() {
    let issuer = TestIssuer::start(TestKey::es256("ec-1")).await;
    let server = TestServer::with_issuer(&issuer).await;
    let _agent = server
        .submit("host-a", "alice@example.com", "host-a:req-1")
        .await;
    let bob = issuer.token("bob@example.com", &["sre"]);
    server.wait_pending_as(&bob, "host-a:req-1").await;

    // Reviewer field left empty: the token says who decides.
    let decided = server.decide(&bob, "host-a:req-1", "").await.unwrap();
    assert_eq!(decided.state, v1::RequestState::Approved as i32);
    assert_eq!(decided.resolution.unwrap().reviewer, "bob@example.com");
}

#[tokio::test]
async fn rs256_tokens_verify_too() {
    let issuer = TestIssuer::start(TestKey::rs256("rsa-1")).await;
    let server = TestServer::with_issuer(&issuer).await;
    let _agent = server
        .submit("host-a", "alice@example.com", "host-a:req-rsa")
        .await;
    let bob = issuer.token("bob@example.com", &["sre"]);
    server.wait_pending_as(&bob, "host-a:req-rsa").await;
    let decided = server
        .decide(&bob, "host-a:req-rsa", "bob@example.com")
        .await
        .unwrap();
    assert_eq!(decided.resolution.unwrap().reviewer, "bob@example.com");
}

#[tokio::test]
async fn bad_credentials_are_unauthenticated_with_their_reason() {
    let issuer = TestIssuer::start(TestKey::es256("ec-1")).await;
    let server = TestServer::with_issuer(&issuer).await;
    let _agent = server
        .submit("host-a", "alice@example.com", "host-a:req-1")
        .await;
    let u = Code::Unauthenticated;

    assert_status(server.list(None).await, u, "missing credential");

    // Same kid, another key: the signature cannot verify.
    let forger = TestKey::es256("ec-1");
    let forged = forger.sign(&issuer.claims("mallory@example.com", &["belay-admins"]));
    assert_status(
        server.list(Some(&forged)).await,
        u,
        "signature does not verify",
    );

    let mut expired = issuer.claims("bob@example.com", &["sre"]);
    expired["exp"] = (now() - 600).into();
    expired["iat"] = (now() - 900).into();
    assert_status(
        server.list(Some(&issuer.sign(&expired))).await,
        u,
        "ID token has expired",
    );

    let mut early = issuer.claims("bob@example.com", &["sre"]);
    early["nbf"] = (now() + 600).into();
    assert_status(
        server.list(Some(&issuer.sign(&early))).await,
        u,
        "not valid yet",
    );

    let mut audience = issuer.claims("bob@example.com", &["sre"]);
    audience["aud"] = "another-app".into();
    assert_status(
        server.list(Some(&issuer.sign(&audience))).await,
        u,
        "ID token audience is not \"belay-cli\"",
    );

    let mut foreign = issuer.claims("bob@example.com", &["sre"]);
    foreign["iss"] = "https://evil.example.com".into();
    assert_status(
        server.list(Some(&issuer.sign(&foreign))).await,
        u,
        "issuer \"https://evil.example.com\" is not trusted",
    );

    let mut anonymous = issuer.claims("bob@example.com", &["sre"]);
    anonymous.as_object_mut().unwrap().remove("email");
    assert_status(
        server.list(Some(&issuer.sign(&anonymous))).await,
        u,
        "no string claim \"email\"",
    );

    assert_status(
        server.list(Some("not-a-token")).await,
        u,
        "unknown API token",
    );
    assert_status(server.list(Some("a.b.c")).await, u, "malformed ID token");

    // Refused calls changed nothing: the request is still pending.
    let bob = issuer.token("bob@example.com", &["sre"]);
    server.wait_pending_as(&bob, "host-a:req-1").await;
}

#[tokio::test]
async fn a_rotated_key_is_fetched_and_forged_kids_are_rate_limited() {
    let issuer = TestIssuer::start(TestKey::es256("old")).await;
    let server = TestServer::with_issuer(&issuer).await;
    server
        .list(Some(&issuer.token("bob@example.com", &["sre"])))
        .await
        .unwrap();
    assert_eq!(issuer.jwks_fetches(), 1);

    // Unknown kids within the refetch interval fetch nothing more.
    let stranger = TestKey::es256("nobody-knows");
    let forged = stranger.sign(&issuer.claims("bob@example.com", &["sre"]));
    for _ in 0..5 {
        assert_status(
            server.list(Some(&forged)).await,
            Code::Unauthenticated,
            "unknown key id nobody-knows",
        );
    }
    assert!(
        issuer.jwks_fetches() <= 2,
        "{} fetches",
        issuer.jwks_fetches()
    );

    // The issuer rotates; after the (1 s) interval the new kid triggers a refetch.
    issuer.rotate(TestKey::es256("new"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = issuer.jwks_fetches();
    server
        .list(Some(&issuer.token("bob@example.com", &["sre"])))
        .await
        .unwrap();
    assert_eq!(issuer.jwks_fetches(), before + 1);
}

#[tokio::test]
async fn roles_come_from_groups_and_are_enforced() {
    let issuer = TestIssuer::start(TestKey::es256("ec-1")).await;
    let server = TestServer::with_issuer(&issuer).await;
    let _agent = server
        .submit("host-a", "alice@example.com", "host-a:req-1")
        .await;

    let viewer = issuer.token("vera@example.com", &["auditors"]);
    server.wait_pending_as(&viewer, "host-a:req-1").await;
    assert_status(
        server.decide(&viewer, "host-a:req-1", "").await,
        Code::PermissionDenied,
        "vera@example.com has role viewer; this needs reviewer",
    );

    let nobody = issuer.token("nick@example.com", &["marketing"]);
    assert_status(
        server.list(Some(&nobody)).await,
        Code::PermissionDenied,
        "nick@example.com has no belay role",
    );

    // Several groups: the highest role wins.
    let admin = issuer.token("ada@example.com", &["auditors", "belay-admins"]);
    // Claiming to be someone else is refused even for an admin.
    assert_status(
        server
            .decide(&admin, "host-a:req-1", "bob@example.com")
            .await,
        Code::PermissionDenied,
        "does not match the authenticated identity",
    );
    let decided = server
        .decide(&admin, "host-a:req-1", "ada@example.com")
        .await
        .unwrap();
    assert_eq!(decided.resolution.unwrap().reviewer, "ada@example.com");
}

#[tokio::test]
async fn api_tokens_authenticate_automation() {
    let issuer = TestIssuer::start(TestKey::es256("ec-1")).await;
    let server = TestServer::with_issuer(&issuer).await;
    let _agent = server
        .submit("host-a", "alice@example.com", "host-a:req-1")
        .await;
    server.wait_pending_as(CI_TOKEN, "host-a:req-1").await;

    assert_status(
        server
            .decide("belay_ci-bot-secreT", "host-a:req-1", "")
            .await,
        Code::Unauthenticated,
        "unknown API token",
    );
    assert_status(
        server.decide(OLD_TOKEN, "host-a:req-1", "").await,
        Code::Unauthenticated,
        "API token \"old-bot\" expired",
    );
    let decided = server.decide(CI_TOKEN, "host-a:req-1", "").await.unwrap();
    assert_eq!(decided.resolution.unwrap().reviewer, "ci-bot");
}

#[tokio::test]
async fn an_authenticated_owner_still_cannot_approve_their_own_request() {
    let issuer = TestIssuer::start(TestKey::es256("ec-1")).await;
    let server = TestServer::with_issuer(&issuer).await;
    let _agent = server
        .submit("host-a", "alice@example.com", "host-a:req-1")
        .await;
    let alice = issuer.token("alice@example.com", &["belay-admins"]);
    server.wait_pending_as(&alice, "host-a:req-1").await;
    let status = server.decide(&alice, "host-a:req-1", "").await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("alice@example.com"), "{status:?}");
    server.wait_pending_as(&alice, "host-a:req-1").await;
}

#[tokio::test]
async fn no_other_spelling_of_the_owners_email_approves() {
    let issuer = TestIssuer::start(TestKey::es256("ec-1")).await;
    let server = TestServer::with_issuer(&issuer).await;
    let _a = server
        .submit("host-a", "alice@example.com", "host-a:req-1")
        .await;
    // The host may spell the owner differently too.
    let _b = server
        .submit("host-b", "ALICE@example.COM", "host-b:req-2")
        .await;
    let alice = issuer.token("Alice@Example.com", &["sre"]);
    server.wait_pending_as(&alice, "host-a:req-1").await;
    server.wait_pending_as(&alice, "host-b:req-2").await;
    for id in ["host-a:req-1", "host-b:req-2"] {
        assert_status(
            server.decide(&alice, id, "").await,
            Code::PermissionDenied,
            "may not approve",
        );
        server.wait_pending_as(&alice, id).await;
    }
    let plain = issuer.token("alice@example.com", &["sre"]);
    assert_status(
        server.decide(&plain, "host-b:req-2", "").await,
        Code::PermissionDenied,
        "may not approve",
    );
}

#[tokio::test]
async fn an_api_token_linked_to_the_owner_decides_as_the_owner() {
    let issuer = TestIssuer::start(TestKey::es256("ec-1")).await;
    let server = TestServer::with_issuer(&issuer).await;
    let _alices = server
        .submit("host-a", "alice@example.com", "host-a:req-1")
        .await;
    let _bobs = server
        .submit("host-b", "bob@example.com", "host-b:req-2")
        .await;
    server.wait_pending_as(ALICE_TOKEN, "host-a:req-1").await;
    server.wait_pending_as(ALICE_TOKEN, "host-b:req-2").await;
    // Her token is alice: it cannot approve her agent's request...
    assert_status(
        server.decide(ALICE_TOKEN, "host-a:req-1", "").await,
        Code::PermissionDenied,
        "alice@example.com owns the agent",
    );
    server.wait_pending_as(ALICE_TOKEN, "host-a:req-1").await;
    // ...and what it approves is recorded as hers, naming the token.
    let decided = server
        .decide(ALICE_TOKEN, "host-b:req-2", "")
        .await
        .unwrap();
    let resolution = decided.resolution.unwrap();
    assert_eq!(resolution.reviewer, "alice@example.com");
    assert!(
        resolution.reason.contains("[API token alice-ci]"),
        "{}",
        resolution.reason
    );
}

#[tokio::test]
async fn a_server_without_auth_config_refuses_reviewers() {
    let server = start(ReviewerAuth::Unconfigured).await;
    assert_status(
        server.list(Some("anything")).await,
        Code::Unauthenticated,
        "reviewer authentication is not configured",
    );
}

#[test]
fn config_errors_name_file_line_and_column() {
    let cases = [
        (
            "[[oidc]]\nissuer = \"http://login.example.com\"\naudience = \"belay\"\n",
            "auth.toml:2:10: ",
            "plain http is only accepted on a loopback host",
        ),
        (
            "[[api_token]]\nname = \"ci\"\nsha256 = \"abc\"\nroles = [\"reviewer\"]\n",
            "auth.toml:3:10: ",
            "a token hash is 64 hex digits",
        ),
        (
            "[groups]\nsre = \"superuser\"\n",
            "auth.toml:2:7: ",
            "unknown variant `superuser`",
        ),
        (
            "[[oidc]]\nissuer = \"https://id.example.com\"\naudience = \"belay\"\ncolour = 1\n",
            "auth.toml:4:1: ",
            "unknown field `colour`",
        ),
    ];
    for (text, place, problem) in cases {
        let err = AuthConfig::parse(Path::new("auth.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(place),
            "{err:?} should start with {place:?}"
        );
        assert!(err.contains(problem), "{err:?} should contain {problem:?}");
    }
}

#[test]
fn check_config_and_token_hash_subcommands() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("auth.toml");
    std::fs::write(
        &bad,
        "[[api_token]]\nname = \"ci\"\nsha256 = \"abc\"\nroles = [\"reviewer\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_belay-server"))
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3:10: a token hash is 64 hex digits",
            bad.display()
        )),
        "{stderr}"
    );

    let mut hash = Command::new(env!("CARGO_BIN_EXE_belay-server"))
        .args(["api-token", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    hash.stdin
        .take()
        .unwrap()
        .write_all(CI_TOKEN.as_bytes())
        .unwrap();
    let out = hash.wait_with_output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!("[[api_token]]\nname = \"ci\"\n{line}roles = [\"reviewer\"]\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_belay-server"))
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        line.trim(),
        format!("sha256 = \"{}\"", hex_sha256(CI_TOKEN))
    );
}
