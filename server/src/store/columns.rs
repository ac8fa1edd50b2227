//! How values are stored, the same in SQLite and PostgreSQL: requests as the protobuf
//! `belay.v1.Request` in its pending form plus the `belay.v1.Resolution`, with the
//! queried columns beside them; times as nanoseconds since the epoch (or seconds and
//! nanoseconds for the ordered columns of requests), scopes as a kind and whole
//! seconds, verdicts by name.
//!
//! Each backend only moves columns between its driver and the row types here
//! ([`RequestRow`], [`GrantRow`], [`VoteRow`], [`TokenRow`]); encoding and decoding,
//! with the same validation as a message from the wire, are written once, so a damaged
//! row is an error in both, never a wrong value.

use std::time::Duration;

use belay_proto::domain::{
    HostName, Identity, Name, Reason, Request, RequestId, RequestState, Scope, Verdict,
};
use belay_proto::v1;
use prost::Message as _;

use super::{EnrollToken, Grant, GrantKey, Revocation, StoreError, Vote};
pub(crate) use crate::epoch::{from_nanos, join_time, nanos, split_time};

/// A scope as stored: its kind and its duration in seconds (0 for once).
pub(crate) fn scope_parts(scope: Scope) -> (&'static str, i64) {
    let secs = scope
        .duration()
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    (scope.as_str(), secs)
}

/// The inverse of [`scope_parts`]; `None` for an unknown kind or a negative duration.
pub(crate) fn scope_from(kind: &str, secs: i64) -> Option<Scope> {
    let duration = Duration::from_secs(u64::try_from(secs).ok()?);
    match kind {
        "once" => Some(Scope::Once),
        "agent" => Some(Scope::Agent(duration)),
        "host" => Some(Scope::Host(duration)),
        _ => None,
    }
}

pub(crate) fn verdict_from(value: &str) -> Option<Verdict> {
    [Verdict::Allow, Verdict::Deny, Verdict::Kill]
        .into_iter()
        .find(|verdict| verdict.as_str() == value)
}

/// A stored request that cannot be read back.
pub(crate) fn damaged(id: &str, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("stored request {id:?} is damaged: {problem}").into())
}

/// A stored row of `table` (besides requests) that cannot be read back.
pub(crate) fn damaged_row(table: &str, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("a stored row of {table} is damaged: {problem}").into())
}

/// The columns a request is rebuilt from: `id, state, request, resolution`.
pub(crate) struct RequestRow {
    pub id: String,
    pub state: String,
    /// The request as submitted (pending form), protobuf.
    pub request: Vec<u8>,
    /// The resolution, protobuf; `None` while pending.
    pub resolution: Option<Vec<u8>>,
}

impl RequestRow {
    /// The request in its pending form, and its resolution, each protobuf-encoded.
    pub(crate) fn encode(request: &Request) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut wire = v1::Request::from(request.clone());
        let resolution = wire
            .resolution
            .take()
            .map(|resolution| resolution.encode_to_vec());
        wire.state = v1::RequestState::Pending.into();
        (wire.encode_to_vec(), resolution)
    }

    pub(crate) fn decode(self) -> Result<Request, StoreError> {
        let bad = |problem: &dyn std::fmt::Display| damaged(&self.id, problem);
        let state = parse_state(&self.state)
            .ok_or_else(|| bad(&format_args!("unknown state {:?}", self.state)))?;
        let mut wire = v1::Request::decode(self.request.as_slice()).map_err(|err| bad(&err))?;
        wire.state = v1::RequestState::from(state).into();
        wire.resolution = self
            .resolution
            .as_deref()
            .map(v1::Resolution::decode)
            .transpose()
            .map_err(|err| bad(&err))?;
        let request = Request::try_from(wire).map_err(|err| bad(&err))?;
        if request.id.as_str() != self.id {
            return Err(bad(&format_args!("the row holds request {}", request.id)));
        }
        Ok(request)
    }
}

fn parse_state(state: &str) -> Option<RequestState> {
    [
        RequestState::Pending,
        RequestState::Approved,
        RequestState::Denied,
        RequestState::Expired,
        RequestState::Cancelled,
    ]
    .into_iter()
    .find(|known| known.as_str() == state)
}

/// A request id as stored in a column of its own.
pub(crate) fn request_id(id: String) -> Result<RequestId, StoreError> {
    RequestId::new(id.clone()).map_err(|err| damaged(&id, err))
}

/// Columns of `grants`: verdict, reviewer, reason, from_request, scope, granted_at,
/// expires_at (the key is what was looked up).
pub(crate) struct GrantRow {
    pub verdict: String,
    pub reviewer: String,
    pub reason: String,
    pub from_request: String,
    pub scope: String,
    pub granted_at: i64,
    pub expires_at: i64,
}

impl GrantRow {
    pub(crate) fn decode(self, key: &GrantKey) -> Result<Grant, StoreError> {
        let bad = |what: &dyn std::fmt::Display| damaged_row("grants", what);
        // The scope's duration is what separates the two times.
        let duration = (self.expires_at - self.granted_at) / 1_000_000_000;
        Ok(Grant {
            key: key.clone(),
            verdict: verdict_from(&self.verdict).ok_or_else(|| bad(&self.verdict))?,
            reviewer: Identity::new(self.reviewer).map_err(|err| bad(&err))?,
            reason: Reason::new(self.reason).map_err(|err| bad(&err))?,
            from_request: RequestId::new(self.from_request).map_err(|err| bad(&err))?,
            scope: scope_from(&self.scope, duration).ok_or_else(|| bad(&self.scope))?,
            granted_at: from_nanos(self.granted_at),
            expires_at: from_nanos(self.expires_at),
        })
    }
}

/// Every column of `grants`, in the order of [`StoredGrantRow`]: the key, then
/// [`GrantRow`]'s, then the revocation (NULL while there is none).
pub(crate) const GRANT_COLUMNS: &str = "host, agent, action, verdict, reviewer, reason, \
     from_request, scope, granted_at, expires_at, revoked_at, revoked_by, revoke_reason";

/// A whole row of `grants` ([`GRANT_COLUMNS`]).
pub(crate) struct StoredGrantRow {
    pub host: String,
    pub agent: Option<String>,
    pub action: String,
    pub grant: GrantRow,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
}

impl StoredGrantRow {
    /// The grant, and its revocation if it was revoked.
    pub(crate) fn decode(self) -> Result<(Grant, Option<Revocation>), StoreError> {
        let bad = |what: &dyn std::fmt::Display| damaged_row("grants", what);
        let key = GrantKey {
            host: HostName::new(self.host).map_err(|err| bad(&err))?,
            agent: self
                .agent
                .map(Name::new)
                .transpose()
                .map_err(|err| bad(&err))?,
            action: self.action,
        };
        let grant = self.grant.decode(&key)?;
        let revocation = match (self.revoked_at, self.revoked_by, self.revoke_reason) {
            (None, None, None) => None,
            (Some(at), Some(reviewer), Some(reason)) => Some(Revocation {
                reviewer: Identity::new(reviewer).map_err(|err| bad(&err))?,
                reason: Reason::new(reason).map_err(|err| bad(&err))?,
                at: from_nanos(at),
            }),
            _ => return Err(bad(&"a revocation without its time, reviewer or reason")),
        };
        Ok((grant, revocation))
    }
}

/// Columns of `votes`: reviewer, reason, scope, scope_secs, at.
pub(crate) struct VoteRow {
    pub reviewer: String,
    pub reason: String,
    pub scope: String,
    pub scope_secs: i64,
    pub at: i64,
}

impl VoteRow {
    pub(crate) fn decode(self) -> Result<Vote, StoreError> {
        let bad = |what: &dyn std::fmt::Display| damaged_row("votes", what);
        Ok(Vote {
            reviewer: Identity::new(self.reviewer).map_err(|err| bad(&err))?,
            reason: Reason::new(self.reason).map_err(|err| bad(&err))?,
            scope: scope_from(&self.scope, self.scope_secs).ok_or_else(|| bad(&self.scope))?,
            at: from_nanos(self.at),
        })
    }
}

/// Columns of `enroll_tokens`: host, created_at, expires_at (the hash is what was looked
/// up).
pub(crate) struct TokenRow {
    pub host: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

impl TokenRow {
    pub(crate) fn decode(self, hash: &[u8; 32]) -> Result<EnrollToken, StoreError> {
        Ok(EnrollToken {
            hash: *hash,
            host: self
                .host
                .map(HostName::new)
                .transpose()
                .map_err(|err| damaged_row("enroll_tokens", err))?,
            created_at: from_nanos(self.created_at),
            expires_at: from_nanos(self.expires_at),
        })
    }
}
