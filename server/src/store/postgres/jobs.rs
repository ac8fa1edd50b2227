//! The jobs of the writer (see `writer`): what each audited change sends (one
//! statement, two for a vote, all prepared on the writer's connection) and how its rows
//! become the outcome, the audit records and the notices for other replicas.

use belay_proto::domain::{Request, RequestId, RequestState, Resolution};
use belay_proto::v1;
use prost::Message as _;
use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use super::super::columns::GRANT_COLUMNS;
use super::super::{
    Grant, Inserted, RemoteChange, Resolved, Revocation, Revoked, StoreError, Vote, Voted,
};
use super::rows::{self, REQUEST_COLUMNS};
use super::writer::Connection;
use crate::audit::{self, Event};
use crate::canonical_action::action_digest;

/// A parameter of a statement, owned so that a batch's calls can be pipelined.
pub(super) type Param = Box<dyn ToSql + Sync + Send>;

/// A change to make, and where its outcome goes.
pub(super) struct Job {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Done, StoreError>>,
}

pub(super) enum Op {
    Insert(Request),
    Resolve(RequestId, Resolution),
    Grant(Grant),
    Vote(RequestId, Vote),
    Revoke(RequestId, Revocation),
}

#[derive(Debug)]
pub(super) enum Done {
    Inserted(Inserted),
    Resolved(Resolved),
    Granted,
    Voted(Voted),
    Revoked(Revoked),
}

/// Insert-if-absent in one statement: the outer SELECT reads the snapshot from before
/// the insert, so it finds the row only when the id was taken already.
pub(super) const INSERT_SQL: &str = "WITH inserted AS ( \
         INSERT INTO requests (id, state, created_secs, created_nanos, \
         deadline_secs, deadline_nanos, request, resolution, host, action) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO NOTHING RETURNING id) \
     SELECT r.id, r.state, r.request, r.resolution, EXISTS (SELECT 1 FROM inserted) \
     FROM (SELECT 1) AS one LEFT JOIN requests r ON r.id = $1";

// The statements below read the row as it was before their own change (one snapshot
// per statement): the compare-and-set's RETURNING gives the new row, the other branch
// the row that was not changed.
//
// `state = $4` (always 'pending'), not a literal: with the literal, a generic plan made
// while the table is small may find the row through a partial index on pending
// requests, which keeps an entry for every row ever pending until VACUUM, and scan it
// all; a parameter cannot match the index's predicate, so the primary key is used.
pub(super) fn resolve_sql() -> String {
    format!(
        "WITH updated AS ( \
             UPDATE requests SET state = $2, resolution = $3 \
             WHERE id = $1 AND state = $4::text RETURNING {REQUEST_COLUMNS}) \
         SELECT {REQUEST_COLUMNS}, true FROM updated \
         UNION ALL \
         SELECT {REQUEST_COLUMNS}, false FROM requests \
         WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM updated)"
    )
}

pub(super) fn grant_sql() -> String {
    format!(
        "WITH inserted AS ( \
             INSERT INTO grants (host, agent, action, verdict, reviewer, reason, \
             from_request, scope, granted_at, expires_at) \
             SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, \
             $8::text, $9::bigint, $10::bigint \
             WHERE EXISTS (SELECT 1 FROM requests WHERE id = $7::text) RETURNING 1) \
         SELECT {REQUEST_COLUMNS} FROM requests WHERE id = $7::text"
    )
}

pub(super) fn vote_sql() -> String {
    format!(
        "WITH inserted AS ( \
             INSERT INTO votes (request_id, reviewer, reason, scope, scope_secs, at) \
             SELECT $1::text, $2::text, $3::text, $4::text, $5::bigint, $6::bigint \
             WHERE EXISTS (SELECT 1 FROM requests WHERE id = $1::text) \
             ON CONFLICT (request_id, reviewer) DO NOTHING RETURNING 1) \
         SELECT {REQUEST_COLUMNS}, EXISTS (SELECT 1 FROM inserted) \
         FROM requests WHERE id = $1::text"
    )
}

/// The grant of request `$1` as it was (its columns after the request's), and whether
/// this statement revoked it: only if it was in force at `$2`. One statement, as the
/// other changes; the chain lock keeps other writers out until the commit.
pub(super) fn revoke_sql() -> String {
    format!(
        "WITH stored AS (SELECT {GRANT_COLUMNS} FROM grants WHERE from_request = $1::text), \
         updated AS ( \
             UPDATE grants SET revoked_at = $2::bigint, revoked_by = $3::text, \
             revoke_reason = $4::text \
             WHERE from_request = $1::text AND revoked_at IS NULL \
             AND expires_at > $2::bigint RETURNING 1) \
         SELECT r.id, r.state, r.request, r.resolution, stored.*, \
         EXISTS (SELECT 1 FROM updated) \
         FROM stored LEFT JOIN requests r ON r.id = stored.from_request"
    )
}

/// Where the grant's columns start in a row of [`revoke_sql`], and the flag after them.
const REVOKED_GRANT: usize = 4;
const REVOKED_NOW: usize = REVOKED_GRANT + 13;

pub(super) const VOTES_SQL: &str = "SELECT reviewer, reason, scope, scope_secs, at FROM votes \
     WHERE request_id = $1 ORDER BY at, reviewer";

/// What a job changed, for the audit log and the other replicas.
#[derive(Default)]
pub(super) struct Effects {
    pub events: Vec<Event>,
    pub changes: Vec<RemoteChange>,
}

impl Op {
    /// The statements of this job and their parameters.
    pub(super) fn calls<'c>(&self, connection: &'c Connection) -> Vec<(&'c Statement, Vec<Param>)> {
        match self {
            Self::Insert(request) => {
                let (submitted, resolution) = rows::encode(request);
                let (created_secs, created_nanos) = rows::split_time(request.created_at);
                let (deadline_secs, deadline_nanos) = rows::split_time(request.deadline);
                vec![(
                    &connection.insert,
                    vec![
                        Box::new(request.id.as_str().to_owned()),
                        Box::new(request.state().as_str()),
                        Box::new(created_secs),
                        Box::new(created_nanos),
                        Box::new(deadline_secs),
                        Box::new(deadline_nanos),
                        Box::new(submitted),
                        Box::new(resolution),
                        Box::new(request.host.as_str().to_owned()),
                        Box::new(action_digest(&request.action)),
                    ],
                )]
            }
            Self::Resolve(id, resolution) => vec![(
                &connection.resolve,
                vec![
                    Box::new(id.as_str().to_owned()),
                    Box::new(resolution.outcome.state().as_str()),
                    Box::new(v1::Resolution::from(resolution.clone()).encode_to_vec()),
                    Box::new(RequestState::Pending.as_str()),
                ],
            )],
            Self::Grant(grant) => {
                let (scope, _) = rows::scope_parts(grant.scope);
                vec![(
                    &connection.grant,
                    vec![
                        Box::new(grant.key.host.as_str().to_owned()),
                        Box::new(grant.key.agent.as_ref().map(|a| a.as_str().to_owned())),
                        Box::new(grant.key.action.clone()),
                        Box::new(grant.verdict.as_str()),
                        Box::new(grant.reviewer.as_str().to_owned()),
                        Box::new(grant.reason.as_str().to_owned()),
                        Box::new(grant.from_request.as_str().to_owned()),
                        Box::new(scope),
                        Box::new(rows::nanos(grant.granted_at)),
                        Box::new(rows::nanos(grant.expires_at)),
                    ],
                )]
            }
            Self::Vote(id, vote) => {
                let (scope, secs) = rows::scope_parts(vote.scope);
                vec![
                    (
                        &connection.vote,
                        vec![
                            Box::new(id.as_str().to_owned()),
                            Box::new(vote.reviewer.as_str().to_owned()),
                            Box::new(vote.reason.as_str().to_owned()),
                            Box::new(scope),
                            Box::new(secs),
                            Box::new(rows::nanos(vote.at)),
                        ],
                    ),
                    (&connection.votes, vec![Box::new(id.as_str().to_owned())]),
                ]
            }
            Self::Revoke(id, revocation) => vec![(
                &connection.revoke,
                vec![
                    Box::new(id.as_str().to_owned()),
                    Box::new(rows::nanos(revocation.at)),
                    Box::new(revocation.reviewer.as_str().to_owned()),
                    Box::new(revocation.reason.as_str().to_owned()),
                ],
            )],
        }
    }

    /// The outcome of this job from the rows of its statements, in order.
    pub(super) fn outcome(
        &self,
        results: &[Vec<Row>],
        effects: &mut Effects,
    ) -> Result<Done, StoreError> {
        let first = results.first().and_then(|rows| rows.first());
        match self {
            Self::Insert(request) => {
                let row = first.ok_or_else(|| missing("insert"))?;
                if row.try_get::<_, bool>(4)? {
                    effects.events.push(audit::submitted(request));
                    // Stored already final: its ending is part of the same change.
                    effects.events.extend(audit::resolved(request));
                    effects
                        .changes
                        .push(RemoteChange::Submitted(request.id.clone()));
                    return Ok(Done::Inserted(Inserted::New(request.clone())));
                }
                let existing = rows::request_from(row)?.ok_or_else(|| {
                    StoreError::Backend(
                        format!("request {} was neither inserted nor found", request.id).into(),
                    )
                })?;
                Ok(Done::Inserted(Inserted::Existing(existing)))
            }
            Self::Resolve(id, _) => {
                let Some(row) = first else {
                    return Ok(Done::Resolved(Resolved::NotFound));
                };
                let request = rows::request_from(row)?.ok_or_else(|| missing("resolve"))?;
                if !row.try_get::<_, bool>(4)? {
                    return Ok(Done::Resolved(Resolved::Already(request)));
                }
                let event = audit::resolved(&request).ok_or_else(|| {
                    StoreError::Backend(format!("resolved request {id} has no resolution").into())
                })?;
                effects.events.push(event);
                effects.changes.push(RemoteChange::Resolved(id.clone()));
                Ok(Done::Resolved(Resolved::Now(request)))
            }
            Self::Grant(grant) => {
                let request = first
                    .map(rows::request_from)
                    .transpose()?
                    .flatten()
                    .ok_or_else(|| {
                        StoreError::Backend(
                            format!("no request {} to grant from", grant.from_request).into(),
                        )
                    })?;
                effects.events.push(grant.audit_event(&request));
                Ok(Done::Granted)
            }
            Self::Vote(id, vote) => {
                let row = first.ok_or_else(|| {
                    StoreError::Backend(format!("no request {id} to vote on").into())
                })?;
                let request = rows::request_from(row)?.ok_or_else(|| missing("vote"))?;
                let votes = results
                    .get(1)
                    .ok_or_else(|| missing("votes"))?
                    .iter()
                    .map(rows::vote_from)
                    .collect::<Result<Vec<_>, _>>()?;
                if row.try_get::<_, bool>(4)? {
                    effects.events.push(vote.audit_event(&request));
                    Ok(Done::Voted(Voted::Added(votes)))
                } else {
                    Ok(Done::Voted(Voted::AlreadyVoted(votes)))
                }
            }
            Self::Revoke(id, revocation) => {
                let Some(row) = first else {
                    return Ok(Done::Revoked(Revoked::NotFound));
                };
                let stored = rows::stored_grant_from(row, REVOKED_GRANT)?;
                let grant = match Revoked::would_be(stored, revocation.at) {
                    Revoked::Now(grant) => grant,
                    answer => return Ok(Done::Revoked(answer)),
                };
                if !row.try_get::<_, bool>(REVOKED_NOW)? {
                    return Err(StoreError::Backend(
                        format!("the grant of request {id} changed while being revoked").into(),
                    ));
                }
                let request = rows::request_from(row)?.ok_or_else(|| {
                    StoreError::Backend(format!("no request {id} for its grant").into())
                })?;
                effects
                    .events
                    .push(revocation.audit_event(&grant, &request));
                Ok(Done::Revoked(Revoked::Now(grant)))
            }
        }
    }
}

fn missing(what: &str) -> StoreError {
    StoreError::Backend(format!("the {what} statement returned no row").into())
}
