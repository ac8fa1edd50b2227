use super::error::{Problem, ValidationError, WithinField, required};
use super::request::{NewRequest, Request, RequestState, Verdict};
use super::scope::Scope;
use super::text::{HostName, Identity, Name, Reason, RequestId};
use crate::v1;

/// First message of an agent stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub host: HostName,
    pub version: Name,
    pub owner: Identity,
}

/// What an agent sends up its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentMessage {
    Hello(Hello),
    Request(NewRequest),
    VerdictApplied(VerdictApplied),
    Withdraw(Withdraw),
    PolicyReport(super::PolicyReport),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictApplied {
    pub request_id: RequestId,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdraw {
    pub request_id: RequestId,
    pub reason: Reason,
}

/// The final word on a request, pushed to the agent that asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub request_id: RequestId,
    pub verdict: Verdict,
    pub reason: Reason,
    /// Approved, Denied or Expired.
    pub state: RequestState,
}

/// A reviewer's decision on a request (`Decide`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewerDecision {
    pub request_id: RequestId,
    pub verdict: Verdict,
    pub reason: Reason,
    pub reviewer: Identity,
    pub scope: Scope,
}

impl Decision {
    /// The decision an agent applies for `request`; `None` while it is pending, and for
    /// a cancelled request, which has nothing to apply.
    pub fn for_request(request: &Request) -> Option<Self> {
        let resolution = request.resolution.as_ref()?;
        Some(Self {
            request_id: request.id.clone(),
            verdict: resolution.outcome.verdict()?,
            reason: resolution.reason.clone(),
            state: resolution.outcome.state(),
        })
    }
}

impl TryFrom<v1::Hello> for Hello {
    type Error = ValidationError;

    fn try_from(hello: v1::Hello) -> Result<Self, Self::Error> {
        Ok(Self {
            host: HostName::parse("host", hello.host)?,
            version: Name::parse("version", hello.version)?,
            owner: Identity::parse("owner", hello.owner)?,
        })
    }
}

impl From<Hello> for v1::Hello {
    fn from(hello: Hello) -> Self {
        Self {
            host: hello.host.into(),
            version: hello.version.into(),
            owner: hello.owner.into(),
        }
    }
}

impl TryFrom<v1::AgentMessage> for AgentMessage {
    type Error = ValidationError;

    fn try_from(message: v1::AgentMessage) -> Result<Self, Self::Error> {
        use v1::agent_message::Kind;
        Ok(match required("kind", message.kind)? {
            Kind::Hello(hello) => Self::Hello(hello.try_into().within("hello")?),
            Kind::Request(request) => Self::Request(request.try_into().within("request")?),
            Kind::VerdictApplied(applied) => {
                Self::VerdictApplied(applied.try_into().within("verdict_applied")?)
            }
            Kind::Withdraw(withdraw) => Self::Withdraw(withdraw.try_into().within("withdraw")?),
            Kind::PolicyReport(report) => {
                Self::PolicyReport(report.try_into().within("policy_report")?)
            }
        })
    }
}

impl From<AgentMessage> for v1::AgentMessage {
    fn from(message: AgentMessage) -> Self {
        use v1::agent_message::Kind;
        let kind = match message {
            AgentMessage::Hello(hello) => Kind::Hello(hello.into()),
            AgentMessage::Request(request) => Kind::Request(request.into()),
            AgentMessage::VerdictApplied(applied) => Kind::VerdictApplied(applied.into()),
            AgentMessage::Withdraw(withdraw) => Kind::Withdraw(withdraw.into()),
            AgentMessage::PolicyReport(report) => Kind::PolicyReport(report.into()),
        };
        Self { kind: Some(kind) }
    }
}

impl TryFrom<v1::VerdictApplied> for VerdictApplied {
    type Error = ValidationError;

    fn try_from(applied: v1::VerdictApplied) -> Result<Self, Self::Error> {
        Ok(Self {
            request_id: RequestId::parse("request_id", applied.request_id)?,
            verdict: Verdict::parse("verdict", applied.verdict)?,
        })
    }
}

impl From<VerdictApplied> for v1::VerdictApplied {
    fn from(applied: VerdictApplied) -> Self {
        Self {
            request_id: applied.request_id.into(),
            verdict: v1::Verdict::from(applied.verdict).into(),
        }
    }
}

impl TryFrom<v1::Withdraw> for Withdraw {
    type Error = ValidationError;

    fn try_from(withdraw: v1::Withdraw) -> Result<Self, Self::Error> {
        Ok(Self {
            request_id: RequestId::parse("request_id", withdraw.request_id)?,
            reason: Reason::parse("reason", withdraw.reason)?,
        })
    }
}

impl From<Withdraw> for v1::Withdraw {
    fn from(withdraw: Withdraw) -> Self {
        Self {
            request_id: withdraw.request_id.into(),
            reason: withdraw.reason.into(),
        }
    }
}

impl TryFrom<v1::Decision> for Decision {
    type Error = ValidationError;

    fn try_from(decision: v1::Decision) -> Result<Self, Self::Error> {
        let verdict = Verdict::parse("verdict", decision.verdict)?;
        let state = RequestState::parse("state", decision.state)?;
        let consistent = match state {
            RequestState::Approved => verdict == Verdict::Allow,
            RequestState::Denied => verdict != Verdict::Allow,
            RequestState::Expired => true,
            RequestState::Pending | RequestState::Cancelled => false,
        };
        if !consistent {
            return Err(ValidationError::new(
                "state",
                Problem::Inconsistent(
                    "must be APPROVED with ALLOW, DENIED with DENY or KILL, or EXPIRED",
                ),
            ));
        }
        Ok(Self {
            request_id: RequestId::parse("request_id", decision.request_id)?,
            verdict,
            reason: Reason::parse("reason", decision.reason)?,
            state,
        })
    }
}

impl From<Decision> for v1::Decision {
    fn from(decision: Decision) -> Self {
        Self {
            request_id: decision.request_id.into(),
            verdict: v1::Verdict::from(decision.verdict).into(),
            reason: decision.reason.into(),
            state: v1::RequestState::from(decision.state).into(),
        }
    }
}

impl TryFrom<v1::DecideRequest> for ReviewerDecision {
    type Error = ValidationError;

    fn try_from(decide: v1::DecideRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            request_id: RequestId::parse("request_id", decide.request_id)?,
            verdict: Verdict::parse("verdict", decide.verdict)?,
            reason: Reason::parse("reason", decide.reason)?,
            reviewer: Identity::parse("reviewer", decide.reviewer)?,
            scope: Scope::try_from(decide.scope)?,
        })
    }
}

impl From<ReviewerDecision> for v1::DecideRequest {
    fn from(decision: ReviewerDecision) -> Self {
        Self {
            request_id: decision.request_id.into(),
            verdict: v1::Verdict::from(decision.verdict).into(),
            reason: decision.reason.into(),
            reviewer: decision.reviewer.into(),
            scope: decision.scope.into(),
        }
    }
}
