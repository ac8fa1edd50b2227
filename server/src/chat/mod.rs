//! Chat approvals: requests that need a person are posted to Slack and Microsoft Teams,
//! and reviewers decide with the message's buttons, under the same rules as every other
//! surface (roles, no self-approval, quorum), because every decision ends in the same
//! [`crate::approvals::Approvals::decide_counted`] call.
//!
//! The parts:
//! - [`surface`]: what a chat platform must do (post, update, say who a user is); one
//!   implementation per platform (`slack`, `teams`);
//! - [`card`]: what a message shows, independent of the platform's markup;
//! - the outbox and its worker (durable: a platform that is down delays messages, never
//!   loses them, and never holds up a decision);
//! - [`decide`]: a decision from a chat button, checked and recorded.

pub mod card;
pub mod decide;
pub mod surface;
pub mod teams;
