use std::sync::Arc;
use std::time::SystemTime;

use belay_proto::domain::{RequestId, ReviewerDecision};
use belay_proto::v1;
use belay_proto::v1::reviewer_service_server::ReviewerService;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{reviewer_policy, reviewer_reads};
use crate::approvals::{Approvals, MemoryStore, Store};
use crate::policy_push::FleetPolicy;

/// `belay.v1.ReviewerService` for reviewers and tools.
#[derive(Debug)]
pub struct ReviewerApi<S = MemoryStore> {
    approvals: Arc<Approvals<S>>,
    /// Ends open watches: graceful shutdown waits for streams, which never end alone.
    shutdown: CancellationToken,
    policy: Arc<FleetPolicy>,
}

impl<S: Store> ReviewerApi<S> {
    pub fn new(approvals: Arc<Approvals<S>>) -> Self {
        Self {
            approvals,
            shutdown: CancellationToken::new(),
            policy: Arc::default(),
        }
    }

    /// The fleet policy pushes go to, shared with the agent service that sends it.
    pub fn with_policy(mut self, policy: Arc<FleetPolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// Watches end, with status UNAVAILABLE, when `shutdown` is cancelled.
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }
}

#[tonic::async_trait]
impl<S: Store> ReviewerService for ReviewerApi<S> {
    type WatchRequestsStream = reviewer_reads::WatchStream;

    async fn watch_requests(
        &self,
        _request: Request<v1::WatchRequestsRequest>,
    ) -> Result<Response<Self::WatchRequestsStream>, Status> {
        Ok(Response::new(reviewer_reads::watch(
            Arc::clone(&self.approvals),
            self.shutdown.clone(),
        )))
    }

    async fn list_agents(
        &self,
        _request: Request<v1::ListAgentsRequest>,
    ) -> Result<Response<v1::ListAgentsResponse>, Status> {
        Ok(Response::new(
            reviewer_reads::list_agents(&self.approvals, &self.policy).await?,
        ))
    }

    async fn query_audit(
        &self,
        request: Request<v1::QueryAuditRequest>,
    ) -> Result<Response<v1::QueryAuditResponse>, Status> {
        Ok(Response::new(
            reviewer_reads::query_audit(&self.approvals, request.into_inner()).await?,
        ))
    }

    async fn push_policy(
        &self,
        request: Request<v1::PushPolicyRequest>,
    ) -> Result<Response<v1::PushPolicyResponse>, Status> {
        let caller = crate::auth::caller(&request)?.clone();
        Ok(Response::new(
            reviewer_policy::push(
                Arc::clone(&self.approvals),
                Arc::clone(&self.policy),
                &caller,
                request.into_inner(),
            )
            .await?,
        ))
    }

    async fn get_policy(
        &self,
        request: Request<v1::GetPolicyRequest>,
    ) -> Result<Response<v1::GetPolicyResponse>, Status> {
        Ok(Response::new(
            reviewer_policy::get(&self.approvals, &self.policy, request.into_inner()).await?,
        ))
    }

    async fn list_pending(
        &self,
        _request: Request<v1::ListPendingRequest>,
    ) -> Result<Response<v1::ListPendingResponse>, Status> {
        let requests = self.approvals.list_pending().await?;
        Ok(Response::new(v1::ListPendingResponse {
            requests: requests.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_request(
        &self,
        request: Request<v1::GetRequestRequest>,
    ) -> Result<Response<v1::GetRequestResponse>, Status> {
        let id = RequestId::new(request.into_inner().request_id)?;
        let found = self.approvals.get(&id).await?;
        Ok(Response::new(v1::GetRequestResponse {
            request: Some(found.into()),
        }))
    }

    async fn decide(
        &self,
        request: Request<v1::DecideRequest>,
    ) -> Result<Response<v1::DecideResponse>, Status> {
        // Whoever the credential says, not whoever the message claims (auth::Caller).
        let caller = crate::auth::caller(&request)?.clone();
        let mut message = request.into_inner();
        message.reviewer = caller.decider(&message.reviewer)?;
        message.reason = caller.annotate_reason(message.reason);
        let decision = ReviewerDecision::try_from(message)?;
        // On a task of its own: tonic drops this future when the caller goes away, and a
        // decision the store has recorded must still reach the agent.
        let approvals = Arc::clone(&self.approvals);
        let decided =
            tokio::spawn(
                async move { approvals.decide_counted(decision, SystemTime::now()).await },
            )
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "deciding failed");
                Status::internal("deciding failed")
            })??;
        Ok(Response::new(v1::DecideResponse {
            request: Some(decided.request.into()),
            approvals: decided.approvals,
            quorum: decided.quorum,
        }))
    }
}
