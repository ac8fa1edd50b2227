//! Automated reviewers: one watch on the pending requests, and a pool of workers that
//! approve each request as it appears (but the console markers', which stay pending for
//! the pages to show).

use anyhow::Context as _;
use belay_proto::v1;
use belay_proto::v1::reviewer_service_client::ReviewerServiceClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::markers;

/// Connections the deciders share (HTTP/2 multiplexes the calls).
const CONNECTIONS: usize = 4;
const REVIEWER: &str = "bench-reviewer@bench";

type Client = ReviewerServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <API token>` to every call, when the server
/// authenticates reviewers (with the console).
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub struct Reviewers {
    client: Client,
    tasks: Vec<JoinHandle<()>>,
}

/// `token`: the API token to authenticate with (`None`: the server is `--insecure`
/// without `--auth-config`, reviewers are whoever they say).
pub async fn start(url: &str, deciders: usize, token: Option<&str>) -> anyhow::Result<Reviewers> {
    let bearer = Bearer(
        token
            .map(|token| format!("Bearer {token}").parse())
            .transpose()
            .context("the API token is not valid metadata")?,
    );
    // An authenticated caller decides as its credential says: no reviewer asserted.
    let reviewer = if token.is_some() { "" } else { REVIEWER };
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
            .connect()
            .await
            .with_context(|| format!("reviewer: connecting to {url}"))?;
        clients.push(ReviewerServiceClient::with_interceptor(
            channel,
            bearer.clone(),
        ));
    }
    let mut watch = clients[0]
        .clone()
        .watch_requests(v1::WatchRequestsRequest {})
        .await
        .context("reviewer: WatchRequests")?
        .into_inner();
    let (work, queue) = mpsc::unbounded_channel::<String>();
    let queue = std::sync::Arc::new(tokio::sync::Mutex::new(queue));
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(async move {
        while let Some(message) = watch.next().await {
            let Ok(message) = message else { break };
            if let Some(v1::watch_requests_response::Kind::Request(request)) = message.kind
                && request.state == v1::RequestState::Pending as i32
                && !request.id.starts_with(markers::PREFIX)
                && work.send(request.id).is_err()
            {
                break;
            }
        }
    }));
    for worker in 0..deciders.max(1) {
        let mut client = clients[worker % CONNECTIONS].clone();
        let queue = std::sync::Arc::clone(&queue);
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(id) = queue.lock().await.recv().await else {
                    return;
                };
                let decided = client
                    .decide(v1::DecideRequest {
                        request_id: id.clone(),
                        verdict: v1::Verdict::Allow.into(),
                        reason: "automated reviewer".into(),
                        reviewer: reviewer.into(),
                        scope: None,
                    })
                    .await;
                if let Err(status) = decided {
                    eprintln!("deciding {id}: {status}");
                }
            }
        }));
    }
    Ok(Reviewers {
        client: clients.swap_remove(0),
        tasks,
    })
}

impl Reviewers {
    /// Agents the server reports connected.
    pub async fn connected_agents(&self) -> anyhow::Result<usize> {
        let agents = self
            .client
            .clone()
            .list_agents(v1::ListAgentsRequest {})
            .await
            .context("ListAgents")?
            .into_inner()
            .agents;
        Ok(agents.len())
    }

    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}
