use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::action::Action;
use super::context::{self, RequestContext};
use super::error::{Problem, ValidationError, WithinField, required};
use super::text::{HostName, Identity, Name, Reason, RequestId};
use crate::v1;

/// What happens to a paused action: what a policy's `on_timeout` names, what a reviewer
/// decides (on the local socket or through the server), and what the kernel applies.
///
/// The one verdict type: serde gives its JSON name (`"allow"`, `"deny"`, `"kill"`), the
/// `clap` feature its command-line value, and `From`/`TryFrom` below the wire enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    // Plain comments, not doc comments: clap would show these as each value's help.
    // The syscall runs.
    Allow,
    // The syscall fails with EPERM.
    Deny,
    // The process is killed (SIGKILL) without resuming.
    Kill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestState {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
}

/// A request as an agent submits it. Host and owner come from the agent's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    pub id: RequestId,
    pub agent_name: Name,
    pub pid: u32,
    pub uid: u32,
    pub action: Action,
    pub deadline: SystemTime,
    pub default_verdict: Verdict,
    pub rule: Name,
    /// The watched agent's owner, when the host names one per agent; else the session's.
    pub owner: Option<Identity>,
    /// Descriptive only; not part of what makes a resubmission the same request.
    pub context: RequestContext,
}

/// A request as the server records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: RequestId,
    pub host: HostName,
    pub agent_name: Name,
    pub owner: Identity,
    pub pid: u32,
    pub uid: u32,
    pub action: Action,
    pub deadline: SystemTime,
    pub default_verdict: Verdict,
    pub rule: Name,
    pub created_at: SystemTime,
    /// `None` while pending.
    pub resolution: Option<Resolution>,
    /// As first submitted; empty when the agent sent none.
    pub context: RequestContext,
}

/// How and when a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub outcome: Outcome,
    pub reason: Reason,
    pub resolved_at: SystemTime,
}

/// The ways a request can end. The state follows from it, so the two cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A reviewer decided: `Allow` means approved, `Deny`/`Kill` denied.
    Decided {
        verdict: Verdict,
        reviewer: Identity,
    },
    /// Nobody decided in time; `verdict` is the request's default verdict.
    Expired { verdict: Verdict },
    /// The agent withdrew the request; nothing is applied.
    Cancelled,
}

impl Verdict {
    /// The verdict of a wire value; `Unspecified` and unknown values are problems.
    pub fn from_wire(value: i32) -> Result<Self, Problem> {
        match v1::Verdict::try_from(value) {
            Ok(v1::Verdict::Allow) => Ok(Self::Allow),
            Ok(v1::Verdict::Deny) => Ok(Self::Deny),
            Ok(v1::Verdict::Kill) => Ok(Self::Kill),
            Ok(v1::Verdict::Unspecified) => Err(Problem::Unspecified),
            Err(_) => Err(Problem::UnknownEnumValue(value)),
        }
    }

    pub(crate) fn parse(field: &str, value: i32) -> Result<Self, ValidationError> {
        Self::from_wire(value).map_err(|problem| ValidationError::new(field, problem))
    }

    pub const ALL: [Self; 3] = [Self::Allow, Self::Deny, Self::Kill];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Kill => "kill",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a verdict's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown verdict {0:?} (expected allow, deny or kill)")]
pub struct UnknownVerdict(pub String);

impl FromStr for Verdict {
    type Err = UnknownVerdict;

    /// The inverse of [`Verdict::as_str`].
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == name)
            .ok_or_else(|| UnknownVerdict(name.to_owned()))
    }
}

impl TryFrom<v1::Verdict> for Verdict {
    type Error = Problem;

    fn try_from(verdict: v1::Verdict) -> Result<Self, Problem> {
        Self::from_wire(verdict as i32)
    }
}

impl From<Verdict> for v1::Verdict {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Allow => Self::Allow,
            Verdict::Deny => Self::Deny,
            Verdict::Kill => Self::Kill,
        }
    }
}

impl RequestState {
    /// The state of a wire value; `Unspecified` and unknown values are problems.
    pub fn from_wire(value: i32) -> Result<Self, Problem> {
        match v1::RequestState::try_from(value) {
            Ok(v1::RequestState::Pending) => Ok(Self::Pending),
            Ok(v1::RequestState::Approved) => Ok(Self::Approved),
            Ok(v1::RequestState::Denied) => Ok(Self::Denied),
            Ok(v1::RequestState::Expired) => Ok(Self::Expired),
            Ok(v1::RequestState::Cancelled) => Ok(Self::Cancelled),
            Ok(v1::RequestState::Unspecified) => Err(Problem::Unspecified),
            Err(_) => Err(Problem::UnknownEnumValue(value)),
        }
    }

    pub(crate) fn parse(field: &str, value: i32) -> Result<Self, ValidationError> {
        Self::from_wire(value).map_err(|problem| ValidationError::new(field, problem))
    }

    pub fn is_final(self) -> bool {
        self != Self::Pending
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<RequestState> for v1::RequestState {
    fn from(state: RequestState) -> Self {
        match state {
            RequestState::Pending => Self::Pending,
            RequestState::Approved => Self::Approved,
            RequestState::Denied => Self::Denied,
            RequestState::Expired => Self::Expired,
            RequestState::Cancelled => Self::Cancelled,
        }
    }
}

impl Outcome {
    pub fn state(&self) -> RequestState {
        match self {
            Self::Decided {
                verdict: Verdict::Allow,
                ..
            } => RequestState::Approved,
            Self::Decided { .. } => RequestState::Denied,
            Self::Expired { .. } => RequestState::Expired,
            Self::Cancelled => RequestState::Cancelled,
        }
    }

    /// The verdict the agent applies; none for a cancelled request.
    pub fn verdict(&self) -> Option<Verdict> {
        match self {
            Self::Decided { verdict, .. } | Self::Expired { verdict } => Some(*verdict),
            Self::Cancelled => None,
        }
    }

    pub fn reviewer(&self) -> Option<&Identity> {
        match self {
            Self::Decided { reviewer, .. } => Some(reviewer),
            Self::Expired { .. } | Self::Cancelled => None,
        }
    }
}

impl Request {
    /// Combines a submission with the identity of the agent session that sent it.
    pub fn new(
        submitted: NewRequest,
        host: HostName,
        owner: Identity,
        created_at: SystemTime,
    ) -> Self {
        let NewRequest {
            id,
            agent_name,
            pid,
            uid,
            action,
            deadline,
            default_verdict,
            rule,
            // Chosen by the caller: the submitted owner, or the session's.
            owner: _,
            context,
        } = submitted;
        Self {
            id,
            host,
            agent_name,
            owner,
            pid,
            uid,
            action,
            deadline,
            default_verdict,
            rule,
            created_at,
            resolution: None,
            context,
        }
    }

    pub fn state(&self) -> RequestState {
        self.resolution
            .as_ref()
            .map_or(RequestState::Pending, |resolution| {
                resolution.outcome.state()
            })
    }

    /// Whether `submitted` is a resubmission of this request (same content), as opposed
    /// to a different request reusing the id. The context is left out: it is read from
    /// /proc best effort and may differ on a re-read (the process moved on), and it is
    /// not what a decision approves; the stored, first-submitted context stands.
    pub fn matches(&self, submitted: &NewRequest) -> bool {
        self.id == submitted.id
            && self.agent_name == submitted.agent_name
            && self.pid == submitted.pid
            && self.uid == submitted.uid
            && self.action == submitted.action
            && self.deadline == submitted.deadline
            && self.default_verdict == submitted.default_verdict
            && self.rule == submitted.rule
            && submitted
                .owner
                .as_ref()
                .is_none_or(|o| o.same_as(&self.owner))
    }
}

pub(crate) fn timestamp(
    field: &str,
    value: Option<prost_types::Timestamp>,
) -> Result<SystemTime, ValidationError> {
    SystemTime::try_from(required(field, value)?)
        .map_err(|_| ValidationError::new(field, Problem::BadTimestamp))
}

impl TryFrom<v1::NewRequest> for NewRequest {
    type Error = ValidationError;

    fn try_from(request: v1::NewRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            id: RequestId::parse("id", request.id)?,
            agent_name: Name::parse("agent_name", request.agent_name)?,
            pid: request.pid,
            uid: request.uid,
            action: required("action", request.action)?
                .try_into()
                .within("action")?,
            deadline: timestamp("deadline", request.deadline)?,
            default_verdict: Verdict::parse("default_verdict", request.default_verdict)?,
            rule: Name::parse("rule", request.rule)?,
            owner: if request.owner.is_empty() {
                None
            } else {
                Some(Identity::parse("owner", request.owner)?)
            },
            context: context::parse_optional(request.context)?,
        })
    }
}

impl From<NewRequest> for v1::NewRequest {
    fn from(request: NewRequest) -> Self {
        Self {
            id: request.id.into(),
            agent_name: request.agent_name.into(),
            pid: request.pid,
            uid: request.uid,
            action: Some(request.action.into()),
            deadline: Some(request.deadline.into()),
            default_verdict: v1::Verdict::from(request.default_verdict).into(),
            rule: request.rule.into(),
            owner: request.owner.map(String::from).unwrap_or_default(),
            context: context::to_optional(request.context),
        }
    }
}

impl TryFrom<v1::Request> for Request {
    type Error = ValidationError;

    fn try_from(request: v1::Request) -> Result<Self, Self::Error> {
        let state = RequestState::parse("state", request.state)?;
        let resolution = match (state, request.resolution) {
            (RequestState::Pending, None) => None,
            (RequestState::Pending, Some(_)) => {
                return Err(ValidationError::new(
                    "resolution",
                    Problem::Inconsistent("must be absent while the request is pending"),
                ));
            }
            (_, None) => return Err(ValidationError::new("resolution", Problem::Missing)),
            (state, Some(resolution)) => {
                Some(Resolution::parse(state, resolution).within("resolution")?)
            }
        };
        Ok(Self {
            id: RequestId::parse("id", request.id)?,
            host: HostName::parse("host", request.host)?,
            agent_name: Name::parse("agent_name", request.agent_name)?,
            owner: Identity::parse("owner", request.owner)?,
            pid: request.pid,
            uid: request.uid,
            action: required("action", request.action)?
                .try_into()
                .within("action")?,
            deadline: timestamp("deadline", request.deadline)?,
            default_verdict: Verdict::parse("default_verdict", request.default_verdict)?,
            rule: Name::parse("rule", request.rule)?,
            created_at: timestamp("created_at", request.created_at)?,
            resolution,
            context: context::parse_optional(request.context)?,
        })
    }
}

impl From<Request> for v1::Request {
    fn from(request: Request) -> Self {
        let state = request.state();
        Self {
            id: request.id.into(),
            host: request.host.into(),
            agent_name: request.agent_name.into(),
            owner: request.owner.into(),
            pid: request.pid,
            uid: request.uid,
            action: Some(request.action.into()),
            deadline: Some(request.deadline.into()),
            default_verdict: v1::Verdict::from(request.default_verdict).into(),
            rule: request.rule.into(),
            state: v1::RequestState::from(state).into(),
            created_at: Some(request.created_at.into()),
            resolution: request.resolution.map(Into::into),
            context: context::to_optional(request.context),
        }
    }
}

impl Resolution {
    /// Rebuilds the outcome from the flat wire form, refusing combinations that cannot
    /// happen (an approval that is not ALLOW, a decision without reviewer, ...).
    fn parse(state: RequestState, resolution: v1::Resolution) -> Result<Self, ValidationError> {
        let reviewer = || Identity::parse("reviewer", resolution.reviewer.clone());
        let outcome = match state {
            RequestState::Approved | RequestState::Denied => {
                let verdict = Verdict::parse("verdict", resolution.verdict)?;
                if (verdict == Verdict::Allow) != (state == RequestState::Approved) {
                    return Err(ValidationError::new(
                        "verdict",
                        Problem::Inconsistent(
                            "approved requests have verdict ALLOW, denied ones DENY or KILL",
                        ),
                    ));
                }
                Outcome::Decided {
                    verdict,
                    reviewer: reviewer()?,
                }
            }
            RequestState::Expired => Outcome::Expired {
                verdict: Verdict::parse("verdict", resolution.verdict)?,
            },
            RequestState::Cancelled => Outcome::Cancelled,
            RequestState::Pending => {
                return Err(ValidationError::new(
                    "state",
                    Problem::Inconsistent("a pending request has no resolution"),
                ));
            }
        };
        Ok(Self {
            outcome,
            reason: Reason::parse("reason", resolution.reason)?,
            resolved_at: timestamp("resolved_at", resolution.resolved_at)?,
        })
    }
}

impl From<Resolution> for v1::Resolution {
    fn from(resolution: Resolution) -> Self {
        Self {
            verdict: resolution
                .outcome
                .verdict()
                .map_or(v1::Verdict::Unspecified, v1::Verdict::from)
                .into(),
            reviewer: resolution
                .outcome
                .reviewer()
                .map(|reviewer| reviewer.as_str().to_owned())
                .unwrap_or_default(),
            reason: resolution.reason.into(),
            resolved_at: Some(resolution.resolved_at.into()),
        }
    }
}
