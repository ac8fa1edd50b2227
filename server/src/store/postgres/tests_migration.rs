//! Migration 7 on a PostgreSQL database the previous belay-server (schema version 6)
//! left: it opens, its requests are found in the history of their action (also one a
//! replica of that version stores during the upgrade, from the next start on), its
//! grants can be revoked, and the audit log stays one intact chain.

use std::time::Duration;

use belay_proto::domain::{
    Action, ConnectAction, HostName, Identity, Outcome, Protocol, Reason, Request, RequestId,
    Resolution, Scope, Verdict,
};
use tokio_postgres::NoTls;

use super::super::tests::{at, request};
use super::super::{Grant, GrantKey, GrantStore as _, RequestStore as _, Revocation, Revoked};
use super::PostgresStore;
use crate::audit::{AuditKey, AuditSigner};
use crate::canonical_action::action_digest;
use crate::testing::postgres::database;

/// Takes a database of the newest schema back to version 6.
const UNDO_MIGRATION_7: &str = "
DROP TABLE chat_seen;
DROP TABLE chat_outbox;
DROP TABLE chat_leases;
DROP INDEX requests_by_action;
DROP INDEX grants_by_request;
DROP INDEX grants_in_force;
ALTER TABLE requests DROP COLUMN host, DROP COLUMN action;
ALTER TABLE grants DROP CONSTRAINT grants_revocation_whole,
    DROP COLUMN revoked_at, DROP COLUMN revoked_by, DROP COLUMN revoke_reason;
DELETE FROM schema_version WHERE version >= 7;
";

fn connect(port: u16) -> Action {
    Action::Connect(ConnectAction {
        address: [192, 0, 2, 1].into(),
        port: port.try_into().unwrap(),
        protocol: Protocol::Tcp,
    })
}

/// A request for `action` on `host` made at `created`, denied a second later (or
/// pending).
fn made(name: &str, host: &str, action: Action, created: u64, decided: bool) -> Request {
    let mut made = request(name, at(created), at(created + 600));
    made.host = HostName::new(host).unwrap();
    made.action = action;
    made.resolution = decided.then(|| Resolution {
        outcome: Outcome::Decided {
            verdict: Verdict::Deny,
            reviewer: Identity::new("bob").unwrap(),
        },
        reason: Reason::new("checked").unwrap(),
        resolved_at: at(created + 1),
    });
    made
}

fn id(value: &str) -> RequestId {
    RequestId::new(value).unwrap()
}

async fn sql(url: &str, statements: &str) {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(statements).await.unwrap();
}

fn ids(requests: &[Request]) -> Vec<&str> {
    requests.iter().map(|request| request.id.as_str()).collect()
}

#[tokio::test]
async fn a_database_of_schema_6_opens_and_its_rows_take_part() {
    let url = database().await;
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("audit-key");
    let signer = || AuditSigner::new(AuditKey::load_or_create(&key_path).unwrap(), 5);
    let public_key = signer().public_key();
    let host_key = GrantKey {
        host: HostName::new("host-a").unwrap(),
        agent: None,
        action: action_digest(&connect(443)),
    };
    let old_grant = Grant {
        key: host_key.clone(),
        verdict: Verdict::Deny,
        reviewer: Identity::new("bob").unwrap(),
        reason: Reason::new("not from here").unwrap(),
        from_request: id("old-1"),
        scope: Scope::Host(Duration::from_secs(3600)),
        granted_at: at(1),
        expires_at: at(3601),
    };
    {
        let store = PostgresStore::connect_with_signer(&url, signer())
            .await
            .unwrap();
        for old in [
            made("old-1", "host-a", connect(443), 0, true),
            made("old-2", "host-b", connect(443), 2, true),
            made("old-3", "host-a", connect(80), 3, true),
            made("old-4", "host-a", connect(443), 4, false),
        ] {
            store.insert_if_absent(old).await.unwrap();
        }
        store.add_grant(old_grant.clone()).await.unwrap();
    }
    sql(&url, UNDO_MIGRATION_7).await;

    let store = PostgresStore::connect_with_signer(&url, signer())
        .await
        .unwrap();
    let new = made("new-1", "host-a", connect(443), 100, false);
    store.insert_if_absent(new.clone()).await.unwrap();
    assert_eq!(
        ids(&store.history(&new, 10).await.unwrap()),
        ["old-1"],
        "not old-2 (host), old-3 (port), old-4 (pending)"
    );
    assert_eq!(
        store.grants_in_force(at(100), 10).await.unwrap(),
        std::slice::from_ref(&old_grant)
    );
    let revocation = Revocation {
        reviewer: Identity::new("carol").unwrap(),
        reason: Reason::new("moved to host-c").unwrap(),
        at: at(200),
    };
    assert_eq!(
        store.revoke_grant(&id("old-1"), revocation).await.unwrap(),
        Revoked::Now(old_grant)
    );
    assert!(
        store
            .find_grants(&host_key, at(201))
            .await
            .unwrap()
            .is_empty()
    );

    // A replica of the previous version, still running, stores a request without its
    // host and action: the next start fills them in.
    store
        .insert_if_absent(made("old-5", "host-a", connect(443), 50, true))
        .await
        .unwrap();
    sql(
        &url,
        "UPDATE requests SET host = NULL, action = NULL WHERE id = 'old-5'",
    )
    .await;
    assert_eq!(ids(&store.history(&new, 10).await.unwrap()), ["old-1"]);
    drop(store);
    let store = PostgresStore::connect_with_signer(&url, signer())
        .await
        .unwrap();
    assert_eq!(
        ids(&store.history(&new, 10).await.unwrap()),
        ["old-5", "old-1"]
    );
    drop(store);

    let report = crate::audit::postgres::verify(&url, &public_key)
        .await
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
}

/// Migration 8 (the chat outbox) on a PostgreSQL database of schema version 7: it
/// opens, its requests are still there, and outbox rows can be written and read back.
#[tokio::test]
async fn a_database_of_schema_7_gets_the_chat_outbox() {
    use super::super::{ChatOutboxStore as _, OutboxRow};
    let url = database().await;
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("audit-key");
    let signer = || AuditSigner::new(AuditKey::load_or_create(&key_path).unwrap(), 5);
    let pending = made("old-1", "host-a", connect(443), 0, false);
    {
        let store = PostgresStore::connect_with_signer(&url, signer())
            .await
            .unwrap();
        store.insert_if_absent(pending.clone()).await.unwrap();
    }
    sql(
        &url,
        "DROP TABLE chat_seen; DROP TABLE chat_outbox; DROP TABLE chat_leases; \
         DELETE FROM schema_version WHERE version >= 8;",
    )
    .await;

    let store = PostgresStore::connect_with_signer(&url, signer())
        .await
        .unwrap();
    assert_eq!(store.get(&id("old-1")).await.unwrap(), Some(pending));
    assert!(store.outbox_rows("slack").await.unwrap().is_empty());
    let row = OutboxRow {
        request_id: id("old-1"),
        platform: "slack".into(),
        target: "C0123".into(),
        message: Some("C0123 1.2".into()),
        shown_state: Some("pending".into()),
        shown_approvals: 1,
        attempts: 0,
        next_attempt: at(1),
        gave_up: false,
    };
    store.put_outbox_row(row.clone()).await.unwrap();
    assert_eq!(store.outbox_rows("slack").await.unwrap(), [row]);
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let versions: Vec<i64> = client
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
}
