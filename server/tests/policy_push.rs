//! The fleet policy down the agent stream, end to end through real tonic clients: who may
//! push, what agents connected before and after a push receive, what they report, bad
//! pushes, and a push on one PostgreSQL replica reaching an agent on another.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use belay_proto::domain::MAX_POLICY_LEN;
use belay_proto::v1;
use belay_proto::v1::reviewer_service_client::ReviewerServiceClient;
use belay_server::ServeOptions;
use belay_server::approvals::{AuditOptions, MemoryStore, PostgresStore, Store};
use belay_server::auth::{AuthConfig, Authenticator, ReviewerAuth};
use support::{PATIENCE, TestAgent, TestServer, hex_sha256, with_bearer};
use tonic::Code;
use tonic::transport::Channel;

const ADMIN_TOKEN: &str = "belay_admin-secret";
const REVIEWER_TOKEN: &str = "belay_reviewer-secret";
const VIEWER_TOKEN: &str = "belay_viewer-secret";
/// A second admin, and another token of the first one (linked to `root`).
const ADMIN2_TOKEN: &str = "belay_admin2-secret";
const ROOT_CI_TOKEN: &str = "belay_root-ci-secret";

const POLICY_1: &str = "version: 1\nsubjects:\n  - name: ci\n    owner: o\n    default: ask\n";
const POLICY_2: &str = "version: 1\nsubjects:\n  - name: ci\n    owner: o\n    default: deny\n";

fn auth() -> ReviewerAuth {
    let text = format!(
        r#"
[[api_token]]
name = "root"
sha256 = "{admin}"
roles = ["admin"]

[[api_token]]
name = "alice"
sha256 = "{reviewer}"
roles = ["reviewer"]

[[api_token]]
name = "carol"
sha256 = "{admin2}"
roles = ["admin"]

[[api_token]]
name = "root-ci"
sha256 = "{root_ci}"
roles = ["admin"]
owner = "ROOT"

[[api_token]]
name = "auditor"
sha256 = "{viewer}"
roles = ["viewer"]
"#,
        admin = hex_sha256(ADMIN_TOKEN),
        reviewer = hex_sha256(REVIEWER_TOKEN),
        viewer = hex_sha256(VIEWER_TOKEN),
        admin2 = hex_sha256(ADMIN2_TOKEN),
        root_ci = hex_sha256(ROOT_CI_TOKEN),
    );
    let config = AuthConfig::parse(Path::new("auth.toml"), &text).unwrap();
    ReviewerAuth::Verified(Arc::new(Authenticator::new(config).unwrap()))
}

async fn start<S: Store>(store: S, reviewer_auth: ReviewerAuth) -> TestServer {
    let mut options = ServeOptions::default();
    options.reviewer_auth = reviewer_auth;
    TestServer::start(store, options).await
}

impl TestAgent {
    async fn report(&self, version: u64, outcome: v1::PolicyOutcome, message: &str) {
        self.send(v1::agent_message::Kind::PolicyReport(v1::PolicyReport {
            version,
            outcome: outcome as i32,
            message: message.into(),
        }))
        .await;
    }
}

fn push_request(text: &[u8], reason: &str) -> v1::PushPolicyRequest {
    v1::PushPolicyRequest {
        text: text.to_vec(),
        reason: reason.into(),
    }
}

async fn push(
    client: &mut ReviewerServiceClient<Channel>,
    token: &str,
    text: &[u8],
) -> Result<v1::FleetPolicy, tonic::Status> {
    Ok(client
        .push_policy(with_bearer(token, push_request(text, "rollout")))
        .await?
        .into_inner()
        .policy
        .unwrap())
}

async fn get_policy(client: &mut ReviewerServiceClient<Channel>) -> v1::GetPolicyResponse {
    client
        .get_policy(with_bearer(
            VIEWER_TOKEN,
            v1::GetPolicyRequest { include_text: true },
        ))
        .await
        .unwrap()
        .into_inner()
}

/// Polls `GetPolicy` until `host` has answered about `version`.
async fn wait_status(
    client: &mut ReviewerServiceClient<Channel>,
    host: &str,
    version: u64,
) -> v1::AgentPolicyStatus {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let view = get_policy(client).await;
            if let Some(status) = view
                .agents
                .iter()
                .find(|agent| agent.host == host)
                .and_then(|agent| agent.status.clone())
                .filter(|status| status.version == version)
            {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{host} never reported on version {version}"))
}

#[tokio::test]
async fn agents_before_and_after_a_push_get_it_and_their_reports_are_listed() {
    let server = start(MemoryStore::new(), auth()).await;
    let mut reviewer = server.reviewer().await;
    assert_eq!(get_policy(&mut reviewer).await.policy, None);

    // Connected before any push: nothing is sent until there is a policy.
    let mut early = server.agent("early.example", "owner@example.com").await;
    let pushed = push(&mut reviewer, ADMIN_TOKEN, POLICY_1.as_bytes())
        .await
        .unwrap();
    assert_eq!(pushed.version, 1);
    assert_eq!(pushed.pushed_by, "root");
    assert_eq!(pushed.reason, "rollout");
    assert!(
        pushed.text.is_empty(),
        "a push answer does not echo the text"
    );
    let update = early.next_policy().await;
    assert_eq!(update.version, 1);
    assert_eq!(update.text.as_ref(), POLICY_1.as_bytes());
    assert_eq!(update.sha256, pushed.sha256);

    // Connected after: the current version right after the hello.
    let mut late = server.agent("late.example", "owner@example.com").await;
    assert_eq!(late.next_policy().await.version, 1);

    early.report(1, v1::PolicyOutcome::Applied, "").await;
    late.report(
        1,
        v1::PolicyOutcome::Failed,
        "server policy version 1:3:5: unknown key",
    )
    .await;
    let applied = wait_status(&mut reviewer, "early.example", 1).await;
    assert_eq!(applied.outcome, v1::PolicyOutcome::Applied as i32);
    let failed = wait_status(&mut reviewer, "late.example", 1).await;
    assert_eq!(failed.outcome, v1::PolicyOutcome::Failed as i32);
    assert!(failed.message.contains("1:3:5"), "{}", failed.message);

    let view = get_policy(&mut reviewer).await;
    let current = view.policy.unwrap();
    assert_eq!(current.version, 1);
    assert_eq!(current.text, POLICY_1.as_bytes());
    assert_eq!(current.size as usize, POLICY_1.len());

    let agents = reviewer
        .list_agents(with_bearer(VIEWER_TOKEN, v1::ListAgentsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .agents;
    let late_info = agents.iter().find(|a| a.host == "late.example").unwrap();
    let status = late_info.policy.as_ref().unwrap();
    assert_eq!(
        (status.version, status.outcome),
        (1, v1::PolicyOutcome::Failed as i32)
    );

    // A second push goes to both open streams.
    let second = push(&mut reviewer, ADMIN_TOKEN, POLICY_2.as_bytes())
        .await
        .unwrap();
    assert_eq!(second.version, 2);
    assert_eq!(early.next_policy().await.version, 2);
    assert_eq!(late.next_policy().await.text.as_ref(), POLICY_2.as_bytes());
}

#[tokio::test]
async fn only_admins_push_and_viewers_read() {
    let server = start(MemoryStore::new(), auth()).await;
    let mut reviewer = server.reviewer().await;
    for token in [REVIEWER_TOKEN, VIEWER_TOKEN] {
        let status = push(&mut reviewer, token, POLICY_1.as_bytes())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let status = reviewer
        .push_policy(push_request(POLICY_1.as_bytes(), ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        get_policy(&mut reviewer).await.policy,
        None,
        "nothing stored"
    );
    push(&mut reviewer, ADMIN_TOKEN, POLICY_1.as_bytes())
        .await
        .unwrap();
    assert_eq!(get_policy(&mut reviewer).await.policy.unwrap().version, 1);
}

#[tokio::test]
async fn empty_oversized_and_non_utf8_pushes_are_refused_and_change_nothing() {
    let store = MemoryStore::new();
    let server = start(store, auth()).await;
    let mut reviewer = server.reviewer().await;
    push(&mut reviewer, ADMIN_TOKEN, POLICY_1.as_bytes())
        .await
        .unwrap();
    let mut agent = server.agent("host.example", "owner@example.com").await;
    assert_eq!(agent.next_policy().await.version, 1);

    let oversized = vec![b'#'; MAX_POLICY_LEN + 1];
    let cases: [(&[u8], &str); 3] = [
        (b"", "must not be empty"),
        (&oversized, "at most 1048576 allowed"),
        (
            b"version: 1\n\xc3\x28\n",
            "is not UTF-8 (first bad byte at offset 11)",
        ),
    ];
    for (text, expected) in cases {
        let status = push(&mut reviewer, ADMIN_TOKEN, text).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(expected), "{}", status.message());
    }
    let view = get_policy(&mut reviewer).await;
    assert_eq!(view.policy.unwrap().version, 1, "no bad push was stored");
    // And none was sent: the next thing on the stream is the next good push.
    push(&mut reviewer, ADMIN_TOKEN, POLICY_2.as_bytes())
        .await
        .unwrap();
    assert_eq!(agent.next_policy().await.version, 2);
}

#[tokio::test]
async fn a_push_on_one_postgres_replica_reaches_an_agent_on_another() {
    let db = belay_server::testing::postgres::database().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit.key");
    let open = || async {
        PostgresStore::connect(
            &db,
            AuditOptions {
                key: Some(key.clone()),
                checkpoint_every: 3,
            },
        )
        .await
        .unwrap()
    };
    let a = start(open().await, auth()).await;
    let b = start(open().await, auth()).await;

    let mut on_b = b.agent("b.example", "owner@example.com").await;
    // The stream is open (the hello answered) before the push: wait until B lists it.
    let mut reviewer_b = b.reviewer().await;
    tokio::time::timeout(PATIENCE, async {
        while get_policy(&mut reviewer_b).await.agents.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();

    let mut reviewer_a = a.reviewer().await;
    let pushed = push(&mut reviewer_a, ADMIN_TOKEN, POLICY_1.as_bytes())
        .await
        .unwrap();
    let update = on_b.next_policy().await;
    assert_eq!((update.version, update.sha256), (1, pushed.sha256));

    // Numbering is shared: B's push is version 2 and reaches B's agent too.
    let second = push(&mut reviewer_b, ADMIN_TOKEN, POLICY_2.as_bytes())
        .await
        .unwrap();
    assert_eq!(second.version, 2);
    assert_eq!(on_b.next_policy().await.version, 2);

    // An agent connecting to A later gets the newest version: at once, or right after
    // version 1 when it connects before A has heard of B's push.
    let mut on_a = a.agent("a.example", "owner@example.com").await;
    let first = on_a.next_policy().await.version;
    if first == 1 {
        assert_eq!(on_a.next_policy().await.version, 2);
    } else {
        assert_eq!(first, 2);
    }
    on_b.report(2, v1::PolicyOutcome::Applied, "").await;
    let status = wait_status(&mut reviewer_b, "b.example", 2).await;
    assert_eq!(status.outcome, v1::PolicyOutcome::Applied as i32);
}

async fn push_counted(
    client: &mut ReviewerServiceClient<Channel>,
    token: &str,
    text: &str,
) -> v1::PushPolicyResponse {
    client
        .push_policy(with_bearer(token, push_request(text.as_bytes(), "rollout")))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn with_a_quorum_a_push_takes_that_many_distinct_admins() {
    let dir = tempfile::tempdir().unwrap();
    let store = belay_server::approvals::SqliteStore::open(dir.path().join("server.db")).unwrap();
    let approvals = belay_server::approvals::Approvals::new(store)
        .with_quorum(std::num::NonZeroU32::new(2).unwrap());
    let mut options = ServeOptions::default();
    options.reviewer_auth = auth();
    let server = TestServer::start_approvals(approvals, options).await;
    let mut reviewer = server.reviewer().await;

    // One admin: counted, nothing stored or sent.
    let first = push_counted(&mut reviewer, ADMIN_TOKEN, POLICY_1).await;
    assert_eq!((first.policy, first.approvals, first.quorum), (None, 1, 2));
    assert_eq!(get_policy(&mut reviewer).await.policy, None);
    // The same admin again, or under another of their credentials: still one.
    let again = push_counted(&mut reviewer, ADMIN_TOKEN, POLICY_1).await;
    assert_eq!((again.policy, again.approvals), (None, 1));
    let alias = push_counted(&mut reviewer, ROOT_CI_TOKEN, POLICY_1).await;
    assert_eq!((alias.policy, alias.approvals), (None, 1));
    // Another admin's push of another text is no vote for this one.
    let other = push_counted(&mut reviewer, ADMIN2_TOKEN, POLICY_2).await;
    assert_eq!((other.policy, other.approvals), (None, 1));
    assert_eq!(get_policy(&mut reviewer).await.policy, None);

    // A second admin pushes the same text: stored, naming both.
    let done = push_counted(&mut reviewer, ADMIN2_TOKEN, POLICY_1).await;
    assert_eq!((done.approvals, done.quorum), (2, 2));
    let pushed = done.policy.expect("stored once two admins agreed");
    assert_eq!(pushed.version, 1);
    assert!(
        pushed.reason.contains("pushed by root, carol"),
        "{}",
        pushed.reason
    );
    assert_eq!(get_policy(&mut reviewer).await.policy.unwrap().version, 1);

    // The votes are used up: pushing that text again takes two admins again.
    let later = push_counted(&mut reviewer, ADMIN_TOKEN, POLICY_1).await;
    assert_eq!((later.policy, later.approvals), (None, 1));
    assert_eq!(get_policy(&mut reviewer).await.policy.unwrap().version, 1);
}
