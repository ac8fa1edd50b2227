//! `belay.v1.EnrollService`: an agent trades a one-time token and a CSR for its client
//! certificate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use belay_proto::domain::EnrollRequest;
use belay_proto::v1;
use belay_proto::v1::enroll_service_server::EnrollService;
use tonic::{Request, Response, Status};

use super::ca::Ca;
use super::token;
use crate::approvals::{Approvals, MemoryStore, Store};

/// `belay.v1.EnrollService` over this server's CA and the store holding the tokens.
#[derive(Debug)]
pub struct EnrollApi<S = MemoryStore> {
    approvals: Arc<Approvals<S>>,
    ca: Arc<Ca>,
    validity: Duration,
}

impl<S: Store> EnrollApi<S> {
    /// Issues agent certificates valid for `validity`.
    pub fn new(approvals: Arc<Approvals<S>>, ca: Arc<Ca>, validity: Duration) -> Self {
        Self {
            approvals,
            ca,
            validity,
        }
    }

    async fn enroll(&self, request: EnrollRequest) -> Result<v1::EnrollResponse, Status> {
        // Everything that can fail on the agent's input fails before the token is used up:
        // a typo in the CSR must not cost the operator a new token.
        let csr =
            Ca::parse_csr(&request.csr).map_err(|err| Status::invalid_argument(err.to_string()))?;
        let chain = self
            .ca
            .issue_agent(&csr, &request.host, self.validity)
            .map_err(|err| Status::internal(format!("cannot issue the certificate: {err}")))?;

        let hash = token::hash(&request.token);
        let Some(stored) = self
            .approvals
            .store()
            .consume_enroll_token(&hash, SystemTime::now())
            .await
            .map_err(|err| Status::unavailable(format!("cannot check the token: {err}")))?
        else {
            tracing::warn!(host = %request.host, "enrollment refused: unknown, used or expired token");
            return Err(Status::unauthenticated(
                "the enrollment token is unknown, already used or expired; create a new one \
                 with `belay-server token create`",
            ));
        };
        // Checked after the token is used up, as the store's one atomic step requires: a
        // token presented for another host has leaked or been mixed up, and is better gone.
        if let Some(bound) = stored.host.as_ref().filter(|bound| **bound != request.host) {
            tracing::warn!(host = %request.host, token_host = %bound, "enrollment refused: token bound to another host");
            return Err(Status::unauthenticated(format!(
                "this enrollment token is for host {bound}, not {}; it can no longer be used",
                request.host
            )));
        }
        tracing::info!(host = %request.host, "agent enrolled");
        Ok(v1::EnrollResponse {
            certificate_chain_pem: chain,
            ca_certificate_pem: self.ca.cert_pem().to_owned(),
        })
    }
}

#[tonic::async_trait]
impl<S: Store> EnrollService for EnrollApi<S> {
    async fn enroll(
        &self,
        request: Request<v1::EnrollRequest>,
    ) -> Result<Response<v1::EnrollResponse>, Status> {
        let request = EnrollRequest::try_from(request.into_inner())?;
        Ok(Response::new(Self::enroll(self, request).await?))
    }
}
