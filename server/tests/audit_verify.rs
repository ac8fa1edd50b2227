//! `belay-server audit verify` and `audit public-key` on a real database file.

mod support;

use std::time::{Duration, SystemTime};

use belay_proto::domain::{
    Action, ExecAction, HostName, Identity, Name, NewRequest, Reason, RequestId, ReviewerDecision,
    Verdict,
};
use belay_server::approvals::{AgentIdentity, Approvals, SqliteStore};
use belay_server::audit;
use rusqlite::Connection;
use support::run_server;

#[tokio::test]
async fn verify_reports_an_intact_log_then_the_edited_record() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    let now = SystemTime::now();
    let approvals = Approvals::new(SqliteStore::open(&db).unwrap());
    let agent = AgentIdentity {
        host: HostName::new("host-a").unwrap(),
        owner: Identity::new("alice").unwrap(),
    };
    let request = NewRequest {
        id: RequestId::new("host-a:r1").unwrap(),
        agent_name: Name::new("copilot").unwrap(),
        pid: 7,
        uid: 1000,
        action: Action::Exec(ExecAction::new("/usr/bin/curl", vec!["curl".into()], None).unwrap()),
        deadline: now + Duration::from_secs(60),
        default_verdict: Verdict::Deny,
        rule: Name::new("net").unwrap(),
        owner: None,
        context: Default::default(),
    };
    approvals.submit(&agent, request, now).await.unwrap();
    let decision = ReviewerDecision {
        request_id: RequestId::new("host-a:r1").unwrap(),
        verdict: Verdict::Allow,
        reason: Reason::new("fine").unwrap(),
        reviewer: Identity::new("bob").unwrap(),
        scope: belay_proto::domain::Scope::Once,
    };
    approvals.decide(decision, now).await.unwrap();
    drop(approvals);
    let db_arg = db.to_str().unwrap();

    let key = run_server(&["audit", "public-key", "--db", db_arg]);
    assert!(key.status.success(), "{key:?}");
    let key_hex = String::from_utf8(key.stdout).unwrap().trim().to_owned();
    assert_eq!(
        audit::parse_public_key(&key_hex).unwrap(),
        audit::resolve_public_key(&db, None, None).unwrap()
    );

    let ok = run_server(&["audit", "verify", "--db", db_arg, "--public-key", &key_hex]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(
        stdout.contains("2 records intact, 1 checkpoints"),
        "{stdout}"
    );

    let connection = Connection::open(&db).unwrap();
    connection
        .execute_batch(
            "DROP TRIGGER audit_no_update;
             UPDATE audit SET body = replace(body, 'bob', 'eve') WHERE seq = 2;",
        )
        .unwrap();
    drop(connection);
    let bad = run_server(&["audit", "verify", "--db", db_arg]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim(),
        "audit: record 2: hash does not match its contents (edited?)"
    );

    let missing = run_server(&["audit", "verify", "--db", "/nonexistent/belay.db"]);
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
}
