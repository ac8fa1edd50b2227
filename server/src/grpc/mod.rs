//! gRPC façade over [`crate::approvals`]: wire messages are validated into domain types on
//! the way in, approval errors become statuses on the way out. No rule lives here.

mod agent_service;
/// The reviewer calls about the fleet policy: push a version, read it with each
/// agent's answer.
mod reviewer_policy;
/// The read-only reviewer calls beyond single requests: watch, agents, audit pages.
mod reviewer_reads;
mod reviewer_service;
mod status;

pub use agent_service::AgentApi;
pub use reviewer_service::ReviewerApi;
