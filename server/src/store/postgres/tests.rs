//! What only the PostgreSQL store does (the shared contract runs in `store::tests`):
//! replicas told of each other's changes, migrations racing, foreign databases refused,
//! a failing job in a batch failing alone.

use crate::store::{AuditLogStore as _, GrantStore as _, RequestStore as _};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use belay_proto::domain::{
    Action, ExecAction, HostName, Identity, Name, Outcome, Reason, Request, RequestContext,
    RequestId, Resolution, Scope, Verdict,
};
use tokio_postgres::NoTls;

use super::super::{Grant, GrantKey, Inserted, RemoteChange, Resolved, StoreError};
use super::PostgresStore;
use crate::audit::{self, AuditKey, AuditSigner};
use crate::testing::postgres::database;

const PATIENCE: Duration = Duration::from_secs(10);

fn signer() -> AuditSigner {
    AuditSigner::new(AuditKey::generate().unwrap(), 5)
}

async fn open(url: &str) -> PostgresStore {
    PostgresStore::connect_with_signer(url, signer())
        .await
        .unwrap()
}

fn request(name: &str) -> Request {
    let now = SystemTime::now();
    Request {
        id: RequestId::new(name).unwrap(),
        host: HostName::new("host-a").unwrap(),
        agent_name: Name::new("copilot").unwrap(),
        owner: Identity::new("alice").unwrap(),
        pid: 7,
        uid: 1000,
        action: Action::Exec(ExecAction::new("/bin/true", Vec::new(), None).unwrap()),
        deadline: now + Duration::from_secs(60),
        default_verdict: Verdict::Deny,
        rule: Name::new("exec").unwrap(),
        created_at: now,
        resolution: None,
        context: RequestContext::default(),
    }
}

fn denied() -> Resolution {
    Resolution {
        outcome: Outcome::Decided {
            verdict: Verdict::Deny,
            reviewer: Identity::new("bob").unwrap(),
        },
        reason: Reason::new("no").unwrap(),
        resolved_at: SystemTime::now(),
    }
}

async fn next(receiver: &mut tokio::sync::mpsc::UnboundedReceiver<RemoteChange>) -> RemoteChange {
    tokio::time::timeout(PATIENCE, receiver.recv())
        .await
        .expect("a change in time")
        .expect("still following")
}

async fn superuser(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn each_replica_hears_of_the_others_changes_not_of_its_own() {
    let url = database().await;
    let a = open(&url).await;
    let b = open(&url).await;
    let mut heard_by_a = a.remote_changes().expect("followed once");
    assert!(a.remote_changes().is_none(), "only one follower");
    let mut heard_by_b = b.remote_changes().unwrap();

    a.insert_if_absent(request("from-a")).await.unwrap();
    b.insert_if_absent(request("from-b")).await.unwrap();
    // A resubmission and a lost race change nothing: nothing to hear.
    b.insert_if_absent(request("from-a")).await.unwrap();
    b.resolve_pending(&RequestId::new("from-a").unwrap(), denied())
        .await
        .unwrap();
    a.resolve_pending(&RequestId::new("from-a").unwrap(), denied())
        .await
        .unwrap();

    let id = |name: &str| RequestId::new(name).unwrap();
    assert_eq!(
        next(&mut heard_by_a).await,
        RemoteChange::Submitted(id("from-b"))
    );
    assert_eq!(
        next(&mut heard_by_a).await,
        RemoteChange::Resolved(id("from-a"))
    );
    assert_eq!(
        next(&mut heard_by_b).await,
        RemoteChange::Submitted(id("from-a"))
    );
    // Give stray notifications time to arrive before checking there are none.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(heard_by_a.try_recv().is_err());
    assert!(heard_by_b.try_recv().is_err());
}

#[tokio::test]
async fn replicas_starting_together_migrate_once() {
    let url = database().await;
    let stores = futures_util::future::join_all((0..4).map(|_| {
        let url = url.clone();
        async move { PostgresStore::connect_with_signer(&url, signer()).await }
    }))
    .await;
    for store in &stores {
        assert!(store.is_ok(), "{store:?}");
    }
    let client = superuser(&url).await;
    let versions: Vec<i64> = client
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

#[tokio::test]
async fn a_database_of_another_application_or_a_newer_schema_is_refused() {
    let url = database().await;
    superuser(&url)
        .await
        .batch_execute("CREATE TABLE customers (id INT)")
        .await
        .unwrap();
    let err = PostgresStore::connect_with_signer(&url, signer())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not a belay-server database")
            && err.to_string().contains("customers"),
        "{err}"
    );

    let url = database().await;
    drop(open(&url).await);
    superuser(&url)
        .await
        .batch_execute("INSERT INTO schema_version (version) VALUES (99)")
        .await
        .unwrap();
    let err = PostgresStore::connect_with_signer(&url, signer())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                known: 9,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_failing_job_fails_alone_and_leaves_no_trace() {
    let url = database().await;
    let store = Arc::new(open(&url).await);
    let now = SystemTime::now();
    let orphan = Grant {
        key: GrantKey {
            host: HostName::new("host-a").unwrap(),
            agent: None,
            action: "00".repeat(32),
        },
        verdict: Verdict::Allow,
        reviewer: Identity::new("bob").unwrap(),
        reason: Reason::new("ok").unwrap(),
        from_request: RequestId::new("never-submitted").unwrap(),
        scope: Scope::Host(Duration::from_secs(60)),
        granted_at: now,
        expires_at: now + Duration::from_secs(60),
    };
    // Sent together, so that the writer runs them in one batch when it can.
    let mut tasks = Vec::new();
    for n in 0..20 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store.insert_if_absent(request(&format!("r{n}"))).await
        }));
    }
    let failing = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.add_grant(orphan).await })
    };
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Ok(Inserted::New(_))));
    }
    let err = failing.await.unwrap().unwrap_err();
    assert!(
        err.to_string().contains("no request never-submitted"),
        "{err}"
    );
    assert_eq!(store.pending().await.unwrap().len(), 20);
    let key = GrantKey {
        host: HostName::new("host-a").unwrap(),
        agent: None,
        action: "00".repeat(32),
    };
    assert!(store.find_grants(&key, now).await.unwrap().is_empty());
    // 20 submissions, and nothing of the failed grant, in an intact chain.
    let records = store.audit_records(0, 100).await.unwrap();
    assert_eq!(records.len(), 20);
    assert!(records.iter().all(|record| record.kind == "submitted"));
    let report = audit::postgres::verify(&url, &store.audit_public_key())
        .await
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checkpoints, 4);
}

#[tokio::test]
async fn resolving_through_one_replica_is_seen_by_the_other_at_once() {
    let url = database().await;
    let a = open(&url).await;
    let b = open(&url).await;
    a.insert_if_absent(request("shared")).await.unwrap();
    let id = RequestId::new("shared").unwrap();
    let Resolved::Now(resolved) = b.resolve_pending(&id, denied()).await.unwrap() else {
        panic!("pending on both");
    };
    assert_eq!(a.get(&id).await.unwrap(), Some(resolved.clone()));
    assert_eq!(
        a.resolve_pending(&id, denied()).await.unwrap(),
        Resolved::Already(resolved)
    );
    assert!(a.pending().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_store_reconnects_when_the_database_drops_its_connections() {
    let url = database().await;
    let a = open(&url).await;
    let b = open(&url).await;
    let mut heard_by_a = a.remote_changes().unwrap();
    a.insert_if_absent(request("before")).await.unwrap();

    // As a database restart or failover would: every connection of both stores ends.
    let admin = superuser(&url).await;
    let ended: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'belay-server'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // Two readers and a listener each, and a's writer (b's opens on first use).
    assert_eq!(ended, 7, "connections ended");

    // Each store notices and reconnects: an operation may fail while it does, none later.
    let id = RequestId::new("after").unwrap();
    let inserted = tokio::time::timeout(PATIENCE, async {
        loop {
            match b.insert_if_absent(request("after")).await {
                Ok(inserted) => return inserted,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("b reconnected");
    assert!(matches!(inserted, Inserted::New(_) | Inserted::Existing(_)));
    let seen = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(Some(request)) = a.get(&id).await {
                return request;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a reconnected");
    assert_eq!(seen.id, id);

    // The listener is back too (it retries every second): a's changes reach a again.
    let mut n = 0;
    let heard = tokio::time::timeout(PATIENCE, async {
        loop {
            n += 1;
            let name = format!("probe-{n}");
            b.insert_if_absent(request(&name)).await.unwrap();
            if let Ok(Some(change)) =
                tokio::time::timeout(Duration::from_millis(300), heard_by_a.recv()).await
                && change == RemoteChange::Submitted(RequestId::new(name).unwrap())
            {
                return change;
            }
        }
    })
    .await
    .expect("a listens again");
    assert!(matches!(heard, RemoteChange::Submitted(_)));
    let report = audit::postgres::verify(&url, &b.audit_public_key())
        .await
        .unwrap();
    assert!(
        report.first_problem.is_none() || report.checkpoints == 0,
        "{report:?}"
    );
}
