//! gRPC façade over [`crate::approvals`]: wire messages are validated into domain types on
//! the way in, approval errors become statuses on the way out. No rule lives here.

mod agent_service;
mod policy_views;
mod reviewer_service;
mod reviewer_views;
mod status;

pub use agent_service::AgentApi;
pub use reviewer_service::ReviewerApi;
