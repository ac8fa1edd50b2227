use std::sync::Arc;
use std::time::SystemTime;

use belay_proto::domain::{RequestId, ReviewerDecision};
use belay_proto::v1;
use belay_proto::v1::reviewer_service_server::ReviewerService;
use tonic::{Request, Response, Status};

use crate::approvals::{Approvals, MemoryStore, Store};

/// `belay.v1.ReviewerService` for reviewers and tools.
#[derive(Debug)]
pub struct ReviewerApi<S = MemoryStore> {
    approvals: Arc<Approvals<S>>,
}

impl<S: Store> ReviewerApi<S> {
    pub fn new(approvals: Arc<Approvals<S>>) -> Self {
        Self { approvals }
    }
}

#[tonic::async_trait]
impl<S: Store> ReviewerService for ReviewerApi<S> {
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
        let decision = ReviewerDecision::try_from(request.into_inner())?;
        // On a task of its own: tonic drops this future when the caller goes away, and a
        // decision the store has recorded must still reach the agent.
        let approvals = Arc::clone(&self.approvals);
        let decided =
            tokio::spawn(async move { approvals.decide(decision, SystemTime::now()).await })
                .await
                .map_err(|err| {
                    tracing::error!(error = %err, "deciding failed");
                    Status::internal("deciding failed")
                })??;
        Ok(Response::new(v1::DecideResponse {
            request: Some(decided.into()),
        }))
    }
}
