//! Enrollment as the store sees it: an agent's attempt to use a one-time token, checked
//! and (when the token is usable) used up together with its audit record (kind
//! `enrollment`), in one atomic step of every backend.
//!
//! A usable token is taken whatever host it is presented for. Presented for the host it
//! is bound to, the enrollment is accepted (`result: "enrolled"`), a host enrolling
//! again included. Presented for another host, the token counts as leaked or mixed up
//! and is spent without an enrollment (`result: "wrong_host_token_spent"`, no
//! certificate): leaving it usable would let whoever holds it try host names until one
//! fits, and a refusal may then name the bound host, since the token is dead.
//!
//! A token created without a host (`token create` without `--host`) enrolls only a host
//! that never enrolled before: the store keeps every host that did (`enrolled_hosts`,
//! claimed in the same atomic step, so two such tokens cannot both take one new name).
//! Presented for a host that exists, it is spent the same way (`result:
//! "existing_host_token_spent"`): otherwise whoever holds any unbound token could get a
//! certificate for an existing host and speak for it (withdraw its requests, answer in
//! its name). Enrolling an existing host again takes a token created for it.
//!
//! The record names the token by [`token_id`], a prefix of the hash the store keeps,
//! never by its secret, and the certificate issued by its serial and SHA-256. Attempts
//! with unknown, used or expired tokens change nothing and are not recorded here: the
//! enrollment endpoint is open to anyone who can reach the server, so an audit record
//! per such refusal would let any client grow the append-only log (and every SIEM it is
//! exported to) without bound. They are counted in `belay_enrollments_total` and logged
//! instead (see `pki::enroll`). Wrong-host records are bounded: each token can be spent
//! only once, so there are at most as many as the tokens admins create.

use std::time::SystemTime;

use belay_proto::domain::HostName;

use super::EnrollToken;
use super::columns::nanos;
use crate::audit;

/// Audit kind of an enrollment, accepted or spent by the wrong host.
pub const AUDIT_KIND: &str = "enrollment";

/// An agent presenting a token, with the certificate it gets if the token is good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// SHA-256 of the presented secret.
    pub hash: [u8; 32],
    /// The host the agent enrolls as.
    pub host: HostName,
    pub at: SystemTime,
    pub certificate: IssuedCertificate,
}

/// What the audit record says about the certificate an enrollment hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// Hex bytes separated by colons, as `openssl x509 -serial` shows them (without its
    /// colons) and rcgen prints them.
    pub serial: String,
    /// Lower-case hex SHA-256 of the certificate's DER.
    pub sha256: String,
}

/// Result of [`super::EnrollmentStore::enroll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollOutcome {
    /// The token was good for this host: it is used up and the enrollment audited.
    Accepted(EnrollToken),
    /// No token has this hash.
    Unknown,
    /// The token was used before.
    Used,
    /// The token expired.
    Expired,
    /// The token was usable but is bound to another host (this one): it is now spent,
    /// usable by no host, and the attempt audited. Nobody enrolled.
    OtherHost(HostName),
    /// The token was usable but bound to no host, and this host has enrolled before: it
    /// is now spent and the attempt audited. Nobody enrolled.
    ExistingHost(HostName),
}

impl EnrollOutcome {
    /// The `result` label of `belay_enrollments_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Accepted(_) => "enrolled",
            Self::Unknown => "unknown_token",
            Self::Used => "used_token",
            Self::Expired => "expired_token",
            Self::OtherHost(_) => "wrong_host",
            Self::ExistingHost(_) => "existing_host",
        }
    }

    /// What taking `token` (just used up) for `enrollment` amounts to: an accepted
    /// enrollment, or a token spent by the wrong host or on an existing one.
    /// `new_host`: whether the store just recorded `enrollment.host` as enrolled for the
    /// first time (see [`may_claim_host`]).
    pub(crate) fn taken(enrollment: &Enrollment, token: EnrollToken, new_host: bool) -> Self {
        match wrong_host(enrollment, &token) {
            Some(bound) => Self::OtherHost(bound.clone()),
            None if token.host.is_none() && !new_host => {
                Self::ExistingHost(enrollment.host.clone())
            }
            None => Self::Accepted(token),
        }
    }

    /// Why a token that was not used up was refused, from its stored row (`None`: no
    /// row; else whether used, and its expiry). Run after the conditional update found
    /// nothing to change.
    pub(crate) fn refused(row: Option<(bool, SystemTime)>, now: SystemTime) -> Self {
        // A token that looks usable was taken by another enrollment in between.
        Self::check(row, now).unwrap_or(Self::Used)
    }

    /// What a token's stored row says of an attempt at `now`: the refusal, or `None` if
    /// the token looks usable (only the atomic update can tell for sure). The host does
    /// not matter here: a usable token presented for the wrong host is spent, which only
    /// the atomic step may do.
    pub(crate) fn check(row: Option<(bool, SystemTime)>, now: SystemTime) -> Option<Self> {
        match row {
            None => Some(Self::Unknown),
            Some((true, _)) => Some(Self::Used),
            Some((false, expires_at)) if expires_at <= now => Some(Self::Expired),
            Some(_) => None,
        }
    }
}

/// Whether taking `token` for `enrollment` may record its host as enrolled (in the same
/// atomic step, as an insert that does nothing when the host is there already): not
/// when the token is bound to another host.
pub(crate) fn may_claim_host(enrollment: &Enrollment, token: &EnrollToken) -> bool {
    wrong_host(enrollment, token).is_none()
}

/// The host `token` is bound to, if that is not the host of `enrollment`.
fn wrong_host<'t>(enrollment: &Enrollment, token: &'t EnrollToken) -> Option<&'t HostName> {
    token
        .host
        .as_ref()
        .filter(|bound| **bound != enrollment.host)
}

/// A short public name of a token: the first 8 bytes of its hash, hex. Safe to log and
/// audit (the hash of a 256-bit random secret reveals nothing of it), and printed by
/// `belay-server token create` so that records can be matched to the token handed out.
pub fn token_id(hash: &[u8; 32]) -> String {
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The audit record of taking `token` for `enrollment` with `outcome`: an accepted
/// enrollment with the certificate it hands out, or a token spent by the wrong host or
/// on an existing host (certificate fields null: none was handed out). Not tied to a
/// request: its request id is empty.
pub(crate) fn audit_event(
    enrollment: &Enrollment,
    token: &EnrollToken,
    outcome: &EnrollOutcome,
) -> audit::Event {
    let at = nanos(enrollment.at);
    let result = match outcome {
        EnrollOutcome::OtherHost(_) => "wrong_host_token_spent",
        EnrollOutcome::ExistingHost(_) => "existing_host_token_spent",
        _ => "enrolled",
    };
    let spent = result != "enrolled";
    let certificate = (!spent).then_some(&enrollment.certificate);
    let body = serde_json::json!({
        "kind": AUDIT_KIND,
        "at": at,
        "request_id": "",
        "host": enrollment.host.as_str(),
        "token_id": token_id(&token.hash),
        "token_host": token.host.as_ref().map(HostName::as_str),
        "token_expires_at": nanos(token.expires_at),
        "certificate_serial": certificate.map(|c| c.serial.as_str()),
        "certificate_sha256": certificate.map(|c| c.sha256.as_str()),
        "result": result,
    });
    audit::Event {
        at,
        kind: AUDIT_KIND,
        request_id: String::new(),
        body: body.to_string(),
    }
}
