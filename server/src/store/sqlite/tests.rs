//! What only a database file can show: restarts, concurrent deciders on one file, and
//! files that must be refused. All on real SQLite files in temporary directories.

use crate::store::{EnrollmentStore as _, RequestStore as _};
use std::net::IpAddr;
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use belay_proto::domain::{
    Action, ConnectAction, HostName, Identity, Name, Outcome, Protocol, Reason, Request, RequestId,
    Resolution, Verdict,
};
use rusqlite::Connection;
use tempfile::TempDir;

use super::super::{Inserted, Resolved, StoreError};
use super::SqliteStore;

const T0: Duration = Duration::from_secs(1_800_000_000);

fn at(offset_secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(offset_secs)
}

fn id(value: &str) -> RequestId {
    RequestId::new(value).unwrap()
}

fn request(name: &str, deadline: SystemTime) -> Request {
    Request {
        id: id(name),
        host: HostName::new("host-a").unwrap(),
        agent_name: Name::new("copilot").unwrap(),
        owner: Identity::new("alice").unwrap(),
        pid: 77,
        uid: 1000,
        action: Action::Connect(ConnectAction {
            address: IpAddr::V4([192, 0, 2, 1].into()),
            port: NonZeroU16::new(443).unwrap(),
            protocol: Protocol::Tcp,
        }),
        deadline,
        default_verdict: Verdict::Deny,
        rule: Name::new("egress").unwrap(),
        created_at: at(0),
        resolution: None,
        context: Default::default(),
    }
}

fn decided(verdict: Verdict, reviewer: &str) -> Resolution {
    Resolution {
        outcome: Outcome::Decided {
            verdict,
            reviewer: Identity::new(reviewer).unwrap(),
        },
        reason: Reason::new(format!("{reviewer} decided")).unwrap(),
        resolved_at: at(5),
    }
}

fn db_in(dir: &TempDir) -> PathBuf {
    dir.path().join("server.db")
}

/// Opening must fail; returns the error's message after checking it names the file.
fn refused(path: &Path) -> (StoreError, String) {
    let err = SqliteStore::open(path).expect_err("the store should refuse this file");
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "the error does not name the file: {message}"
    );
    (err, message)
}

#[tokio::test]
async fn a_pending_request_and_its_deadline_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let deadline = at(60) + Duration::from_nanos(987_654_321);
    let submitted = request("r1", deadline);
    {
        let store = SqliteStore::open(db_in(&dir)).unwrap();
        store.insert_if_absent(submitted.clone()).await.unwrap();
        store.insert_if_absent(request("r2", at(30))).await.unwrap();
        store
            .resolve_pending(&id("r2"), decided(Verdict::Deny, "bob"))
            .await
            .unwrap();
        // Dropped here, as a stopping server drops it.
    }

    let store = SqliteStore::open(db_in(&dir)).unwrap();
    assert_eq!(store.get(&id("r1")).await.unwrap(), Some(submitted.clone()));
    assert_eq!(store.pending().await.unwrap(), vec![submitted.clone()]);
    assert_eq!(store.next_deadline().await.unwrap(), Some(deadline));
    assert!(store.pending_due(at(60)).await.unwrap().is_empty());
    assert_eq!(store.pending_due(at(61)).await.unwrap(), [id("r1")]);
    assert_eq!(
        store.get(&id("r2")).await.unwrap().unwrap().resolution,
        Some(decided(Verdict::Deny, "bob"))
    );
    // Resubmitted after the restart by a reconnecting agent: the same request.
    assert_eq!(
        store.insert_if_absent(submitted.clone()).await.unwrap(),
        Inserted::Existing(submitted.clone())
    );

    let resolution = decided(Verdict::Allow, "bob");
    let resolved = store
        .resolve_pending(&id("r1"), resolution.clone())
        .await
        .unwrap();
    let expected = Request {
        resolution: Some(resolution),
        ..submitted
    };
    assert_eq!(resolved, Resolved::Now(expected.clone()));
    drop(store);

    let store = SqliteStore::open(db_in(&dir)).unwrap();
    assert_eq!(store.get(&id("r1")).await.unwrap(), Some(expected));
    assert!(store.pending().await.unwrap().is_empty());
}

/// Runs `deciders` concurrent `resolve_pending` calls on each of `rounds` requests, the
/// decider `i` using `stores[i % stores.len()]`; checks that exactly one wins each time
/// and that the stored resolution is the winner's.
async fn race_deciders(stores: &[Arc<SqliteStore>], deciders: usize, rounds: usize) {
    for round in 0..rounds {
        let name = format!("race-{round}");
        stores[0]
            .insert_if_absent(request(&name, at(60)))
            .await
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(deciders));
        let tasks: Vec<_> = (0..deciders)
            .map(|decider| {
                let store = Arc::clone(&stores[decider % stores.len()]);
                let barrier = Arc::clone(&barrier);
                let id = id(&name);
                tokio::spawn(async move {
                    let resolution = decided(Verdict::Allow, &format!("reviewer-{decider}"));
                    barrier.wait().await;
                    store.resolve_pending(&id, resolution).await.unwrap()
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut already = 0;
        for task in tasks {
            match task.await.unwrap() {
                Resolved::Now(request) => winners.push(request),
                Resolved::Already(_) => already += 1,
                Resolved::NotFound => panic!("{name} not found"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(already, deciders - 1);
        for store in stores {
            assert_eq!(
                store.get(&id(&name)).await.unwrap().as_ref(),
                Some(&winners[0]),
                "round {round}: every connection sees the winner's decision"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_eight_concurrent_deciders_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(db_in(&dir)).unwrap());
    race_deciders(&[store], 8, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_wins_across_two_connections_to_one_file() {
    // Two stores on one file are two connections, as two processes would have: the
    // conditional UPDATE, not the single database thread, is what keeps this right.
    let dir = tempfile::tempdir().unwrap();
    let first = Arc::new(SqliteStore::open(db_in(&dir)).unwrap());
    let second = Arc::new(SqliteStore::open(db_in(&dir)).unwrap());
    race_deciders(&[first, second], 8, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_concurrent_writes_is_committed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(db_in(&dir)).unwrap());
    let tasks: Vec<_> = (0..500)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let name = format!("burst-{n:03}");
                store
                    .insert_if_absent(request(&name, at(60)))
                    .await
                    .unwrap();
                if n % 2 == 0 {
                    store
                        .resolve_pending(&id(&name), decided(Verdict::Deny, "bob"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    drop(Arc::into_inner(store).expect("no other owner"));

    let store = SqliteStore::open(db_in(&dir)).unwrap();
    let pending = store.pending().await.unwrap();
    assert_eq!(pending.len(), 250);
    assert!(
        pending
            .iter()
            .all(|request| request.id.as_str().ends_with(['1', '3', '5', '7', '9']))
    );
    assert!(
        store
            .get(&id("burst-000"))
            .await
            .unwrap()
            .unwrap()
            .resolution
            .is_some()
    );
}

#[test]
fn a_file_that_is_not_sqlite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are my notes, not a database\n".repeat(200)).unwrap();

    let (err, message) = refused(&path);
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(message.contains("file is not a database"), "{message}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "these are my notes, not a database\n".repeat(200),
        "the file is left as it was"
    );
}

#[tokio::test]
async fn a_damaged_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    {
        let store = SqliteStore::open(&path).unwrap();
        store.insert_if_absent(request("r1", at(60))).await.unwrap();
    }
    // Closing the last connection folded the log into the file; now overwrite the
    // schema table (the rest of page 1, after the 100-byte file header).
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() >= 4096);
    bytes[100..4096].fill(0xA5);
    std::fs::write(&path, bytes).unwrap();

    let (err, message) = refused(&path);
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(message.contains("malformed"), "{message}");
}

#[test]
fn a_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no").join("such").join("server.db");
    let (err, message) = refused(&path);
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(
        message.contains("unable to open database file"),
        "{message}"
    );
}

#[test]
fn a_schema_from_the_future_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    drop(SqliteStore::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (10, 0)",
            [],
        )
        .unwrap();

    let (err, message) = refused(&path);
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 10,
                known: 9,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        message.contains("schema version 10, newer than the 9 this belay-server knows"),
        "{message}"
    );
    assert_eq!(
        schema_versions(&path),
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        "nothing was changed"
    );
}

#[test]
fn another_applications_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE users (name TEXT); CREATE TABLE orders (n INTEGER);")
        .unwrap();

    let (err, message) = refused(&path);
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(
        message.contains("not a belay-server database") && message.contains("orders, users"),
        "{message}"
    );
    let tables: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .unwrap();
    assert_eq!(tables, 2, "nothing was added");
}

#[test]
fn migrations_run_once_and_leave_the_file_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    drop(SqliteStore::open(&path).unwrap());
    drop(SqliteStore::open(&path).unwrap());
    assert_eq!(schema_versions(&path), [1, 2, 3, 4, 5, 6, 7, 8, 9]);

    let db = Connection::open(&path).unwrap();
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tables,
        [
            "audit",
            "audit_checkpoints",
            "chat_leases",
            "chat_outbox",
            "chat_seen",
            "enroll_tokens",
            "enrolled_hosts",
            "grants",
            "policies",
            "policy_votes",
            "requests",
            "schema_version",
            "votes"
        ]
    );
}

#[tokio::test]
async fn a_damaged_row_is_an_error_and_leaves_the_others_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = SqliteStore::open(&path).unwrap();
    store
        .insert_if_absent(request("good", at(60)))
        .await
        .unwrap();
    store
        .insert_if_absent(request("bad", at(60)))
        .await
        .unwrap();
    Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE requests SET request = x'ffffffff' WHERE id = 'bad'",
            [],
        )
        .unwrap();

    let err = store.get(&id("bad")).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("storage backend failed: stored request \"bad\" is damaged: "),
        "{err}"
    );
    assert!(
        store.pending().await.is_err(),
        "listing includes the bad row"
    );
    assert!(store.get(&id("good")).await.unwrap().is_some());
    // Deciding it fails too, and changes nothing.
    assert!(
        store
            .resolve_pending(&id("bad"), decided(Verdict::Allow, "bob"))
            .await
            .is_err()
    );
    let state: String = Connection::open(&path)
        .unwrap()
        .query_row("SELECT state FROM requests WHERE id = 'bad'", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(state, "pending");
}

pub(super) fn schema_versions(path: &Path) -> Vec<i64> {
    Connection::open(path)
        .unwrap()
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A database from before `enrolled_hosts` knows its enrolled hosts from the audit log:
/// after the migration, a token bound to no host cannot enroll any of them.
#[tokio::test]
async fn hosts_enrolled_before_the_migration_are_known_after_it() {
    use super::super::{EnrollOutcome, EnrollToken, Enrollment, IssuedCertificate};
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let token = |byte: u8| EnrollToken {
        hash: [byte; 32],
        host: None,
        created_at: at(0),
        expires_at: at(100),
    };
    let enrollment = |byte: u8, host: &str| Enrollment {
        hash: [byte; 32],
        host: belay_proto::domain::HostName::new(host).unwrap(),
        at: at(10),
        certificate: IssuedCertificate {
            serial: "01".into(),
            sha256: "ab".repeat(32),
        },
    };
    {
        let store = SqliteStore::open(&path).unwrap();
        store.add_enroll_token(token(1)).await.unwrap();
        store.add_enroll_token(token(2)).await.unwrap();
        assert!(matches!(
            store.enroll(enrollment(1, "host-old")).await.unwrap(),
            EnrollOutcome::Accepted(_)
        ));
    }
    // Back to schema version 4, as an older belay-server left it.
    let db = Connection::open(&path).unwrap();
    db.execute_batch(&format!(
        "{} DROP TABLE enrolled_hosts; DROP TABLE policy_votes; \
         DELETE FROM schema_version WHERE version >= 5;",
        super::tests_migration::UNDO_MIGRATION_7
    ))
    .unwrap();
    drop(db);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.enroll(enrollment(2, "host-old")).await.unwrap(),
        EnrollOutcome::ExistingHost(belay_proto::domain::HostName::new("host-old").unwrap())
    );
}
