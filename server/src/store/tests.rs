//! The [`Store`] contract, run against every backend.

use crate::store::RequestStore as _;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU16;
use std::time::{Duration, SystemTime};

use belay_proto::domain::{
    Action, ConnectAction, ExecAction, HostName, Identity, Name, Outcome, Protocol, Reason,
    Request, RequestId, RequestState, Resolution, Verdict,
};

use super::testing::{Backend, for_each_backend};
use super::{Inserted, Resolved};

const T0: Duration = Duration::from_secs(1_800_000_000);

pub(super) fn at(offset_secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(offset_secs)
}

fn id(value: &str) -> RequestId {
    RequestId::new(value).unwrap()
}

/// A pending connect request created at `created`, due at `deadline`.
pub(super) fn request(name: &str, created: SystemTime, deadline: SystemTime) -> Request {
    Request {
        id: id(name),
        host: HostName::new("host-a").unwrap(),
        agent_name: Name::new("copilot").unwrap(),
        owner: Identity::new("alice@example.com").unwrap(),
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
        created_at: created,
        resolution: None,
        context: Default::default(),
    }
}

fn decided(verdict: Verdict, reviewer: &str, when: SystemTime) -> Resolution {
    Resolution {
        outcome: Outcome::Decided {
            verdict,
            reviewer: Identity::new(reviewer).unwrap(),
        },
        reason: Reason::new(format!("{reviewer} checked")).unwrap(),
        resolved_at: when,
    }
}

fn ids(requests: &[Request]) -> Vec<&str> {
    requests.iter().map(|request| request.id.as_str()).collect()
}

async fn a_new_id_is_inserted_and_a_known_one_returns_the_stored_request<B: Backend>() {
    let store = B::open();
    let original = request("r1", at(0), at(60));

    let inserted = store.insert_if_absent(original.clone()).await.unwrap();
    assert_eq!(inserted, Inserted::New(original.clone()));

    // Same id, other content: the stored request is returned and stays as it was.
    let mut other = request("r1", at(5), at(90));
    other.pid = 78;
    let again = store.insert_if_absent(other).await.unwrap();
    assert_eq!(again, Inserted::Existing(original.clone()));
    assert_eq!(store.get(&id("r1")).await.unwrap(), Some(original.clone()));
    assert_eq!(store.pending().await.unwrap(), vec![original]);
    assert_eq!(store.get(&id("r2")).await.unwrap(), None);
}

async fn resolving_succeeds_once_and_then_reports_the_first_resolution<B: Backend>() {
    let store = B::open();
    let pending = request("r1", at(0), at(60));
    store.insert_if_absent(pending.clone()).await.unwrap();

    let first = decided(Verdict::Allow, "bob", at(5));
    let resolved = store
        .resolve_pending(&id("r1"), first.clone())
        .await
        .unwrap();
    let expected = Request {
        resolution: Some(first),
        ..pending
    };
    assert_eq!(resolved, Resolved::Now(expected.clone()));

    let second = store
        .resolve_pending(&id("r1"), decided(Verdict::Kill, "dave", at(6)))
        .await
        .unwrap();
    assert_eq!(second, Resolved::Already(expected.clone()));
    assert_eq!(store.get(&id("r1")).await.unwrap(), Some(expected.clone()));

    // A resolved request is no longer pending anywhere.
    assert!(store.pending().await.unwrap().is_empty());
    assert!(store.pending_due(at(1_000)).await.unwrap().is_empty());
    assert_eq!(store.next_deadline().await.unwrap(), None);

    // Resubmitting a resolved request returns it resolved.
    let again = store
        .insert_if_absent(request("r1", at(0), at(60)))
        .await
        .unwrap();
    assert_eq!(again, Inserted::Existing(expected));
}

async fn resolving_an_unknown_id_is_not_found<B: Backend>() {
    let store = B::open();
    let resolved = store
        .resolve_pending(&id("nope"), decided(Verdict::Deny, "bob", at(1)))
        .await
        .unwrap();
    assert_eq!(resolved, Resolved::NotFound);
    assert_eq!(store.get(&id("nope")).await.unwrap(), None);
}

async fn a_request_inserted_resolved_is_never_pending<B: Backend>() {
    let store = B::open();
    let ended = Request {
        resolution: Some(Resolution {
            outcome: Outcome::Cancelled,
            reason: Reason::new("process exited").unwrap(),
            resolved_at: at(1),
        }),
        ..request("gone", at(0), at(60))
    };
    assert_eq!(
        store.insert_if_absent(ended.clone()).await.unwrap(),
        Inserted::New(ended.clone())
    );
    assert!(store.pending().await.unwrap().is_empty());
    assert!(store.pending_due(at(1_000)).await.unwrap().is_empty());
    assert_eq!(store.next_deadline().await.unwrap(), None);
    assert_eq!(
        store
            .resolve_pending(&id("gone"), decided(Verdict::Allow, "bob", at(2)))
            .await
            .unwrap(),
        Resolved::Already(ended)
    );
}

async fn pending_requests_come_oldest_first_ties_by_id<B: Backend>() {
    let store = B::open();
    for (name, created) in [("c", 2), ("b", 1), ("a", 2), ("d", 0)] {
        store
            .insert_if_absent(request(name, at(created), at(60)))
            .await
            .unwrap();
    }
    store
        .resolve_pending(&id("d"), decided(Verdict::Deny, "bob", at(3)))
        .await
        .unwrap();
    assert_eq!(ids(&store.pending().await.unwrap()), ["b", "a", "c"]);
}

async fn due_requests_are_those_at_or_past_their_deadline_earliest_first<B: Backend>() {
    let store = B::open();
    let nano = Duration::from_nanos(1);
    for (name, deadline) in [
        ("late", at(120)),
        ("b", at(60)),
        ("a", at(60)),
        ("early", at(60) - nano),
        ("just-after", at(60) + nano),
    ] {
        store
            .insert_if_absent(request(name, at(0), deadline))
            .await
            .unwrap();
    }
    assert_eq!(store.next_deadline().await.unwrap(), Some(at(60) - nano));
    assert!(
        store
            .pending_due(at(60) - nano - nano)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.pending_due(at(60)).await.unwrap(),
        [id("early"), id("a"), id("b")]
    );
    assert_eq!(
        store.pending_due(at(60) + nano).await.unwrap(),
        [id("early"), id("a"), id("b"), id("just-after")]
    );

    store
        .resolve_pending(&id("early"), decided(Verdict::Deny, "bob", at(1)))
        .await
        .unwrap();
    assert_eq!(store.next_deadline().await.unwrap(), Some(at(60)));
    assert_eq!(store.pending_due(at(60)).await.unwrap(), [id("a"), id("b")]);
    assert_eq!(store.pending_due(at(500)).await.unwrap().len(), 4);
}

async fn every_field_of_every_kind_of_request_round_trips<B: Backend>() {
    let store = B::open();
    let nanos = Duration::from_nanos(123_456_789);
    let exec = Action::Exec(
        ExecAction::new(
            "/usr/bin/curl",
            vec![
                "curl".into(),
                "-H".into(),
                "Authorization: Bearer ****".into(),
                String::new(),
                "ünïcödé ✓".into(),
            ],
            Some("/home/alice/project".into()),
        )
        .unwrap(),
    );
    let exec_no_cwd = Action::Exec(ExecAction::new("/bin/true", Vec::new(), None).unwrap());
    let udp6 = Action::Connect(ConnectAction {
        address: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        port: NonZeroU16::new(65535).unwrap(),
        protocol: Protocol::Udp,
    });
    let resolutions = [
        None,
        Some(decided(Verdict::Allow, "bob@example.com", at(7) + nanos)),
        Some(decided(Verdict::Deny, "carol", at(8))),
        Some(decided(Verdict::Kill, "dave", at(9))),
        Some(Resolution {
            outcome: Outcome::Expired {
                verdict: Verdict::Allow,
            },
            reason: Reason::new("no decision before the deadline").unwrap(),
            resolved_at: at(60),
        }),
        Some(Resolution {
            outcome: Outcome::Cancelled,
            reason: Reason::empty(),
            resolved_at: at(10),
        }),
    ];
    let mut all = Vec::new();
    for (index, resolution) in resolutions.into_iter().enumerate() {
        for (kind, action) in [("exec", &exec), ("bare", &exec_no_cwd), ("udp6", &udp6)] {
            let request = Request {
                id: id(&format!("req-{index}-{kind}")),
                host: HostName::new(format!("host-{index}.example")).unwrap(),
                agent_name: Name::new(format!("agent-{kind}")).unwrap(),
                owner: Identity::new(format!("owner-{index}@example.com")).unwrap(),
                pid: u32::MAX - 1,
                uid: 0,
                action: action.clone(),
                deadline: at(60) + nanos,
                default_verdict: Verdict::Kill,
                rule: Name::new("rule.with-dots").unwrap(),
                // Before the epoch too: negative seconds with positive nanoseconds.
                created_at: SystemTime::UNIX_EPOCH - Duration::new(5, 1),
                resolution: resolution.clone(),
                context: Default::default(),
            };
            store.insert_if_absent(request.clone()).await.unwrap();
            all.push(request);
        }
    }
    for request in &all {
        assert_eq!(
            store.get(&request.id).await.unwrap().as_ref(),
            Some(request)
        );
    }
    let mut pending: Vec<&Request> = all.iter().filter(|r| r.resolution.is_none()).collect();
    // Created at the same instant: listed by id.
    pending.sort_by(|a, b| a.id.cmp(&b.id));
    let listed = store.pending().await.unwrap();
    assert_eq!(listed.iter().collect::<Vec<_>>(), pending);
    assert_eq!(store.next_deadline().await.unwrap(), Some(at(60) + nanos));
}

async fn a_resolution_round_trips_for_each_outcome<B: Backend>() {
    let store = B::open();
    let outcomes = [
        (
            decided(Verdict::Allow, "bob", at(1)),
            RequestState::Approved,
        ),
        (decided(Verdict::Kill, "bob", at(1)), RequestState::Denied),
        (
            Resolution {
                outcome: Outcome::Expired {
                    verdict: Verdict::Deny,
                },
                reason: Reason::new("late").unwrap(),
                resolved_at: at(61),
            },
            RequestState::Expired,
        ),
        (
            Resolution {
                outcome: Outcome::Cancelled,
                reason: Reason::new("process exited").unwrap(),
                resolved_at: at(2) + Duration::from_nanos(1),
            },
            RequestState::Cancelled,
        ),
    ];
    for (index, (resolution, state)) in outcomes.into_iter().enumerate() {
        let name = format!("r{index}");
        store
            .insert_if_absent(request(&name, at(0), at(60)))
            .await
            .unwrap();
        let Resolved::Now(now) = store
            .resolve_pending(&id(&name), resolution.clone())
            .await
            .unwrap()
        else {
            panic!("{name} was pending");
        };
        assert_eq!(now.state(), state);
        assert_eq!(now.resolution.as_ref(), Some(&resolution));
        assert_eq!(store.get(&id(&name)).await.unwrap(), Some(now));
    }
}

for_each_backend!(
    a_new_id_is_inserted_and_a_known_one_returns_the_stored_request,
    resolving_succeeds_once_and_then_reports_the_first_resolution,
    resolving_an_unknown_id_is_not_found,
    a_request_inserted_resolved_is_never_pending,
    pending_requests_come_oldest_first_ties_by_id,
    due_requests_are_those_at_or_past_their_deadline_earliest_first,
    every_field_of_every_kind_of_request_round_trips,
    a_resolution_round_trips_for_each_outcome,
);
