//! The reviewer calls about the fleet policy: push a version, read it with each agent's
//! answer.

use std::sync::Arc;
use std::time::SystemTime;

use belay_proto::domain::{Identity, PolicyPush};
use belay_proto::v1;
use tonic::Status;

use crate::approvals::{ApprovalError, Approvals, NewPolicy, Store};
use crate::auth::Caller;
use crate::policy_push::{FleetPolicy, Proposed, fleet_policy_message};

/// Recorded as the pusher on a server run with `--insecure`, where nobody is signed in.
const ANONYMOUS: &str = "anonymous";

pub(crate) async fn push<S: Store>(
    approvals: Arc<Approvals<S>>,
    policy: Arc<FleetPolicy>,
    caller: &Caller,
    message: v1::PushPolicyRequest,
) -> Result<v1::PushPolicyResponse, Status> {
    let push = PolicyPush::try_from(message)?;
    let pushed_by = match caller {
        Caller::Authenticated(reviewer) => reviewer.identity.clone(),
        Caller::Insecure => ANONYMOUS.to_owned(),
    };
    let new = NewPolicy {
        text: push.text,
        pushed_by: Identity::new(pushed_by)?,
        reason: push.reason,
        pushed_at: SystemTime::now(),
    };
    // The same quorum as approvals: a new fleet policy can allow anything on every
    // host, so it takes as many admins as one approval takes reviewers.
    let quorum = approvals.quorum();
    // On a task of its own: a stored push must also be published, even if the caller
    // hangs up meanwhile.
    let proposed =
        tokio::spawn(async move { policy.propose(approvals.store(), new, quorum).await })
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "pushing the fleet policy failed");
                Status::internal("pushing the fleet policy failed")
            })?
            .map_err(ApprovalError::from)?;
    Ok(match proposed {
        Proposed::Pushed { policy, approvals } => v1::PushPolicyResponse {
            policy: Some(fleet_policy_message(&policy, false)),
            approvals,
            quorum,
        },
        Proposed::Waiting { approvals, quorum } => v1::PushPolicyResponse {
            policy: None,
            approvals,
            quorum,
        },
    })
}

pub(crate) async fn get<S: Store>(
    approvals: &Approvals<S>,
    policy: &FleetPolicy,
    message: v1::GetPolicyRequest,
) -> Result<v1::GetPolicyResponse, Status> {
    // From the store, not the published copy: the answer is right even if this
    // replica missed another's notice.
    let stored = approvals
        .store()
        .current_policy()
        .await
        .map_err(ApprovalError::from)?;
    let agents = approvals
        .agents()
        .into_iter()
        .map(|agent| v1::AgentPolicy {
            status: policy
                .state(&agent.identity.host)
                .map(|state| state.to_wire()),
            host: agent.identity.host.into_string(),
        })
        .collect();
    Ok(v1::GetPolicyResponse {
        policy: stored.map(|stored| fleet_policy_message(&stored, message.include_text)),
        agents,
    })
}
