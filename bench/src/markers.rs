//! The console's marker agent: a host of its own that submits one request every so
//! often while the fleet keeps the server at its load, and notes the wall-clock time of
//! each send. The automated reviewers leave markers alone, so their rows stay in the
//! console's pages, each stamped with when the page first showed it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use belay_proto::v1;
use belay_proto::v1::agent_service_client::AgentServiceClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use crate::agents;

pub const HOST: &str = "bench-marker";
/// Every marker's request id starts with this (`bench-marker:<n>`).
pub const PREFIX: &str = "bench-marker:";

pub struct Marker {
    up: mpsc::Sender<v1::AgentMessage>,
    down: JoinHandle<()>,
}

/// A marker request as sent: its id and the wall-clock time of the send, in Unix ms
/// (the pages' `Date.now()` runs on the same clock).
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: String,
    pub at_ms: i64,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub async fn connect(url: &str) -> anyhow::Result<Marker> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect()
        .await
        .with_context(|| format!("marker agent: connecting to {url}"))?;
    let mut client = AgentServiceClient::new(channel);
    let (up, outgoing) = mpsc::channel(64);
    up.send(v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(v1::Hello {
            host: HOST.into(),
            version: "bench".into(),
            owner: agents::OWNER.into(),
        })),
    })
    .await?;
    let mut down = client
        .session(ReceiverStream::new(outgoing))
        .await
        .context("marker agent: opening its session")?
        .into_inner();
    // Read whatever the server sends (nothing decides markers), so its stream flows.
    let down = tokio::spawn(async move { while let Some(Ok(_)) = down.next().await {} });
    Ok(Marker { up, down })
}

impl Marker {
    /// Sends a marker every `every` for `duration`; returns what it sent.
    pub async fn run(&self, every: Duration, duration: Duration) -> anyhow::Result<Vec<Sent>> {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = Instant::now();
        let mut sent = Vec::new();
        while started.elapsed() < duration {
            interval.tick().await;
            let id = format!("{PREFIX}{}", sent.len());
            let at_ms = now_ms();
            self.up
                .send(agents::request(id.clone()))
                .await
                .context("the marker agent's stream has closed")?;
            sent.push(Sent { id, at_ms });
        }
        Ok(sent)
    }

    pub fn stop(self) {
        self.down.abort();
    }
}
