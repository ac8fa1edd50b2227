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
use crate::approvals::{Approvals, EnrollOutcome, Enrollment, MemoryStore, Store, token_id};
use crate::metrics::Metrics;

/// `belay.v1.EnrollService` over this server's CA and the store holding the tokens.
#[derive(Debug)]
pub struct EnrollApi<S = MemoryStore> {
    approvals: Arc<Approvals<S>>,
    ca: Arc<Ca>,
    validity: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl<S: Store> EnrollApi<S> {
    /// Issues agent certificates valid for `validity`.
    pub fn new(approvals: Arc<Approvals<S>>, ca: Arc<Ca>, validity: Duration) -> Self {
        Self {
            approvals,
            ca,
            validity,
            metrics: None,
        }
    }

    /// Counts every attempt that reaches the token check in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    async fn enroll(&self, request: EnrollRequest) -> Result<v1::EnrollResponse, Status> {
        // Everything that can fail on the agent's input fails before the token is used up:
        // a typo in the CSR must not cost the operator a new token.
        let csr =
            Ca::parse_csr(&request.csr).map_err(|err| Status::invalid_argument(err.to_string()))?;
        let issued = self
            .ca
            .issue_agent(&csr, &request.host, self.validity)
            .map_err(|err| Status::internal(format!("cannot issue the certificate: {err}")))?;

        let hash = token::hash(&request.token);
        let token_id = token_id(&hash);
        // The token's host binding is checked in the same atomic step that uses it up: a
        // token presented for the wrong host has leaked or been mixed up and is spent
        // there, so its holder cannot go on guessing the host it is for.
        let outcome = self
            .approvals
            .store()
            .enroll(Enrollment {
                hash,
                host: request.host.clone(),
                at: SystemTime::now(),
                certificate: issued.certificate.clone(),
            })
            .await
            .map_err(|err| Status::unavailable(format!("cannot check the token: {err}")))?;
        if let Some(metrics) = &self.metrics {
            metrics.record_enrollment(&outcome);
        }
        let host = &request.host;
        match outcome {
            EnrollOutcome::Accepted(_) => {
                tracing::info!(%host, token_id, serial = %issued.certificate.serial, "agent enrolled");
                Ok(v1::EnrollResponse {
                    certificate_chain_pem: issued.chain_pem,
                    ca_certificate_pem: self.ca.cert_pem().to_owned(),
                })
            }
            EnrollOutcome::OtherHost(bound) => {
                tracing::warn!(%host, token_id, token_host = %bound, "enrollment refused: token bound to another host, now spent");
                // Naming the bound host gives nothing away: the token is dead.
                Err(Status::permission_denied(format!(
                    "this enrollment token is for host {bound}, not {host}; it is now spent: \
                     create a new one"
                )))
            }
            EnrollOutcome::ExistingHost(existing) => {
                tracing::warn!(%host, token_id, "enrollment refused: a token for no particular host presented for an existing host, now spent");
                Err(Status::permission_denied(format!(
                    "host {existing} is enrolled already, and this enrollment token was created \
                     for no particular host; it is now spent. To enroll {existing} again, \
                     create a token for it: `belay-server token create --host {existing}`"
                )))
            }
            refused @ (EnrollOutcome::Unknown | EnrollOutcome::Used | EnrollOutcome::Expired) => {
                tracing::warn!(%host, token_id, result = refused.label(), "enrollment refused");
                // One answer for the three: which tokens exist is no business of a caller
                // that does not hold a good one.
                Err(Status::unauthenticated(
                    "the enrollment token is unknown, already used or expired; create a new one \
                     with `belay-server token create`",
                ))
            }
        }
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
