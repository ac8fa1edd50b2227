//! Migration 7 on a database an older belay-server (schema version 6) left: it opens,
//! its requests are found in the history of their action, its grants settle and can be
//! revoked, and its audit log stays one intact chain.

use std::time::Duration;

use belay_proto::domain::{
    Action, ConnectAction, HostName, Identity, Outcome, Protocol, Reason, Request, RequestId,
    Resolution, Scope, Verdict,
};
use rusqlite::Connection;

use super::super::tests::{at, request};
use super::super::{
    AuditLogStore as _, Grant, GrantKey, GrantStore as _, RequestStore as _, Revocation, Revoked,
};
use super::SqliteStore;
use super::tests::schema_versions;
use crate::canonical_action::action_digest;

/// Takes a database of the newest schema back to version 6, as that belay-server made
/// it (its rows written by that version would have none of these columns).
pub(super) const UNDO_MIGRATION_7: &str = "
DROP TABLE chat_seen;
DROP TABLE chat_outbox;
DROP TABLE chat_leases;
DROP INDEX requests_by_action;
DROP INDEX grants_by_request;
DROP INDEX grants_in_force;
ALTER TABLE requests DROP COLUMN host;
ALTER TABLE requests DROP COLUMN action;
ALTER TABLE grants DROP COLUMN revoked_at;
ALTER TABLE grants DROP COLUMN revoked_by;
ALTER TABLE grants DROP COLUMN revoke_reason;
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

#[tokio::test]
async fn a_database_of_schema_6_opens_and_its_rows_take_part() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
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
    let public_key = {
        let store = SqliteStore::open(&path).unwrap();
        for old in [
            made("old-1", "host-a", connect(443), 0, true),
            made("old-2", "host-b", connect(443), 2, true),
            made("old-3", "host-a", connect(80), 3, true),
            made("old-4", "host-a", connect(443), 4, false),
        ] {
            store.insert_if_absent(old).await.unwrap();
        }
        store.add_grant(old_grant.clone()).await.unwrap();
        store.audit_public_key()
    };
    let db = Connection::open(&path).unwrap();
    db.execute_batch(UNDO_MIGRATION_7).unwrap();
    assert!(db.prepare("SELECT action FROM requests").is_err());
    drop(db);
    assert_eq!(schema_versions(&path), [1, 2, 3, 4, 5, 6]);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(schema_versions(&path), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let new = made("new-1", "host-a", connect(443), 100, false);
    store.insert_if_absent(new.clone()).await.unwrap();
    let history = store.history(&new, 10).await.unwrap();
    let history: Vec<&str> = history.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        history,
        ["old-1"],
        "not old-2 (host), old-3 (port), old-4 (pending)"
    );

    assert_eq!(
        store.find_grants(&host_key, at(100)).await.unwrap(),
        std::slice::from_ref(&old_grant)
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
    let kinds: Vec<String> = store
        .audit_records(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.kind)
        .collect();
    assert_eq!(kinds.last().map(String::as_str), Some("grant_revoked"));
    drop(store);

    let report = crate::audit::verify(&path, &public_key).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 10, "{report:?}");
}

/// Migration 8 (the chat outbox) on a database of schema version 7: it opens, its
/// requests are still there, and outbox rows can be written.
#[tokio::test]
async fn a_database_of_schema_7_gets_the_chat_outbox() {
    use super::super::{ChatOutboxStore as _, OutboxRow};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let pending = made("old-1", "host-a", connect(443), 0, false);
    {
        let store = SqliteStore::open(&path).unwrap();
        store.insert_if_absent(pending.clone()).await.unwrap();
    }
    let db = Connection::open(&path).unwrap();
    db.execute_batch(
        "DROP TABLE chat_seen; DROP TABLE chat_outbox; DROP TABLE chat_leases; \
         DELETE FROM schema_version WHERE version >= 8;",
    )
    .unwrap();
    drop(db);
    assert_eq!(schema_versions(&path), [1, 2, 3, 4, 5, 6, 7]);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(schema_versions(&path), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(store.get(&id("old-1")).await.unwrap(), Some(pending));
    assert!(store.outbox_rows("slack").await.unwrap().is_empty());
    let row = OutboxRow {
        request_id: id("old-1"),
        platform: "slack".into(),
        target: "C0123".into(),
        message: Some("C0123 1.2".into()),
        shown_state: Some("pending".into()),
        shown_approvals: 0,
        attempts: 0,
        next_attempt: at(1),
        gave_up: false,
    };
    store.put_outbox_row(row.clone()).await.unwrap();
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.outbox_rows("slack").await.unwrap(), [row]);
}
