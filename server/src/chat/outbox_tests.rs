//! The outbox worker against real stores, with a recording platform: replicas sharing
//! PostgreSQL post each request once, and a survivor keeps the messages up to date.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use belay_proto::domain::{
    Action, ConnectAction, HostName, Identity, Name, NewRequest, Protocol, Reason, RequestId,
    ReviewerDecision, Scope, Verdict,
};
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::approvals::{AgentIdentity, Approvals, PostgresStore};
use crate::audit::{AuditKey, AuditSigner};
use crate::chat::card::RequestCard;
use crate::chat::routing::Route;
use crate::chat::surface::{Platform, PostedMessage, SendError, Surface};
use crate::metrics::Metrics;
use crate::testing::postgres::database;

/// What a replica's platform was asked: (replica, "post" | "update", request, state).
type Log = Arc<Mutex<Vec<(&'static str, &'static str, String, String)>>>;

struct Recording {
    replica: &'static str,
    log: Log,
}

impl Surface for Recording {
    fn platform(&self) -> Platform {
        Platform::Slack
    }

    async fn post(&self, target: &str, card: &RequestCard) -> Result<PostedMessage, SendError> {
        let mut log = self.log.lock().unwrap();
        log.push((
            self.replica,
            "post",
            card.request.id.to_string(),
            card.request.state().to_string(),
        ));
        Ok(PostedMessage(format!("{target} {}", log.len())))
    }

    async fn update(&self, _: &PostedMessage, card: &RequestCard) -> Result<(), SendError> {
        self.log.lock().unwrap().push((
            self.replica,
            "update",
            card.request.id.to_string(),
            card.request.state().to_string(),
        ));
        Ok(())
    }
}

fn new_request(id: &str) -> NewRequest {
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
        deadline: SystemTime::now() + Duration::from_secs(600),
        default_verdict: Verdict::Deny,
        rule: Name::new("egress").unwrap(),
        owner: None,
        context: Default::default(),
    }
}

async fn wait_for(
    log: &Log,
    what: impl Fn(&[(&'static str, &'static str, String, String)]) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(15), async {
        while !what(&log.lock().unwrap()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not seen in time: {:?}", log.lock().unwrap()));
}

#[tokio::test]
async fn replicas_post_once_and_the_survivor_updates_the_message() {
    let url = database().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit-key");
    let signer = || AuditSigner::new(AuditKey::load_or_create(&key).unwrap(), 5);
    let log: Log = Arc::default();
    let routes = Arc::new(vec![Route {
        subject: None,
        owner: None,
        host: None,
        slack_channel: Some("C1".into()),
        teams_conversation: None,
    }]);
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let store = PostgresStore::connect_with_signer(&url, signer())
            .await
            .unwrap();
        let approvals = Arc::new(Approvals::new(store));
        let stop = CancellationToken::new();
        let surface = Arc::new(Recording {
            replica: name,
            log: Arc::clone(&log),
        });
        let metrics = Arc::new(Metrics::default());
        let worker = Worker::new(Arc::clone(&approvals), surface, Arc::clone(&routes))
            .with_timing(Duration::from_millis(200), Duration::from_secs(1))
            .with_metrics(Arc::clone(&metrics));
        let task = tokio::spawn(worker.run(stop.clone()));
        replicas.push((name, approvals, task, metrics));
    }

    let agent = AgentIdentity {
        host: HostName::new("web-1").unwrap(),
        owner: Identity::new("alice").unwrap(),
    };
    replicas[0]
        .1
        .submit(&agent, new_request("web-1:r"), SystemTime::now())
        .await
        .unwrap();
    wait_for(&log, |log| !log.is_empty()).await;
    // Both replicas see the request (the other by its rescan); only one posts.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let poster = {
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1, "{log:?}");
        log[0].0
    };

    // The poster dies without releasing its lease (a crash); the request is decided
    // on the other replica, which takes over once the lease ran out.
    let (dead, survivor): (Vec<_>, Vec<_>) = replicas.into_iter().partition(|(n, ..)| *n == poster);
    dead[0].2.abort();
    let (survivor_name, approvals, _task, metrics) = &survivor[0];
    let decision = ReviewerDecision {
        request_id: RequestId::new("web-1:r").unwrap(),
        verdict: Verdict::Deny,
        reviewer: Identity::new("bob").unwrap(),
        reason: Reason::new("no").unwrap(),
        scope: Scope::Once,
    };
    approvals.decide(decision, SystemTime::now()).await.unwrap();
    wait_for(&log, |log| log.iter().any(|e| e.1 == "update")).await;
    assert_eq!(dead[0].3.chat().count("slack", "posted"), 1);
    assert_eq!(metrics.chat().count("slack", "posted"), 0);
    assert_eq!(metrics.chat().count("slack", "updated"), 1);
    let rendered = metrics.render(crate::metrics::Gauges {
        pending: 0,
        connected_agents: 0,
    });
    assert!(
        rendered.contains("belay_chat_messages_total{platform=\"slack\",result=\"updated\"} 1"),
        "{rendered}"
    );
    let log = log.lock().unwrap();
    assert_eq!(
        log[1..],
        [(
            *survivor_name,
            "update",
            "web-1:r".to_owned(),
            "denied".to_owned()
        )],
        "{log:?}"
    );
}
