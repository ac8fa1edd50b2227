//! The audit log on real SQLite files, written through the approval rules: a
//! lifecycle's records, then copies of that database tampered with raw SQL, each caught
//! at the right record. (Here rather than in `audit`, which sits below the rules.)

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use belay_proto::domain::{
    Action, ConnectAction, HostName, Identity, Name, NewRequest, Protocol, Reason, RequestId,
    RequestState, ReviewerDecision, Verdict, Withdraw,
};
use ed25519_dalek::VerifyingKey;
use rusqlite::Connection;
use tempfile::TempDir;

use crate::approvals::{AgentIdentity, Approvals, AuditOptions, MemoryStore, SqliteStore};
use crate::audit::*;

const T0: Duration = Duration::from_secs(1_800_000_000);

fn at(offset_secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(offset_secs)
}

fn agent() -> AgentIdentity {
    AgentIdentity {
        host: HostName::new("host-a").unwrap(),
        owner: Identity::new("alice").unwrap(),
    }
}

fn new_request(id: &str, deadline: SystemTime) -> NewRequest {
    NewRequest {
        id: RequestId::new(id).unwrap(),
        agent_name: Name::new("copilot").unwrap(),
        pid: 77,
        uid: 1000,
        action: Action::Connect(ConnectAction {
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            port: NonZeroU16::new(443).unwrap(),
            protocol: Protocol::Tcp,
        }),
        deadline,
        default_verdict: Verdict::Deny,
        rule: Name::new("egress").unwrap(),
        owner: None,
        context: Default::default(),
    }
}

fn decision(id: &str, verdict: Verdict) -> ReviewerDecision {
    ReviewerDecision {
        request_id: RequestId::new(id).unwrap(),
        verdict,
        reason: Reason::new("checked").unwrap(),
        reviewer: Identity::new("bob").unwrap(),
        scope: belay_proto::domain::Scope::Once,
    }
}

fn options(every: u64) -> AuditOptions {
    AuditOptions {
        key: None,
        checkpoint_every: every,
    }
}

/// r1..r4 submitted (checkpoint at 4), r1 approved, r2 denied, r3 withdrawn, r4 expired
/// (checkpoint at 8), r5 submitted; closing the store signs record 9.
async fn lifecycle(dir: &TempDir) -> (PathBuf, VerifyingKey) {
    let path = dir.path().join("server.db");
    let store = SqliteStore::open_with(&path, options(4)).unwrap();
    let key = store.audit_public_key();
    let approvals = Approvals::new(store);
    for (name, deadline) in [
        ("host-a:r1", 60),
        ("host-a:r2", 60),
        ("host-a:r3", 60),
        ("host-a:r4", 5),
    ] {
        approvals
            .submit(&agent(), new_request(name, at(deadline)), at(0))
            .await
            .unwrap();
    }
    approvals
        .decide(decision("host-a:r1", Verdict::Allow), at(1))
        .await
        .unwrap();
    approvals
        .decide(decision("host-a:r2", Verdict::Kill), at(2))
        .await
        .unwrap();
    let withdraw = Withdraw {
        request_id: RequestId::new("host-a:r3").unwrap(),
        reason: Reason::new("process exited").unwrap(),
    };
    approvals.withdraw(&agent(), withdraw, at(3)).await.unwrap();
    assert_eq!(approvals.expire_due(at(10)).await.unwrap().len(), 1);
    approvals
        .submit(&agent(), new_request("host-a:r5", at(60)), at(11))
        .await
        .unwrap();
    drop(approvals);
    (path, key)
}

/// A copy of `db` with the append-only triggers dropped and `sql` run on it.
fn tampered(db: &Path, name: &str, sql: &str) -> PathBuf {
    let copy = db.with_file_name(name);
    std::fs::copy(db, &copy).unwrap();
    let connection = Connection::open(&copy).unwrap();
    connection
        .execute_batch(
            "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;
             DROP TRIGGER audit_checkpoints_no_update; DROP TRIGGER audit_checkpoints_no_delete;",
        )
        .unwrap();
    connection.execute_batch(sql).unwrap();
    copy
}

fn problem(report: &Report) -> &Problem {
    report
        .first_problem
        .as_ref()
        .unwrap_or_else(|| panic!("no problem found: {report:?}"))
}

fn rows(db: &Path) -> Vec<(i64, String, String, serde_json::Value)> {
    Connection::open(db)
        .unwrap()
        .prepare("SELECT seq, kind, request_id, body FROM audit ORDER BY seq")
        .unwrap()
        .query_map([], |row| {
            let body: String = row.get(3)?;
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                serde_json::from_str(&body).unwrap(),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn a_lifecycle_is_recorded_in_order_with_a_valid_chain_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = lifecycle(&dir).await;

    let rows = rows(&db);
    let kinds: Vec<(&str, &str)> = rows
        .iter()
        .map(|(_, kind, id, _)| (kind.as_str(), id.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("submitted", "host-a:r1"),
            ("submitted", "host-a:r2"),
            ("submitted", "host-a:r3"),
            ("submitted", "host-a:r4"),
            ("decided", "host-a:r1"),
            ("decided", "host-a:r2"),
            ("cancelled", "host-a:r3"),
            ("expired", "host-a:r4"),
            ("submitted", "host-a:r5"),
        ]
    );
    assert_eq!(
        rows.iter().map(|row| row.0).collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>()
    );
    let approved = &rows[4].3;
    assert_eq!(approved["reviewer"], "bob");
    assert_eq!(approved["verdict"], "allow");
    assert_eq!(approved["state"], "approved");
    assert_eq!(approved["reason"], "checked");
    assert_eq!(approved["host"], "host-a");
    assert_eq!(approved["owner"], "alice");
    assert_eq!(approved["action"]["address"], "192.0.2.1");
    assert_eq!(rows[5].3["verdict"], "kill");
    assert_eq!(rows[5].3["state"], "denied");
    assert_eq!(rows[6].3["reason"], "process exited");
    assert_eq!(rows[7].3["verdict"], "deny");
    assert_eq!(
        rows[0].3["deadline"],
        rows[0].3["at"].as_i64().unwrap() + 60_000_000_000
    );

    let report = verify(&db, &key).unwrap();
    assert_eq!(
        report,
        Report {
            records: 9,
            checkpoints: 3,
            unsigned_tail: 0,
            key_id: key_id(&key),
            first_problem: None,
        }
    );
    let checkpoints: Vec<i64> = Connection::open(&db)
        .unwrap()
        .prepare("SELECT seq FROM audit_checkpoints ORDER BY seq")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(checkpoints, [4, 8, 9], "every 4 records, and at shutdown");

    // The key file is private and gives the same public key.
    let key_file = default_key_path(&db);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(resolve_public_key(&db, None, None).unwrap(), key);
}

#[tokio::test]
async fn the_log_is_append_only_through_sql() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = lifecycle(&dir).await;
    let connection = Connection::open(&db).unwrap();
    let err = connection
        .execute("UPDATE audit SET body = '{}' WHERE seq = 1", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert!(connection.execute("DELETE FROM audit", []).is_err());
}

#[tokio::test]
async fn an_edited_body_is_caught_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = lifecycle(&dir).await;
    let copy = tampered(
        &db,
        "edited.db",
        "UPDATE audit SET body = replace(body, '\"allow\"', '\"deny\"') WHERE seq = 5",
    );
    let report = verify(&copy, &key).unwrap();
    assert_eq!(
        problem(&report).to_string(),
        "record 5: hash does not match its contents (edited?)"
    );
}

#[tokio::test]
async fn an_edited_hash_is_caught_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = lifecycle(&dir).await;
    let copy = tampered(
        &db,
        "hash.db",
        "UPDATE audit SET hash = zeroblob(32) WHERE seq = 2",
    );
    let report = verify(&copy, &key).unwrap();
    assert_eq!(problem(&report).seq, 2);
    assert!(problem(&report).what.contains("hash does not match"));
}

#[tokio::test]
async fn a_deleted_middle_record_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = lifecycle(&dir).await;
    let copy = tampered(&db, "deleted.db", "DELETE FROM audit WHERE seq = 3");
    let report = verify(&copy, &key).unwrap();
    let problem = problem(&report);
    assert_eq!(problem.seq, 3);
    assert!(problem.what.contains("missing"), "{problem}");
}

#[tokio::test]
async fn a_deleted_signed_last_record_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = lifecycle(&dir).await;
    let copy = tampered(&db, "truncated.db", "DELETE FROM audit WHERE seq = 9");
    let report = verify(&copy, &key).unwrap();
    let problem = problem(&report);
    assert_eq!(problem.seq, 9);
    assert!(problem.what.contains("missing"), "{problem}");
}

#[tokio::test]
async fn two_swapped_records_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = lifecycle(&dir).await;
    let copy = tampered(
        &db,
        "swapped.db",
        "UPDATE audit SET seq = 1000 WHERE seq = 5;
         UPDATE audit SET seq = 5 WHERE seq = 6;
         UPDATE audit SET seq = 6 WHERE seq = 1000;",
    );
    let report = verify(&copy, &key).unwrap();
    let problem = problem(&report);
    assert_eq!(problem.seq, 5);
    assert!(problem.what.contains("reordered"), "{problem}");
}

#[tokio::test]
async fn a_rewritten_chain_is_caught_by_the_next_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = lifecycle(&dir).await;
    let copy = tampered(
        &db,
        "rewritten.db",
        "UPDATE audit SET body = replace(body, '\"allow\"', '\"deny\"') WHERE seq = 5",
    );
    // Re-hash from the edited record on, as someone covering their tracks would.
    let connection = Connection::open(&copy).unwrap();
    let mut prev: Vec<u8> = connection
        .query_row("SELECT hash FROM audit WHERE seq = 4", [], |row| row.get(0))
        .unwrap();
    for seq in 5..=9i64 {
        let body: String = connection
            .query_row("SELECT body FROM audit WHERE seq = ?1", [seq], |row| {
                row.get(0)
            })
            .unwrap();
        let hash = record_hash(&prev, seq.try_into().unwrap(), body.as_bytes()).to_vec();
        connection
            .execute(
                "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                rusqlite::params![prev, hash, seq],
            )
            .unwrap();
        prev = hash;
    }
    let report = verify(&copy, &key).unwrap();
    let problem = problem(&report);
    assert_eq!(problem.seq, 8, "the first checkpoint after the edit");
    assert!(
        problem.what.contains("checkpoint's hash does not match"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_forged_checkpoint_signature_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = lifecycle(&dir).await;
    let copy = tampered(
        &db,
        "forged.db",
        "UPDATE audit_checkpoints SET signature = randomblob(64) WHERE seq = 4",
    );
    let report = verify(&copy, &key).unwrap();
    let problem = problem(&report);
    assert_eq!(problem.seq, 4);
    assert!(problem.what.contains("does not verify"), "{problem}");
}

#[tokio::test]
async fn checkpoints_signed_by_another_key_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = lifecycle(&dir).await;
    let other = AuditKey::generate().unwrap().public_key();
    let report = verify(&db, &other).unwrap();
    let found = problem(&report);
    assert_eq!(found.seq, 4);
    assert!(found.what.contains("another key"), "{found}");

    // A log re-signed with a new key (key file replaced) fails against the old key.
    let dir2 = tempfile::tempdir().unwrap();
    let (db2, key2) = lifecycle(&dir2).await;
    std::fs::remove_file(default_key_path(&db2)).unwrap();
    let store = SqliteStore::open_with(&db2, options(4)).unwrap();
    assert_ne!(store.audit_public_key(), key2, "a new key was created");
    let approvals = Approvals::new(store);
    for name in ["host-a:r6", "host-a:r7", "host-a:r8"] {
        approvals
            .submit(&agent(), new_request(name, at(60)), at(12))
            .await
            .unwrap();
    }
    drop(approvals);
    let report = verify(&db2, &key2).unwrap();
    assert_eq!(
        problem(&report).seq,
        12,
        "the first checkpoint of the new key"
    );
}

#[tokio::test]
async fn records_after_the_last_checkpoint_are_an_unsigned_tail_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = lifecycle(&dir).await;
    // As after a crash: record 9 was committed, the shutdown checkpoint never written.
    let copy = tampered(
        &db,
        "tail.db",
        "DELETE FROM audit_checkpoints WHERE seq = 9",
    );
    let report = verify(&copy, &key).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.records, report.checkpoints), (9, 2));
    assert_eq!(report.unsigned_tail, 1);
}

#[tokio::test]
async fn a_state_change_and_its_audit_record_commit_together_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let store = SqliteStore::open_with(&path, options(100)).unwrap();
    let approvals = Approvals::new(store);
    approvals
        .submit(&agent(), new_request("host-a:r1", at(60)), at(0))
        .await
        .unwrap();
    drop(approvals);
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit
             BEGIN SELECT RAISE(ABORT, 'audit refused'); END;",
        )
        .unwrap();

    let approvals = Approvals::new(SqliteStore::open_with(&path, options(100)).unwrap());
    let err = approvals
        .decide(decision("host-a:r1", Verdict::Allow), at(1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("audit refused"), "{err}");
    assert!(
        approvals
            .submit(&agent(), new_request("host-a:r2", at(60)), at(1))
            .await
            .is_err()
    );
    assert_eq!(
        approvals
            .get(&RequestId::new("host-a:r1").unwrap())
            .await
            .unwrap()
            .state(),
        RequestState::Pending,
        "the decision was not committed without its record"
    );
    drop(approvals);

    let db = Connection::open(&path).unwrap();
    let (state, missing): (String, i64) = db
        .query_row(
            "SELECT (SELECT state FROM requests WHERE id = 'host-a:r1'), \
             (SELECT count(*) FROM requests WHERE id = 'host-a:r2')",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((state.as_str(), missing), ("pending", 0));
    db.execute_batch("DROP TRIGGER refuse_audit").unwrap();
    drop(db);
    let key = resolve_public_key(&path, None, None).unwrap();
    let report = verify(&path, &key).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 1);
}

#[tokio::test]
async fn the_memory_store_keeps_a_chain_with_the_same_rules() {
    use crate::approvals::{RequestStore as _, Resolved};
    use belay_proto::domain::{Outcome, Request, Resolution};

    let store = MemoryStore::with_audit(AuditSigner::new(AuditKey::generate().unwrap(), 2));
    for name in ["host-a:r1", "host-a:r2", "host-a:r3"] {
        let request = Request::new(
            new_request(name, at(60)),
            agent().host,
            agent().owner,
            at(0),
        );
        store.insert_if_absent(request.clone()).await.unwrap();
        // A resubmission is not a new record.
        store.insert_if_absent(request).await.unwrap();
    }
    let resolution = Resolution {
        outcome: Outcome::Decided {
            verdict: Verdict::Deny,
            reviewer: Identity::new("bob").unwrap(),
        },
        reason: Reason::new("checked").unwrap(),
        resolved_at: at(1),
    };
    let id = RequestId::new("host-a:r1").unwrap();
    assert!(matches!(
        store
            .resolve_pending(&id, resolution.clone())
            .await
            .unwrap(),
        Resolved::Now(_)
    ));
    // A refused second decision leaves no record either.
    assert!(matches!(
        store.resolve_pending(&id, resolution).await.unwrap(),
        Resolved::Already(_)
    ));

    let records = store.all_audit_records();
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["submitted", "submitted", "submitted", "decided"]);
    let report = store.verify_audit();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        (report.records, report.checkpoints, report.unsigned_tail),
        (4, 2, 0)
    );

    // The same verifier catches an edit of the in-memory records.
    let mut edited = records.clone();
    edited[1].body = edited[1].body.replace("host-a:r2", "host-a:r9");
    let report = verify_records(&edited, [], &store.audit_public_key());
    assert_eq!(report.first_problem.unwrap().seq, 2);
}

#[tokio::test]
async fn a_declared_intent_is_recorded_with_its_submission_as_unverified() {
    use belay_proto::domain::{Intent, IntentDetails};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let store = SqliteStore::open_with(&path, options(4)).unwrap();
    let key = store.audit_public_key();
    let approvals = Approvals::new(store);
    let intent = Intent::new(
        "run the migration the user asked for".into(),
        IntentDetails {
            model: Some("gpt-x".into()),
            tool_call_id: Some("call_9".into()),
            ..Default::default()
        },
        4242,
        at(0),
    )
    .unwrap();
    let mut with_intent = new_request("host-a:i1", at(60));
    with_intent.context = with_intent.context.with_intent(Some(intent));
    approvals
        .submit(&agent(), with_intent, at(0))
        .await
        .unwrap();
    approvals
        .submit(&agent(), new_request("host-a:i2", at(60)), at(0))
        .await
        .unwrap();
    // The stored request keeps it too, for every later reader.
    let stored = approvals
        .get(&RequestId::new("host-a:i1").unwrap())
        .await
        .unwrap();
    assert_eq!(
        stored.context.intent().map(Intent::text),
        Some("run the migration the user asked for")
    );
    drop(approvals);

    let rows = rows(&path);
    let submitted: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|(_, kind, _, _)| kind == "submitted")
        .map(|(_, _, _, body)| body)
        .collect();
    assert_eq!(submitted.len(), 2);
    let recorded = &submitted[0]["intent"];
    assert_eq!(recorded["text"], "run the migration the user asked for");
    assert_eq!(recorded["model"], "gpt-x");
    assert_eq!(recorded["tool_call_id"], "call_9");
    assert_eq!(recorded["declared_by_pid"], 4242);
    assert_eq!(recorded["verified"], false);
    assert!(submitted[1].get("intent").is_none(), "no intent, no field");
    assert!(verify(&path, &key).unwrap().is_intact());
}
