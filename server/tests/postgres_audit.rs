//! The audit log on PostgreSQL: the same records, checkpoints and `verify` reports as
//! SQLite for the same changes; one chain when two replicas append at once; and
//! `belay-server audit verify --db postgres://...` catching a row edited by a superuser.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use belay_proto::domain::{NewRequest, ReviewerDecision};
use belay_proto::v1;
use belay_server::approvals::{Approvals, AuditOptions, PostgresStore, SqliteStore, Store};
use belay_server::audit;
use belay_server::testing::postgres::database;
use support::{agent_identity, run_server};
use tokio_postgres::NoTls;

fn new_request(id: &str, now: SystemTime) -> NewRequest {
    NewRequest::try_from(v1::NewRequest {
        id: id.into(),
        agent_name: "copilot".into(),
        pid: 7,
        uid: 1000,
        action: Some(v1::Action {
            kind: Some(v1::action::Kind::Exec(v1::Exec {
                path: "/usr/bin/curl".into(),
                argv: vec!["curl".into(), "example.org".into()],
                ..Default::default()
            })),
        }),
        deadline: Some((now + Duration::from_secs(60)).into()),
        default_verdict: v1::Verdict::Deny.into(),
        rule: "net".into(),
        ..Default::default()
    })
    .unwrap()
}

fn decision(id: &str, verdict: v1::Verdict, reviewer: &str) -> ReviewerDecision {
    ReviewerDecision::try_from(v1::DecideRequest {
        request_id: id.into(),
        verdict: verdict.into(),
        reason: "fine".into(),
        reviewer: reviewer.into(),
        ..Default::default()
    })
    .unwrap()
}

/// The same changes, at the same times, on any store: 5 submissions, 3 decisions.
async fn make_changes<S: Store>(approvals: &Approvals<S>, now: SystemTime) {
    let host = agent_identity("host-a");
    for n in 0..5 {
        let at = now + Duration::from_millis(n);
        approvals
            .submit(&host, new_request(&format!("host-a:r{n}"), at), at)
            .await
            .unwrap();
    }
    for (n, verdict) in [
        (0, v1::Verdict::Allow),
        (2, v1::Verdict::Deny),
        (4, v1::Verdict::Kill),
    ] {
        approvals
            .decide(
                decision(&format!("host-a:r{n}"), verdict, "bob"),
                now + Duration::from_secs(1),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn postgres_keeps_the_same_log_as_sqlite_and_verify_reports_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit-key");
    let options = AuditOptions {
        key: Some(key.clone()),
        checkpoint_every: 3,
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);

    let sqlite_path = dir.path().join("server.db");
    let sqlite = Approvals::new(SqliteStore::open_with(&sqlite_path, options.clone()).unwrap());
    make_changes(&sqlite, now).await;
    let url = database().await;
    let postgres = Approvals::new(PostgresStore::connect(&url, options).await.unwrap());
    make_changes(&postgres, now).await;

    let public_key = audit::resolve_public_key(&sqlite_path, None, Some(&key)).unwrap();
    let from_sqlite = sqlite_records(&sqlite_path);
    assert_eq!(from_sqlite.len(), 8);
    let from_postgres = postgres_records(&url).await;
    assert_eq!(from_postgres, from_sqlite);

    let sqlite_report = audit::verify(&sqlite_path, &public_key).unwrap();
    let postgres_report = audit::postgres::verify(&url, &public_key).await.unwrap();
    assert!(postgres_report.is_intact(), "{postgres_report:?}");
    assert_eq!(postgres_report.records, 8);
    assert_eq!(postgres_report.checkpoints, 2);
    assert_eq!(postgres_report.unsigned_tail, 2);
    assert_eq!(postgres_report, sqlite_report);
}

fn sqlite_records(path: &std::path::Path) -> Vec<audit::Record> {
    let db = rusqlite::Connection::open(path).unwrap();
    let mut statement = db
        .prepare("SELECT seq, at, kind, request_id, body, prev_hash, hash FROM audit ORDER BY seq")
        .unwrap();
    statement
        .query_map([], |row| {
            Ok(audit::Record {
                seq: row.get::<_, i64>(0)?.try_into().unwrap(),
                at: row.get(1)?,
                kind: row.get(2)?,
                request_id: row.get(3)?,
                body: row.get(4)?,
                prev_hash: row.get(5)?,
                hash: row.get(6)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

async fn postgres_records(url: &str) -> Vec<audit::Record> {
    let client = superuser(url).await;
    client
        .query(
            "SELECT seq, at, kind, request_id, body, prev_hash, hash FROM audit ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| audit::Record {
            seq: row.get::<_, i64>(0).try_into().unwrap(),
            at: row.get(1),
            kind: row.get(2),
            request_id: row.get(3),
            body: row.get(4),
            prev_hash: row.get(5),
            hash: row.get(6),
        })
        .collect()
}

/// A connection as the cluster's superuser (who may bypass the log's triggers).
async fn superuser(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn two_replicas_appending_at_once_keep_one_intact_chain() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit-key");
    let options = AuditOptions {
        key: Some(key.clone()),
        checkpoint_every: 7,
    };
    let url = database().await;
    let a = Arc::new(Approvals::new(
        PostgresStore::connect(&url, options.clone()).await.unwrap(),
    ));
    let b = Arc::new(Approvals::new(
        PostgresStore::connect(&url, options).await.unwrap(),
    ));
    let now = SystemTime::now();
    let mut tasks = Vec::new();
    for (name, approvals) in [("a", &a), ("b", &b)] {
        for n in 0..60 {
            let approvals = Arc::clone(approvals);
            tasks.push(tokio::spawn(async move {
                let id = format!("host-a:{name}-{n}");
                approvals
                    .submit(&agent_identity("host-a"), new_request(&id, now), now)
                    .await
                    .unwrap();
                approvals
                    .decide(decision(&id, v1::Verdict::Allow, "bob"), now)
                    .await
                    .unwrap();
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let public_key = audit::resolve_public_key(&key, None, Some(&key)).unwrap();
    let report = audit::postgres::verify(&url, &public_key).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 240);
    assert_eq!(report.checkpoints, 240 / 7);
}

#[tokio::test]
async fn verify_on_postgres_reports_an_intact_log_then_the_edited_row() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit-key");
    let key_arg = key.to_str().unwrap();
    let url = database().await;
    let options = AuditOptions {
        key: Some(key.clone()),
        checkpoint_every: 3,
    };
    let approvals = Approvals::new(PostgresStore::connect(&url, options).await.unwrap());
    make_changes(&approvals, SystemTime::now()).await;
    drop(approvals);

    // A PostgreSQL database has no key file next to it: the key must be named.
    let no_key = run_server(&["audit", "verify", "--db", &url]);
    assert_eq!(no_key.status.code(), Some(2), "{no_key:?}");
    assert!(
        String::from_utf8_lossy(&no_key.stderr).contains("--audit-key"),
        "{no_key:?}"
    );

    let ok = run_server(&["audit", "verify", "--db", &url, "--audit-key", key_arg]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(
        stdout.contains("8 records intact, 2 checkpoints"),
        "{stdout}"
    );

    let client = superuser(&url).await;
    // The log refuses edits through SQL...
    let refused = client
        .execute("UPDATE audit SET body = body WHERE seq = 4", &[])
        .await
        .unwrap_err();
    let message = refused.as_db_error().map(|err| err.message().to_owned());
    assert_eq!(
        message.as_deref(),
        Some("the audit log is append-only"),
        "{refused:?}"
    );
    // ...unless a superuser switches its triggers off.
    client
        .batch_execute(
            "SET session_replication_role = replica; \
             UPDATE audit SET body = replace(body, '\"bob\"', '\"mallory\"') WHERE seq = 7; \
             SET session_replication_role = DEFAULT;",
        )
        .await
        .unwrap();

    let edited = run_server(&["audit", "verify", "--db", &url, "--audit-key", key_arg]);
    let stderr = String::from_utf8_lossy(&edited.stderr);
    assert_eq!(edited.status.code(), Some(1), "{edited:?}");
    assert!(
        stderr.contains("record 7: hash does not match its contents (edited?)"),
        "{stderr}"
    );

    let unreachable = run_server(&[
        "audit",
        "verify",
        "--db",
        "postgres://postgres:secret@127.0.0.1:1/nothing",
        "--audit-key",
        key_arg,
    ]);
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert_eq!(unreachable.status.code(), Some(2), "{unreachable:?}");
    assert!(
        !stderr.contains("secret"),
        "the password is not shown: {stderr}"
    );
}
