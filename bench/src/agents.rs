//! Simulated agents: each its own HTTP/2 connection and Session stream, as belay-agent
//! keeps one per host.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use belay_proto::v1;
use belay_proto::v1::agent_service_client::AgentServiceClient;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use crate::stats::Latencies;

/// Connections opened at once while the fleet connects.
const CONNECT_CONCURRENCY: usize = 256;
/// Identity owning every simulated agent; the reviewers are someone else.
pub const OWNER: &str = "agent-owner@bench";

type Sent = Arc<Mutex<HashMap<String, Instant>>>;

struct Agent {
    host: String,
    up: mpsc::Sender<v1::AgentMessage>,
    sent: Sent,
}

pub struct Fleet {
    agents: Vec<Agent>,
    answered: Arc<AtomicUsize>,
    latencies: Arc<Mutex<Option<Arc<Latencies>>>>,
}

pub async fn connect(url: &str, count: usize) -> anyhow::Result<Fleet> {
    let answered = Arc::new(AtomicUsize::new(0));
    let latencies: Arc<Mutex<Option<Arc<Latencies>>>> = Arc::default();
    let mut agents = Vec::with_capacity(count);
    let mut next = 0;
    while next < count {
        let mut batch = JoinSet::new();
        for index in next..(next + CONNECT_CONCURRENCY).min(count) {
            let url = url.to_owned();
            let answered = Arc::clone(&answered);
            let latencies = Arc::clone(&latencies);
            batch.spawn(async move { connect_one(&url, index, answered, latencies).await });
        }
        while let Some(agent) = batch.join_next().await {
            agents.push(agent.context("agent task panicked")??);
        }
        next += CONNECT_CONCURRENCY;
    }
    Ok(Fleet {
        agents,
        answered,
        latencies,
    })
}

async fn connect_one(
    url: &str,
    index: usize,
    answered: Arc<AtomicUsize>,
    latencies: Arc<Mutex<Option<Arc<Latencies>>>>,
) -> anyhow::Result<Agent> {
    let host = format!("bench-host-{index:05}");
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect()
        .await
        .with_context(|| format!("agent {host}: connecting to {url}"))?;
    let mut client = AgentServiceClient::new(channel);
    let (up, outgoing) = mpsc::channel(64);
    up.send(v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(v1::Hello {
            host: host.clone(),
            version: "bench".into(),
            owner: OWNER.into(),
        })),
    })
    .await?;
    let mut down = client
        .session(ReceiverStream::new(outgoing))
        .await
        .with_context(|| format!("agent {host}: opening its session"))?
        .into_inner();
    let sent: Sent = Arc::default();
    let pending = Arc::clone(&sent);
    tokio::spawn(async move {
        while let Some(message) = down.next().await {
            let Ok(message) = message else { break };
            let Some(v1::server_message::Kind::Decision(decision)) = message.kind else {
                continue;
            };
            let received = Instant::now();
            let at = pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&decision.request_id);
            if let Some(at) = at {
                answered.fetch_add(1, Ordering::Relaxed);
                let recorder = latencies
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                if let Some(recorder) = recorder {
                    recorder.record(at, received);
                }
            }
        }
    });
    Ok(Agent { host, up, sent })
}

pub fn request(id: String) -> v1::AgentMessage {
    let deadline = SystemTime::now() + Duration::from_secs(120);
    v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Request(v1::NewRequest {
            id,
            agent_name: "bench-bot".into(),
            pid: 4242,
            uid: 1000,
            action: Some(v1::Action {
                kind: Some(v1::action::Kind::Connect(v1::Connect {
                    address: "192.0.2.1".into(),
                    port: 443,
                    protocol: v1::Protocol::Tcp.into(),
                })),
            }),
            deadline: Some(deadline.into()),
            default_verdict: v1::Verdict::Deny.into(),
            rule: "bench".into(),
            ..Default::default()
        })),
    }
}

impl Fleet {
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Offers `rate` requests per second for `duration`, round-robin over the agents;
    /// returns how many were sent.
    pub async fn offer(&self, rate: u32, duration: Duration, latencies: Arc<Latencies>) -> usize {
        *self
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(latencies);
        let tick = Duration::from_millis(10);
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        let mut sent = 0_usize;
        let mut owed = 0.0_f64;
        let per_tick = f64::from(rate) * tick.as_secs_f64();
        while started.elapsed() < duration {
            interval.tick().await;
            owed += per_tick;
            while owed >= 1.0 {
                owed -= 1.0;
                let agent = &self.agents[sent % self.agents.len()];
                let id = format!("{}:{sent}", agent.host);
                agent
                    .sent
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(id.clone(), Instant::now());
                // Waits when the agent's stream is backed up, as a real agent's queue would.
                if agent.up.send(request(id)).await.is_err() {
                    eprintln!("agent {}: its stream has closed", agent.host);
                }
                sent += 1;
            }
        }
        sent
    }

    /// Waits until `offered` decisions arrived or `patience` ran out; returns how many.
    pub async fn wait_answered(&self, offered: usize, patience: Duration) -> usize {
        let started = Instant::now();
        loop {
            let answered = self.answered.load(Ordering::Relaxed);
            if answered >= offered || started.elapsed() > patience {
                return answered;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
