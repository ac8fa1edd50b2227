//! What a chat message about a request shows, before any platform's markup: the
//! request itself (host, agent, owner, action, rule, deadline, masked context and the
//! agent's declared intent, which `belay_proto::domain::RequestContext::intent` holds),
//! and how far its approval has come.

use belay_proto::domain::Request;

/// A request as a chat message shows it at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCard {
    pub request: Request,
    /// Distinct approvals counted so far (0 while none; the quorum's progress shows as
    /// "1 of 2").
    pub approvals: u32,
    pub quorum: u32,
}

impl RequestCard {
    /// Still waiting for people: the message carries buttons.
    pub fn is_open(&self) -> bool {
        self.request.resolution.is_none()
    }
}
