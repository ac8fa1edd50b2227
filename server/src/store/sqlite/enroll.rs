//! The SQLite side of enrollment: one-time tokens (created by migration 3, see
//! `grants`), taking one, and the hosts that ever enrolled. Run on the store's database
//! thread; the store appends the audit record of a taken token in the same job.

use belay_proto::domain::HostName;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::super::columns::{TokenRow, from_nanos, nanos};
use super::super::{EnrollOutcome, EnrollToken, Enrollment, StoreError};

pub(super) fn add_enroll_token(db: &Connection, token: &EnrollToken) -> Result<(), StoreError> {
    db.prepare_cached(
        "INSERT INTO enroll_tokens (hash, host, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        token.hash.as_slice(),
        token.host.as_ref().map(HostName::as_str),
        nanos(token.created_at),
        nanos(token.expires_at),
    ])?;
    Ok(())
}

/// The compare-and-set of an enrollment: uses up the token if it exists, is unused and
/// has not expired, whatever host it is presented for (for the wrong one it is spent).
/// Run in one job on the database thread with the audit record the caller appends, so
/// nothing comes between them.
pub(super) fn take_enroll_token(
    db: &Connection,
    enrollment: &Enrollment,
) -> Result<Option<EnrollToken>, StoreError> {
    let row = db
        .prepare_cached(
            "UPDATE enroll_tokens SET used_at = ?2 \
             WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2 \
             RETURNING host, created_at, expires_at",
        )?
        .query_row(
            params![enrollment.hash.as_slice(), nanos(enrollment.at)],
            |row| {
                Ok(TokenRow {
                    host: row.get(0)?,
                    created_at: row.get(1)?,
                    expires_at: row.get(2)?,
                })
            },
        )
        .optional()?;
    row.map(|row| row.decode(&enrollment.hash)).transpose()
}

/// Migration 5: every host that ever enrolled, so that a token bound to no host cannot
/// enroll an existing one. Filled from the audit log's accepted enrollments, which
/// every enrollment before this migration left.
pub(super) const MIGRATION_ENROLLED_HOSTS: &str = "
CREATE TABLE enrolled_hosts (
    host TEXT PRIMARY KEY NOT NULL,
    first_enrolled_at INTEGER NOT NULL
) STRICT;
INSERT OR IGNORE INTO enrolled_hosts (host, first_enrolled_at)
    SELECT json_extract(body, '$.host'), MIN(at) FROM audit
    WHERE kind = 'enrollment' AND json_extract(body, '$.result') = 'enrolled'
        AND json_extract(body, '$.host') IS NOT NULL
    GROUP BY 1;
";

/// Records the host of `enrollment` as enrolled; false if it was already.
pub(super) fn claim_host(db: &Connection, enrollment: &Enrollment) -> Result<bool, StoreError> {
    let inserted = db
        .prepare_cached(
            "INSERT INTO enrolled_hosts (host, first_enrolled_at) VALUES (?1, ?2)              ON CONFLICT (host) DO NOTHING",
        )?
        .execute(params![enrollment.host.as_str(), nanos(enrollment.at)])?;
    Ok(inserted == 1)
}

/// Why [`take_enroll_token`] took nothing: a read that changes nothing.
pub(super) fn enroll_refusal(
    db: &Connection,
    enrollment: &Enrollment,
) -> Result<EnrollOutcome, StoreError> {
    let stored = db
        .prepare_cached(
            "SELECT used_at IS NOT NULL, expires_at FROM enroll_tokens WHERE hash = ?1",
        )?
        .query_row(params![enrollment.hash.as_slice()], |row| {
            Ok((row.get::<_, bool>(0)?, row.get::<_, i64>(1)?))
        })
        .optional()?;
    Ok(EnrollOutcome::refused(
        stored.map(|(used, expires_at)| (used, from_nanos(expires_at))),
        enrollment.at,
    ))
}
