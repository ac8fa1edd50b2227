//! The enrollment part of the [`Store`] contract, run against every backend: a token
//! is used once, only before it expires, only by its own host (presented for another
//! it is spent), a token bound to no host enrolls only a new host, and both an accepted
//! enrollment and a spent token are audited with the token's id, never its secret or
//! full hash.

use crate::store::{AuditLogStore as _, EnrollmentStore as _, RequestStore as _};
use belay_proto::domain::HostName;

use super::testing::{Backend, for_each_backend};
use super::tests::at;
use super::{EnrollOutcome, EnrollToken, Enrollment, IssuedCertificate, token_id};

fn token(byte: u8, host: Option<&str>, expires: u64) -> EnrollToken {
    EnrollToken {
        hash: [byte; 32],
        host: host.map(|h| HostName::new(h).unwrap()),
        created_at: at(0),
        expires_at: at(expires),
    }
}

fn enrollment(byte: u8, host: &str, time: u64) -> Enrollment {
    Enrollment {
        hash: [byte; 32],
        host: HostName::new(host).unwrap(),
        at: at(time),
        certificate: IssuedCertificate {
            serial: format!("4{byte:x}:01:02"),
            sha256: format!("c{byte:x}").repeat(32),
        },
    }
}

async fn an_enrollment_token_works_once_and_only_before_it_expires<B: Backend>() {
    let store = B::open();
    store
        .add_enroll_token(token(1, Some("host-a"), 100))
        .await
        .unwrap();
    store.add_enroll_token(token(2, None, 100)).await.unwrap();
    assert!(
        store.add_enroll_token(token(1, None, 500)).await.is_err(),
        "a hash is stored once"
    );

    assert_eq!(
        store.enroll(enrollment(1, "host-a", 50)).await.unwrap(),
        EnrollOutcome::Accepted(token(1, Some("host-a"), 100))
    );
    assert_eq!(
        store.enroll(enrollment(1, "host-a", 51)).await.unwrap(),
        EnrollOutcome::Used
    );
    assert_eq!(
        store.enroll(enrollment(2, "host-b", 100)).await.unwrap(),
        EnrollOutcome::Expired
    );
    assert_eq!(
        store.enroll(enrollment(3, "host-a", 1)).await.unwrap(),
        EnrollOutcome::Unknown
    );
}

async fn a_token_presented_by_another_host_is_spent_and_audited<B: Backend>() {
    let store = B::open();
    store
        .add_enroll_token(token(1, Some("host-a"), 100))
        .await
        .unwrap();
    assert_eq!(
        store.enroll(enrollment(1, "host-b", 10)).await.unwrap(),
        EnrollOutcome::OtherHost(HostName::new("host-a").unwrap()),
    );
    let records = store.audit_records(0, 10).await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record.kind, "enrollment");
    assert_eq!(record.request_id, "");
    assert_eq!(record.at, super::columns::nanos(at(10)));
    let body: serde_json::Value = serde_json::from_str(&record.body).unwrap();
    assert_eq!(body["result"], "wrong_host_token_spent");
    assert_eq!(body["host"], "host-b");
    assert_eq!(body["token_host"], "host-a");
    assert_eq!(body["token_id"], token_id(&[1; 32]));
    assert!(body["certificate_serial"].is_null(), "{body}");
    assert!(body["certificate_sha256"].is_null(), "{body}");

    // Spent: neither its own host nor another try of the wrong one gets anything, and
    // those refusals write nothing more.
    assert_eq!(
        store.enroll(enrollment(1, "host-a", 20)).await.unwrap(),
        EnrollOutcome::Used
    );
    assert_eq!(
        store.enroll(enrollment(1, "host-c", 21)).await.unwrap(),
        EnrollOutcome::Used
    );
    assert_eq!(store.audit_records(0, 10).await.unwrap().len(), 1);

    // An unbound token takes any host.
    store.add_enroll_token(token(2, None, 100)).await.unwrap();
    assert!(matches!(
        store.enroll(enrollment(2, "host-z", 30)).await.unwrap(),
        EnrollOutcome::Accepted(_)
    ));
}

/// An expired or used token is refused as such whatever the host, before the binding
/// matters: nothing is spent or audited.
async fn a_dead_token_presented_by_another_host_is_refused_and_not_audited<B: Backend>() {
    let store = B::open();
    store
        .add_enroll_token(token(1, Some("host-a"), 100))
        .await
        .unwrap();
    assert_eq!(
        store.enroll(enrollment(1, "host-b", 100)).await.unwrap(),
        EnrollOutcome::Expired
    );
    assert_eq!(
        store.enroll(enrollment(2, "host-b", 1)).await.unwrap(),
        EnrollOutcome::Unknown
    );
    assert!(store.audit_records(0, 10).await.unwrap().is_empty());
    store
        .add_enroll_token(token(3, Some("host-a"), 100))
        .await
        .unwrap();
    assert!(matches!(
        store.enroll(enrollment(3, "host-a", 1)).await.unwrap(),
        EnrollOutcome::Accepted(_)
    ));
    assert_eq!(
        store.enroll(enrollment(3, "host-b", 2)).await.unwrap(),
        EnrollOutcome::Used
    );
    assert_eq!(store.audit_records(0, 10).await.unwrap().len(), 1);
}

async fn of_concurrent_enrollments_with_one_token_exactly_one_is_accepted<B: Backend>() {
    let store = B::open();
    store.add_enroll_token(token(1, None, 100)).await.unwrap();
    let attempts = (0..8).map(|i| store.enroll(enrollment(1, &format!("host-{i}"), 10)));
    let outcomes = futures_util::future::join_all(attempts).await;
    let accepted = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Ok(EnrollOutcome::Accepted(_))))
        .count();
    assert_eq!(accepted, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(EnrollOutcome::Accepted(_) | EnrollOutcome::Used))),
        "{outcomes:?}"
    );
    let records = store.audit_records(0, 100).await.unwrap();
    assert_eq!(records.len(), 1, "one audit record: {records:?}");
}

/// Bound to host-0, presented at once by host-0..host-7: exactly one attempt takes it
/// (accepted if host-0 came first, spent otherwise), with one record; the rest find it
/// used.
async fn of_concurrent_attempts_with_mixed_hosts_exactly_one_changes_the_token<B: Backend>() {
    let store = B::open();
    store
        .add_enroll_token(token(1, Some("host-0"), 100))
        .await
        .unwrap();
    let attempts = (0..8).map(|i| store.enroll(enrollment(1, &format!("host-{i}"), 10)));
    let outcomes = futures_util::future::join_all(attempts).await;
    let outcomes: Vec<_> = outcomes.into_iter().map(Result::unwrap).collect();
    let changed: Vec<_> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| !matches!(o, EnrollOutcome::Used))
        .collect();
    assert_eq!(changed.len(), 1, "{outcomes:?}");
    let (winner, outcome) = changed[0];
    let expected = if winner == 0 {
        assert!(
            matches!(outcome, EnrollOutcome::Accepted(_)),
            "{outcomes:?}"
        );
        "enrolled"
    } else {
        assert_eq!(
            *outcome,
            EnrollOutcome::OtherHost(HostName::new("host-0").unwrap()),
            "{outcomes:?}"
        );
        "wrong_host_token_spent"
    };
    let records = store.audit_records(0, 100).await.unwrap();
    assert_eq!(records.len(), 1, "one audit record: {records:?}");
    let body: serde_json::Value = serde_json::from_str(&records[0].body).unwrap();
    assert_eq!(body["result"], expected, "{body}");
    assert_eq!(body["host"], format!("host-{winner}"), "{body}");
}

async fn an_enrollment_is_audited_with_the_token_id_and_the_certificate<B: Backend>() {
    let store = B::open();
    store
        .add_enroll_token(token(7, Some("host-a"), 100))
        .await
        .unwrap();
    let presented = enrollment(7, "host-a", 40);
    store.enroll(presented.clone()).await.unwrap();
    let records = store.audit_records(0, 10).await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record.kind, "enrollment");
    assert_eq!(record.request_id, "");
    assert_eq!(record.at, super::columns::nanos(at(40)));
    let body: serde_json::Value = serde_json::from_str(&record.body).unwrap();
    assert_eq!(body["host"], "host-a");
    assert_eq!(body["token_host"], "host-a");
    assert_eq!(body["token_id"], token_id(&[7; 32]));
    assert_eq!(body["token_id"], "0707070707070707");
    assert_eq!(body["certificate_serial"], "47:01:02");
    assert_eq!(body["certificate_sha256"], presented.certificate.sha256);
    assert_eq!(body["result"], "enrolled");
    assert!(
        !record.body.contains(&"07".repeat(32)),
        "the full hash stays out: {}",
        record.body
    );
}

async fn a_token_for_no_host_never_enrolls_an_existing_host<B: Backend>() {
    let store = B::open();
    store
        .add_enroll_token(token(1, Some("host-a"), 100))
        .await
        .unwrap();
    for byte in 2..=5 {
        store
            .add_enroll_token(token(byte, None, 100))
            .await
            .unwrap();
    }
    assert!(matches!(
        store.enroll(enrollment(1, "host-a", 10)).await.unwrap(),
        EnrollOutcome::Accepted(_)
    ));
    // host-a exists: a token created without --host is spent on it, and audited.
    assert_eq!(
        store.enroll(enrollment(2, "host-a", 11)).await.unwrap(),
        EnrollOutcome::ExistingHost(HostName::new("host-a").unwrap()),
    );
    let records = store.audit_records(0, 10).await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&records[1].body).unwrap();
    assert_eq!(body["result"], "existing_host_token_spent");
    assert_eq!(body["host"], "host-a");
    assert!(body["token_host"].is_null(), "{body}");
    assert!(body["certificate_serial"].is_null(), "{body}");
    assert_eq!(
        store.enroll(enrollment(2, "host-new", 12)).await.unwrap(),
        EnrollOutcome::Used,
        "spent"
    );
    // A new name is fine, once: the next unbound token finds it taken.
    assert!(matches!(
        store.enroll(enrollment(3, "host-b", 13)).await.unwrap(),
        EnrollOutcome::Accepted(_)
    ));
    assert_eq!(
        store.enroll(enrollment(4, "host-b", 14)).await.unwrap(),
        EnrollOutcome::ExistingHost(HostName::new("host-b").unwrap()),
    );
    // Enrolling an existing host again takes a token created for it.
    store
        .add_enroll_token(token(6, Some("host-b"), 100))
        .await
        .unwrap();
    assert!(matches!(
        store.enroll(enrollment(6, "host-b", 15)).await.unwrap(),
        EnrollOutcome::Accepted(_)
    ));
}

async fn of_unbound_tokens_presented_at_once_for_one_new_host_exactly_one_enrolls<B: Backend>() {
    let store = B::open();
    for byte in 1..=8 {
        store
            .add_enroll_token(token(byte, None, 100))
            .await
            .unwrap();
    }
    let attempts = (1..=8).map(|byte| store.enroll(enrollment(byte, "host-new", 10)));
    let outcomes = futures_util::future::join_all(attempts).await;
    let accepted = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Ok(EnrollOutcome::Accepted(_))))
        .count();
    assert_eq!(accepted, 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            Ok(EnrollOutcome::Accepted(_) | EnrollOutcome::ExistingHost(_))
        )),
        "{outcomes:?}"
    );
}

for_each_backend!(
    a_token_for_no_host_never_enrolls_an_existing_host,
    of_unbound_tokens_presented_at_once_for_one_new_host_exactly_one_enrolls,
    an_enrollment_token_works_once_and_only_before_it_expires,
    a_token_presented_by_another_host_is_spent_and_audited,
    a_dead_token_presented_by_another_host_is_refused_and_not_audited,
    of_concurrent_enrollments_with_one_token_exactly_one_is_accepted,
    of_concurrent_attempts_with_mixed_hosts_exactly_one_changes_the_token,
    an_enrollment_is_audited_with_the_token_id_and_the_certificate,
);

/// Enrollment records (accepted, and a token spent by the wrong host) chain and verify
/// like any other, between request records.
#[tokio::test]
async fn enrollment_records_verify_in_a_sqlite_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let store = super::SqliteStore::open(&path).unwrap();
    let key = store.audit_public_key();
    store
        .insert_if_absent(super::tests::request("r-1", at(0), at(60)))
        .await
        .unwrap();
    store.add_enroll_token(token(1, None, 100)).await.unwrap();
    assert!(matches!(
        store.enroll(enrollment(1, "host-a", 1)).await.unwrap(),
        EnrollOutcome::Accepted(_)
    ));
    store
        .insert_if_absent(super::tests::request("r-2", at(2), at(60)))
        .await
        .unwrap();
    store
        .add_enroll_token(token(2, Some("host-a"), 100))
        .await
        .unwrap();
    assert!(matches!(
        store.enroll(enrollment(2, "host-b", 3)).await.unwrap(),
        EnrollOutcome::OtherHost(_)
    ));
    drop(store);
    let report = crate::audit::verify(&path, &key).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 4);
}
