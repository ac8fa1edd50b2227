//! The chat outbox rows, on every backend.

use belay_proto::domain::RequestId;

use super::testing::{Backend, for_each_backend};
use super::tests::at;
use super::{ChatOutboxStore as _, OutboxRow};

fn row(id: &str, platform: &str) -> OutboxRow {
    OutboxRow {
        request_id: RequestId::new(id).unwrap(),
        platform: platform.into(),
        target: "C0123".into(),
        message: None,
        shown_state: None,
        shown_approvals: 0,
        attempts: 2,
        next_attempt: at(5),
        gave_up: false,
    }
}

async fn outbox_rows_are_put_replaced_and_removed_per_platform<B: Backend>() {
    let opened = B::open();
    let store = &*opened;
    assert!(store.outbox_rows("slack").await.unwrap().is_empty());
    let a = row("web-1:a", "slack");
    let b = row("web-1:b", "slack");
    let teams = row("web-1:a", "teams");
    for r in [&b, &a, &teams] {
        store.put_outbox_row(r.clone()).await.unwrap();
    }
    assert_eq!(
        store.outbox_rows("slack").await.unwrap(),
        [a.clone(), b.clone()]
    );
    assert_eq!(
        store.outbox_rows("teams").await.unwrap(),
        std::slice::from_ref(&teams)
    );

    let posted = OutboxRow {
        message: Some("C0123 1700000000.000100".into()),
        shown_state: Some("pending".into()),
        shown_approvals: 1,
        attempts: 0,
        gave_up: true,
        ..a.clone()
    };
    store.put_outbox_row(posted.clone()).await.unwrap();
    assert_eq!(
        store.outbox_rows("slack").await.unwrap(),
        [posted, b.clone()]
    );

    store
        .remove_outbox_row(&a.request_id, "slack")
        .await
        .unwrap();
    store
        .remove_outbox_row(&a.request_id, "slack")
        .await
        .unwrap();
    assert_eq!(store.outbox_rows("slack").await.unwrap(), [b]);
    assert_eq!(store.outbox_rows("teams").await.unwrap(), [teams]);
}

async fn one_holder_at_a_time_has_the_outbox_lease<B: Backend>() {
    let opened = B::open();
    let store = &*opened;
    assert!(
        store
            .lease_outbox("slack", "a", at(0), at(30))
            .await
            .unwrap()
    );
    // Renewed by its holder, refused to others while in force, per platform.
    assert!(
        store
            .lease_outbox("slack", "a", at(10), at(40))
            .await
            .unwrap()
    );
    assert!(
        !store
            .lease_outbox("slack", "b", at(39), at(69))
            .await
            .unwrap()
    );
    assert!(
        store
            .lease_outbox("teams", "b", at(39), at(69))
            .await
            .unwrap()
    );
    // Taken over once it ran out; the old holder then cannot renew.
    assert!(
        store
            .lease_outbox("slack", "b", at(41), at(71))
            .await
            .unwrap()
    );
    assert!(
        !store
            .lease_outbox("slack", "a", at(42), at(72))
            .await
            .unwrap()
    );
}

async fn an_inbound_request_is_accepted_once_while_remembered<B: Backend>() {
    let opened = B::open();
    let store = &*opened;
    let accept = |platform: &'static str, key: &'static str, now: u64, until: u64| {
        store.accept_inbound_once(platform, key, at(now), at(until))
    };
    assert!(accept("slack", "sig-1", 0, 600).await.unwrap());
    assert!(!accept("slack", "sig-1", 1, 601).await.unwrap(), "a replay");
    assert!(!accept("slack", "sig-1", 600, 1200).await.unwrap());
    // Per platform and key.
    assert!(accept("teams", "sig-1", 2, 602).await.unwrap());
    assert!(accept("slack", "sig-2", 2, 602).await.unwrap());
    // Once forgotten (past its time, which the signature's timestamp is too) it can be
    // taken again, and the rows of others forgotten too are dropped on the way.
    assert!(accept("slack", "sig-1", 601, 1201).await.unwrap());
    assert!(!accept("slack", "sig-1", 700, 1300).await.unwrap());
    assert!(accept("slack", "sig-2", 603, 1203).await.unwrap());
}

for_each_backend!(
    outbox_rows_are_put_replaced_and_removed_per_platform,
    one_holder_at_a_time_has_the_outbox_lease,
    an_inbound_request_is_accepted_once_while_remembered,
);
