//! The fleet policy part of the [`Store`] contract, run against every backend.

use crate::store::{AuditLogStore as _, PolicyStore as _, RequestStore as _};
use belay_proto::domain::{Identity, PolicyText, Reason};

use super::testing::{Backend, for_each_backend};
use super::tests::at;
use super::{NewPolicy, PolicyVote};

fn new_policy(text: &str, by: &str, offset: u64) -> NewPolicy {
    NewPolicy {
        text: PolicyText::new(text).unwrap(),
        pushed_by: Identity::new(by).unwrap(),
        reason: Reason::new(format!("pushed by {by}")).unwrap(),
        pushed_at: at(offset),
    }
}

const FIRST: &str = "version: 1\nsubjects: []\n";
const SECOND: &str = "version: 1\nsubjects:\n  - name: ci\n    owner: o\n    default: ask\n";

async fn policies_are_numbered_from_one_and_the_newest_is_current<B: Backend>() {
    let store = B::open();
    assert_eq!(store.current_policy().await.unwrap(), None);

    let first = store
        .push_policy(new_policy(FIRST, "admin@example.com", 1))
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(first.sha256, PolicyText::new(FIRST).unwrap().sha256());
    assert_eq!(store.current_policy().await.unwrap(), Some(first.clone()));

    let second = store
        .push_policy(new_policy(SECOND, "root@example.com", 2))
        .await
        .unwrap();
    assert_eq!(second.version, 2);
    let current = store.current_policy().await.unwrap().unwrap();
    assert_eq!(current, second);
    assert_eq!(current.text.as_str(), SECOND);
    assert_eq!(current.pushed_by.as_str(), "root@example.com");
    assert_eq!(current.reason.as_str(), "pushed by root@example.com");
    assert_eq!(current.pushed_at, at(2));
}

async fn concurrent_pushes_get_different_versions<B: Backend>() {
    let store = B::open();
    let (a, b, c) = tokio::join!(
        store.push_policy(new_policy(FIRST, "a@example.com", 1)),
        store.push_policy(new_policy(SECOND, "b@example.com", 1)),
        store.push_policy(new_policy(FIRST, "c@example.com", 1)),
    );
    let mut versions = vec![a.unwrap().version, b.unwrap().version, c.unwrap().version];
    versions.sort_unstable();
    assert_eq!(versions, vec![1, 2, 3]);
    assert_eq!(store.current_policy().await.unwrap().unwrap().version, 3);
}

async fn a_push_is_audited_with_its_digest_not_its_text<B: Backend>() {
    let store = B::open();
    let pushed = store
        .push_policy(new_policy(SECOND, "admin@example.com", 5))
        .await
        .unwrap();
    let records = store.audit_records(0, 100).await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record.kind, "policy");
    assert_eq!(record.request_id, "");
    let body: serde_json::Value = serde_json::from_str(&record.body).unwrap();
    assert_eq!(body["version"], 1);
    assert_eq!(body["sha256"], pushed.sha256.as_str());
    assert_eq!(body["pushed_by"], "admin@example.com");
    assert_eq!(body["size"], SECOND.len());
    assert!(
        !record.body.contains("subjects"),
        "the text stays out of the audit body: {}",
        record.body
    );
}

fn vote(text: &str, admin: &str, offset: u64) -> PolicyVote {
    PolicyVote {
        sha256: PolicyText::new(text).unwrap().sha256(),
        admin: Identity::new(admin).unwrap(),
        reason: Reason::new("rollout").unwrap(),
        at: at(offset),
    }
}

fn admins(votes: &[PolicyVote]) -> Vec<&str> {
    votes.iter().map(|v| v.admin.as_str()).collect()
}

async fn policy_votes_count_once_per_admin_within_the_window_and_a_push_uses_them_up<B: Backend>() {
    let store = B::open();
    let votes = store
        .add_policy_vote(vote(FIRST, "a", 10), at(0))
        .await
        .unwrap();
    assert_eq!(admins(&votes), ["a"]);
    // The same admin again: replaced, not added.
    let votes = store
        .add_policy_vote(vote(FIRST, "a", 11), at(0))
        .await
        .unwrap();
    assert_eq!(admins(&votes), ["a"]);
    // Another text is counted apart.
    let votes = store
        .add_policy_vote(vote(SECOND, "b", 12), at(0))
        .await
        .unwrap();
    assert_eq!(admins(&votes), ["b"]);
    let votes = store
        .add_policy_vote(vote(FIRST, "b", 13), at(0))
        .await
        .unwrap();
    assert_eq!(admins(&votes), ["a", "b"]);
    // Votes before the window do not count.
    let votes = store
        .add_policy_vote(vote(FIRST, "c", 14), at(12))
        .await
        .unwrap();
    assert_eq!(admins(&votes), ["b", "c"]);
    // Pushing the text uses its votes up, and only its.
    store.push_policy(new_policy(FIRST, "c", 15)).await.unwrap();
    let votes = store
        .add_policy_vote(vote(FIRST, "d", 16), at(0))
        .await
        .unwrap();
    assert_eq!(admins(&votes), ["d"]);
    let votes = store
        .add_policy_vote(vote(SECOND, "e", 17), at(0))
        .await
        .unwrap();
    assert_eq!(admins(&votes), ["b", "e"]);
    // Each vote is in the audit log.
    let records = store.audit_records(0, 100).await.unwrap();
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "policy_vote").count(),
        7,
        "{kinds:?}"
    );
}

for_each_backend!(
    policy_votes_count_once_per_admin_within_the_window_and_a_push_uses_them_up,
    policies_are_numbered_from_one_and_the_newest_is_current,
    concurrent_pushes_get_different_versions,
    a_push_is_audited_with_its_digest_not_its_text,
);

/// A policy record chains and verifies like any other, between request records.
#[tokio::test]
async fn policy_records_verify_in_a_sqlite_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let store = super::SqliteStore::open(&path).unwrap();
    let key = store.audit_public_key();
    store
        .insert_if_absent(super::tests::request("r-1", at(0), at(60)))
        .await
        .unwrap();
    store
        .push_policy(new_policy(FIRST, "admin@example.com", 1))
        .await
        .unwrap();
    store
        .insert_if_absent(super::tests::request("r-2", at(2), at(60)))
        .await
        .unwrap();
    drop(store);
    let report = crate::audit::verify(&path, &key).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 3);
}
