//! Validated counterparts of the wire messages.
//!
//! `TryFrom<v1::X> for X` refuses unspecified or unknown enum values, missing or empty
//! required fields, malformed addresses, port 0 and oversized strings; the error names the
//! offending field and converts into `tonic::Status::invalid_argument`. `From<X> for v1::X`
//! goes the other way and cannot fail.

mod action;
mod context;
mod enroll;
mod error;
mod intent;
pub mod limits;
mod messages;
mod policy;
mod request;
mod scope;
mod text;

pub use action::{Action, ConnectAction, ExecAction, Protocol};
pub use context::{Ancestor, RequestContext};
pub use enroll::{EnrollRequest, EnrollSecret, MAX_CSR_LEN};
pub use error::{Problem, ValidationError};
pub use intent::{Intent, IntentDetails};
pub use messages::{AgentMessage, Decision, Hello, ReviewerDecision, VerdictApplied, Withdraw};
pub use policy::{
    MAX_POLICY_LEN, MAX_POLICY_MESSAGE_LEN, PolicyOutcome, PolicyPush, PolicyReport, PolicyText,
    PolicyUpdate, sha256_hex,
};
pub use request::{
    NewRequest, Outcome, Request, RequestState, Resolution, UnknownVerdict, Verdict,
};
pub use scope::{MAX_GRANT, Scope};
pub use text::{HostName, Identity, Name, Reason, RequestId};

#[cfg(test)]
mod tests;
