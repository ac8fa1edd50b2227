use tonic::Status;

use crate::approvals::ApprovalError;

impl From<ApprovalError> for Status {
    fn from(err: ApprovalError) -> Self {
        let message = err.to_string();
        match err {
            ApprovalError::NotFound(_) | ApprovalError::GrantNotFound(_) => {
                Status::not_found(message)
            }
            ApprovalError::AlreadyResolved { .. }
            | ApprovalError::GrantExpired { .. }
            | ApprovalError::GrantAlreadyRevoked { .. } => Status::failed_precondition(message),
            ApprovalError::SelfApproval { .. } => Status::permission_denied(message),
            ApprovalError::IdOfAnotherAgent(_)
            | ApprovalError::IdReused(_)
            | ApprovalError::AlreadyVoted { .. } => Status::already_exists(message),
            ApprovalError::ScopedKill => Status::invalid_argument(message),
            ApprovalError::IdNotOfHost { .. } => Status::permission_denied(message),
            ApprovalError::Store(err) => {
                // Backend details stay in the server log, not in answers to clients.
                tracing::error!(error = %err, "storage failed");
                Status::unavailable("storage is unavailable, try again")
            }
        }
    }
}
