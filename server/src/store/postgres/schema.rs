//! The PostgreSQL schema and its migrations, run at start under an advisory lock so that
//! replicas starting together migrate once.

use tokio_postgres::Client;

use super::super::StoreError;
use super::{audit_log, rows};
use crate::canonical_action::action_digest;

/// Key of the advisory lock held while migrating ("belay" + 2).
const MIGRATION_LOCK: i64 = 0x6265_6c61_7902;

/// Schema migrations, in order: entry `i` brings the schema from version `i` to `i + 1`.
/// Never edit one that has shipped; add the next. The numbering follows SQLite's.
const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    audit_log::MIGRATION,
    MIGRATION_3,
    super::policy::MIGRATION,
    MIGRATION_5,
    super::policy::MIGRATION_VOTES,
    MIGRATION_7,
    super::chat_outbox::MIGRATION,
    super::chat_outbox::MIGRATION_SEEN,
];

/// Revocable grants (at most one per request, its id), and the host and action
/// (digest) of each request, by which the earlier requests for the same action are
/// found. Rows stored before have no host and action until [`fill_actions`] fills them,
/// right after (and at each start: a replica of the previous version, still running
/// during an upgrade, stores requests without them).
const MIGRATION_7: &str = r#"
ALTER TABLE grants
    ADD COLUMN revoked_at BIGINT,
    ADD COLUMN revoked_by TEXT,
    ADD COLUMN revoke_reason TEXT,
    ADD CONSTRAINT grants_revocation_whole CHECK (
        (revoked_at IS NULL) = (revoked_by IS NULL)
        AND (revoked_at IS NULL) = (revoke_reason IS NULL));
CREATE UNIQUE INDEX grants_by_request ON grants (from_request);
CREATE INDEX grants_in_force ON grants (expires_at) WHERE revoked_at IS NULL;
ALTER TABLE requests
    ADD COLUMN host TEXT COLLATE "C",
    ADD COLUMN action TEXT COLLATE "C";
CREATE INDEX requests_by_action ON requests (host, action, created_secs, created_nanos);
"#;

/// Requests read per step of [`fill_actions`].
const FILL_STEP: i64 = 500;

/// Every host that ever enrolled (see `store::enrollment`), filled from the audit log's
/// accepted enrollments.
const MIGRATION_5: &str = r#"
CREATE TABLE enrolled_hosts (
    host TEXT COLLATE "C" PRIMARY KEY,
    first_enrolled_at BIGINT NOT NULL
);
INSERT INTO enrolled_hosts (host, first_enrolled_at)
    SELECT body::jsonb ->> 'host', MIN(at) FROM audit
    WHERE kind = 'enrollment' AND body::jsonb ->> 'result' = 'enrolled'
        AND body::jsonb ->> 'host' IS NOT NULL
    GROUP BY 1
    ON CONFLICT DO NOTHING;
"#;

/// Requests: protobuf blobs plus the columns that are queried, as in SQLite. Ids compare
/// bytewise (`COLLATE "C"`) so that ties list in the same order whatever the database's
/// locale.
const MIGRATION_1: &str = r#"
CREATE TABLE requests (
    id TEXT COLLATE "C" PRIMARY KEY,
    state TEXT NOT NULL
        CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'cancelled')),
    created_secs BIGINT NOT NULL,
    created_nanos BIGINT NOT NULL,
    deadline_secs BIGINT NOT NULL,
    deadline_nanos BIGINT NOT NULL,
    request BYTEA NOT NULL,
    resolution BYTEA,
    CHECK ((state = 'pending') = (resolution IS NULL))
);
-- Only pending requests are listed, expired and waited for: partial indexes stay as
-- small as the pending set however many decided requests accumulate.
CREATE INDEX requests_pending_by_deadline
    ON requests (deadline_secs, deadline_nanos, id) WHERE state = 'pending';
CREATE INDEX requests_pending_by_creation
    ON requests (created_secs, created_nanos, id) WHERE state = 'pending';
"#;

/// Grants, quorum votes and enrollment tokens (times in nanoseconds since the epoch).
const MIGRATION_3: &str = r#"
CREATE TABLE grants (
    host TEXT COLLATE "C" NOT NULL,
    agent TEXT COLLATE "C",
    action TEXT COLLATE "C" NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('allow', 'deny')),
    reviewer TEXT NOT NULL,
    reason TEXT NOT NULL,
    from_request TEXT COLLATE "C" NOT NULL REFERENCES requests (id),
    scope TEXT NOT NULL CHECK (scope IN ('agent', 'host')),
    granted_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX grants_by_key ON grants (host, action, expires_at);
CREATE TABLE votes (
    request_id TEXT COLLATE "C" NOT NULL REFERENCES requests (id),
    reviewer TEXT COLLATE "C" NOT NULL,
    reason TEXT NOT NULL,
    scope TEXT NOT NULL,
    scope_secs BIGINT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (request_id, reviewer)
);
CREATE TABLE enroll_tokens (
    hash BYTEA PRIMARY KEY,
    host TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
"#;

/// Brings the schema to the newest version this code knows, in one transaction.
pub(super) async fn migrate(client: &Client, target: &str) -> Result<(), StoreError> {
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|err| open(target, err))?;
    let result = migrate_locked(client, target).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    client
        .batch_execute(end)
        .await
        .map_err(|err| open(target, err))?;
    result
}

async fn migrate_locked(client: &Client, target: &str) -> Result<(), StoreError> {
    let sql = |err| open(target, err);
    let known = i64::try_from(MIGRATIONS.len()).expect("a handful of migrations");
    // Held until COMMIT: a replica starting at the same time waits here, then finds the
    // schema up to date (each statement below reads what committed before it began).
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(sql)?;
    let versioned: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(sql)?
        .get(0);
    if !versioned {
        let tables: Vec<String> = client
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
                 ORDER BY tablename",
                &[],
            )
            .await
            .map_err(sql)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if !tables.is_empty() {
            return Err(StoreError::Open {
                path: target.into(),
                problem: format!(
                    "it is not a belay-server database (it has no schema_version table \
                     but other tables: {})",
                    tables.join(", ")
                )
                .into(),
            });
        }
        client
            .batch_execute(
                "CREATE TABLE schema_version (
                     version BIGINT PRIMARY KEY,
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                 )",
            )
            .await
            .map_err(sql)?;
    }
    let found: i64 = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await
        .map_err(sql)?
        .get(0);
    if found > known {
        return Err(StoreError::SchemaTooNew {
            path: target.into(),
            found,
            known,
        });
    }
    let applied = usize::try_from(found).map_err(|_| StoreError::Open {
        path: target.into(),
        problem: format!("schema_version holds version {found}").into(),
    })?;
    for (version, migration) in (1..=known).zip(MIGRATIONS).skip(applied) {
        client.batch_execute(migration).await.map_err(sql)?;
        client
            .execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(sql)?;
        tracing::info!(db = target, version, "database schema migrated");
    }
    let filled = fill_actions(client).await.map_err(sql)?;
    if filled > 0 {
        tracing::info!(
            db = target,
            requests = filled,
            "actions of stored requests indexed"
        );
    }
    Ok(())
}

/// Fills in the host and action columns of requests stored without them (NULL), so
/// that histories find them; returns how many. A row that cannot be read is left as it
/// is (out of every history) and reported. Quick when there is nothing to fill:
/// `requests_by_action` starts with the host.
async fn fill_actions(client: &Client) -> Result<usize, tokio_postgres::Error> {
    const SELECT: &str = "SELECT id, state, request, resolution FROM requests \
         WHERE host IS NULL AND id > $1 ORDER BY id LIMIT $2";
    const UPDATE: &str = "UPDATE requests SET host = filled.host, action = filled.action \
         FROM unnest($1::text[], $2::text[], $3::text[]) AS filled (id, host, action) \
         WHERE requests.id = filled.id";
    let mut after = String::new();
    let mut filled = 0;
    loop {
        let found = client.query(SELECT, &[&after, &FILL_STEP]).await?;
        let Some(last) = found.last() else {
            return Ok(filled);
        };
        after = last.try_get(0)?;
        let (mut ids, mut hosts, mut actions) = (Vec::new(), Vec::new(), Vec::new());
        for row in &found {
            match rows::request_from(row) {
                Ok(Some(request)) => {
                    ids.push(request.id.as_str().to_owned());
                    hosts.push(request.host.as_str().to_owned());
                    actions.push(action_digest(&request.action));
                }
                Ok(None) => {}
                Err(err) => {
                    let id: Option<String> = row.try_get(0)?;
                    tracing::warn!(id, error = %err, "a stored request cannot be read; it is left out of the history of its action");
                }
            }
        }
        filled += ids.len();
        client.execute(UPDATE, &[&ids, &hosts, &actions]).await?;
    }
}

fn open(target: &str, err: tokio_postgres::Error) -> StoreError {
    StoreError::Open {
        path: target.into(),
        problem: Box::new(err),
    }
}
