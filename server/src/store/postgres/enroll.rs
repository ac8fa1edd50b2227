//! The PostgreSQL side of enrollment. Like a policy push it is rare, so it runs in a
//! transaction of its own on a connection of its own rather than through the batched
//! writer: the conditional UPDATE of the token (a concurrent enrollment with the same
//! token waits for the row, then finds it used) and, when it took the token, the audit
//! record (an accepted enrollment, or a token spent by the wrong host), before one
//! COMMIT. A refused attempt rolls back and is classified by a read that changes
//! nothing. Unknown, used and expired tokens are refused first by a read on the shared
//! pool; a usable one presented for the wrong host must get through to be spent.

use std::time::SystemTime;

use tokio_postgres::Client;

use super::super::StoreError;
use super::super::columns::{from_nanos, nanos};
use super::super::enrollment::{self, EnrollOutcome, Enrollment};
use super::audit_log;
use super::rows;
use crate::audit::AuditSigner;

const TAKE_SQL: &str = "UPDATE enroll_tokens SET used_at = $2 \
     WHERE hash = $1 AND used_at IS NULL AND expires_at > $2 \
     RETURNING host, created_at, expires_at";

const CLAIM_HOST_SQL: &str = "INSERT INTO enrolled_hosts (host, first_enrolled_at) \
     VALUES ($1, $2) ON CONFLICT (host) DO NOTHING";

const CLASSIFY_SQL: &str =
    "SELECT used_at IS NOT NULL, expires_at FROM enroll_tokens WHERE hash = $1";

/// Refuses from a read on a shared connection what is refused anyway (unknown, used or
/// expired tokens), so that attempts with bad tokens (anyone can make them) cost no
/// connection of their own; the rest, a usable token presented for the wrong host
/// included, goes through [`take_or_refuse`].
pub(super) async fn precheck(
    client: &Client,
    enrollment: &Enrollment,
) -> Result<Option<EnrollOutcome>, StoreError> {
    let stored = stored(client, enrollment).await?;
    Ok(EnrollOutcome::check(stored, enrollment.at))
}

/// The atomic step, on a connection of the caller's own (it runs a transaction).
pub(super) async fn take_or_refuse(
    client: &Client,
    signer: &AuditSigner,
    enrollment: &Enrollment,
) -> Result<EnrollOutcome, StoreError> {
    client.batch_execute("BEGIN").await?;
    let taken = take(client, signer, enrollment).await;
    let end = match &taken {
        Ok(Some(_)) => "COMMIT",
        Ok(None) | Err(_) => "ROLLBACK",
    };
    client.batch_execute(end).await?;
    if let Some(outcome) = taken? {
        return Ok(outcome);
    }
    let stored = stored(client, enrollment).await?;
    Ok(EnrollOutcome::refused(stored, enrollment.at))
}

/// The token's row: whether used, expiry.
async fn stored(
    client: &Client,
    enrollment: &Enrollment,
) -> Result<Option<(bool, SystemTime)>, StoreError> {
    let row = client
        .query_opt(CLASSIFY_SQL, &[&enrollment.hash.as_slice()])
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some((row.try_get(0)?, from_nanos(row.try_get(1)?))))
}

/// `Some` outcome (accepted, or spent by the wrong host) with the audit record
/// appended, or `None` if the token was not taken. Takes a usable token whatever the
/// host presented.
async fn take(
    client: &Client,
    signer: &AuditSigner,
    enrollment: &Enrollment,
) -> Result<Option<EnrollOutcome>, StoreError> {
    let row = client
        .query_opt(
            TAKE_SQL,
            &[&enrollment.hash.as_slice(), &nanos(enrollment.at)],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let token = rows::token_from(&enrollment.hash, &row)?;
    // A concurrent claim of the same new host waits for this transaction, then finds
    // the row: of two unbound tokens for one new name, one enrolls.
    let new_host = enrollment::may_claim_host(enrollment, &token)
        && client
            .execute(
                CLAIM_HOST_SQL,
                &[&enrollment.host.as_str(), &nanos(enrollment.at)],
            )
            .await?
            == 1;
    let outcome = EnrollOutcome::taken(enrollment, token.clone(), new_host);
    audit_log::append_one(
        client,
        signer,
        enrollment::audit_event(enrollment, &token, &outcome),
    )
    .await?;
    Ok(Some(outcome))
}
