//! The read-only reviewer calls beyond single requests: the live watch, the connected
//! agents and pages of the audit log.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use belay_proto::domain::{Request, RequestId, RequestState};
use belay_proto::v1;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::approvals::{ApprovalError, Approvals, Store};
use crate::audit;
use crate::policy_push::FleetPolicy;

/// Audit records per page unless the caller asks for another size, and at most.
pub(crate) const DEFAULT_AUDIT_PAGE: u32 = 100;
pub(crate) const MAX_AUDIT_PAGE: u32 = 1000;
/// Messages queued towards one watcher before its task waits for it to read. A watcher
/// that stops reading falls behind on the broadcast, not here, and resyncs.
const WATCH_BUFFER: usize = 64;

pub type WatchStream = ReceiverStream<Result<v1::WatchRequestsResponse, Status>>;

/// Starts a watch: its task ends when the caller hangs up, the changes end, or
/// `shutdown` (server shutdown waits for open streams, and a watch never ends alone).
pub(crate) fn watch<S: Store>(
    approvals: Arc<Approvals<S>>,
    shutdown: CancellationToken,
) -> WatchStream {
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    // Subscribed before the first listing, so nothing created in between is missed.
    let changes = approvals.changes();
    tokio::spawn(async move {
        tokio::select! {
            () = run_watch(&approvals, changes, &tx) => {}
            () = tx.closed() => {}
            () = shutdown.cancelled() => {
                let _ = tx.try_send(Err(Status::unavailable("the server is shutting down")));
            }
        }
    });
    ReceiverStream::new(rx)
}

fn request_message(request: Request) -> v1::WatchRequestsResponse {
    v1::WatchRequestsResponse {
        kind: Some(v1::watch_requests_response::Kind::Request(request.into())),
    }
}

fn synced_message() -> v1::WatchRequestsResponse {
    v1::WatchRequestsResponse {
        kind: Some(v1::watch_requests_response::Kind::Synced(v1::Synced {})),
    }
}

type Sink = mpsc::Sender<Result<v1::WatchRequestsResponse, Status>>;

async fn run_watch<S: Store>(
    approvals: &Approvals<S>,
    mut changes: broadcast::Receiver<Request>,
    tx: &Sink,
) {
    loop {
        // Pending ids just sent: their creation may also be queued on `changes`, and
        // sending it again would show the same request twice.
        let mut listed: HashSet<RequestId> = HashSet::new();
        let pending = match approvals.list_pending().await {
            Ok(pending) => pending,
            Err(err) => {
                let _ = tx.send(Err(err.into())).await;
                return;
            }
        };
        for request in pending {
            listed.insert(request.id.clone());
            if tx.send(Ok(request_message(request))).await.is_err() {
                return;
            }
        }
        if tx.send(Ok(synced_message())).await.is_err() {
            return;
        }
        loop {
            match changes.recv().await {
                Ok(request) => {
                    let repeat =
                        request.state() == RequestState::Pending && listed.contains(&request.id);
                    if request.state() != RequestState::Pending {
                        listed.remove(&request.id);
                    }
                    if !repeat && tx.send(Ok(request_message(request))).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(
                        missed,
                        "a watcher fell behind; sending the pending set again"
                    );
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

pub(crate) async fn list_agents<S: Store>(
    approvals: &Approvals<S>,
    policy: &FleetPolicy,
) -> Result<v1::ListAgentsResponse, Status> {
    let mut pending: BTreeMap<String, u32> = BTreeMap::new();
    for request in approvals.list_pending().await? {
        *pending.entry(request.host.into_string()).or_default() += 1;
    }
    let agents = approvals
        .agents()
        .into_iter()
        .map(|agent| {
            let policy = policy
                .state(&agent.identity.host)
                .map(|state| state.to_wire());
            let host = agent.identity.host.into_string();
            v1::AgentInfo {
                policy,
                pending: pending.get(&host).copied().unwrap_or(0),
                host,
                owner: agent.identity.owner.into_string(),
                version: agent.version.into_string(),
                connected_at: Some(agent.connected_at.into()),
            }
        })
        .collect();
    Ok(v1::ListAgentsResponse { agents })
}

pub(crate) async fn query_audit<S: Store>(
    approvals: &Approvals<S>,
    query: v1::QueryAuditRequest,
) -> Result<v1::QueryAuditResponse, Status> {
    let limit = match query.limit {
        0 => DEFAULT_AUDIT_PAGE,
        n if n > MAX_AUDIT_PAGE => {
            return Err(Status::invalid_argument(format!(
                "invalid limit: must be in 1..={MAX_AUDIT_PAGE} (0 for {DEFAULT_AUDIT_PAGE}), got {n}"
            )));
        }
        n => n,
    };
    let records = approvals
        .store()
        .audit_records(query.after_seq, limit as usize)
        .await
        .map_err(ApprovalError::from)?;
    let next_after_seq = records.last().map_or(query.after_seq, |record| record.seq);
    Ok(v1::QueryAuditResponse {
        records: records.into_iter().map(audit_record).collect(),
        next_after_seq,
    })
}

fn audit_record(record: audit::Record) -> v1::AuditRecord {
    let nanos = i128::from(record.at);
    v1::AuditRecord {
        seq: record.seq,
        at: Some(prost_types::Timestamp {
            seconds: nanos.div_euclid(1_000_000_000) as i64,
            nanos: nanos.rem_euclid(1_000_000_000) as i32,
        }),
        kind: record.kind,
        request_id: record.request_id,
        body: record.body,
        prev_hash: record.prev_hash,
        hash: record.hash,
    }
}
